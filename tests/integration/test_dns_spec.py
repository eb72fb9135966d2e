"""Cluster DNS to the letter of the Kubernetes DNS spec, checked with real `dig` against a
running cluster (reference/dns.md 1a-1c; issue 12): AAAA exactly as A and NODATA for the other
family, headless SRV with one target per ready endpoint and the addresses in Additional, PTR
under ip6.arpa, selector-less Endpoints mirrored per family, SOA alone at the apex, and
`--dns-upstream`: names outside the cluster forwarded, ExternalName CNAMEs followed, TC over
UDP when the followed answer does not fit, the whole answer over TCP.

The upstream is a small DNS server this module starts on 127.0.0.1 (dnspython messages; UDP
and TCP on one port). IPv6 data comes from selector-less EndpointSlices/Endpoints, so these
tests do not need dual-stack pods; `test_dual_stack_service_*` needs the control plane's
dual-stack Service allocation (`PODNET_DUAL_STACK=1`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset
import pytest
from harness import RunningCluster, start_cluster, stop_cluster, wait_for

DIG = shutil.which("dig")
pytestmark = pytest.mark.skipif(DIG is None, reason="dig is not installed")


# ------------------------------------------------------------------ the upstream

Records = Mapping[str, Mapping[str, list[str]]]  # name -> type -> rdata texts


class Upstream:
    def __init__(self, records: Records, ttl: int = 60) -> None:
        self.records = {dns.name.from_text(n): dict(types) for n, types in records.items()}
        self.ttl = ttl
        self.queries: Counter[str] = Counter()  # "udp"/"tcp"
        self.asked: list[tuple[str, str, str]] = []  # (transport, name, type)
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # One port number for both transports: bind UDP, then TCP on the same number.
        for _ in range(20):
            self._udp.bind(("127.0.0.1", 0))
            port = self._udp.getsockname()[1]
            try:
                self._tcp.bind(("127.0.0.1", port))
                break
            except OSError:
                self._udp.close()
                self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.port: int = self._udp.getsockname()[1]
        self._tcp.listen(16)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve_udp, daemon=True),
                         threading.Thread(target=self._serve_tcp, daemon=True)]

    def start(self) -> Upstream:
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._udp.close()
        with contextlib.suppress(OSError):
            self._tcp.shutdown(socket.SHUT_RDWR)
        self._tcp.close()

    def answer(self, wire: bytes, transport: str) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        q = query.question[0]
        self.queries[transport] += 1
        self.asked.append((transport, q.name.to_text(), dns.rdatatype.to_text(q.rdtype)))
        name = q.name
        for _ in range(8):
            types = self.records.get(name)
            if types is None:
                if name == q.name:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                    response.authority.append(dns.rrset.from_text(   # RFC 2308: the SOA
                        "example.test.", self.ttl, "IN", "SOA",
                        f"ns.example.test. admin.example.test. 1 7200 1800 86400 {self.ttl}"))
                break
            wanted = dns.rdatatype.to_text(q.rdtype)
            if wanted in types:
                response.answer.append(dns.rrset.from_text_list(
                    name, self.ttl, dns.rdataclass.IN, wanted, types[wanted]))
                break
            if "CNAME" not in types:
                break
            response.answer.append(dns.rrset.from_text_list(
                name, self.ttl, dns.rdataclass.IN, "CNAME", types["CNAME"]))
            name = dns.name.from_text(types["CNAME"][0])
        out = response.to_wire()
        limit = max(512, query.payload) if query.edns >= 0 else 512
        if transport == "udp" and len(out) > limit:
            response.answer = []
            response.flags |= dns.flags.TC
            out = response.to_wire()
        return out

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._udp.recvfrom(65535)
            except OSError:
                return
            out = self.answer(data, "udp")
            if out is not None:
                with contextlib.suppress(OSError):
                    self._udp.sendto(out, addr)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_conn, args=(conn,), daemon=True).start()

    def _serve_conn(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                while True:
                    prefix = _read(conn, 2)
                    if prefix is None:
                        return
                    data = _read(conn, struct.unpack("!H", prefix)[0])
                    if data is None:
                        return
                    out = self.answer(data, "tcp")
                    if out is None:
                        return
                    conn.sendall(struct.pack("!H", len(out)) + out)
            except OSError:
                return


def _read(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf



UPSTREAM_RECORDS: dict[str, dict[str, list[str]]] = {
    "www.example.test.": {"A": ["192.0.2.10"], "AAAA": ["2001:db8::10"]},
    "alias.example.test.": {"CNAME": ["www.example.test."]},
    "cached.example.test.": {"A": ["192.0.2.20"]},
    "fwd.example.test.": {"A": ["192.0.2.30"]},
    # 60 addresses: more than 512 bytes (TC for a client without EDNS), less than 4096.
    "big.example.test.": {"A": [f"198.51.100.{i}" for i in range(1, 61)]},
}
ZONE = "cluster.local"
HTTP = [{"name": "http", "port": 8080, "protocol": "TCP"}]


class Env:
    """Upstream + cluster for the module."""

    def __init__(self, cluster: RunningCluster, upstream: Upstream) -> None:
        self.cluster, self.upstream = cluster, upstream


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    upstream = Upstream(UPSTREAM_RECORDS).start()
    # The control plane takes every flag from PODNET_* too; `podnet up` passes our
    # environment on to it.
    saved = {k: os.environ.get(k) for k in ("PODNET_DNS_UPSTREAM", "PODNET_DUAL_STACK")}
    os.environ["PODNET_DNS_UPSTREAM"] = f"127.0.0.1:{upstream.port}"
    os.environ["PODNET_DUAL_STACK"] = "1"
    try:
        cluster = start_cluster(Path(tmp_path_factory.mktemp("dnsspec")), 1)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        _objects(cluster)
        yield Env(cluster, upstream)
    finally:
        stop_cluster(cluster)
        upstream.close()


def _create(c: RunningCluster, path: str, body: dict[str, Any]) -> dict[str, Any]:
    code, answer = c.api("POST", path, body)
    assert code == 201, answer
    return dict(answer)


def _svc(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def _ep(ip: str, hostname: str | None = None, ready: bool = True) -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": [ip], "conditions": {"ready": ready}}
    if hostname:
        ep["hostname"] = hostname
    return ep


SERVICES = "/api/v1/namespaces/default/services"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


def _objects(c: RunningCluster) -> None:
    # Headless, selector-less, IPv6 endpoints in a hand-made EndpointSlice.
    _create(c, SERVICES, _svc("hl6", clusterIP="None", ports=[{"name": "http", "port": 80}]))
    _create(c, SLICES, {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "hl6-a", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "hl6"}},
        "addressType": "IPv6",
        "endpoints": [_ep("fd00:10:244:1::5"), _ep("fd00:10:244:2::7", "web-1"),
                      _ep("fd00:10:244:3::9", ready=False)],
        "ports": HTTP})
    # A single-stack IPv4 ClusterIP Service: AAAA is NODATA.
    _create(c, SERVICES, _svc("web4", clusterIP="10.96.44.44",
                              ports=[{"name": "http", "port": 80}]))
    for name, target in (("ext", "www.example.test"), ("alias", "alias.example.test."),
                         ("big", "big.example.test"), ("gone", "nxdomain.example.test"),
                         ("cached", "cached.example.test")):
        _create(c, SERVICES, _svc(name, type="ExternalName", externalName=target))


def dig(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    assert DIG is not None
    port = int(env.cluster.info["dns"]["port"])
    result = subprocess.run([DIG, "@127.0.0.1", "-p", str(port), "+time=3", "+tries=1",
                             *args], capture_output=True, text=True, timeout=15)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def section(env: Env, which: str, *args: str) -> list[tuple[str, str, str]]:
    """(owner, type, data) of one section (`answer`, `additional`, `authority`)."""
    out = dig(env, "+noall", f"+{which}", *args).stdout
    rows = []
    for line in out.splitlines():
        if not line or line.startswith(";"):
            continue
        name, _ttl, _cls, rdtype, rdata = line.split(None, 4)
        if rdtype != "OPT":
            rows.append((name.lower(), rdtype, rdata.strip()))
    return sorted(rows)


def header(env: Env, *args: str) -> tuple[str, set[str], dict[str, int], str]:
    """(status, flags, section counts, whole output) of one query."""
    out = dig(env, *args).stdout
    status = re.search(r"status: ([A-Z]+)", out)
    flags = re.search(r";; flags: ([a-z ]*);", out)
    counts = re.search(r"QUERY: \d+, ANSWER: (\d+), AUTHORITY: (\d+), ADDITIONAL: (\d+)", out)
    assert status and flags and counts, out
    return (status.group(1), set(flags.group(1).split()),
            dict(zip(("answer", "authority", "additional"), map(int, counts.groups()),
                     strict=True)), out)


def fqdn(name: str) -> str:
    return f"{name}.default.svc.{ZONE}"


def assert_nodata(env: Env, *args: str) -> None:
    status, flags, counts, out = header(env, "+noedns", *args)
    assert status == "NOERROR" and "aa" in flags, out
    assert counts == {"answer": 0, "authority": 1, "additional": 0}, out
    (soa,) = section(env, "authority", "+noedns", *args)
    assert soa[0] == f"{ZONE}." and soa[1] == "SOA", soa


# ------------------------------------------------------------------ AAAA / NODATA


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_headless_aaaa_and_nodata_for_a(env: Env, transport: str) -> None:
    assert section(env, "answer", transport, fqdn("hl6"), "AAAA") == [
        (fqdn("hl6") + ".", "AAAA", "fd00:10:244:1::5"),
        (fqdn("hl6") + ".", "AAAA", "fd00:10:244:2::7")]
    assert_nodata(env, transport, fqdn("hl6"), "A")


def test_endpoint_names_aaaa(env: Env) -> None:
    assert section(env, "answer", f"web-1.{fqdn('hl6')}", "AAAA") == [
        (f"web-1.{fqdn('hl6')}.", "AAAA", "fd00:10:244:2::7")]
    # No hostname: the dashed address, spelled as CoreDNS does.
    assert section(env, "answer", f"fd00-10-244-1--5.{fqdn('hl6')}", "AAAA") == [
        (f"fd00-10-244-1--5.{fqdn('hl6')}.", "AAAA", "fd00:10:244:1::5")]
    assert_nodata(env, f"web-1.{fqdn('hl6')}", "A")
    # The not-ready endpoint has no name.
    assert header(env, f"fd00-10-244-3--9.{fqdn('hl6')}", "AAAA")[0] == "NXDOMAIN"


def test_ipv4_service_aaaa_is_nodata(env: Env) -> None:
    assert section(env, "answer", fqdn("web4")) == [(fqdn("web4") + ".", "A", "10.96.44.44")]
    assert_nodata(env, fqdn("web4"), "AAAA")


def test_pod_name_aaaa(env: Env) -> None:
    name = f"fd00-10-244-1--20.default.pod.{ZONE}"
    assert section(env, "answer", name, "AAAA") == [(name + ".", "AAAA", "fd00:10:244:1::20")]
    assert_nodata(env, name, "A")


# ------------------------------------------------------------------ SRV + Additional, PTR


def test_headless_srv_one_target_per_ready_endpoint(env: Env) -> None:
    name = f"_http._tcp.{fqdn('hl6')}"
    answer = section(env, "answer", name, "SRV")
    targets = sorted(row[2].split()[3] for row in answer)
    assert targets == [f"fd00-10-244-1--5.{fqdn('hl6')}.", f"web-1.{fqdn('hl6')}."]
    assert {row[2].split()[2] for row in answer} == {"8080"}
    assert section(env, "additional", name, "SRV") == [
        (f"fd00-10-244-1--5.{fqdn('hl6')}.", "AAAA", "fd00:10:244:1::5"),
        (f"web-1.{fqdn('hl6')}.", "AAAA", "fd00:10:244:2::7")]


def test_ptr_under_ip6_arpa(env: Env) -> None:
    out = section(env, "answer", "-x", "fd00:10:244:2::7")
    nibbles = "7.0.0.0." + "0.0.0.0." * 3 + "2.0.0.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa."
    assert out == [(nibbles, "PTR", f"web-1.{fqdn('hl6')}.")]
    assert section(env, "answer", "-x", "fd00:10:244:1::5") == [
        (dns.reversename.from_address("fd00:10:244:1::5").to_text(), "PTR",
         f"fd00-10-244-1--5.{fqdn('hl6')}.")]
    # Not ready: no PTR.
    assert header(env, "-x", "fd00:10:244:3::9")[0] == "NXDOMAIN"


# ------------------------------------------------------------------ mirroring per family


def test_selectorless_endpoints_mirrored_per_family(env: Env) -> None:
    c = env.cluster
    _create(c, SERVICES, _svc("mix", clusterIP="None", ports=[{"name": "http", "port": 80}]))
    _create(c, "/api/v1/namespaces/default/endpoints", {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "mix"},
        "subsets": [{"addresses": [{"ip": "10.244.1.9", "hostname": "db-0"},
                                   {"ip": "fd00:10:244:1::9", "hostname": "db-0"}],
                     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]})

    def mirrored() -> dict[str, list[list[str]]] | None:
        code, body = c.api("GET", SLICES + "?labelSelector=kubernetes.io/service-name%3Dmix")
        if code != 200:
            return None
        got = {es["addressType"]: [ep["addresses"] for ep in es.get("endpoints") or []]
               for es in body["items"]}
        return got if len(got) == 2 else None

    assert wait_for(mirrored, 10, what="IPv4 and IPv6 mirrored slices") == {
        "IPv4": [["10.244.1.9"]], "IPv6": [["fd00:10:244:1::9"]]}
    assert section(env, "answer", fqdn("mix")) == [(fqdn("mix") + ".", "A", "10.244.1.9")]
    assert section(env, "answer", fqdn("mix"), "AAAA") == [
        (fqdn("mix") + ".", "AAAA", "fd00:10:244:1::9")]
    srv = f"_http._tcp.{fqdn('mix')}"
    assert [row[2] for row in section(env, "answer", srv, "SRV")] == [
        f"0 100 8080 db-0.{fqdn('mix')}."]
    assert section(env, "additional", srv, "SRV") == [
        (f"db-0.{fqdn('mix')}.", "A", "10.244.1.9"),
        (f"db-0.{fqdn('mix')}.", "AAAA", "fd00:10:244:1::9")]


# ------------------------------------------------------------------ SOA at the apex


def test_soa_at_apex_answers_alone(env: Env) -> None:
    status, flags, counts, out = header(env, "+noedns", ZONE, "SOA")
    assert status == "NOERROR" and "aa" in flags, out
    assert counts == {"answer": 1, "authority": 0, "additional": 0}, out
    (soa,) = section(env, "answer", ZONE, "SOA")
    assert soa[1] == "SOA" and soa[2].startswith(f"ns.dns.{ZONE}. hostmaster.{ZONE}. ")


# ------------------------------------------------------------------ --dns-upstream


def test_names_outside_the_cluster_are_forwarded(env: Env) -> None:
    for transport in ("+notcp", "+tcp"):
        assert section(env, "answer", transport, "www.example.test") == [
            ("www.example.test.", "A", "192.0.2.10")]


def test_forwarded_answers_are_cached_as_coredns_cache_30_keeps_them(env: Env) -> None:
    def ask(*args: str) -> tuple[int, str]:
        out = dig(env, "+noall", "+answer", "+comments", *args, "fwd.example.test").stdout
        (line,) = [x for x in out.splitlines() if x and not x.startswith(";")]
        assert re.search(r"id: \d+", out), out
        return int(line.split()[1]), line.split()[4]

    first, second, over_tcp = ask("+notcp"), ask("+notcp"), ask("+tcp")
    # The upstream said 60 s: at most 30, counting down, the same address every time...
    assert 0 < over_tcp[0] <= second[0] <= first[0] <= 30
    assert {first[1], second[1], over_tcp[1]} == {"192.0.2.30"}
    # ...and the upstream was asked once.
    asked = [a for a in env.upstream.asked if a[1] == "fwd.example.test."]
    assert asked == [("udp", "fwd.example.test.", "A")], asked
    # A name it does not know is NXDOMAIN, with its SOA: that is cached too (RFC 2308).
    for _ in range(2):
        assert header(env, "nope.example.test")[0] == "NXDOMAIN"
    assert [a for a in env.upstream.asked if a[1] == "nope.example.test."] == [
        ("udp", "nope.example.test.", "A")]


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_external_name_follows_the_cname_through_the_upstream(env: Env,
                                                              transport: str) -> None:
    name = fqdn("ext") + "."
    assert section(env, "answer", transport, fqdn("ext")) == [
        (name, "CNAME", "www.example.test."), ("www.example.test.", "A", "192.0.2.10")]
    assert section(env, "answer", transport, fqdn("ext"), "AAAA") == [
        (name, "CNAME", "www.example.test."), ("www.example.test.", "AAAA", "2001:db8::10")]
    # The upstream's own CNAME chain comes along.
    assert section(env, "answer", transport, fqdn("alias")) == [
        (fqdn("alias") + ".", "CNAME", "alias.example.test."),
        ("alias.example.test.", "CNAME", "www.example.test."),
        ("www.example.test.", "A", "192.0.2.10")]
    # Asking for the CNAME itself, or for a target the upstream does not know: CNAME alone.
    assert section(env, "answer", transport, fqdn("ext"), "CNAME") == [
        (name, "CNAME", "www.example.test.")]
    status, flags, _, out = header(env, transport, fqdn("gone"))
    assert status == "NOERROR" and "aa" in flags, out
    assert section(env, "answer", transport, fqdn("gone")) == [
        (fqdn("gone") + ".", "CNAME", "nxdomain.example.test.")]


def test_a_chased_answer_is_cached_as_coredns_cache_30_keeps_it(env: Env) -> None:
    def answer_ttls() -> dict[str, int]:
        out = dig(env, "+noall", "+answer", fqdn("cached")).stdout
        return {line.split()[0].lower(): int(line.split()[1]) for line in out.splitlines()
                if line and not line.startswith(";")}
    first = answer_ttls()
    second = answer_ttls()
    assert set(first) == set(second) == {fqdn("cached") + ".", "cached.example.test."}
    # The upstream said 60 s; the cache keeps it at most 30 s and counts down from there.
    assert 0 < second["cached.example.test."] <= first["cached.example.test."] <= 30
    asked = [a for a in env.upstream.asked if a[1] == "cached.example.test."]
    assert asked == [("udp", "cached.example.test.", "A")], asked


def test_external_name_too_big_for_udp_sets_tc_then_tcp_has_it_all(env: Env) -> None:
    before = env.upstream.queries["tcp"]
    # No EDNS: 512 bytes. `+ignore` shows the truncated reply instead of retrying.
    status, flags, counts, out = header(env, "+noedns", "+ignore", fqdn("big"))
    assert status == "NOERROR" and "tc" in flags and counts["answer"] == 0, out
    # The upstream truncated our UDP question too: the server asked it again over TCP.
    assert env.upstream.queries["tcp"] > before
    # dig's own retry over TCP gets the CNAME and all 60 addresses.
    status, flags, counts, out = header(env, "+noedns", fqdn("big"))
    assert "Truncated, retrying in TCP mode" in out and "tc" not in flags, out
    assert counts["answer"] == 61, out
    full = section(env, "answer", "+tcp", fqdn("big"))
    assert full[0] == (fqdn("big") + ".", "CNAME", "big.example.test.")
    assert sorted(row[2] for row in full[1:]) == sorted(UPSTREAM_RECORDS["big.example.test."]["A"])
    # A client whose EDNS payload size takes it all gets it all over UDP.
    status, flags, counts, out = header(env, "+notcp", "+bufsize=1232", fqdn("big"))
    assert "tc" not in flags and counts["answer"] == 61, out


# ------------------------------------------------------------------ dual-stack Services


def test_dual_stack_service_aaaa_and_ptr(env: Env) -> None:
    """Needs the control plane's dual-stack Service allocation (PreferDualStack on a
    dual-stack cluster gets a ClusterIP of each family)."""
    created = _create(env.cluster, SERVICES, _svc(
        "ds", ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv4", "IPv6"],
        ports=[{"name": "http", "port": 80}]))
    ips = created["spec"]["clusterIPs"]
    v4 = [ip for ip in ips if ":" not in ip]
    v6 = [ip for ip in ips if ":" in ip]
    assert len(v4) == 1 and len(v6) == 1, ips
    assert section(env, "answer", fqdn("ds")) == [(fqdn("ds") + ".", "A", v4[0])]
    assert section(env, "answer", fqdn("ds"), "AAAA") == [(fqdn("ds") + ".", "AAAA", v6[0])]
    assert section(env, "answer", "-x", v6[0]) == [
        (dns.reversename.from_address(v6[0]).to_text(), "PTR", fqdn("ds") + ".")]
    v6_only = _create(env.cluster, SERVICES, _svc(
        "ds6", ipFamilies=["IPv6"], ports=[{"name": "http", "port": 80}]))
    (ip6,) = v6_only["spec"]["clusterIPs"]
    assert section(env, "answer", fqdn("ds6"), "AAAA") == [(fqdn("ds6") + ".", "AAAA", ip6)]
    assert_nodata(env, fqdn("ds6"), "A")
