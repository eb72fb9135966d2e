"""IPv6 in the pod network stack: dual-stack pods, `::1`, `[v6]` literals, wildcards per
family, same-node delivery with the source kept, and IPv4-only pods unchanged."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from agents.netstack import NodeNetwork, PodNet, VirtualServer

A4, A6 = "10.244.1.2", "fd00:10:244:1::2"
B4, B6 = "10.244.1.3", "fd00:10:244:1::3"


@pytest.fixture
def node(dual_stack_node: NodeNetwork) -> NodeNetwork:
    return dual_stack_node      # tests/unit/conftest.py


@pytest.fixture
def a(node: NodeNetwork) -> PodNet:
    return node.attach(A4, pod="a", namespace="default", hostname="a", ips=[A4, A6])


@pytest.fixture
def b(node: NodeNetwork) -> PodNet:
    return node.attach(B4, pod="b", namespace="default", hostname="b", ips=[B4, B6])


async def serve_peer(net: PodNet, host: str | None, port: int) -> VirtualServer:
    """A server that answers each connection with the address it saw the client at."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        writer.write(f"{peer[0]} {peer[1]}".encode())
        await writer.drain()
        writer.close()

    return await net.start_server(handle, host, port)


async def ask(net: PodNet, host: str, port: int) -> str:
    reader, writer = await net.open_connection(host, port)
    data = await reader.read()
    writer.close()
    return data.decode()


def test_a_dual_stack_pod_has_an_address_per_family(a: PodNet, node: NodeNetwork) -> None:
    assert (a.ip, a.ips, a.ip4, a.ip6) == (A4, (A4, A6), A4, A6)
    assert node.pod(A6) is a and node.pod(A4) is a
    assert node.pods() == [a]
    assert node.is_local(A6) and not node.is_local("fd00:10:244:2::2")
    assert node.gateway6 == "fd00:10:244:1::1"


def test_attach_checks_every_address(node: NodeNetwork) -> None:
    with pytest.raises(ValueError, match="outside"):
        node.attach(A4, pod="x", namespace="d", hostname="x", ips=[A4, "fd00:10:244:2::2"])
    with pytest.raises(ValueError, match="one address per family"):
        node.attach(A4, pod="x", namespace="d", hostname="x", ips=[A4, "10.244.1.9"])
    with pytest.raises(ValueError, match="first"):
        node.attach(A4, pod="x", namespace="d", hostname="x", ips=[A6, A4])


async def test_same_node_v6_connection_keeps_the_source(a: PodNet, b: PodNet) -> None:
    server = await serve_peer(b, None, 8080)
    assert {s.getsockname()[0] for s in server.sockets} == {"0.0.0.0", "::"}
    host, _ = (await ask(a, B6, 8080)).split()
    assert host == A6
    host, _ = (await ask(a, f"[{B6}]", 8080)).split()     # a bracketed literal too
    assert host == A6
    host, _ = (await ask(a, B4, 8080)).split()
    assert host == A4
    server.close()


async def test_loopback6_stays_inside_the_pod(a: PodNet, b: PodNet) -> None:
    server = await serve_peer(a, "::1", 9000)
    assert (await ask(a, "::1", 9000)).split()[0] == "::1"
    with pytest.raises(ConnectionRefusedError):
        await a.open_connection("127.0.0.1", 9000)     # bound to ::1 only
    with pytest.raises(ConnectionRefusedError):
        await b.open_connection("::1", 9000)           # b's own loopback
    server.close()


async def test_wildcards_are_per_family(a: PodNet, b: PodNet) -> None:
    v4 = await serve_peer(b, "0.0.0.0", 7000)
    with pytest.raises(ConnectionRefusedError):
        await a.open_connection(B6, 7000)
    v6 = await serve_peer(b, "::", 7000)          # the other family's wildcard: no clash
    assert (await ask(a, B6, 7000)).split()[0] == A6
    with pytest.raises(OSError) as e:
        await serve_peer(b, B6, 7000)
    assert e.value.errno == errno.EADDRINUSE
    v4.close()
    v6.close()


