"""Cluster DNS for IPv6 and the spec details of issue 12 (reference/dns.md 1a-1c), pure:
AAAA exactly as A, NODATA for the other family, PTR under ip6.arpa, headless SRV with one
target per ready endpoint and its addresses in Additional, the ExternalName chase hooks, SOA
alone at the apex; and the per-family EndpointSlices DNS reads (controlplane/endpoints.py)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct
from collections.abc import AsyncIterator
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.rrset
import pytest

from controlplane.dns.records import ClusterDnsIndex, append_chased, dashed, fit_udp
from controlplane.dns.server import DnsEngine
from controlplane.endpoints import desired_slices, mirrored_slices, service_families

ZONE = "cluster.local"


def svc(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def eps(name: str, service: str, endpoints: list[dict[str, Any]], address_type: str,
        ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": address_type, "endpoints": endpoints, "ports": ports or []}


def ready(ip: str, hostname: str | None = None, is_ready: bool = True) -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": [ip], "conditions": {"ready": is_ready}}
    if hostname:
        ep["hostname"] = hostname
    return ep


HTTP = [{"name": "http", "port": 8080, "protocol": "TCP"}]
SERVICES = [
    svc("v6", clusterIP="fd00:10:96::a", clusterIPs=["fd00:10:96::a"],
        ipFamilies=["IPv6"], ports=[{"name": "http", "port": 80, "protocol": "TCP"}]),
    svc("dual", clusterIP="10.96.0.50", clusterIPs=["10.96.0.50", "fd00:10:96::32"],
        ipFamilies=["IPv4", "IPv6"], ports=[{"name": "http", "port": 80, "protocol": "TCP"}]),
    svc("v4", clusterIP="10.96.0.60", ports=[{"name": "http", "port": 80, "protocol": "TCP"}]),
    svc("hl6", clusterIP="None", ports=[{"name": "http", "port": 80}]),
    svc("hlds", clusterIP="None", ports=[{"name": "http", "port": 80}]),
    svc("ext", type="ExternalName", externalName="www.example.test"),
    svc("inzone", type="ExternalName", externalName="v4.default.svc.cluster.local"),
]
SLICES = [
    eps("hl6-a", "hl6", [ready("fd00:10:244:1::5"), ready("fd00:10:244:2::7", "web-1"),
                         ready("fd00:10:244:3::9", is_ready=False)], "IPv6", HTTP),
    # A dual-stack headless Service: one slice per family, the same pods in both.
    eps("hlds-4", "hlds", [ready("10.244.1.5", "db-0"), ready("10.244.2.6")], "IPv4", HTTP),
    eps("hlds-6", "hlds", [ready("fd00:10:244:1::5", "db-0"), ready("fd00:10:244:2::6")],
        "IPv6", HTTP),
]


@pytest.fixture
def index() -> ClusterDnsIndex:
    index = ClusterDnsIndex(ZONE)
    index.replace_all(SERVICES, SLICES, [], [{"metadata": {"name": "default"}}])
    return index


def ask(index: ClusterDnsIndex, name: str, rdtype: str = "A", *, transport: str = "udp",
        use_edns: int = -1, payload: int = 1232) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=use_edns, payload=payload)
    return index.answer(query, transport=transport)


def data(response: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in response.answer for rd in rrset)


def nodata(response: dns.message.Message) -> bool:
    """NOERROR, no answer, exactly one SOA (the zone's) in authority, nothing else."""
    return (response.rcode() == dns.rcode.NOERROR and not response.answer
            and [(rr.rdtype, len(rr)) for rr in response.authority] == [(dns.rdatatype.SOA, 1)]
            and not response.additional)


def ptr_name(ip: str) -> str:
    return dns.reversename.from_address(ip).to_text()


# --- AAAA exactly as A


def test_ipv6_service_answers_aaaa_and_nodata_for_a(index: ClusterDnsIndex) -> None:
    assert data(ask(index, "v6.default.svc.cluster.local", "AAAA")) == ["fd00:10:96::a"]
    assert nodata(ask(index, "v6.default.svc.cluster.local", "A"))
    assert data(ask(index, "v4.default.svc.cluster.local")) == ["10.96.0.60"]
    assert nodata(ask(index, "v4.default.svc.cluster.local", "AAAA"))


def test_dual_stack_service_answers_each_family(index: ClusterDnsIndex) -> None:
    assert data(ask(index, "dual.default.svc.cluster.local")) == ["10.96.0.50"]
    assert data(ask(index, "dual.default.svc.cluster.local", "AAAA")) == ["fd00:10:96::32"]
    srv = ask(index, "_http._tcp.dual.default.svc.cluster.local", "SRV")
    assert data(srv) == ["0 100 80 dual.default.svc.cluster.local."]
    assert sorted(rr.to_text() for rr in srv.additional) == [
        "dual.default.svc.cluster.local. 5 IN A 10.96.0.50",
        "dual.default.svc.cluster.local. 5 IN AAAA fd00:10:96::32"]


def test_headless_ipv6_endpoints(index: ClusterDnsIndex) -> None:
    # Ready endpoints only; the not-ready one is left out, as for A.
    assert data(ask(index, "hl6.default.svc.cluster.local", "AAAA")) == [
        "fd00:10:244:1::5", "fd00:10:244:2::7"]
    assert nodata(ask(index, "hl6.default.svc.cluster.local", "A"))
    assert data(ask(index, "web-1.hl6.default.svc.cluster.local", "AAAA")) == [
        "fd00:10:244:2::7"]
    assert data(ask(index, "fd00-10-244-1--5.hl6.default.svc.cluster.local", "AAAA")) == [
        "fd00:10:244:1::5"]
    assert nodata(ask(index, "fd00-10-244-1--5.hl6.default.svc.cluster.local", "A"))
    not_ready = ask(index, "fd00-10-244-3--9.hl6.default.svc.cluster.local", "AAAA")
    assert not_ready.rcode() == dns.rcode.NXDOMAIN


def test_headless_dual_stack_endpoints(index: ClusterDnsIndex) -> None:
    assert data(ask(index, "hlds.default.svc.cluster.local")) == ["10.244.1.5", "10.244.2.6"]
    assert data(ask(index, "hlds.default.svc.cluster.local", "AAAA")) == [
        "fd00:10:244:1::5", "fd00:10:244:2::6"]
    assert data(ask(index, "db-0.hlds.default.svc.cluster.local")) == ["10.244.1.5"]
    assert data(ask(index, "db-0.hlds.default.svc.cluster.local", "AAAA")) == [
        "fd00:10:244:1::5"]
    # Without a hostname each address is its own name, so its other family is NODATA.
    assert nodata(ask(index, "10-244-2-6.hlds.default.svc.cluster.local", "AAAA"))
    assert nodata(ask(index, "fd00-10-244-2--6.hlds.default.svc.cluster.local", "A"))


def test_pod_records_ipv6() -> None:
    index = ClusterDnsIndex(ZONE)
    index.replace_all([], [], [], [{"metadata": {"name": "default"}}])
    name = "fd00-10-244-1--5.default.pod.cluster.local"
    assert data(ask(index, name, "AAAA")) == ["fd00:10:244:1::5"]
    assert nodata(ask(index, name, "A"))
    assert nodata(ask(index, "10-244-1-5.default.pod.cluster.local", "AAAA"))


@pytest.mark.parametrize(("ip", "label"), [
    ("10.244.1.5", "10-244-1-5"),
    ("fd00:10:244:1::5", "fd00-10-244-1--5"),
    ("fd00:10:244:1::", "fd00-10-244-1--0"),   # CoreDNS: no label ends in a hyphen
    ("2001:db8:0:0:1:0:0:1", "2001-db8--1-0-0-1"),
])
def test_dashed_labels_as_coredns_spells_them(ip: str, label: str) -> None:
    assert dashed(str(ipaddress.ip_address(ip))) == label


def test_endpoint_whose_address_ends_in_double_colon(index: ClusterDnsIndex) -> None:
    index.apply("EndpointSlice", "ADDED", eps("hl6-b", "hl6", [ready("fd00:10:244:4::")],
                                              "IPv6", HTTP))
    r = ask(index, "fd00-10-244-4--0.hl6.default.svc.cluster.local", "AAAA")
    assert data(r) == ["fd00:10:244:4::"]


# --- headless SRV: one target per ready endpoint, addresses in Additional


def test_headless_srv_one_target_per_ready_endpoint(index: ClusterDnsIndex) -> None:
    r = ask(index, "_http._tcp.hl6.default.svc.cluster.local", "SRV")
    targets = sorted(rd.target.to_text() for rr in r.answer for rd in rr)
    assert targets == ["fd00-10-244-1--5.hl6.default.svc.cluster.local.",
                       "web-1.hl6.default.svc.cluster.local."]
    assert {rd.port for rr in r.answer for rd in rr} == {8080}
    assert sorted(rr.to_text() for rr in r.additional) == [
        "fd00-10-244-1--5.hl6.default.svc.cluster.local. 5 IN AAAA fd00:10:244:1::5",
        "web-1.hl6.default.svc.cluster.local. 5 IN AAAA fd00:10:244:2::7"]


def test_headless_srv_dual_stack(index: ClusterDnsIndex) -> None:
    r = ask(index, "_http._tcp.hlds.default.svc.cluster.local", "SRV")
    targets = sorted(rd.target.to_text() for rr in r.answer for rd in rr)
    # db-0 has both families under one hostname: one target, both addresses in Additional.
    assert targets == ["10-244-2-6.hlds.default.svc.cluster.local.",
                       "db-0.hlds.default.svc.cluster.local.",
                       "fd00-10-244-2--6.hlds.default.svc.cluster.local."]
    assert sorted(rr.to_text() for rr in r.additional) == [
        "10-244-2-6.hlds.default.svc.cluster.local. 5 IN A 10.244.2.6",
        "db-0.hlds.default.svc.cluster.local. 5 IN A 10.244.1.5",
        "db-0.hlds.default.svc.cluster.local. 5 IN AAAA fd00:10:244:1::5",
        "fd00-10-244-2--6.hlds.default.svc.cluster.local. 5 IN AAAA fd00:10:244:2::6"]


# --- PTR under ip6.arpa


def test_ptr_under_ip6_arpa_fully_expanded(index: ClusterDnsIndex) -> None:
    name = ptr_name("fd00:10:96::a")
    # 32 nibbles, the zeros written out, lowest first.
    assert name == ("a.0.0.0." + "0.0.0.0." * 4 + "6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa.")
    assert data(ask(index, name, "PTR")) == ["v6.default.svc.cluster.local."]
    assert data(ask(index, ptr_name("fd00:10:96::32"), "PTR")) == [
        "dual.default.svc.cluster.local."]
    assert data(ask(index, ptr_name("fd00:10:244:1::5"), "PTR")) == [
        "db-0.hlds.default.svc.cluster.local.",
        "fd00-10-244-1--5.hl6.default.svc.cluster.local."]
    assert data(ask(index, ptr_name("fd00:10:244:2::7"), "PTR")) == [
        "web-1.hl6.default.svc.cluster.local."]
    assert ask(index, ptr_name("fd00:10:244:3::9"), "PTR").rcode() == dns.rcode.NXDOMAIN


def test_ptr_parent_is_empty_non_terminal(index: ClusterDnsIndex) -> None:
    parent = dns.name.from_text(ptr_name("fd00:10:96::a")).parent().to_text()
    assert nodata(ask(index, parent, "PTR"))


# --- SOA at the apex answers alone


def test_soa_at_apex_answers_alone(index: ClusterDnsIndex) -> None:
    for use_edns in (-1, 0):
        r = ask(index, "cluster.local", "SOA", use_edns=use_edns)
        assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.SOA] and len(r.answer[0]) == 1
        assert not r.authority and not r.additional
    # NS keeps its glue.
    ns = ask(index, "cluster.local", "NS")
    assert [rr.rdtype for rr in ns.additional] == [dns.rdatatype.A]


