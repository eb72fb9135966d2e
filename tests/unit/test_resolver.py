"""The pod stub resolver and the DNS toolbox, against the real DNS engine served by a pod.

A "dns" pod on the same NodeNetwork answers UDP and TCP on port 53 with `DnsEngine` (the
same code the control plane serves), and records every name it is asked, so the search walk
of reference/dns.md 1e is checked query by query.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import dns.message
import pytest

from agents.netstack import NodeNetwork, PodNet
from agents.podfiles import resolv_conf
from agents.resolver import StubResolver, candidates, install, parse_resolv_conf
from agents.toolbox import ExecTarget, run_command
from controlplane.dns.records import ClusterDnsIndex
from controlplane.dns.server import DnsEngine, serve_stream

DNS_POD_IP, CLIENT_IP, SILENT_IP = "10.244.1.53", "10.244.1.5", "10.244.1.54"


def svc(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


class DnsPod(asyncio.DatagramProtocol):
    def __init__(self, engine: DnsEngine) -> None:
        self.engine = engine
        self.asked: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.asked.append(dns.message.from_wire(data).question[0].name.to_text())
        out = self.engine.handle_wire(data, "udp")
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


class Silent(asyncio.DatagramProtocol):
    pass


@dataclass
class World:
    node: NodeNetwork
    index: ClusterDnsIndex
    dns: DnsPod
    client: PodNet

    def conf(self, namespace: str = "a", **spec: Any) -> str:
        return resolv_conf(spec, namespace, "cluster.local", dns_ip=DNS_POD_IP)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    node = NodeNetwork("node-1", "10.244.1.0/24")
    index = ClusterDnsIndex("cluster.local")
    many = [{"addresses": [f"10.244.5.{i}"], "conditions": {"ready": True}}
            for i in range(1, 80)]
    index.replace_all(
        [svc("my-service", "a", clusterIP="10.96.1.1"),
         svc("my-service", "other-ns", clusterIP="10.96.2.2"),
         svc("data", "prod", clusterIP="10.96.3.3"),
         svc("big", "a", clusterIP="None")],
        [{"metadata": {"name": "big-1", "namespace": "a",
                       "labels": {"kubernetes.io/service-name": "big"}}, "endpoints": many}],
        [], [{"metadata": {"name": n}} for n in ("a", "other-ns", "prod", "test")])
    engine = DnsEngine(index)
    dns_net = node.attach(DNS_POD_IP, pod="coredns", namespace="kube-system", hostname="coredns")
    _, proto = await dns_net.create_datagram_endpoint(lambda: DnsPod(engine),
                                                      local_addr=("0.0.0.0", 53))
    tcp = await dns_net.start_server(lambda r, w: serve_stream(engine, r, w), None, 53)
    silent = node.attach(SILENT_IP, pod="silent", namespace="default", hostname="silent")
    await silent.create_datagram_endpoint(Silent, local_addr=("0.0.0.0", 53))
    client = node.attach(CLIENT_IP, pod="client", namespace="a", hostname="client")
    yield World(node, index, proto, client)
    tcp.close()
    for pod in node.pods():
        node.detach(pod.ip)
    for _ in range(20):
        await asyncio.sleep(0)


# --- resolv.conf and the candidate list


def test_parse_resolv_conf() -> None:
    conf = parse_resolv_conf("# comment\nnameserver 10.96.0.10\nnameserver 1.1.1.1\n"
                             "nameserver 2.2.2.2\nnameserver 3.3.3.3\n"
                             "search a.svc.cluster.local svc.cluster.local cluster.local\n"
                             "options ndots:5 timeout:2 attempts:3 rotate edns0 bogus\n")
    assert conf.nameservers == ["10.96.0.10", "1.1.1.1", "2.2.2.2"]  # at most 3
    assert conf.search == ["a.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert (conf.ndots, conf.timeout_s, conf.attempts, conf.rotate, conf.edns0) == (
        5, 2, 3, True, True)
    assert parse_resolv_conf("options ndots:99 timeout:99 attempts:99\n").ndots == 15
    assert parse_resolv_conf("").nameservers == ["127.0.0.1"]
    assert parse_resolv_conf("search a b\ndomain c\n").search == ["c"]  # the last one wins


def test_candidates_follow_glibc() -> None:
    conf = parse_resolv_conf(resolv_conf({}, "a", "cluster.local"))
    s = ["a.svc.cluster.local.", "svc.cluster.local.", "cluster.local."]
    assert candidates("web", conf) == [f"web.{d}" for d in s] + ["web."]
    assert candidates("web.", conf) == ["web."]
    long = "a.b.c.d.e.f"  # 5 dots >= ndots: as is first, then the search list
    assert candidates(long, conf) == [f"{long}."] + [f"{long}.{d}" for d in s]


# --- the search walk table of reference/dns.md 1e


SUFFIXES = ["a.svc.cluster.local.", "svc.cluster.local.", "cluster.local."]


@pytest.mark.parametrize("typed,asked,answer", [
    ("my-service", ["my-service.a.svc.cluster.local."], "10.96.1.1"),
    ("my-service.other-ns", [f"my-service.other-ns.{s}" for s in SUFFIXES[:2]], "10.96.2.2"),
    ("my-service.other-ns.svc", [f"my-service.other-ns.svc.{s}" for s in SUFFIXES]
     + ["my-service.other-ns.svc."][:0], "10.96.2.2"),
    ("my-service.other-ns.svc.cluster.local",
     [f"my-service.other-ns.svc.cluster.local.{s}" for s in SUFFIXES]
     + ["my-service.other-ns.svc.cluster.local."], "10.96.2.2"),
    ("my-service.other-ns.svc.cluster.local.", ["my-service.other-ns.svc.cluster.local."],
     "10.96.2.2"),
])
async def test_search_walk(world: World, typed: str, asked: list[str], answer: str) -> None:
    resolver = StubResolver(world.client, world.conf())
    assert await resolver(typed) == [answer]
    if typed == "my-service.other-ns.svc":
        # `.svc` + `a.svc.cluster.local` is NXDOMAIN, `.svc.svc.cluster.local` NXDOMAIN,
        # `.svc.cluster.local` answers: the 3rd query.
        asked = ["my-service.other-ns.svc.a.svc.cluster.local.",
                 "my-service.other-ns.svc.svc.cluster.local.",
                 "my-service.other-ns.svc.cluster.local."]
    assert world.dns.asked == asked


async def test_external_name_walks_everything_then_fails(world: World) -> None:
    resolver = StubResolver(world.client, world.conf())
    with pytest.raises(socket.gaierror) as e:
        await resolver("example.com")
    assert e.value.errno == socket.EAI_NONAME and e.value.strerror == "Name or service not known"
    assert world.dns.asked == [f"example.com.{s}" for s in SUFFIXES] + ["example.com."]


async def test_kubernetes_docs_example(world: World) -> None:
    # From namespace `test`: `data` alone does not find prod's Service; `data.prod` does.
    resolver = StubResolver(world.client, world.conf("test"))
    with pytest.raises(socket.gaierror):
        await resolver("data")
    assert await resolver("data.prod") == ["10.96.3.3"]
    assert await resolver("data.prod.svc.cluster.local") == ["10.96.3.3"]


async def test_nodata_and_servfail_errors(world: World) -> None:
    resolver = StubResolver(world.client, world.conf())
    with pytest.raises(socket.gaierror) as e:
        await resolver("a.svc.cluster.local.")  # exists (namespace), no address
    assert e.value.errno == socket.EAI_NODATA
    world.index.synced = False  # before the first sync the server says SERVFAIL
    world.index.generation += 1
    with pytest.raises(socket.gaierror) as e:
        await resolver("my-service")
    assert e.value.errno == socket.EAI_AGAIN
    assert e.value.strerror == "Temporary failure in name resolution"


async def test_no_reply_is_eai_again(world: World) -> None:
    conf = f"nameserver {SILENT_IP}\nsearch a.svc.cluster.local\noptions timeout:1 attempts:1\n"
    with pytest.raises(socket.gaierror) as e:
        await StubResolver(world.client, conf)("my-service")
    assert e.value.errno == socket.EAI_AGAIN


async def test_second_nameserver_after_a_silent_first(world: World) -> None:
    conf = (f"nameserver {SILENT_IP}\nnameserver {DNS_POD_IP}\n"
            "search a.svc.cluster.local\noptions timeout:1 attempts:1\n")
    assert await StubResolver(world.client, conf)("my-service") == ["10.96.1.1"]


async def test_truncated_answer_retried_over_tcp(world: World) -> None:
    resolver = StubResolver(world.client, world.conf())
    addresses = await resolver("big")
    assert len(addresses) == 79
    assert world.dns.asked == ["big.a.svc.cluster.local."]  # UDP once; the rest went by TCP


async def test_install_makes_getaddrinfo_and_connections_use_dns(world: World) -> None:
    install(world.client, world.conf(),
            hosts="127.0.0.1\tlocalhost\n10.244.1.5\tclient.sub.a.svc.cluster.local\tclient\n")
    infos = await world.client.getaddrinfo("my-service", 80)
    assert {info[4] for info in infos} == {("10.96.1.1", 80)}
    # /etc/hosts first, like nsswitch `hosts: files dns`
    assert await world.client.resolver("client.sub.a.svc.cluster.local") == [  # type: ignore[misc]
        "10.244.1.5"]
    with pytest.raises(socket.gaierror):
        await world.client.open_connection("nosuch", 80)


# --- toolbox: nslookup and dig


def target(world: World) -> ExecTarget:
    return ExecTarget(net=world.client, pod="client", namespace="a", node="node-1",
                      pod_ip=CLIENT_IP, hostname="client",
                      files={"/etc/resolv.conf": world.conf()})


async def run(world: World, *argv: str) -> tuple[int, str, str]:
    out, err = bytearray(), bytearray()
    code = await run_command(target(world), list(argv), None, out.extend, err.extend)
    return code, out.decode(), err.decode()


async def test_nslookup_found(world: World) -> None:
    code, out, _ = await run(world, "nslookup", "my-service")
    assert code == 0
    assert out == (f"Server:\t\t{DNS_POD_IP}\nAddress:\t{DNS_POD_IP}#53\n\n"
                   "Name:\tmy-service.a.svc.cluster.local\nAddress: 10.96.1.1\n\n")


async def test_nslookup_nxdomain(world: World) -> None:
    code, out, _ = await run(world, "nslookup", "nosuch")
    assert code == 1
    assert out.endswith("** server can't find nosuch: NXDOMAIN\n\n")


async def test_nslookup_reverse(world: World) -> None:
    world.index.apply("Service", "ADDED", svc("rev", "a", clusterIP="10.96.9.9"))
    code, out, _ = await run(world, "nslookup", "10.96.9.9")
    assert code == 0 and "9.9.96.10.in-addr.arpa\tname = rev.a.svc.cluster.local.\n" in out


async def test_dig_shapes(world: World) -> None:
    code, out, _ = await run(world, "dig", "my-service.a.svc.cluster.local")
    assert code == 0
    assert ";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: " in out
    assert ";; flags: qr aa rd; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 1\n" in out
    # BIND's columns: tabs to the next column, one space once past it (as real dig prints).
    assert ";my-service.a.svc.cluster.local. IN\tA\n" in out
    assert "my-service.a.svc.cluster.local. 5 IN\tA\t10.96.1.1\n" in out
    assert f";; SERVER: {DNS_POD_IP}#53({DNS_POD_IP}) (UDP)\n" in out
    assert ";; Query time: " in out and ";; MSG SIZE  rcvd: " in out


async def test_dig_short_search_tcp_and_reverse(world: World) -> None:
    assert await run(world, "dig", "+short", "my-service") == (0, "", "")  # no +search
    assert await run(world, "dig", "+short", "+search", "my-service") == (0, "10.96.1.1\n", "")
    code, out, _ = await run(world, "dig", "+tcp", "my-service.a.svc.cluster.local")
    assert code == 0 and "(TCP)" in out
    code, out, _ = await run(world, "dig", "-x", "10.96.1.1", "+short")
    assert (code, out) == (0, "my-service.a.svc.cluster.local.\n")
    code, out, _ = await run(world, "dig", "big.a.svc.cluster.local", "+noedns")
    assert code == 0 and ";; Truncated, retrying in TCP mode.\n" in out and "(TCP)" in out


async def test_dig_nxdomain_exit_0_and_no_server_exit_9(world: World) -> None:
    code, out, _ = await run(world, "dig", "nosuch.a.svc.cluster.local")
    assert code == 0 and "status: NXDOMAIN" in out and ";; AUTHORITY SECTION:" in out
    code, out, _ = await run(world, "dig", f"@{SILENT_IP}", "+time=1", "+tries=1", "x")
    assert code == 9
    assert out.startswith(f";; communications error to {SILENT_IP}#53: timed out\n")
    assert out.endswith(";; no servers could be reached\n")
    code, _, err = await run(world, "dig", "+bogus", "x")
    assert code == 1 and "Invalid option: +bogus" in err


def test_host_aliases_are_names_in_etc_hosts() -> None:
    from agents.podfiles import host_aliases, hosts_file
    from agents.resolver import parse_hosts

    spec = {"hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.remote", "Bar.Remote"]}]}
    names = parse_hosts(hosts_file(["10.244.1.5", "fd00:10:244:1::5"], "web", None,
                                   "default", "cluster.local", host_aliases(spec)))
    assert names["foo.remote"] == names["bar.remote"] == ["10.1.2.3"]
    assert names["web"] == ["10.244.1.5", "fd00:10:244:1::5"]
