"""`podnet explain FROM TO`: the path a packet would take, and every policy decision on the
way, worked out from what the API stores and what the agents' route tables say, without
sending anything. Pure: `explain()` takes a `Snapshot` (fetched by podnet/cli/explaincmd.py)
and returns an `Explanation`; `render()` prints it; `as_json()` is the `-o json` form.

How a packet travels (docs/architecture.md, docs/cni.md), which this retraces:
- pod to pod on one node: the agent joins the two pods' transports directly;
- pod to pod across nodes: the source agent's route table (learned by gossip) maps the
  destination's podCIDR to its node and that node's agent address, and the stream or datagram
  goes through the one tunnel between the two agents; the receiver sees the sender's pod IP;
- pod to a ClusterIP: the agent sends the whole service CIDR to the control plane's tunnel;
  the ClusterIP proxy picks one ready endpoint (round robin, or ClientIP affinity) and opens a
  stream to that endpoint's node with the client's pod IP as the source;
- kube-dns (10.96.0.10:53): answered by the control plane's DNS server itself; NetworkPolicy
  sees it as the pod it is in a real cluster (`podnet.policy.engine.KUBE_DNS`).

Policy: the flow is judged for egress at the source pod and for ingress at the destination
pod (for a Service: at each endpoint the proxy could choose, on the endpoint's port, as with
kube-proxy and a CNI), by `podnet.policy.engine.PolicySet`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podnet.addresses import host_of, hostport
from podnet.faults.lookup import endpoints_by_ip
from podnet.faults.model import Endpoint as FaultEndpoint
from podnet.faults.model import Fault, parse_faults
from podnet.policy.engine import KUBE_DNS, Peer, PolicySet, Verdict
from podnet.services.servicemap import Endpoint, Service, ServiceMap, ServicePort, family_of

__all__ = ["ExplainError", "Explanation", "FaultCrossed", "Leg", "Snapshot", "as_json", "explain",
           "render"]

ALLOWED, DENIED, UNREACHABLE = "ALLOWED", "DENIED", "UNREACHABLE"
_DROP_NOTE = ("a denied connection is dropped, as by a CNI: TCP clients time out (curl -m 2 "
              "exits 28), UDP datagrams vanish; with `podnet up --policy-reject` it is refused "
              "at once")


class ExplainError(Exception):
    """Bad input: a FROM/TO that names nothing, a port that does not exist, ... (exit 2)."""


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass
class Snapshot:
    """What explain reads: stored objects, and each node's route table as its agent sees it
    (a string instead of a table: why that agent's table could not be read)."""

    pods: list[dict[str, Any]] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)
    slices: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    namespaces: list[dict[str, Any]] = field(default_factory=list)
    policies: list[dict[str, Any]] = field(default_factory=list)
    routes: dict[str, list[dict[str, Any]] | str] = field(default_factory=dict)
    service_cidr: str = "10.96.0.0/12"
    service_cidrs: list[str] = field(default_factory=list)   # every family's; [] = the primary
    proxy_address: str = ""     # the control plane's tunnel endpoint
    dns_ip: str = "10.96.0.10"
    faults: list[dict[str, Any]] = field(default_factory=list)     # NetworkFaults
    fault_seed: int = 0


@dataclass(frozen=True)
class Hop:
    step: str   # "source", "route", "tunnel", "proxy", ...
    text: str


@dataclass(frozen=True)
class FaultCrossed:
    """A NetworkFault on this path: which way(s) it acts and what it does."""

    name: str
    effects: str
    ways: tuple[str, ...]       # "request" (source -> destination), "reply"


@dataclass
class Leg:
    """One destination the packet could reach: the pod itself, or one endpoint of a Service."""

    destination: str
    ip: str
    port: int
    protocol: str
    hops: list[Hop]
    egress: Verdict | None = None
    ingress: Verdict | None = None
    unreachable: str | None = None      # why the packet cannot get there, policy aside
    faults: list[FaultCrossed] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        if self.unreachable is not None:
            return UNREACHABLE
        if (self.egress and not self.egress.allowed) or (self.ingress and not self.ingress.allowed):
            return DENIED
        return ALLOWED