# --- ExternalName chase hooks (the I/O is in server.py)


def test_external_name_outside_the_zone_is_handed_to_the_chase(
        index: ClusterDnsIndex) -> None:
    query = dns.message.make_query("ext.default.svc.cluster.local", "AAAA")
    response, target = index.answer_to_chase(query)
    assert target == dns.name.from_text("www.example.test.")
    assert data(response) == ["www.example.test."]
    # Asked for the CNAME itself, or ANY: nothing to chase.
    for rdtype in ("CNAME", "ANY"):
        q = dns.message.make_query("ext.default.svc.cluster.local", rdtype)
        assert index.answer_to_chase(q)[1] is None
    # A CNAME inside the zone is chased here.
    q = dns.message.make_query("inzone.default.svc.cluster.local", "A")
    response, target = index.answer_to_chase(q)
    assert target is None and data(response) == ["10.96.0.60", "v4.default.svc.cluster.local."]


def upstream_reply(query_name: str, rdtype: str, *rrsets: dns.rrset.RRset,
                   rcode: dns.rcode.Rcode = dns.rcode.NOERROR) -> dns.message.Message:
    reply = dns.message.make_response(dns.message.make_query(query_name, rdtype))
    reply.set_rcode(rcode)
    reply.answer = list(rrsets)
    return reply