async def test_a_v4_only_pod_has_no_v6_network() -> None:
    node = NodeNetwork("node-1", "10.244.1.0/24")
    c = node.attach(A4, pod="c", namespace="d", hostname="c")
    assert c.ips == (A4,) and c.ip6 is None
    server = await c.start_server(lambda r, w: None, None, 80)
    assert [s.getsockname() for s in server.sockets] == [("0.0.0.0", 80)]
    with pytest.raises(OSError) as e:
        await c.open_connection(B6, 80)
    assert e.value.errno == errno.ENETUNREACH
    with pytest.raises(OSError) as e:
        await c.ping(B6, seq=1, timeout_s=1)
    assert e.value.errno == errno.ENETUNREACH
    server.close()
    node.detach(A4)


async def test_getaddrinfo_by_family(a: PodNet) -> None:
    async def resolve(name: str) -> list[str]:
        return ["10.96.0.20", "fd00:10:96::20"] if name == "svc" else []

    a.resolver = resolve
    infos = await a.getaddrinfo("svc", 80, type=socket.SOCK_STREAM)
    assert [(i[0], i[4]) for i in infos] == [(socket.AF_INET, ("10.96.0.20", 80)),
                                             (socket.AF_INET6, ("fd00:10:96::20", 80))]
    infos = await a.getaddrinfo("svc", 80, family=socket.AF_INET6, type=socket.SOCK_STREAM)
    assert [i[4] for i in infos] == [("fd00:10:96::20", 80)]
    infos = await a.getaddrinfo("a", 80, family=socket.AF_INET6, type=socket.SOCK_STREAM)
    assert [i[4][0] for i in infos] == [A6]
    infos = await a.getaddrinfo("localhost", 80, family=socket.AF_INET6,
                                type=socket.SOCK_STREAM)
    assert [i[4][0] for i in infos] == ["::1"]
    infos = await a.getaddrinfo(B6, 80, type=socket.SOCK_STREAM)
    assert infos[0][0] == socket.AF_INET6
    with pytest.raises(socket.gaierror):
        await a.getaddrinfo(B6, 80, family=socket.AF_INET)
    with pytest.raises(socket.gaierror):
        await a.getaddrinfo("fd00::zz", 80)


class Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[bytes, tuple[str, int]]] = []
        self.errors: list[OSError] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append((data, addr))

    def error_received(self, exc: Exception) -> None:
        assert isinstance(exc, OSError)
        self.errors.append(exc)


async def test_v6_datagrams_keep_the_source(a: PodNet, b: PodNet) -> None:
    rx_t, rx = await b.create_datagram_endpoint(Sink, local_addr=("::", 5353))
    tx_t, tx = await a.create_datagram_endpoint(Sink, remote_addr=(B6, 5353))
    tx_t.sendto(b"hi")
    for _ in range(50):
        await asyncio.sleep(0)
    assert rx.got == [(b"hi", (A6, tx_t.get_extra_info("sockname")[1]))]
    rx_t.sendto(b"back", rx.got[0][1])
    for _ in range(50):
        await asyncio.sleep(0)
    assert tx.got == [(b"back", (B6, 5353))]
    # A 0.0.0.0 socket is IPv4: it cannot send to an IPv6 address.
    v4_t, v4 = await a.create_datagram_endpoint(Sink, local_addr=("0.0.0.0", 0))
    v4_t.sendto(b"x", (B6, 5353))
    for _ in range(50):
        await asyncio.sleep(0)
    assert [e.errno for e in v4.errors] == [errno.EAFNOSUPPORT]
    for t in (rx_t, tx_t, v4_t):
        t.close()


async def test_same_node_v6_ping(a: PodNet, b: PodNet) -> None:
    assert await a.ping(B6, seq=1, timeout_s=1) >= 0
    assert await a.ping("::1", seq=1, timeout_s=1) >= 0
    assert a.echo_ttl(B6) == 64


async def test_a_v6_only_cluster() -> None:
    node = NodeNetwork("node-1", "fd00:10:244:1::/64", "fd00:10:244::/56")
    c = node.attach("fd00:10:244:1::5", pod="c", namespace="d", hostname="c")
    d = node.attach("fd00:10:244:1::6", pod="d", namespace="d", hostname="d")
    assert c.ip4 is None and c.ip6 == c.ip
    server = await serve_peer(d, "::", 80)
    assert (await ask(c, d.ip, 80)).split()[0] == c.ip
    with pytest.raises(OSError) as e:
        await c.open_connection("10.244.1.3", 80)
    assert e.value.errno == errno.ENETUNREACH
    server.close()
    node.detach(c.ip)
    node.detach(d.ip)
