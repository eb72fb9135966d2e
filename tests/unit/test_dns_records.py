"""Cluster DNS answers (reference/dns.md 1a-1c, 1e's NXDOMAIN rules), from objects to messages."""

from __future__ import annotations

from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest

from controlplane.dns.records import ClusterDnsIndex
from controlplane.dns.server import DnsEngine

ZONE = "cluster.local"


def ns(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}}


def svc(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def eps(name: str, service: str, endpoints: list[dict[str, Any]],
        ports: list[dict[str, Any]] | None = None, namespace: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports or []}


def pod(name: str, ip: str, namespace: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


SERVICES = [
    svc("kubernetes", clusterIP="10.96.0.1",
        ports=[{"name": "https", "port": 443, "protocol": "TCP"}]),
    svc("kube-dns", "kube-system", clusterIP="10.96.0.10",
        ports=[{"name": "dns", "port": 53, "protocol": "UDP"},
               {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]),
    svc("web", clusterIP="10.96.12.34", ports=[{"name": "http", "port": 80, "protocol": "TCP"},
                                               {"port": 8443, "protocol": "TCP"}]),
    svc("dual", clusterIP="10.96.7.7", clusterIPs=["10.96.7.7", "fd00:96::7"]),
    svc("hl", clusterIP="None", ports=[{"name": "http", "port": 80}]),
    svc("empty-hl", clusterIP="None"),
    svc("ext", type="ExternalName", externalName="foo.example.com"),
    svc("alias", type="ExternalName", externalName="web.default.svc.cluster.local"),
    svc("dns-test-service-2", clusterIP="None", ports=[{"name": "http", "port": 80}]),
]
SLICES = [
    eps("hl-a", "hl", [
        {"addresses": ["10.244.1.5"], "hostname": "web-0", "conditions": {"ready": True}},
        {"addresses": ["10.244.2.6"], "conditions": {}},           # nil ready counts as ready
        {"addresses": ["10.244.2.7"], "conditions": {"ready": False}},
    ], [{"name": "http", "port": 8080, "protocol": "TCP"}]),
    eps("empty-hl-a", "empty-hl", [{"addresses": ["10.244.3.3"], "conditions": {"ready": False}}]),
    eps("dt-a", "dns-test-service-2", [
        {"addresses": ["10.244.1.9"], "hostname": "dns-querier-2", "conditions": {"ready": True},
         "targetRef": {"kind": "Pod", "name": "dns-querier-2"}}]),
]
PODS = [pod("my-pod", "10.244.1.20"), pod("web", "10.244.1.21")]
NAMESPACES = [ns("default"), ns("kube-system"), ns("other")]


def make_index(strict: bool = False) -> ClusterDnsIndex:
    index = ClusterDnsIndex(ZONE, strict=strict)
    index.replace_all(SERVICES, SLICES, PODS, NAMESPACES)
    return index


@pytest.fixture
def index() -> ClusterDnsIndex:
    return make_index()


def ask(index: ClusterDnsIndex, name: str, rdtype: str = "A", *, transport: str = "udp",
        use_edns: int = -1, payload: int = 1232) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=use_edns, payload=payload)
    return index.answer(query, transport=transport)


def data(response: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in response.answer for rd in rrset)


def assert_negative(response: dns.message.Message, rcode: int) -> None:
    assert response.rcode() == rcode, dns.rcode.to_text(response.rcode())
    assert not response.answer
    assert len(response.authority) == 1 and len(response.authority[0]) == 1
    soa = response.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA and soa.name == dns.name.from_text(ZONE)
    text = soa[0].to_text().split()
    assert text[:2] == ["ns.dns.cluster.local.", "hostmaster.cluster.local."]
    assert text[3:] == ["7200", "1800", "86400", "5"] and soa.ttl == 5
    assert response.flags & dns.flags.AA


# --- 1a: spec records


def test_dns_version_txt(index: ClusterDnsIndex) -> None:
    r = ask(index, "dns-version.cluster.local", "TXT")
    assert data(r) == ['"1.1.0"'] and r.answer[0].ttl == 28800
    assert_negative(ask(index, "dns-version.cluster.local", "A"), dns.rcode.NOERROR)


def test_clusterip_service_a_and_nodata_aaaa(index: ClusterDnsIndex) -> None:
    r = ask(index, "web.default.svc.cluster.local")
    assert r.rcode() == dns.rcode.NOERROR and data(r) == ["10.96.12.34"]
    assert r.answer[0].ttl == 5 and r.flags & dns.flags.AA
    assert_negative(ask(index, "web.default.svc.cluster.local", "AAAA"), dns.rcode.NOERROR)
    assert_negative(ask(index, "web.default.svc.cluster.local", "TXT"), dns.rcode.NOERROR)
    assert_negative(ask(index, "web.default.svc.cluster.local", "PTR"), dns.rcode.NOERROR)


def test_dual_stack_service(index: ClusterDnsIndex) -> None:
    assert data(ask(index, "dual.default.svc.cluster.local")) == ["10.96.7.7"]
    assert data(ask(index, "dual.default.svc.cluster.local", "AAAA")) == ["fd00:96::7"]
    ptr = ask(index, dns.reversename.from_address("fd00:96::7").to_text(), "PTR")
    assert data(ptr) == ["dual.default.svc.cluster.local."]


def test_srv_for_named_ports_only(index: ClusterDnsIndex) -> None:
    r = ask(index, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert data(r) == ["0 100 80 web.default.svc.cluster.local."]
    assert [rr.to_text() for rr in r.additional] == [
        "web.default.svc.cluster.local. 5 IN A 10.96.12.34"]
    assert_negative(ask(index, "_8443._tcp.web.default.svc.cluster.local", "SRV"),
                    dns.rcode.NXDOMAIN)
    assert_negative(ask(index, "_http._udp.web.default.svc.cluster.local", "SRV"),
                    dns.rcode.NXDOMAIN)
    # The SRV name exists: other types are NODATA; `_tcp.<svc>` is an empty non-terminal.
    assert_negative(ask(index, "_http._tcp.web.default.svc.cluster.local", "A"),
                    dns.rcode.NOERROR)
    assert_negative(ask(index, "_tcp.web.default.svc.cluster.local", "A"), dns.rcode.NOERROR)
    r = ask(index, "_dns._udp.kube-dns.kube-system.svc.cluster.local", "SRV")
    assert data(r) == ["0 100 53 kube-dns.kube-system.svc.cluster.local."]


def test_ptr_for_cluster_ip(index: ClusterDnsIndex) -> None:
    r = ask(index, "34.12.96.10.in-addr.arpa", "PTR")
    assert data(r) == ["web.default.svc.cluster.local."] and r.flags & dns.flags.AA
    r = ask(index, "1.0.96.10.in-addr.arpa", "PTR")
    assert data(r) == ["kubernetes.default.svc.cluster.local."]
    unknown = ask(index, "99.99.96.10.in-addr.arpa", "PTR")
    assert unknown.rcode() == dns.rcode.NXDOMAIN
    assert unknown.authority[0].name == dns.name.from_text("in-addr.arpa")
    # An ancestor of a PTR name is an empty non-terminal.
    assert ask(index, "96.10.in-addr.arpa", "PTR").rcode() == dns.rcode.NOERROR


def test_headless_ready_endpoints_only(index: ClusterDnsIndex) -> None:
    r = ask(index, "hl.default.svc.cluster.local")
    assert data(r) == ["10.244.1.5", "10.244.2.6"]
    assert data(ask(index, "web-0.hl.default.svc.cluster.local")) == ["10.244.1.5"]
    # No hostname: named by its dashed address, as CoreDNS does.
    assert data(ask(index, "10-244-2-6.hl.default.svc.cluster.local")) == ["10.244.2.6"]
    assert_negative(ask(index, "10-244-2-7.hl.default.svc.cluster.local"), dns.rcode.NXDOMAIN)
    assert_negative(ask(index, "nobody.hl.default.svc.cluster.local"), dns.rcode.NXDOMAIN)
    assert_negative(ask(index, "hl.default.svc.cluster.local", "AAAA"), dns.rcode.NOERROR)


def test_headless_without_ready_endpoints_is_nxdomain(index: ClusterDnsIndex) -> None:
    assert_negative(ask(index, "empty-hl.default.svc.cluster.local"), dns.rcode.NXDOMAIN)
    assert_negative(ask(index, "empty-hl.default.svc.cluster.local", "AAAA"), dns.rcode.NXDOMAIN)


def test_headless_publish_not_ready(index: ClusterDnsIndex) -> None:
    index.apply("Service", "MODIFIED", svc("empty-hl", clusterIP="None",
                                           publishNotReadyAddresses=True))
    assert data(ask(index, "empty-hl.default.svc.cluster.local")) == ["10.244.3.3"]


def test_headless_srv_and_ptr(index: ClusterDnsIndex) -> None:
    r = ask(index, "_http._tcp.hl.default.svc.cluster.local", "SRV")
    assert data(r) == ["0 50 8080 10-244-2-6.hl.default.svc.cluster.local.",
                       "0 50 8080 web-0.hl.default.svc.cluster.local."]
    assert sorted(rr.to_text() for rr in r.additional) == [
        "10-244-2-6.hl.default.svc.cluster.local. 5 IN A 10.244.2.6",
        "web-0.hl.default.svc.cluster.local. 5 IN A 10.244.1.5"]
    assert data(ask(index, "5.1.244.10.in-addr.arpa", "PTR")) == [
        "web-0.hl.default.svc.cluster.local."]
    assert data(ask(index, "6.2.244.10.in-addr.arpa", "PTR")) == [
        "10-244-2-6.hl.default.svc.cluster.local."]
    assert ask(index, "7.2.244.10.in-addr.arpa", "PTR").rcode() == dns.rcode.NXDOMAIN


def test_external_name_cname(index: ClusterDnsIndex) -> None:
    r = ask(index, "ext.default.svc.cluster.local")
    assert r.rcode() == dns.rcode.NOERROR
    assert [rr.to_text() for rr in r.answer] == [
        "ext.default.svc.cluster.local. 5 IN CNAME foo.example.com."]
    assert data(ask(index, "ext.default.svc.cluster.local", "CNAME")) == ["foo.example.com."]
    # A target inside the zone is chased, as CoreDNS does.
    r = ask(index, "alias.default.svc.cluster.local")
    assert [rr.to_text() for rr in r.answer] == [
        "alias.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local.",
        "web.default.svc.cluster.local. 5 IN A 10.96.12.34"]
    assert_negative(ask(index, "x.ext.default.svc.cluster.local"), dns.rcode.NXDOMAIN)


def test_external_name_update_and_type_change(index: ClusterDnsIndex) -> None:
    index.apply("Service", "MODIFIED", svc("ext", type="ExternalName",
                                           externalName="bar.example.com"))
    assert data(ask(index, "ext.default.svc.cluster.local", "CNAME")) == ["bar.example.com."]
    index.apply("Service", "MODIFIED", svc("ext", type="ClusterIP", clusterIP="10.96.9.9"))
    assert data(ask(index, "ext.default.svc.cluster.local")) == ["10.96.9.9"]


# --- 1b: pod records


def test_pod_a_records(index: ClusterDnsIndex) -> None:
    assert data(ask(index, "10-244-1-20.default.pod.cluster.local")) == ["10.244.1.20"]
    assert_negative(ask(index, "10-244-1-20.nope.pod.cluster.local"), dns.rcode.NXDOMAIN)
    assert_negative(ask(index, "not-an-ip.default.pod.cluster.local"), dns.rcode.NXDOMAIN)
    assert_negative(ask(index, "default.pod.cluster.local"), dns.rcode.NOERROR)
    assert_negative(ask(index, "pod.cluster.local"), dns.rcode.NOERROR)
    assert_negative(ask(index, "x.10-244-1-20.default.pod.cluster.local"), dns.rcode.NXDOMAIN)


def test_pod_hostname_subdomain(index: ClusterDnsIndex) -> None:
    assert data(ask(index, "dns-querier-2.dns-test-service-2.default.svc.cluster.local")) == [
        "10.244.1.9"]
    assert data(ask(index, "dns-test-service-2.default.svc.cluster.local")) == ["10.244.1.9"]


def test_podnet_extension_pod_name_under_svc(index: ClusterDnsIndex) -> None:
    assert data(ask(index, "my-pod.default.svc.cluster.local")) == ["10.244.1.20"]
    # A Service of that name wins over the pod.
    assert data(ask(index, "web.default.svc.cluster.local")) == ["10.96.12.34"]
    assert_negative(ask(index, "my-pod.other.svc.cluster.local"), dns.rcode.NXDOMAIN)


def test_strict_mode_has_no_extension() -> None:
    strict = make_index(strict=True)
    assert_negative(ask(strict, "my-pod.default.svc.cluster.local"), dns.rcode.NXDOMAIN)
    assert data(ask(strict, "web.default.svc.cluster.local")) == ["10.96.12.34"]


# --- 1c: negative answers, apex, case, transport


@pytest.mark.parametrize("name", [
    "nosuch.default.svc.cluster.local", "web.nons.svc.cluster.local", "foo.cluster.local",
    "a.b.c.web.default.svc.cluster.local", "x.web.default.svc.cluster.local",
    "web.default.svc.svc.cluster.local", "dns.x.cluster.local"])
def test_nxdomain_cases(index: ClusterDnsIndex, name: str) -> None:
    assert_negative(ask(index, name), dns.rcode.NXDOMAIN)


@pytest.mark.parametrize("name,rdtype", [
    ("svc.cluster.local", "A"), ("default.svc.cluster.local", "A"),
    ("kube-system.svc.cluster.local", "SOA"), ("default.svc.cluster.local", "NS"),
    ("cluster.local", "A"), ("cluster.local", "TXT")])
def test_nodata_cases(index: ClusterDnsIndex, name: str, rdtype: str) -> None:
    assert_negative(ask(index, name, rdtype), dns.rcode.NOERROR)


def test_apex_soa_and_ns(index: ClusterDnsIndex) -> None:
    r = ask(index, "cluster.local", "SOA")
    assert r.answer[0].rdtype == dns.rdatatype.SOA and not r.authority
    r = ask(index, "cluster.local", "NS")
    assert data(r) == ["kube-dns.kube-system.svc.cluster.local."]
    assert [rr.to_text() for rr in r.additional] == [
        "kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.10"]
    bare = ClusterDnsIndex(ZONE)
    bare.replace_all([], [], [], [])
    r = ask(bare, "cluster.local", "NS")
    assert data(r) == ["ns.dns.cluster.local."]
    assert data(ask(bare, "ns.dns.cluster.local")) == ["10.96.0.10"]


def test_case_is_matched_insensitively_and_echoed(index: ClusterDnsIndex) -> None:
    r = ask(index, "WeB.DeFault.SVC.Cluster.Local")
    assert r.answer[0].name.to_text() == "WeB.DeFault.SVC.Cluster.Local."
    assert data(r) == ["10.96.12.34"]
    r = ask(index, "NoSuch.default.svc.cluster.local")
    assert r.question[0].name.to_text() == "NoSuch.default.svc.cluster.local."


def test_big_headless_answer_sets_tc_over_udp_only(index: ClusterDnsIndex) -> None:
    many = [{"addresses": [f"10.244.5.{i}"], "conditions": {"ready": True}}
            for i in range(1, 80)]
    index.apply("Service", "ADDED", svc("big", clusterIP="None"))
    index.apply("EndpointSlice", "ADDED", eps("big-a", "big", many))
    udp = ask(index, "big.default.svc.cluster.local")
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = ask(index, "big.default.svc.cluster.local", transport="tcp")
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 79
    edns = ask(index, "big.default.svc.cluster.local", use_edns=0, payload=4096)
    assert not edns.flags & dns.flags.TC and len(edns.answer[0]) == 79
    small = ask(index, "web.default.svc.cluster.local")
    assert not small.flags & dns.flags.TC


def test_names_outside_the_zone(index: ClusterDnsIndex) -> None:
    r = ask(index, "example.com")
    assert r.rcode() == dns.rcode.NXDOMAIN and not r.flags & dns.flags.AA
    r = ask(index, "example.com", use_edns=0)
    assert any(isinstance(o, dns.edns.EDEOption) for o in r.options)


def test_servfail_before_first_sync() -> None:
    index = ClusterDnsIndex(ZONE)
    assert ask(index, "web.default.svc.cluster.local").rcode() == dns.rcode.SERVFAIL
    index.replace_all(SERVICES, SLICES, PODS, NAMESPACES)
    assert ask(index, "web.default.svc.cluster.local").rcode() == dns.rcode.NOERROR


def test_incremental_updates(index: ClusterDnsIndex) -> None:
    index.apply("Service", "ADDED", svc("new", "other", clusterIP="10.96.50.50"))
    assert data(ask(index, "new.other.svc.cluster.local")) == ["10.96.50.50"]
    assert data(ask(index, "50.50.96.10.in-addr.arpa", "PTR")) == [
        "new.other.svc.cluster.local."]
    index.apply("Service", "DELETED", svc("new", "other", clusterIP="10.96.50.50"))
    assert ask(index, "new.other.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
    assert ask(index, "50.50.96.10.in-addr.arpa", "PTR").rcode() == dns.rcode.NXDOMAIN
    index.apply("EndpointSlice", "DELETED", SLICES[0])
    assert ask(index, "hl.default.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
    index.apply("Namespace", "DELETED", ns("other"))
    assert ask(index, "other.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN


def test_other_opcodes_classes_and_transfers(index: ClusterDnsIndex) -> None:
    q = dns.message.make_query("web.default.svc.cluster.local", "A")
    q.set_opcode(dns.opcode.NOTIFY)
    assert index.answer(q).rcode() == dns.rcode.NOTIMP
    q = dns.message.make_query("web.default.svc.cluster.local", "A", rdclass="CH")
    assert index.answer(q).rcode() == dns.rcode.REFUSED
    assert ask(index, "cluster.local", "AXFR").rcode() == dns.rcode.REFUSED
    q = dns.message.make_query("web.default.svc.cluster.local", "A", use_edns=1)
    assert index.answer(q).rcode() == dns.rcode.BADVERS


# --- the wire engine: garbage in, FORMERR or silence out; the cache never goes stale


@pytest.mark.parametrize("garbage,expect_formerr", [
    (b"", False), (b"\x12", False), (b"\x12\x34\x01\x00\x00\x01", False),
    # header + a question whose label runs off the end
    (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fabc", True),
    # a compression pointer to itself
    (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01", True),
    # 65535 questions claimed, one present
    (b"\x12\x34\x01\x00\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01", True),
    # a bad label type (0x40)
    (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x41abc\x00\x00\x01\x00\x01", True),
    # trailing junk after a valid query
    (b"\x12\x34" + dns.message.make_query("web.default.svc.cluster.local", "A").to_wire()[2:]
     + b"junk", True),
    # a malformed *response* is dropped (never answer responses)
    (b"\x12\x34\x81\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fabc", False),
])
def test_malformed_packets(index: ClusterDnsIndex, garbage: bytes, expect_formerr: bool) -> None:
    engine = DnsEngine(index)
    out = engine.handle_wire(garbage, "udp")
    if expect_formerr:
        assert out is not None
        reply = dns.message.from_wire(out)
        assert reply.rcode() == dns.rcode.FORMERR and reply.id == 0x1234
    else:
        assert out is None
    # and it keeps answering
    ok = engine.handle_wire(dns.message.make_query("web.default.svc.cluster.local", "A")
                            .to_wire(), "udp")
    assert ok is not None and data(dns.message.from_wire(ok)) == ["10.96.12.34"]


def test_engine_cache_patches_id_and_follows_changes(index: ClusterDnsIndex) -> None:
    engine = DnsEngine(index)
    q1 = dns.message.make_query("web.default.svc.cluster.local", "A")
    first = dns.message.from_wire(engine.handle_wire(q1.to_wire(), "udp") or b"")
    q2 = dns.message.make_query("web.default.svc.cluster.local", "A")
    q2.id = (q1.id + 1) % 65536
    second = dns.message.from_wire(engine.handle_wire(q2.to_wire(), "udp") or b"")
    assert engine.stats["cache_hits"] == 1
    assert (first.id, second.id) == (q1.id, q2.id) and data(first) == data(second)
    index.apply("Service", "MODIFIED", svc("web", clusterIP="10.96.12.35"))
    third = dns.message.from_wire(engine.handle_wire(q2.to_wire(), "udp") or b"")
    assert data(third) == ["10.96.12.35"]