def test_append_chased_keeps_the_chain_only(index: ClusterDnsIndex) -> None:
    query = dns.message.make_query("ext.default.svc.cluster.local", "A")
    response, target = index.answer_to_chase(query)
    assert target is not None
    reply = upstream_reply(
        "www.example.test.", "A",
        dns.rrset.from_text("www.example.test.", 60, "IN", "CNAME", "cdn.example.test."),
        dns.rrset.from_text("cdn.example.test.", 60, "IN", "A", "192.0.2.10"),
        dns.rrset.from_text("evil.example.org.", 60, "IN", "A", "203.0.113.66"))
    append_chased(response, target, reply)
    assert [rr.to_text() for rr in response.answer] == [
        "ext.default.svc.cluster.local. 5 IN CNAME www.example.test.",
        "www.example.test. 60 IN CNAME cdn.example.test.",
        "cdn.example.test. 60 IN A 192.0.2.10"]
    # An upstream failure leaves the CNAME alone, NOERROR.
    response, target = index.answer_to_chase(query)
    assert target is not None
    append_chased(response, target, upstream_reply("www.example.test.", "A",
                                                   rcode=dns.rcode.SERVFAIL))
    assert data(response) == ["www.example.test."] and response.rcode() == dns.rcode.NOERROR


def test_chased_answer_too_big_for_udp_sets_tc(index: ClusterDnsIndex) -> None:
    query = dns.message.make_query("ext.default.svc.cluster.local", "A")
    response, target = index.answer_to_chase(query)
    assert target is not None
    many = dns.rrset.from_text_list("www.example.test.", 60, "IN", "A",
                                    [f"198.51.100.{i}" for i in range(1, 61)])
    append_chased(response, target, upstream_reply("www.example.test.", "A", many))
    full = response.to_wire()
    assert len(full) > 512
    fit_udp(query, response, 4096)
    assert response.flags & dns.flags.TC and not response.answer
    # The client's EDNS payload size counts: 1232 bytes take the whole answer.
    edns = dns.message.make_query("ext.default.svc.cluster.local", "A", use_edns=0,
                                  payload=1232)
    response, target = index.answer_to_chase(edns)
    assert target is not None
    append_chased(response, target, upstream_reply("www.example.test.", "A", many))
    fit_udp(edns, response, 4096)
    assert not response.flags & dns.flags.TC and len(response.answer[1]) == 60