@dataclass
class Explanation:
    source: str
    destination: str
    port: int
    protocol: str
    hops: list[Hop]                 # common to every leg
    legs: list[Leg]
    notes: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        outcomes = {leg.outcome for leg in self.legs}
        if outcomes == {ALLOWED}:
            return ALLOWED
        if DENIED in outcomes:
            return DENIED
        return UNREACHABLE

    @property
    def exit_code(self) -> int:
        return 0 if self.outcome == ALLOWED else 1

    def summary(self) -> str:
        outcome = self.outcome
        bad = [leg for leg in self.legs if leg.outcome != ALLOWED]
        if outcome == ALLOWED:
            return ALLOWED
        if len(self.legs) > 1:
            head = f"{outcome} for {len(bad)} of {len(self.legs)} endpoints " \
                   "(the proxy may choose any of them)"
        else:
            head = outcome
        why = []
        for leg in bad:
            if leg.unreachable is not None:
                why.append(f"{leg.destination}: {leg.unreachable}")
            for v, who in ((leg.egress, self.source), (leg.ingress, leg.destination)):
                if v is not None and not v.allowed:
                    why.append(f"{v.direction} at {who}: {_bare(v.reason)}")
        return f"{head}: " + "; ".join(dict.fromkeys(why)) if why else head


def _bare(reason: str) -> str:
    """The engine's reason without its leading "allowed: "/"denied: " (shown separately)."""
    for word in ("allowed: ", "denied: "):
        if reason.startswith(word):
            return reason[len(word):]
    return reason


# --- reading the snapshot --------------------------------------------------------------------

class _View:
    """Indexes over a Snapshot."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.policies = PolicySet(snap.policies)
        self.services = ServiceMap()
        self.services.rebuild(snap.services, snap.slices, snap.nodes)
        self.namespace_labels: dict[str, dict[str, str]] = {}
        for namespace in snap.namespaces:
            ns_meta = _d(namespace.get("metadata"))
            if isinstance(ns_meta.get("name"), str):
                labels = {str(k): str(v) for k, v in _d(ns_meta.get("labels")).items()}
                self.namespace_labels[ns_meta["name"]] = labels
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods_by_ip: dict[str, dict[str, Any]] = {}
        for pod in snap.pods:
            meta = _d(pod.get("metadata"))
            ns, name = meta.get("namespace"), meta.get("name")
            if not isinstance(ns, str) or not isinstance(name, str):
                continue
            self.pods[(ns, name)] = pod
            phase = _d(pod.get("status")).get("phase")
            # A finished pod's IP may already be someone else's: the live pod wins.
            for ip in _pod_ips(pod):
                if ip not in self.pods_by_ip or phase not in ("Succeeded", "Failed"):
                    self.pods_by_ip[ip] = pod
    def service_cidr(self, ip: str) -> str:
        """The service CIDR of `ip`'s family (what the source node routes to the proxy)."""
        for text in self.snap.service_cidrs or [self.snap.service_cidr]:
            try:
                if ipaddress.ip_network(text).version == ipaddress.ip_address(ip).version:
                    return text
            except ValueError:
                continue
        return self.snap.service_cidr

    def peer(self, pod: dict[str, Any], family: int | None = None) -> Peer:
        """The pod as policy sees it, at its address of `family` (4 or 6; None: its
        primary address, or its only one)."""
        meta, spec = _d(pod.get("metadata")), _d(pod.get("spec"))
        ns = str(meta.get("namespace"))
        named: dict[str, tuple[int, str]] = {}
        for c in _l(spec.get("containers")):
            for p in _l(_d(c).get("ports")):
                p = _d(p)
                number = p.get("containerPort")
                if isinstance(p.get("name"), str) and isinstance(number, int):
                    named[p["name"]] = (number, str(p.get("protocol") or "TCP"))
        ips = _pod_ips(pod)
        ip = next((a for a in ips if family is not None and family_of(a) == family),
                  ips[0] if ips else "")
        return Peer(ip, namespace=ns,
                    pod=str(meta.get("name")),
                    labels={str(k): str(v) for k, v in _d(meta.get("labels")).items()},
                    namespace_labels=self.namespace_labels.get(ns, {}),
                    named_ports=named, node=spec.get("nodeName") or None)

    def node_address(self, node: str) -> str | None:
        info = self.services.node(node)
        return info.address if info is not None else None

    def route(self, from_node: str, ip: str) -> tuple[dict[str, Any] | None, str]:
        """The route `from_node` uses for `ip`, and where that knowledge comes from."""
        table = self.snap.routes.get(from_node)
        addr = ipaddress.ip_address(ip)
        if isinstance(table, list):
            best: dict[str, Any] | None = None
            best_len = -1
            for r in table:
                row = _d(r)
                for text in _l(row.get("podCIDRs")) or [row.get("podCIDR")]:
                    try:
                        net = ipaddress.ip_network(str(text))
                    except ValueError:
                        continue
                    if net.version == addr.version and addr in net and net.prefixlen > best_len:
                        # the row as the hop shows it: the podCIDR this address is in
                        best, best_len = {**row, "podCIDR": str(net)}, net.prefixlen
            return best, f"{from_node}'s route table"
        why = table if isinstance(table, str) else "not asked"
        # Fall back to what the API knows (the Node's podCIDR): that is what gossip spreads.
        for info in self.services.nodes():
            if any(addr in c for c in info.pod_cidrs):
                return ({"podCIDR": str(next(c for c in info.pod_cidrs if addr in c)),
                         "node": info.name, "address": info.address or "?",
                         "state": "unknown"},
                        f"the API's Node podCIDRs ({from_node}'s agent: {why})")
        return None, f"the API's Node podCIDRs ({from_node}'s agent: {why})"


