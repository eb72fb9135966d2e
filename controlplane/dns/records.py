"""Cluster DNS answers, as pure code: Kubernetes objects in, DNS messages out. No I/O.

`ClusterDnsIndex` holds what DNS needs from Services, EndpointSlices, Pods and Namespaces
(read-only dicts, exactly as the store holds them) and is updated one change at a time, so a
changed Service is answerable on the next query. `answer()` implements
/work/shared/reference/dns.md 1a-1c (kubernetes/dns schema 1.1.0 plus CoreDNS's choices):

- `<svc>.<ns>.svc.<zone>`: A/AAAA ClusterIP; headless: one record per ready endpoint address,
  NXDOMAIN with no ready endpoint; ExternalName: CNAME (chased while it stays in the zone;
  a target outside the zone is returned by `answer_to_chase` for the server to follow
  through its upstream, `append_chased` adds what it learns, `fit_udp` sets TC).
- `<hostname>.<svc>.<ns>.svc.<zone>` for headless endpoints (hostname, else the dashed IP).
- `_<port>._<proto>.<svc>.<ns>.svc.<zone>` SRV for named ports, targets' addresses in Additional.
- PTR for ClusterIPs and ready headless endpoint IPs under in-addr.arpa / ip6.arpa.
- `<a-b-c-d>.<ns>.pod.<zone>` A (kubeadm's `pods insecure`: any well-formed dashed address in an
  existing namespace), `dns-version.<zone>` TXT "1.1.0"; at the apex SOA (alone) and NS
  (with its glue in Additional).
- podnet extension (off with strict=True): `<pod>.<ns>.svc.<zone>` answers the pod's IPs when no
  Service of that name exists, so the seed tutorial's `my-pod.my-namespace.svc.cluster.local`
  works.
- NODATA (NOERROR, empty answer) vs NXDOMAIN, each with exactly one SOA in authority; AA set;
  owner names echo the query's case (DNS 0x20); TC over UDP when the reply does not fit the
  client's payload size; SERVFAIL until the first full sync.

Names outside the zone and the reverse zones: NXDOMAIN without AA (we are not their authority),
with an RFC 8914 Extended DNS Error saying why when the client speaks EDNS. The server forwards
them instead when an upstream is configured (see server.py); this module never does I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.reversename
import dns.rrset

IN = dns.rdataclass.IN
A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT, ANY = (
    dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME, dns.rdatatype.NS,
    dns.rdatatype.PTR, dns.rdatatype.SOA, dns.rdatatype.SRV, dns.rdatatype.TXT,
    dns.rdatatype.ANY)

TTL_S = 5                 # CoreDNS's default `ttl 5`
VERSION_TTL_S = 28800     # dns-version TXT: the spec's example and CoreDNS's constant
SCHEMA_VERSION = "1.1.0"
DEFAULT_DNS_IP = "10.96.0.10"
MAX_CNAME_CHASE = 8
REVERSE_ZONES = (dns.name.from_text("in-addr.arpa."), dns.name.from_text("ip6.arpa."))
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Kind = str  # "Service" | "EndpointSlice" | "Pod" | "Namespace"


@dataclass(frozen=True)
class Port:
    name: str       # lower case; "" for an unnamed port (no SRV)
    protocol: str   # "tcp" | "udp" | "sctp"
    port: int


@dataclass(frozen=True)
class Endpoint:
    addresses: tuple[str, ...]
    hostname: str | None
    ready: bool


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    kind: str                 # "ClusterIP" | "Headless" | "ExternalName"
    ips: tuple[str, ...]      # ClusterIPs (v4 and/or v6)
    external_name: str
    ports: tuple[Port, ...]
    publish_not_ready: bool


@dataclass(frozen=True)
class Slice:
    service: str
    endpoints: tuple[Endpoint, ...]
    ports: tuple[Port, ...]


@dataclass
class _Node:
    """A name that exists: its records by type (empty for an empty non-terminal) and, for
    SRV answers, the address records that go to Additional."""

    records: dict[int, list[dns.rdata.Rdata]] = field(default_factory=dict)
    ttl: int = TTL_S
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    # The one record type whose answer carries `additional` (SRV: its targets' addresses;
    # NS at the apex: the glue). Any other type at the name answers alone, so an SOA query
    # at the apex gets the SOA and nothing else, as CoreDNS does.
    additional_for: int | None = None


def _rd(cls: Any, rdtype: int, *args: Any) -> dns.rdata.Rdata:
    """Build one rdata (dnspython's rdata constructors are untyped; this keeps mypy strict)."""
    rd: dns.rdata.Rdata = cls(IN, rdtype, *args)
    return rd


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _ports(raw: Any, number_key: str) -> tuple[Port, ...]:
    out = []
    for p in raw if isinstance(raw, list) else []:
        if not isinstance(p, Mapping):
            continue
        number = p.get(number_key)
        if not isinstance(number, int) or isinstance(number, bool):
            continue
        out.append(Port(_s(p.get("name")).lower(), (_s(p.get("protocol")) or "TCP").lower(),
                        number))
    return tuple(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def dashed(ip: str) -> str:
    """An address as one DNS label, the way CoreDNS spells it (`10-0-0-5`,
    `fd00-10-244-1--5`). Like CoreDNS, an IPv6 address ending in `::` gets a trailing `0`
    (`fd00::` -> `fd00--0`), so the label does not end in a hyphen."""
    if ":" in ip:
        label = ip.replace(":", "-")
        return label + "0" if label.endswith("-") else label
    return ip.replace(".", "-")


def _undash(label: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a pod label names: `10-0-0-5` -> 10.0.0.5; IPv6 with `-` for `:`."""
    if label.count("-") == 3:
        try:
            return ipaddress.IPv4Address(label.replace("-", "."))
        except ValueError:
            return None
    if "-" in label:
        try:
            return ipaddress.IPv6Address(label.replace("-", ":"))
        except ValueError:
            return None
    return None


def parse_service(obj: Mapping[str, Any]) -> Service | None:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    ns, name = _s(meta.get("namespace")), _s(meta.get("name"))
    if not ns or not name:
        return None
    ips_raw = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    ips = tuple(str(_ip(i)) for i in ips_raw if isinstance(i, str) and _ip(i) is not None)
    if spec.get("type") == "ExternalName":
        kind = "ExternalName"
    elif spec.get("clusterIP") == "None":
        kind, ips = "Headless", ()
    else:
        kind = "ClusterIP"
    return Service(ns.lower(), name.lower(), kind, ips, _s(spec.get("externalName")),
                   _ports(spec.get("ports"), "port"), bool(spec.get("publishNotReadyAddresses")))


def parse_slice(obj: Mapping[str, Any]) -> Slice | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    service = _s(labels.get(SERVICE_NAME_LABEL)).lower()
    if not service:
        return None
    endpoints = []
    for ep in obj.get("endpoints") or []:
        if not isinstance(ep, Mapping):
            continue
        addrs = tuple(str(a) for a in (_ip(x) for x in ep.get("addresses") or []
                                       if isinstance(x, str)) if a is not None)
        ready = ((ep.get("conditions") or {}).get("ready"))
        hostname = _s(ep.get("hostname")).lower() or None
        # CoreDNS reads conditions.ready and treats a missing value as ready.
        endpoints.append(Endpoint(addrs, hostname, ready is not False))
    return Slice(service, tuple(endpoints), _ports(obj.get("ports"), "port"))


def parse_pod_ips(obj: Mapping[str, Any]) -> tuple[str, ...]:
    status = obj.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return ()
    raw = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, Mapping)]
    if not raw and status.get("podIP"):
        raw = [status["podIP"]]
    return tuple(str(a) for a in (_ip(x) for x in raw if isinstance(x, str)) if a is not None)


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return _s(meta.get("namespace")).lower(), _s(meta.get("name")).lower()


class ClusterDnsIndex:
    """What cluster DNS knows, kept current one object change at a time.

    `generation` grows with every change that can alter an answer, so callers that cache
    encoded replies (server.py) know when to drop them.
    """

    def __init__(self, domain: str = "cluster.local", *, strict: bool = False,
                 dns_ip: str = DEFAULT_DNS_IP, forwarding: bool = False) -> None:
        self.zone = dns.name.from_text(domain.strip(".").lower() + ".")
        self.strict = strict
        self.dns_ip = dns_ip
        self.forwarding = forwarding     # RA: an upstream answers names outside the zone
        self.synced = False
        self.generation = 0
        self.serial = 1
        self.namespaces: set[str] = set()
        self.services: dict[tuple[str, str], Service] = {}
        self.slices: dict[tuple[str, str], Slice] = {}            # (ns, slice name)
        self.by_service: dict[tuple[str, str], set[str]] = {}    # (ns, svc) -> slice names
        self.pods: dict[tuple[str, str], tuple[str, ...]] = {}   # (ns, pod) -> IPs
        self.ptr: dict[str, dict[tuple[str, str], set[str]]] = {}  # ip -> owner svc -> names
        self._ptr_of: dict[tuple[str, str], set[tuple[str, str]]] = {}  # svc -> {(ip, name)}
        self._soa = self._make_soa(self.zone)

    # ------------------------------------------------------------------ updates

    def replace_all(self, services: Iterable[Mapping[str, Any]],
                    slices: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]],
                    namespaces: Iterable[Mapping[str, Any]]) -> None:
        """The first sync (and any re-list): forget everything, load these, become synced."""
        self.namespaces.clear()
        self.services.clear()
        self.slices.clear()
        self.by_service.clear()
        self.pods.clear()
        self.ptr.clear()
        self._ptr_of.clear()
        for kind, objs in (("Namespace", namespaces), ("Service", services),
                           ("EndpointSlice", slices), ("Pod", pods)):
            for obj in objs:
                self._apply(kind, "ADDED", obj, recompute=False)
        for key in self.services:
            self._recompute_ptr(key)
        self.synced = True
        self._changed()

    def apply(self, kind: Kind, event: str, obj: Mapping[str, Any]) -> None:
        """One watch event (`ADDED`/`MODIFIED`/`DELETED`) for one object."""
        # Most writes (pod status, labels, annotations) change nothing DNS serves; only a
        # real change bumps the generation, which drops the server's cache of answers.
        if self._apply(kind, event, obj, recompute=True):
            self._changed()

    def _changed(self) -> None:
        self.generation += 1
        self.serial = (self.serial + 1) & 0xFFFFFFFF or 1
        self._soa = self._make_soa(self.zone)

    def _apply(self, kind: Kind, event: str, obj: Mapping[str, Any], *,
               recompute: bool) -> bool:
        """Apply one event; whether anything DNS answers from changed."""
        gone = event == "DELETED"
        ns, name = _key(obj)
        if kind == "Namespace":
            # Cluster-scoped: the name is the namespace.
            if gone == (name in self.namespaces):
                (self.namespaces.discard if gone else self.namespaces.add)(name)
                return True
            return False
        if kind == "Service":
            svc = None if gone else parse_service(obj)
            if self.services.get((ns, name)) == svc:
                return False
            if svc is None:
                self.services.pop((ns, name), None)
            else:
                self.services[(ns, name)] = svc
            if recompute:
                self._recompute_ptr((ns, name))
            return True
        if kind == "EndpointSlice":
            new = None if gone else parse_slice(obj)
            if self.slices.get((ns, name)) == new:
                return False
            old = self.slices.pop((ns, name), None)
            if old is not None:
                self.by_service.get((ns, old.service), set()).discard(name)
            if new is not None:
                self.slices[(ns, name)] = new
                self.by_service.setdefault((ns, new.service), set()).add(name)
            if recompute:
                for svc_name in {s.service for s in (old, new) if s is not None}:
                    self._recompute_ptr((ns, svc_name))
            return True
        if kind == "Pod":
            ips = () if gone else parse_pod_ips(obj)
            if self.pods.get((ns, name), ()) == ips:
                return False
            if ips:
                self.pods[(ns, name)] = ips
            else:
                self.pods.pop((ns, name), None)
            return True
        return False

    def _recompute_ptr(self, key: tuple[str, str]) -> None:
        for ip, _name in self._ptr_of.pop(key, set()):
            owners = self.ptr.get(ip)
            if owners is not None:
                owners.pop(key, None)
                if not owners:
                    del self.ptr[ip]
        svc = self.services.get(key)
        if svc is None:
            return
        fqdn = f"{svc.name}.{svc.namespace}.svc.{self.zone}"
        entries: set[tuple[str, str]] = set()
        if svc.kind == "ClusterIP":
            entries = {(ip, fqdn) for ip in svc.ips}
        elif svc.kind == "Headless":
            entries = {(ip, f"{host}.{fqdn}") for host, ips in self._endpoint_names(svc).items()
                       for ip in ips}
        for ip, name in entries:
            self.ptr.setdefault(ip, {}).setdefault(key, set()).add(name)
        if entries:
            self._ptr_of[key] = entries

    # ------------------------------------------------------------------ data views

    def _ready_endpoints(self, svc: Service) -> list[Endpoint]:
        out = []
        for slice_name in sorted(self.by_service.get((svc.namespace, svc.name), ())):
            for ep in self.slices[(svc.namespace, slice_name)].endpoints:
                if (ep.ready or svc.publish_not_ready) and ep.addresses:
                    out.append(ep)
        return out

    def _endpoint_names(self, svc: Service) -> dict[str, list[str]]:
        """Ready endpoint label -> its addresses (an endpoint without `hostname` is named by
        each of its dashed addresses, as CoreDNS does)."""
        names: dict[str, list[str]] = {}
        for ep in self._ready_endpoints(svc):
            if ep.hostname:
                for ip in ep.addresses:
                    if ip not in names.setdefault(ep.hostname, []):
                        names[ep.hostname].append(ip)
            else:
                for ip in ep.addresses:
                    if ip not in names.setdefault(dashed(ip), []):
                        names[dashed(ip)].append(ip)
        return names

    def _endpoint_ports(self, svc: Service) -> set[Port]:
        ports: set[Port] = set()
        for slice_name in self.by_service.get((svc.namespace, svc.name), ()):
            ports.update(self.slices[(svc.namespace, slice_name)].ports)
        return ports

    # ------------------------------------------------------------------ name lookup

    def lookup(self, qname: dns.name.Name) -> _Node | None:
        """The records at `qname` (in the zone), or None when the name does not exist."""
        rel = [label.decode("ascii", "replace").lower()
               for label in qname.relativize(self.zone).labels]
        rel.reverse()  # right to left: ["svc", ns, svc, ...]
        n = len(rel)
        if n == 0:
            return self._apex()
        if rel == ["dns-version"]:
            return _Node({TXT: [_rd(dns.rdtypes.ANY.TXT.TXT, TXT, [SCHEMA_VERSION])]},
                         ttl=VERSION_TTL_S)
        if rel[0] == "dns":  # ns.dns.<zone>, the SOA's MNAME, and its empty parent
            if n == 1:
                return _Node()
            if n == 2 and rel[1] == "ns":
                return _Node({A: [_rd(dns.rdtypes.IN.A.A, A, self.dns_ip)]})
            return None
        if rel[0] not in ("svc", "pod"):
            return None
        if n == 1:
            return _Node()  # svc.<zone> and pod.<zone>: empty non-terminals
        ns = rel[1]
        if ns not in self.namespaces:
            return None
        if n == 2:
            return _Node()
        if rel[0] == "pod":
            return self._pod_record(rel[2]) if n == 3 else None
        return self._service_name(ns, rel[2], rel[3:])

    def _pod_record(self, label: str) -> _Node | None:
        ip = _undash(label)
        if ip is None:
            return None
        if ip.version == 4:
            return _Node({A: [_rd(dns.rdtypes.IN.A.A, A, str(ip))]})
        return _Node({AAAA: [_rd(dns.rdtypes.IN.AAAA.AAAA, AAAA, str(ip))]})

    def _service_name(self, ns: str, name: str, below: list[str]) -> _Node | None:
        svc = self.services.get((ns, name))
        if svc is None:
            if self.strict or below:
                return None
            ips = self.pods.get((ns, name))
            return _address_node(ips) if ips else None
        if svc.kind == "ExternalName":
            if below or not svc.external_name:
                return None
            target = dns.name.from_text(svc.external_name.strip(".") + ".")
            return _Node({CNAME: [_rd(dns.rdtypes.ANY.CNAME.CNAME, CNAME, target)]})
        headless = svc.kind == "Headless"
        names = self._endpoint_names(svc) if headless else {}
        if headless and not names:
            return None  # spec 2.4: no ready endpoints -> the name does not exist
        fqdn = dns.name.from_text(f"{svc.name}.{svc.namespace}.svc", self.zone)
        if not below:
            return _address_node(svc.ips if not headless else
                                 [ip for ips in names.values() for ip in ips])
        if len(below) == 1:
            label = below[0]
            if headless and label in names:
                return _address_node(names[label])
            if label.startswith("_") and any(p.protocol == label[1:] and p.name
                                             for p in self._srv_ports(svc)):
                return _Node()  # `_tcp.<svc>...`: empty non-terminal above the SRV names
            return None
        if len(below) == 2 and below[0].startswith("_") and below[1].startswith("_"):
            proto, port_name = below[0][1:], below[1][1:]
            ports = [p for p in self._srv_ports(svc) if p.name == port_name
                     and p.protocol == proto]
            if not ports:
                return None
            return self._srv_node(svc, fqdn, ports, names)
        return None

    def _srv_ports(self, svc: Service) -> set[Port]:
        # Headless SRV uses the endpoints' ports (the target port numbers); ClusterIP the
        # Service's own.
        return self._endpoint_ports(svc) if svc.kind == "Headless" else set(svc.ports)

    def _srv_node(self, svc: Service, fqdn: dns.name.Name, ports: list[Port],
                  names: dict[str, list[str]]) -> _Node:
        node = _Node({SRV: []}, additional_for=SRV)
        targets: list[tuple[dns.name.Name, list[str]]]
        if svc.kind == "Headless":
            targets = [(dns.name.Name((host.encode(),)).concatenate(fqdn), ips)
                       for host, ips in sorted(names.items())]
        else:
            targets = [(fqdn, list(svc.ips))]
        # Weights share 100 between the targets, as CoreDNS does; priority is always 0.
        weight = max(1, 100 // max(1, len(targets) * len(ports)))
        for port in sorted(ports, key=lambda p: p.port):
            for target, _ in targets:
                node.records[SRV].append(
                    _rd(dns.rdtypes.IN.SRV.SRV, SRV, 0, weight, port.port, target))
        for target, ips in targets:
            node.additional.extend(_address_rrsets(target, ips, TTL_S))
        return node

    def _apex(self) -> _Node:
        kube_dns = self.services.get(("kube-system", "kube-dns"))
        if kube_dns is not None and kube_dns.kind == "ClusterIP" and kube_dns.ips:
            ns_name = dns.name.from_text("kube-dns.kube-system.svc", self.zone)
            glue = list(kube_dns.ips)
        else:
            ns_name, glue = dns.name.from_text("ns.dns", self.zone), [self.dns_ip]
        node = _Node({SOA: [self._soa[0]],
                      NS: [_rd(dns.rdtypes.ANY.NS.NS, NS, ns_name)]})
        node.additional = _address_rrsets(ns_name, glue, TTL_S)
        node.additional_for = NS
        return node

    def _reverse(self, qname: dns.name.Name, zone: dns.name.Name) -> _Node | None:
        rel = qname.relativize(zone).labels
        full = 4 if zone == REVERSE_ZONES[0] else 32
        if len(rel) == full:
            try:
                ip = str(ipaddress.ip_address(dns.reversename.to_address(qname)))
            except (dns.exception.SyntaxError, ValueError):
                return None
            owners = self.ptr.get(ip)
            if not owners:
                return None
            names = sorted({n for ns in owners.values() for n in ns})
            return _Node({PTR: [_rd(dns.rdtypes.ANY.PTR.PTR, PTR, dns.name.from_text(n))
                                for n in names]})
        if len(rel) > full:
            return None
        # An ancestor of a PTR name exists (empty non-terminal, NODATA); anything else does
        # not. A linear scan: such queries are rare and the answer is cached by the server.
        for ip in self.ptr:
            if dns.reversename.from_address(ip).is_subdomain(qname):
                return _Node()
        return None

    # ------------------------------------------------------------------ answers

    def _make_soa(self, zone: dns.name.Name) -> tuple[dns.rdata.Rdata, int]:
        soa = _rd(dns.rdtypes.ANY.SOA.SOA, SOA, dns.name.from_text("ns.dns", zone),
                  dns.name.from_text("hostmaster", zone), self.serial, 7200, 1800, 86400, TTL_S)
        return soa, min(TTL_S, 300)

    def _zone_of(self, qname: dns.name.Name) -> dns.name.Name | None:
        if qname.is_subdomain(self.zone):
            return self.zone
        for zone in REVERSE_ZONES:
            if qname.is_subdomain(zone):
                return zone
        return None

    def is_authoritative(self, qname: dns.name.Name) -> bool:
        """Whether `qname` is ours to answer (the cluster zone or a PTR we hold); other names
        go to the upstream when one is configured."""
        zone = self._zone_of(qname)
        if zone is None:
            return False
        return zone == self.zone or self._reverse(qname, zone) is not None

    def answer(self, query: dns.message.Message, *, transport: str = "udp",
               max_udp: int = 4096) -> dns.message.Message:
        """The reply to a parsed query. `max_udp` caps the client's EDNS payload size.
        A CNAME to a name outside the zone is answered alone (see `answer_to_chase`)."""
        response, _ = self.answer_to_chase(query, max_udp=max_udp)
        if transport == "udp":
            fit_udp(query, response, max_udp)
        return response

    def answer_to_chase(self, query: dns.message.Message, *, max_udp: int = 4096,
                        ) -> tuple[dns.message.Message, dns.name.Name | None]:
        """The full reply (never truncated) and, when its answer ends in a CNAME to a name
        outside the zone (an ExternalName Service), that name: the server asks its upstream
        for it and appends what it learns (`append_chased`), as CoreDNS does, then fits the
        reply to the transport (`fit_udp`)."""
        response = dns.message.make_response(query, our_payload=max_udp)
        response.flags &= ~dns.flags.RA
        if self.forwarding:
            response.flags |= dns.flags.RA
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response, None
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)
            return response, None
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response, None
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        if question.rdclass != IN or qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            response.set_rcode(dns.rcode.REFUSED)
            return response, None
        zone = self._zone_of(qname)
        if zone is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            if query.edns >= 0:
                response.use_edns(0, payload=max_udp, options=[dns.edns.EDEOption(
                    dns.edns.EDECode.NOT_AUTHORITATIVE,
                    f"podnet answers only {self.zone} and PTR records; no upstream is "
                    "configured (--dns-upstream)")])
            return response, None
        if not self.synced:
            # CoreDNS's notsynced behaviour: do not deny what we may just not know yet.
            response.set_rcode(dns.rcode.SERVFAIL)
            return response, None
        response.flags |= dns.flags.AA
        target = self._fill(response, qname, qtype, zone)
        # Asking for the CNAME itself (or ANY) is answered by the CNAME alone.
        return response, (target if qtype not in (CNAME, ANY) else None)

    def _fill(self, response: dns.message.Message, qname: dns.name.Name, qtype: int,
              zone: dns.name.Name) -> dns.name.Name | None:
        """Fill the answer; the CNAME target outside the zone the answer stops at, if any."""
        owner = qname  # the query's own spelling, so 0x20-randomised names come back as sent
        for _ in range(MAX_CNAME_CHASE):
            node = self.lookup(owner) if zone == self.zone else self._reverse(owner, zone)
            if node is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                self._add_soa(response, zone)
                return None
            wanted = list(node.records) if qtype == ANY else [qtype]
            found = False
            for rdtype in wanted:
                rdatas = node.records.get(rdtype)
                if rdatas:
                    response.answer.append(dns.rrset.from_rdata_list(owner, node.ttl, rdatas))
                    found = True
                    if rdtype == node.additional_for:
                        response.additional.extend(node.additional)
            if found:
                return None
            cname = node.records.get(CNAME)
            if not cname or qtype == CNAME:
                self._add_soa(response, zone)  # NODATA: the name exists, not this type
                return None
            response.answer.append(dns.rrset.from_rdata_list(owner, node.ttl, cname))
            target = cname[0].target  # type: ignore[attr-defined]
            if not isinstance(target, dns.name.Name):
                return None
            if not target.is_subdomain(self.zone):
                return target  # outside the zone: the upstream (or the client) chases it
            owner, zone = target, self.zone
        return None

    def _add_soa(self, response: dns.message.Message, zone: dns.name.Name) -> None:
        soa, ttl = self._soa if zone == self.zone else self._make_soa(zone)
        response.authority = [dns.rrset.from_rdata_list(zone, ttl, [soa])]

    def servfail(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
        return response


def _address_node(ips: Iterable[str]) -> _Node:
    node = _Node()
    for ip in ips:
        if ":" in ip:
            node.records.setdefault(AAAA, []).append(_rd(dns.rdtypes.IN.AAAA.AAAA, AAAA, ip))
        else:
            node.records.setdefault(A, []).append(_rd(dns.rdtypes.IN.A.A, A, ip))
    return node


def _address_rrsets(owner: dns.name.Name, ips: Iterable[str], ttl: int) -> list[dns.rrset.RRset]:
    node = _address_node(ips)
    return [dns.rrset.from_rdata_list(owner, ttl, rdatas) for rdatas in node.records.values()]


def append_chased(response: dns.message.Message, target: dns.name.Name,
                  upstream: dns.message.Message) -> None:
    """Append the upstream's answer for `target` after our CNAME, keeping only the records
    on the chain that starts at `target` (the target's own records and any CNAMEs it leads
    through), so an upstream's stray records never reach the client. An upstream error
    (NXDOMAIN, SERVFAIL) or empty answer leaves the CNAME alone, as CoreDNS does."""
    if upstream.rcode() != dns.rcode.NOERROR:
        return
    chain, names = [target], {target}
    rrsets = list(upstream.answer)
    progressed = True
    while progressed and len(chain) <= MAX_CNAME_CHASE:
        progressed = False
        for rrset in rrsets:
            if rrset.name in names and rrset.rdtype == CNAME and rrset.rdclass == IN:
                nxt = rrset[0].target
                if isinstance(nxt, dns.name.Name) and nxt not in names:
                    chain.append(nxt)
                    names.add(nxt)
                    progressed = True
    for rrset in rrsets:
        if rrset.name in names and rrset.rdclass == IN:
            response.answer.append(rrset)


def udp_limit(query: dns.message.Message, max_udp: int) -> int:
    """The largest reply a client takes over UDP: 512 without EDNS (RFC 1035), else its
    advertised payload size (never below 512), capped at ours."""
    return max(512, min(max_udp, query.payload)) if query.edns >= 0 else 512


def fit_udp(query: dns.message.Message, response: dns.message.Message, max_udp: int) -> None:
    """Make `response` fit the UDP client that sent `query` (sets TC when it cannot)."""
    _truncate_if_needed(response, udp_limit(query, max_udp))


def _truncate_if_needed(response: dns.message.Message, limit: int) -> None:
    """Over UDP a reply larger than the client takes is sent with TC=1 and no records, so
    the client retries over TCP (RFC 1035 4.2.1, RFC 7766)."""
    if len(response.to_wire()) <= limit:
        return
    # Additional records (SRV glue) are optional: drop them before giving up on the answer.
    if response.additional:
        response.additional = []
        if len(response.to_wire()) <= limit:
            return
    response.answer, response.authority = [], []
    response.flags |= dns.flags.TC