def test_without_upstream_the_cname_stands_alone(index: ClusterDnsIndex) -> None:
    r = ask(index, "ext.default.svc.cluster.local")
    assert [rr.to_text() for rr in r.answer] == [
        "ext.default.svc.cluster.local. 5 IN CNAME www.example.test."]


# --- EndpointSlices per family (what DNS reads)


def pod(name: str, *ips: str, ready_: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "uid": name,
                         "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1"},
            "status": {"phase": "Running", "podIP": ips[0], "podIPs": [{"ip": i} for i in ips],
                       "conditions": [{"type": "Ready", "status": "True" if ready_ else "False"}]}}


def selector_svc(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "default", "uid": "s1"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}],
                     **spec}}


def test_ipv4_only_service_keeps_one_ipv4_slice() -> None:
    pods = [pod("a", "10.244.1.2"), pod("b", "10.244.1.3")]
    (only,) = desired_slices(selector_svc(clusterIP="10.96.0.9"), pods)
    assert only.address_type == "IPv4"
    assert [e["addresses"] for e in only.endpoints] == [["10.244.1.2"], ["10.244.1.3"]]
    # Dual-stack pods behind a single-stack IPv4 Service: still only their IPv4 addresses.
    pods = [pod("a", "10.244.1.2", "fd00:10:244:1::2")]
    (only,) = desired_slices(selector_svc(clusterIP="10.96.0.9", ipFamilies=["IPv4"]), pods)
    assert only.address_type == "IPv4" and only.endpoints[0]["addresses"] == ["10.244.1.2"]