def _pod_ips(pod: Mapping[str, Any]) -> list[str]:
    """A pod's addresses, primary (status.podIP) first: one per family on a dual-stack
    cluster."""
    status = _d(pod.get("status"))
    ips = [str(_d(e).get("ip")) for e in _l(status.get("podIPs"))
           if isinstance(_d(e).get("ip"), str) and _d(e).get("ip")]
    primary = status.get("podIP")
    if isinstance(primary, str) and primary and primary not in ips:
        ips.insert(0, primary)
    return ips


def _pod_name(pod: Mapping[str, Any]) -> str:
    meta = _d(pod.get("metadata"))
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _split_ref(ref: str, what: str) -> tuple[str, str]:
    parts = ref.split("/")
    if len(parts) == 1:
        ns, name = "default", parts[0]
    elif len(parts) == 2:
        ns, name = parts
    else:
        raise ExplainError(f"cannot read {what} {ref!r}: use NAME or NAMESPACE/NAME")
    if not ns or not name:
        raise ExplainError(f"cannot read {what} {ref!r}: use NAME or NAMESPACE/NAME")
    return ns, name


@dataclass
class _Target:
    kind: str                               # pod | service | kube-dns | ip
    label: str
    pod: dict[str, Any] | None = None
    service: Service | None = None
    ip: str = ""


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _resolve(view: _View, ref: str) -> _Target:
    ref = ref.strip()
    if not ref:
        raise ExplainError("empty FROM/TO: give ns/pod, pod, a pod IP, svc/NAME or kube-dns")
    if ref in ("kube-dns", "svc/kube-dns", "svc/kube-system/kube-dns", view.snap.dns_ip):
        return _Target("kube-dns", f"kube-dns {view.snap.dns_ip}", ip=view.snap.dns_ip)
    for prefix in ("svc/", "service/", "services/"):
        if ref.startswith(prefix):
            ns, name = _split_ref(ref[len(prefix):], "Service")
            return _service_target(view, ns, name)
    if _is_ip(ref):
        pod = view.pods_by_ip.get(ref)
        if pod is not None:
            return _Target("pod", _pod_name(pod), pod=pod, ip=ref)
        svc = view.services.service(ref)
        if svc is not None:
            return _Target("service", f"svc/{svc.key}", service=svc, ip=ref)
        return _Target("ip", ref, ip=ref)
    for prefix in ("pod/", "pods/", "po/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
    ns, name = _split_ref(ref, "pod")
    pod = view.pods.get((ns, name))
    if pod is None:
        raise ExplainError(f"no pod {ns}/{name}")
    ip = _d(pod.get("status")).get("podIP")
    if not isinstance(ip, str) or not ip:
        phase = _d(pod.get("status")).get("phase") or "Pending"
        raise ExplainError(f"pod {ns}/{name} has no IP yet (phase {phase})")
    return _Target("pod", f"{ns}/{name}", pod=pod, ip=ip)


def _service_target(view: _View, ns: str, name: str) -> _Target:
    stored = next((s for s in view.snap.services
                   if _d(s.get("metadata")).get("namespace") == ns
                   and _d(s.get("metadata")).get("name") == name), None)
    if stored is None:
        raise ExplainError(f"no service {ns}/{name}")
    svc = next((s for s in view.services.services() if s.key == f"{ns}/{name}"), None)
    if svc is None:
        spec = _d(stored.get("spec"))
        if spec.get("type") == "ExternalName":
            raise ExplainError(f"service {ns}/{name} is ExternalName: a DNS alias, no proxy")
        raise ExplainError(f"service {ns}/{name} has no ClusterIP (headless: clients connect "
                           "to its pods directly; explain one of them)")
    return _Target("service", f"svc/{ns}/{name}", service=svc, ip=svc.cluster_ips[0])


# --- ports -----------------------------------------------------------------------------------

def _protocol(value: str | None) -> str | None:
    if value is None:
        return None
    upper = value.upper()
    if upper not in ("TCP", "UDP"):
        raise ExplainError(f"unknown protocol {value!r}: use tcp or udp")
    return upper


def _pod_port(view: _View, pod: dict[str, Any], port: str | None,
              protocol: str | None) -> tuple[int, str]:
    named = view.peer(pod).named_ports
    if port is None:
        for c in _l(_d(pod.get("spec")).get("containers")):
            for p in _l(_d(c).get("ports")):
                number, proto = _d(p).get("containerPort"), str(_d(p).get("protocol") or "TCP")
                if isinstance(number, int) and (protocol is None or proto == protocol):
                    return number, proto
        raise ExplainError(f"pod {_pod_name(pod)} declares no container port"
                           f"{' for ' + protocol if protocol else ''}: give --port")
    if port.isdigit():
        return _port_number(port), protocol or "TCP"
    if port not in named:
        raise ExplainError(f"pod {_pod_name(pod)} has no container port named {port!r}")
    number, proto = named[port]
    if protocol is not None and proto != protocol:
        raise ExplainError(f"port {port!r} of pod {_pod_name(pod)} is {proto}, not {protocol}")
    return number, proto


def _port_number(text: str) -> int:
    number = int(text)
    if not 1 <= number <= 65535:
        raise ExplainError(f"port {text} is out of range (1-65535)")
    return number


def _service_port(svc: Service, port: str | None, protocol: str | None) -> ServicePort:
    candidates = [p for p in svc.ports if protocol is None or p.protocol == protocol]
    if port is not None:
        candidates = [p for p in candidates
                      if (port.isdigit() and p.port == int(port)) or p.name == port]
    if not candidates:
        listed = ", ".join(f"{p.port}/{p.protocol}" for p in svc.ports) or "none"
        if port is None:
            wanted = f"{protocol} port"
        else:
            wanted = f"port {port}{'/' + protocol if protocol else ''}"
        raise ExplainError(f"service {svc.key} has no {wanted} (it has: {listed})")
    return candidates[0]


# --- the explanation -------------------------------------------------------------------------

def _pod_hops(view: _View, src: Peer, dst: Peer, dst_label: str) -> tuple[list[Hop],
                                                                          str | None]:
    """From the source pod's node to a destination pod: same node, or route + tunnel."""
    src_node, dst_node = src.node or "?", dst.node or "?"
    if src_node == dst_node:
        return [Hop("deliver", f"same node: {src_node}'s agent joins the two pods directly "
                               "(no tunnel)")], None
    route, source = view.route(src_node, dst.ip)
    if route is None:
        return [Hop("route", f"{source} has no route for {dst.ip}")], \
            f"no route to host {dst.ip} (EHOSTUNREACH)"
    state = str(route.get("state"))
    hops = [Hop("route", f"{source}: {route.get('podCIDR')} -> {route.get('node')} at "
                         f"{route.get('address')} ({state})")]
    if state == "dead":
        return hops, f"{route.get('node')} is dead in {src_node}'s view: no route to host " \
                     f"{dst.ip} (EHOSTUNREACH)"
    if route.get("node") != dst_node:
        hops.append(Hop("note", f"the API places {dst_label} on {dst_node}, the route on "
                                f"{route.get('node')}: routes have not converged"))
    hops.append(Hop("tunnel", f"{src_node} -> {route.get('node')}: the tunnel between the two "
                              f"agents; {dst_label} sees {src.ip} as the source (no NAT)"))
    return hops, None


def _judge(view: _View, leg: Leg, src: Peer, dst: Peer) -> None:
    leg.egress, leg.ingress = view.policies.judge(src, dst, leg.port, leg.protocol)


def _endpoint_peer(view: _View, ep: Endpoint) -> tuple[Peer, str]:
    pod = view.pods_by_ip.get(ep.ip)
    if pod is not None:
        return view.peer(pod, family_of(ep.ip)), _pod_name(pod)
    # Not a pod (a selectorless Service's manual endpoint): ipBlocks may match it, selectors
    # never do. No `node`: that would make it the node's own address to the engine.
    return Peer(ep.ip), ep.ip


def explain(snap: Snapshot, source: str, destination: str, port: str | None = None,
            protocol: str | None = None) -> Explanation:
    """What would happen to a packet from `source` to `destination` (refs as the CLI takes
    them), and the NetworkFaults on its way. Raises ExplainError for input that names
    nothing."""
    ex = _explain(snap, source, destination, port, protocol)
    if snap.faults:
        _add_faults(snap, ex)
    return ex


def _add_faults(snap: Snapshot, ex: Explanation) -> None:
    """The faults each leg crosses, matched as the agents match them (docs/faults.md): by the
    client's agent against the Service a flow was sent to, and against the pod it reaches."""
    faults, problems = parse_faults(snap.faults, cluster_seed=snap.fault_seed)
    ex.notes += [f"unreadable NetworkFault {p}" for p in problems]
    if not faults:
        return
    by_ip = endpoints_by_ip(snap.pods, snap.services, snap.dns_ip)
    src_ip = next((h.text.split()[1] for h in ex.hops if h.step == "source"), "")
    src = by_ip.get(src_ip, FaultEndpoint(ip=src_ip))
    protocol = ex.protocol.lower()
    via = [by_ip[ip] for ip in (_dst_ip(ex),) if ip in by_ip and by_ip[ip].services]
    for leg in ex.legs:
        found: dict[str, tuple[Fault, list[str]]] = {}
        for dst in [*via, by_ip.get(leg.ip, FaultEndpoint(ip=leg.ip))]:
            port = ex.port if dst.services else leg.port
            for way, (a, b) in (("request", (src, dst)), ("reply", (dst, src))):
                for fault in faults.matching(a, b, port, protocol):
                    ways = found.setdefault(fault.name, (fault, []))[1]
                    if way not in ways:
                        ways.append(way)
        leg.faults = [FaultCrossed(f.name, f.effects(), tuple(ways))
                      for f, ways in found.values()]
        if any(f.partition for f, _ in found.values()):
            ex.notes.append(f"{leg.destination}: a partition is in force on this path: "
                            "connects time out, datagrams are lost")


def _dst_ip(ex: Explanation) -> str:
    text = next((h.text for h in ex.hops if h.step == "destination"), "")
    for word in text.split():
        head = host_of(word.split("/")[0])
        if _is_ip(head):
            return head
    return ""


def _explain(snap: Snapshot, source: str, destination: str, port: str | None,
             protocol: str | None) -> Explanation:
    view = _View(snap)
    proto = _protocol(protocol)
    if port is not None and not port.isdigit() and not port.replace("-", "").isalnum():
        raise ExplainError(f"bad --port {port!r}: a number or a port name")
    src_t = _resolve(view, source)
    if src_t.kind != "pod" or src_t.pod is None:
        raise ExplainError(f"FROM must be a pod (ns/pod, pod or a pod IP), not {source!r}")
    dst_t = _resolve(view, destination)
    # The source speaks the destination's family (a pod named by name: its primary address).
    family = family_of(dst_t.ip) if dst_t.ip else None
    src = view.peer(src_t.pod, family)
    if family is not None and src.ip and family_of(src.ip) != family:
        raise ExplainError(f"{src_t.label} has no IPv{family} address, so it cannot reach "
                           f"{dst_t.ip} (its podIPs: {', '.join(_pod_ips(src_t.pod))})")
    hops = [Hop("source", f"{src_t.label} {src.ip} on {src.node or '(no node)'}")]
    notes = list(view.policies.errors)

    if dst_t.kind == "pod" and dst_t.pod is not None:
        dst = view.peer(dst_t.pod, family)
        number, proto_used = _pod_port(view, dst_t.pod, port, proto)
        hops.append(Hop("destination", f"{dst_t.label} {hostport(dst.ip, number)}/{proto_used} on "
                                       f"{dst.node or '(no node)'}"))
        leg_hops, unreachable = _pod_hops(view, src, dst, dst_t.label)
        leg = Leg(dst_t.label, dst.ip, number, proto_used, leg_hops, unreachable=unreachable)
        _judge(view, leg, src, dst)
        return _done(Explanation(src_t.label, dst_t.label, number, proto_used, hops, [leg],
                                 notes))

    if dst_t.kind == "kube-dns":
        number = _port_number(port) if port is not None and port.isdigit() else 53
        proto_used = proto or "UDP"
        hops.append(Hop("destination", f"kube-dns {hostport(snap.dns_ip, number)}/{proto_used}"))
        hops.append(Hop("route", f"{src.node}: {view.service_cidr(snap.dns_ip)} -> the control "
                                 f"plane's tunnel at {snap.proxy_address or '?'}"))
        leg = Leg("kube-dns (kube-system/coredns)", snap.dns_ip, number, proto_used, [
            Hop("dns", "the control plane's DNS server answers it (podnet runs no coredns pod; "
                       "egress policy sees kube-system/coredns, k8s-app=kube-dns)"),
            Hop("ingress", "not judged: with no coredns pod, no agent enforces ingress "
                           "policy for kube-dns")])
        if number != 53:
            leg.unreachable = f"kube-dns serves port 53, not {number}"
        # As the agents do (docs/policy.md): egress at the source, against the kube-dns peer.
        leg.egress = view.policies.egress(src, KUBE_DNS, number, proto_used)
        real = view.policies.ingress(src, KUBE_DNS, number, proto_used)
        if not real.allowed:
            notes.append(f"in a real cluster coredns' own ingress policy would drop this: "
                         f"{_bare(real.reason)}")
        return _done(Explanation(src_t.label, "kube-dns", number, proto_used, hops, [leg],
                                 notes))

    if dst_t.kind == "service" and dst_t.service is not None:
        return _done(_explain_service(view, src, src_t.label, dst_t, port, proto, hops, notes))

    # An address that is no pod, Service or kube-dns.
    number = _port_number(port) if port is not None and port.isdigit() else 0
    if number == 0:
        raise ExplainError(f"{dst_t.ip} is not a pod or Service IP: give --port as a number")
    proto_used = proto or "TCP"
    hops.append(Hop("destination",
                    f"{hostport(dst_t.ip, number)}/{proto_used} (not a pod or Service)"))
    leg = Leg(dst_t.ip, dst_t.ip, number, proto_used, [])
    route, where = (None, "")
    if src.node:
        route, where = view.route(src.node, dst_t.ip) if _in_cluster(view, dst_t.ip) \
            else (None, "")
    if route is not None:
        leg.hops.append(Hop("route", f"{where}: {route.get('podCIDR')} -> {route.get('node')}"))
        leg.unreachable = f"no pod has {dst_t.ip}"
    else:
        leg.unreachable = f"{dst_t.ip} is outside the emulated network: no route to host " \
                          "(EHOSTUNREACH)"
    _judge(view, leg, src, Peer(dst_t.ip))
    return _done(Explanation(src_t.label, dst_t.ip, number, proto_used, hops, [leg], notes))


def _in_cluster(view: _View, ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(addr in c for n in view.services.nodes() for c in n.pod_cidrs)


def _explain_service(view: _View, src: Peer, src_label: str, dst_t: _Target, port: str | None,
                     proto: str | None, hops: list[Hop], notes: list[str]) -> Explanation:
    svc = dst_t.service
    assert svc is not None
    sport = _service_port(svc, port, proto)
    snap = view.snap
    hops.append(Hop("destination", f"{hostport(dst_t.ip, sport.port)}/{sport.protocol} is Service "
                                   f"{svc.key} ({svc.type})"))
    if sport.node_port is not None:
        hops.append(Hop("note", f"type {svc.type}: also open on every node's address at port "
                                f"{sport.node_port} for clients outside the cluster; a pod "
                                "takes the ClusterIP path below"))
    hops.append(Hop("route", f"{src.node}: {view.service_cidr(dst_t.ip)} -> the control "
                             f"plane's tunnel at {snap.proxy_address or '?'}"))
    # A ClusterIP is served by the endpoints of its own family (kube-proxy runs per family).
    endpoints = view.services.ready_endpoints(svc, sport, family_of(dst_t.ip))
    how = f"ClientIP affinity ({int(svc.affinity_s)}s)" if svc.affinity_s is not None \
        else "round robin"
    target = sport.target_port
    label = f"svc/{svc.key}"
    if not endpoints:
        hops.append(Hop("proxy", f"the ClusterIP proxy finds no ready endpoint for port "
                                 f"{sport.port} (targetPort {target})"))
        leg = Leg(label, dst_t.ip, sport.port, sport.protocol, [],
                  unreachable=f"service {svc.key} has no ready endpoints: the connection is "
                              "refused")
        return Explanation(src_label, label, sport.port, sport.protocol, hops, [leg], notes)
    hops.append(Hop("proxy", f"the ClusterIP proxy picks one of {len(endpoints)} ready "
                             f"endpoint(s) ({how}) and connects to it with {src.ip} as the "
                             "source; policy judges the flow against that endpoint"))
    legs = []
    for ep in endpoints:
        dst, ep_label = _endpoint_peer(view, ep)
        node = view.services.node_of(ep)
        leg_hops = []
        if node is None:
            unreachable: str | None = f"no node owns {ep.ip}"
        else:
            leg_hops.append(Hop("tunnel", f"control plane -> {node.name} at "
                                          f"{node.address or '?'}: {ep_label} sees {src.ip} "
                                          "as the source"))
            unreachable = None
        leg = Leg(ep_label, ep.ip, ep.port, sport.protocol, leg_hops, unreachable=unreachable)
        _judge(view, leg, src, dst)
        legs.append(leg)
    return Explanation(src_label, label, sport.port, sport.protocol, hops, legs, notes)


def _done(ex: Explanation) -> Explanation:
    if ex.outcome == DENIED:
        ex.notes.append(_DROP_NOTE)
    return ex


# --- output ----------------------------------------------------------------------------------

def _verdict_line(v: Verdict, who: str) -> str:
    word = "allowed" if v.allowed else "DENIED"
    reason = _bare(v.reason)
    if v.allowed and reason.startswith("allowed by "):
        return f"{who}: {reason}"
    return f"{who}: {word}: {reason}"


def render(ex: Explanation) -> str:
    lines = [f"explain {ex.source} -> {ex.destination}  port {ex.port}/{ex.protocol}", "",
             "path"]
    width = 12
    lines += [f"  {h.step:<{width}} {h.text}" for h in ex.hops]
    many = len(ex.legs) > 1
    for i, leg in enumerate(ex.legs, 1):
        indent = "    " if many else "  "
        if many:
            lines.append(f"  endpoint {i:<3} {leg.destination} "
                         f"{hostport(leg.ip, leg.port)}/{leg.protocol}")
        lines += [f"{indent}{h.step:<{width}} {h.text}" for h in leg.hops]
        if leg.unreachable:
            lines.append(f"{indent}{'unreachable':<{width}} {leg.unreachable}")
        if not many:
            lines += ["", "policy"]
        for v, who in ((leg.egress, ex.source), (leg.ingress, leg.destination)):
            if v is not None:
                lines.append(f"{indent}{v.direction:<{width}} {_verdict_line(v, who)}")
        for crossed in leg.faults:
            ways = " and ".join(crossed.ways)
            lines.append(f"{indent}{'fault':<{width}} {crossed.name}: {crossed.effects} "
                         f"({ways})")
    if ex.notes:
        lines.append("")
        lines += [f"note: {n}" for n in ex.notes]
    lines += ["", ex.summary()]
    return "\n".join(lines)


def _verdict_json(v: Verdict | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {"allowed": v.allowed, "verdict": v.word, "direction": v.direction,
            "policy": v.policy, "rule": v.rule, "reason": v.reason,
            "selectedBy": list(v.selected_by)}


def as_json(ex: Explanation) -> dict[str, Any]:
    return {
        "source": ex.source, "destination": ex.destination, "port": ex.port,
        "protocol": ex.protocol, "outcome": ex.outcome, "summary": ex.summary(),
        "path": [{"step": h.step, "text": h.text} for h in ex.hops],
        "legs": [{"destination": leg.destination, "ip": leg.ip, "port": leg.port,
                  "protocol": leg.protocol, "outcome": leg.outcome,
                  "path": [{"step": h.step, "text": h.text} for h in leg.hops],
                  "unreachable": leg.unreachable, "egress": _verdict_json(leg.egress),
                  "ingress": _verdict_json(leg.ingress),
                  "faults": [{"name": f.name, "effects": f.effects, "ways": list(f.ways)}
                             for f in leg.faults]} for leg in ex.legs],
        "notes": ex.notes,
    }
