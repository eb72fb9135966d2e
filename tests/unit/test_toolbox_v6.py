"""Toolbox commands over IPv6 in a dual-stack pod: curl -g [v6], ping -6, ip -6, nc -6."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import dns.rdatatype
import pytest

from agents.netstack import NodeNetwork, PodNet
from agents.toolbox import ExecTarget, run_command
from agents.toolbox.dnstools import parse_dig

C4, C6 = "10.244.1.5", "fd00:10:244:1::5"
S4, S6 = "10.244.1.6", "fd00:10:244:1::6"


@dataclass
class Result:
    code: int
    out: str
    err: str


async def _peer_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP: answers with the client address it saw (as podnet/echo does)."""
    try:
        await reader.readuntil(b"\r\n\r\n")
        peer = writer.get_extra_info("peername")[0]
        body = f"client {peer}\n".encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await reader.read()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _resolver(name: str) -> Sequence[str]:
    return [S4, S6] if name == "web" else []


@pytest.fixture
def node(dual_stack_node: NodeNetwork) -> NodeNetwork:
    return dual_stack_node      # tests/unit/conftest.py


@pytest.fixture
async def server(node: NodeNetwork) -> AsyncIterator[PodNet]:
    net = node.attach(S4, pod="web-0", namespace="default", hostname="web-0", ips=[S4, S6])
    http = await net.start_server(_peer_server, None, 8080)
    yield net
    http.close()


@pytest.fixture
def target(node: NodeNetwork, server: PodNet) -> ExecTarget:
    net = node.attach(C4, pod="client", namespace="default", hostname="client", ips=[C4, C6])
    net.resolver = _resolver
    return ExecTarget(
        net=net, pod="client", namespace="default", node="node-1", pod_ip=C4,
        hostname="client", env={"PATH": "/bin"},
        routes=[("default", "via 10.244.1.1 dev eth0"),
                ("10.244.1.0/24", f"dev eth0 proto kernel scope link src {C4}"),
                ("fd00:10:244:1::/64", "dev eth0 proto kernel metric 256 pref medium"),
                ("default", "via fd00:10:244:1::1 dev eth0 metric 1024 pref medium")])


async def run(target: ExecTarget, *argv: str, stdin: bytes | None = None) -> Result:
    out, err = bytearray(), bytearray()
    reader = None
    if stdin is not None:
        reader = asyncio.StreamReader()
        reader.feed_data(stdin)
        reader.feed_eof()
    code = await run_command(target, list(argv), reader, out.extend, err.extend)
    return Result(code, out.decode(), err.decode())


async def test_curl_g_reaches_a_v6_literal_and_the_server_sees_our_v6(target: ExecTarget) -> None:
    for argv in (["-g"], ["--globoff"], []):
        result = await run(target, "curl", "-s", *argv, f"http://[{S6}]:8080/")
        assert result == Result(0, f"client {C6}\n", "")


async def test_curl_v_shows_the_bracketed_address(target: ExecTarget) -> None:
    result = await run(target, "curl", "-sv", "-g", f"http://[{S6}]:8080/")
    assert f"*   Trying [{S6}]:8080..." in result.err
    assert f"> Host: [{S6}]:8080" in result.err


async def test_curl_picks_the_family_of_a_name(target: ExecTarget) -> None:
    assert (await run(target, "curl", "-s", "http://web:8080/")).out == f"client {C4}\n"
    assert (await run(target, "curl", "-s", "-6", "http://web:8080/")).out == f"client {C6}\n"
    assert (await run(target, "curl", "-s", "-4", "http://web:8080/")).out == f"client {C4}\n"
    assert (await run(target, "curl", "-s", "-4", f"http://[{S6}]:8080/")).code == 6


async def test_ping_6(target: ExecTarget) -> None:
    result = await run(target, "ping", "-6", "-c", "1", S6)
    assert result.code == 0
    assert result.out.startswith(f"PING {S6}({S6}) 56 data bytes\n64 bytes from {S6}: "
                                 "icmp_seq=1 ttl=64 time=")
    assert (await run(target, "ping", "-c", "1", "-6", "web")).out.startswith(
        f"PING web({S6}) 56 data bytes")
    result = await run(target, "ping", "-4", "-c", "1", S6)
    assert result.code == 2 and "Address family" in result.err


async def test_ping_6_without_a_route_names_the_v6_gateway(target: ExecTarget) -> None:
    result = await run(target, "ping", "-c", "1", "fd00:10:244:1::99")
    assert "From fd00:10:244:1::1 icmp_seq=1 Destination Host Unreachable" in result.out


async def test_ip_6_addr_and_route(target: ExecTarget) -> None:
    result = await run(target, "ip", "-6", "addr")
    assert result.code == 0
    assert "inet6 ::1/128 scope host" in result.out
    assert f"inet6 {C6}/64 scope global" in result.out
    assert "inet6 fe80::858:aff:fef4:105/64 scope link" in result.out
    assert "inet " not in result.out
    both = (await run(target, "ip", "addr")).out
    assert f"inet {C4}/24" in both and f"inet6 {C6}/64" in both
    assert f"inet6 {C6}" not in (await run(target, "ip", "-4", "a")).out
    assert (await run(target, "ip", "-6", "route")).out == (
        "fd00:10:244:1::/64 dev eth0 proto kernel metric 256 pref medium \n"
        "default via fd00:10:244:1::1 dev eth0 metric 1024 pref medium \n")
    assert (await run(target, "ip", "route")).out == (
        f"default via 10.244.1.1 dev eth0 \n10.244.1.0/24 dev eth0 proto kernel scope link "
        f"src {C4} \n")


async def test_nc_6_probe_and_relay(target: ExecTarget, server: PodNet) -> None:
    result = await run(target, "nc", "-6", "-zv", "web", "8080")
    assert result == Result(0, "", f"web ([{S6}]:8080) open\n")
    result = await run(target, "nc", "-zv", S6, "8081")
    assert result == Result(1, "", f"nc: {S6} ([{S6}]:8081): Connection refused\n")


def test_dig_takes_the_type_before_or_after_the_name() -> None:
    for argv in (["AAAA", "web"], ["web", "AAAA"], ["aaaa", "web", "+short"]):
        opts = parse_dig(argv)
        assert (opts.name, opts.qtype) == ("web", dns.rdatatype.AAAA)