def test_dual_stack_service_gets_a_slice_per_family() -> None:
    pods = [pod("a", "10.244.1.2", "fd00:10:244:1::2"), pod("b", "10.244.2.3")]
    slices = desired_slices(selector_svc(clusterIP="10.96.0.9", ipFamilies=["IPv4", "IPv6"]),
                            pods)
    assert [(s.address_type, [e["addresses"][0] for e in s.endpoints]) for s in slices] == [
        ("IPv4", ["10.244.1.2", "10.244.2.3"]), ("IPv6", ["fd00:10:244:1::2"])]
    v6 = desired_slices(selector_svc(clusterIP="fd00:10:96::9", ipFamilies=["IPv6"]), pods)
    assert [(s.address_type, len(s.endpoints)) for s in v6] == [("IPv6", 1)]
    # No pods: one empty slice of the primary family.
    (empty,) = desired_slices(selector_svc(ipFamilies=["IPv6", "IPv4"]), [])
    assert empty.address_type == "IPv6" and empty.endpoints == ()


def test_legacy_headless_service_takes_its_pods_families() -> None:
    spec = {"clusterIP": "None"}
    assert service_families(selector_svc(**spec)) == ["IPv4"]
    assert service_families(selector_svc(**spec), [pod("a", "fd00:10:244:1::2")]) == ["IPv6"]
    assert service_families(selector_svc(**spec),
                            [pod("a", "fd00:10:244:1::2", "10.244.1.2")]) == ["IPv4", "IPv6"]


def test_selectorless_endpoints_mirrored_per_family() -> None:
    service = {"metadata": {"name": "db", "namespace": "prod", "uid": "u1"}, "spec": {}}
    endpoints = {"subsets": [
        {"addresses": [{"ip": "10.244.1.5", "hostname": "db-0"},
                       {"ip": "fd00:10:244:1::5", "hostname": "db-0"}],
         "notReadyAddresses": [{"ip": "fd00:10:244:2::6"}, {"ip": "not-an-ip"}],
         "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]},
        {"addresses": [{"ip": "fd00:10:244:3::7"}], "ports": [{"port": 9000}]}]}
    slices = mirrored_slices(service, endpoints)
    assert {n: s["addressType"] for n, s in slices.items()} == {
        "db-mirror-0": "IPv4", "db-mirror-0-ipv6": "IPv6", "db-mirror-1-ipv6": "IPv6"}
    assert [(e["addresses"], e["conditions"]["ready"], e.get("hostname"))
            for e in slices["db-mirror-0-ipv6"]["endpoints"]] == [
        (["fd00:10:244:1::5"], True, "db-0"), (["fd00:10:244:2::6"], False, None)]
    assert slices["db-mirror-0-ipv6"]["ports"] == [{"name": "pg", "port": 5432,
                                                    "protocol": "TCP"}]
    assert [e["addresses"] for e in slices["db-mirror-0"]["endpoints"]] == [["10.244.1.5"]]
    # IPv4 only: the names and bodies are what they always were.
    v4 = mirrored_slices(service, {"subsets": [{"addresses": [{"ip": "10.244.1.5"}]}]})
    assert list(v4) == ["db-mirror-0"] and v4["db-mirror-0"]["addressType"] == "IPv4"
    empty = mirrored_slices(service, {"subsets": [{"ports": [{"port": 1}]}]})
    assert list(empty) == ["db-mirror-0"] and empty["db-mirror-0"]["endpoints"] == []


# --- the engine's chase through a real upstream on 127.0.0.1


class _Upstream(asyncio.DatagramProtocol):
    """UDP: `www.example.test` A answered, anything else TC (ask over TCP), `junk.` garbage.
    TCP: every name answered with 60 A records."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.tcp_queries = self.udp_queries = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.udp_queries += 1
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        name = query.question[0].name.to_text()
        if name == "junk.example.test.":
            out = data[:2] + b"\xff" * 20
        else:
            if name == "www.example.test.":
                reply.answer = [dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.10")]
            else:
                reply.flags |= dns.flags.TC
            out = reply.to_wire()
        assert self.transport is not None
        self.transport.sendto(out, addr)

    async def serve_tcp(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        query = dns.message.from_wire(await reader.readexactly(size))
        self.tcp_queries += 1
        reply = dns.message.make_response(query)
        reply.answer = [dns.rrset.from_text_list(query.question[0].name, 60, "IN", "A",
                                                 [f"198.51.100.{i}" for i in range(1, 61)])]
        out = reply.to_wire()
        writer.write(struct.pack("!H", len(out)) + out)
        await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def _serving() -> AsyncIterator[tuple[_Upstream, int]]:
    """The upstream on 127.0.0.1, UDP and TCP on one port: (it, the port)."""
    loop = asyncio.get_running_loop()
    upstream = _Upstream()
    udp, _ = await loop.create_datagram_endpoint(lambda: upstream,
                                                 local_addr=("127.0.0.1", 0))
    port = udp.get_extra_info("sockname")[1]
    tcp = await asyncio.start_server(upstream.serve_tcp, "127.0.0.1", port)
    try:
        yield upstream, port
    finally:
        udp.close()
        tcp.close()
        await tcp.wait_closed()


async def test_engine_chases_external_names_through_the_upstream() -> None:
    async with _serving() as (upstream, port):
        index = ClusterDnsIndex(ZONE, forwarding=True)
        index.replace_all([svc("ext", type="ExternalName", externalName="www.example.test"),
                           svc("big", type="ExternalName", externalName="big.example.test"),
                           svc("junk", type="ExternalName", externalName="junk.example.test")],
                          [], [], [{"metadata": {"name": "default"}}])
        engine = DnsEngine(index, upstream=("127.0.0.1", port))

        async def ask_engine(name: str, transport: str) -> dns.message.Message:
            wire = await engine.query(dns.message.make_query(name, "A").to_wire(), transport)
            assert wire is not None
            return dns.message.from_wire(wire)

        r = await ask_engine("ext.default.svc.cluster.local", "udp")
        assert [rr.to_text() for rr in r.answer] == [
            "ext.default.svc.cluster.local. 5 IN CNAME www.example.test.",
            "www.example.test. 30 IN A 192.0.2.10"]     # the upstream's 60 s, capped at 30
        assert r.flags & dns.flags.AA
        # The upstream truncates over UDP: asked again over TCP; our UDP client gets TC.
        r = await ask_engine("big.default.svc.cluster.local", "udp")
        assert r.flags & dns.flags.TC and not r.answer and upstream.tcp_queries == 1
        r = await ask_engine("big.default.svc.cluster.local", "tcp")
        assert not r.flags & dns.flags.TC and len(r.answer) == 2 and len(r.answer[1]) == 60
        assert upstream.tcp_queries == 1        # the answer came from the cache this time
        # Garbage from the upstream: the CNAME alone, never a crash.
        r = await ask_engine("junk.default.svc.cluster.local", "udp")
        assert [rr.to_text() for rr in r.answer] == [
            "junk.default.svc.cluster.local. 5 IN CNAME junk.example.test."]
        # The synchronous door does no I/O: the CNAME alone.
        wire = engine.handle_wire(dns.message.make_query(
            "ext.default.svc.cluster.local", "A").to_wire(), "udp")
        assert wire is not None and len(dns.message.from_wire(wire).answer) == 1
        assert engine.stats["chased"] == 5  # the last one found a chase it did not do


async def test_engine_answers_a_relayed_name_again_from_its_cache() -> None:
    async with _serving() as (upstream, port):
        index = ClusterDnsIndex(ZONE, forwarding=True)
        index.replace_all([], [], [], [{"metadata": {"name": "default"}}])
        engine = DnsEngine(index, upstream=("127.0.0.1", port))

        async def ask(name: str, transport: str, **kw: Any) -> dns.message.Message:
            query = dns.message.make_query(name, "A", **kw)
            wire = await engine.query(query.to_wire(), transport)
            assert wire is not None
            reply = dns.message.from_wire(wire)
            assert reply.id == query.id
            return reply

        first = await ask("www.example.test", "udp", use_edns=0)
        assert [rr.to_text() for rr in first.answer] == ["www.example.test. 30 IN A 192.0.2.10"]
        asked = upstream.udp_queries
        # From the cache: this client's own ID, spelling, and no EDNS since it sent none.
        again = await ask("WWW.Example.Test", "udp")
        assert upstream.udp_queries == asked
        assert again.question[0].name.to_text() == "WWW.Example.Test."
        assert again.edns < 0 and again.flags & dns.flags.RA and again.flags & dns.flags.RD
        # (the owner name is compressed against the question, so it comes in its spelling)
        assert [rr.to_text().lower() for rr in again.answer] == [
            "www.example.test. 30 in a 192.0.2.10"]
        # 60 addresses: truncated over UDP (not kept), whole over TCP (kept), and then a UDP
        # client without EDNS gets TC from the cache, with no further question upstream.
        big = await ask("big.example.test", "udp")
        assert big.flags & dns.flags.TC and not big.answer
        whole = await ask("big.example.test", "tcp")
        assert len(whole.answer[0]) == 60 and upstream.tcp_queries == 1
        asked = upstream.udp_queries
        small = await ask("big.example.test", "udp")
        assert small.flags & dns.flags.TC and upstream.udp_queries == asked
        assert upstream.tcp_queries == 1
