"""What a Service proxy decides, without I/O: which Service an address (a ClusterIP, or a
NodePort) is, which endpoint serves a new connection, and which UDP flow a reply belongs to.
The control plane's ClusterIP proxy and every agent's NodePort listeners use the same map, so
a Service balances the same way whichever door a connection comes in by.

`ServiceMap` is rebuilt from the stored Services, EndpointSlices and Nodes (read-only views, as
`Store.scan()` gives them) and keeps the state that outlives a rebuild: the round-robin position
of every Service port and the ClientIP affinity pins. `UdpFlows` is the proxy's conntrack for
datagrams. Everything garbage-tolerant: an object that does not parse is skipped, never raised.

Choice rules (kube-proxy's, for one proxy):
- only endpoints whose `conditions.ready` is not false (nil means ready, as the API documents);
- round-robin over the ready endpoints of the Service port, in a stable order;
- `sessionAffinity: ClientIP`: a client IP keeps its endpoint while that endpoint stays ready
  and the client comes back within `timeoutSeconds` (default 10800) of its last connection;
- NodePort with `externalTrafficPolicy: Local`: only the endpoints on the node the
  connection came in at (the caller says which those are);
- the endpoint's port: the slice port with the Service port's name and protocol (the
  controller has resolved named targetPorts into it); a slice without ports serves a numeric
  targetPort as is.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Address = tuple[str, int]
AGENT_ADDRESS_ANNOTATION = "podnet.io/agent-address"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_AFFINITY_S = 10800.0        # Kubernetes' default sessionAffinityConfig timeout
MAX_AFFINITY_S = 86400.0
UDP_TIMEOUT_S = 30.0                # Linux nf_conntrack_udp_timeout
EPHEMERAL = (32768, 60999)          # Linux ip_local_port_range: SNAT source ports for UDP
EXTERNAL_TYPES = ("NodePort", "LoadBalancer")


def _d(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _ipv4(value: Any) -> str | None:
    try:
        return str(ipaddress.IPv4Address(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def _ip(value: Any) -> str | None:
    """An IPv4 or IPv6 address in its one canonical spelling (the index is keyed by it)."""
    try:
        return str(ipaddress.ip_address(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def family_of(ip: str) -> int:
    """4 or 6: the address family of a (canonical) address. A ClusterIP of one family is
    served by that family's endpoints (kube-proxy runs per family)."""
    return 6 if ":" in ip else 4


def _port(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and 0 < value < 65536 else None


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    protocol: str                   # TCP | UDP | SCTP
    target_port: int | str          # a number, or the name of a container port
    node_port: int | None = None    # NodePort and LoadBalancer Services: the port on every node


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    cluster_ips: tuple[str, ...]
    ports: tuple[ServicePort, ...]
    affinity_s: float | None        # ClientIP affinity timeout; None: no affinity
    type: str = "ClusterIP"
    external_local: bool = False    # externalTrafficPolicy: Local (NodePort traffic)
    health_check_node_port: int | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def port_for(self, port: int, protocol: str) -> ServicePort | None:
        return next((p for p in self.ports if p.port == port and p.protocol == protocol), None)


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: str
    port: int
    node: str | None                # the slice's nodeName (None: find it by podCIDR)
    pod: str | None = None          # targetRef name, for the log

    @property
    def address(self) -> Address:
        return (self.ip, self.port)


@dataclass(frozen=True, slots=True)
class Choice:
    """The verdict for one new connection (or UDP flow)."""

    service: Service | None
    port: ServicePort | None
    endpoint: Endpoint | None
    reason: str         # round-robin | affinity | no service | no such port | no ready endpoints
                        # | no local endpoints
    ready: int = 0      # ready endpoints of the port, before exclusions


@dataclass(slots=True)
class _Slice:
    ports: list[tuple[str, int, str]] | None       # None: the slice names no ports
    endpoints: list[tuple[str, str | None, str | None]]    # (ip, node, pod), ready ones only
    family: int = 4                                 # addressType IPv4 | IPv6


def parse_service(obj: Mapping[str, Any]) -> Service | None:
    """The proxy's view of a stored Service; None when it has no ClusterIP to proxy."""
    meta, spec = _d(obj.get("metadata")), _d(obj.get("spec"))
    ns, name = meta.get("namespace"), meta.get("name")
    if not isinstance(ns, str) or not isinstance(name, str) or spec.get("type") == "ExternalName":
        return None
    ips = [spec.get("clusterIP"), *_l(spec.get("clusterIPs"))]
    cluster_ips = tuple(dict.fromkeys(ip for ip in map(_ip, ips) if ip))
    if not cluster_ips:
        return None     # headless ("None"), not allocated yet, or garbage
    ports = []
    for raw in _l(spec.get("ports")):
        p = _d(raw)
        number = _port(p.get("port"))
        if number is None:
            continue
        target = p.get("targetPort")
        target_port: int | str = number     # absent: the Service port itself
        if isinstance(target, str) and target.isdigit():
            target_port = _port(int(target)) or number
        elif isinstance(target, str) and target:
            target_port = target
        else:
            target_port = _port(target) or number
        raw_protocol = p.get("protocol")
        protocol = raw_protocol if isinstance(raw_protocol, str) \
            and raw_protocol in ("TCP", "UDP", "SCTP") else "TCP"
        node_port = _port(p.get("nodePort")) if spec.get("type") in EXTERNAL_TYPES else None
        ports.append(ServicePort(str(p.get("name") or ""), number, protocol, target_port,
                                 node_port))
    affinity: float | None = None
    if spec.get("sessionAffinity") == "ClientIP":
        timeout = _d(_d(spec.get("sessionAffinityConfig")).get("clientIP")).get("timeoutSeconds")
        affinity = float(timeout) if isinstance(timeout, int) and not isinstance(timeout, bool) \
            and 0 < timeout <= MAX_AFFINITY_S else DEFAULT_AFFINITY_S
    svc_type = spec.get("type") if spec.get("type") in EXTERNAL_TYPES else "ClusterIP"
    local = svc_type in EXTERNAL_TYPES and spec.get("externalTrafficPolicy") == "Local"
    health = _port(spec.get("healthCheckNodePort")) if local else None
    return Service(ns, name, cluster_ips, tuple(ports), affinity, str(svc_type), local, health)


def parse_slice(obj: Mapping[str, Any]) -> tuple[str, _Slice] | None:
    """(owning Service key, the slice's ready endpoints and ports), or None."""
    meta = _d(obj.get("metadata"))
    ns, service = meta.get("namespace"), _d(meta.get("labels")).get(SERVICE_NAME_LABEL)
    address_type = obj.get("addressType", "IPv4")
    if not isinstance(ns, str) or not isinstance(service, str) \
            or address_type not in ("IPv4", "IPv6"):
        return None     # FQDN slices are not proxied (as kube-proxy)
    family = 6 if address_type == "IPv6" else 4
    parse_ip = _ipv4 if family == 4 else _ip
    ports: list[tuple[str, int, str]] | None = None
    if isinstance(obj.get("ports"), list):
        ports = []
        for raw in _l(obj.get("ports")):
            p = _d(raw)
            number = _port(p.get("port"))
            if number is not None:
                ports.append((str(p.get("name") or ""), number, str(p.get("protocol") or "TCP")))
    endpoints = []
    for raw in _l(obj.get("endpoints")):
        ep = _d(raw)
        if _d(ep.get("conditions")).get("ready") is False:
            continue        # not ready (or terminating): no new connections
        node = ep.get("nodeName") if isinstance(ep.get("nodeName"), str) else None
        pod = _d(ep.get("targetRef")).get("name")
        for address in _l(ep.get("addresses")):
            ip = parse_ip(address)
            if ip is not None and family_of(ip) == family:
                endpoints.append((ip, node, pod if isinstance(pod, str) else None))
    return f"{ns}/{service}", _Slice(ports, endpoints, family)


def agent_address(node: Mapping[str, Any]) -> str | None:
    """Where a Node's agent listens: its `podnet.io/agent-address` annotation, else its
    InternalIP and kubelet port (as the API server finds kubelets)."""
    meta, status = _d(node.get("metadata")), _d(node.get("status"))
    annotated = _d(meta.get("annotations")).get(AGENT_ADDRESS_ANNOTATION)
    if isinstance(annotated, str) and annotated.rpartition(":")[2].isdigit():
        return annotated
    host = next((a.get("address") for a in map(_d, _l(status.get("addresses")))
                 if a.get("type") == "InternalIP" and isinstance(a.get("address"), str)), None)
    port = _port(_d(_d(status.get("daemonEndpoints")).get("kubeletEndpoint")).get("Port"))
    return f"{host}:{port}" if host and port else None


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    address: str | None
    pod_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def parse_node(obj: Mapping[str, Any]) -> NodeInfo | None:
    name = _d(obj.get("metadata")).get("name")
    if not isinstance(name, str):
        return None
    spec = _d(obj.get("spec"))
    cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for raw in [spec.get("podCIDR"), *_l(spec.get("podCIDRs"))]:
        try:
            cidrs.append(ipaddress.ip_network(raw)) if isinstance(raw, str) else None
        except ValueError:
            continue
    return NodeInfo(name, agent_address(obj), tuple(dict.fromkeys(cidrs)))


class ServiceMap:
    """Services by ClusterIP, their ready endpoints, and the choice of one per connection."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 max_pins: int = 65536) -> None:
        self.clock = clock
        self.max_pins = max_pins
        self._by_ip: dict[str, Service] = {}
        self._by_node_port: dict[tuple[int, str], tuple[Service, ServicePort]] = {}
        self._slices: dict[str, list[_Slice]] = {}
        self._nodes: dict[str, NodeInfo] = {}
        self._rr: dict[tuple[str, int, str], int] = {}
        # (service, port, protocol, client ip) -> (endpoint address, last use); oldest first
        self._pins: OrderedDict[tuple[str, int, str, str], tuple[Address, float]] = OrderedDict()

    # -- building

    def rebuild(self, services: Iterable[Mapping[str, Any]],
                slices: Iterable[Mapping[str, Any]],
                nodes: Iterable[Mapping[str, Any]] | None = None) -> None:
        """Replace the index (Nodes too, when given); round-robin and pins carry over."""
        by_ip: dict[str, Service] = {}
        for obj in services:
            svc = parse_service(obj)
            if svc is not None:
                by_ip.update(dict.fromkeys(svc.cluster_ips, svc))
        grouped: dict[str, list[_Slice]] = {}
        for obj in slices:
            parsed = parse_slice(obj)
            if parsed is not None:
                grouped.setdefault(parsed[0], []).append(parsed[1])
        self._by_ip, self._slices = by_ip, grouped
        by_node_port: dict[tuple[int, str], tuple[Service, ServicePort]] = {}
        for svc in dict.fromkeys(by_ip.values()):
            for p in svc.ports:
                if p.node_port is not None:     # the API never gives one port to two Services
                    by_node_port.setdefault((p.node_port, p.protocol), (svc, p))
        self._by_node_port = by_node_port
        if nodes is not None:
            self.set_nodes(nodes)
        live = {(s.key, p.port, p.protocol) for s in by_ip.values() for p in s.ports}
        self._rr = {k: v for k, v in self._rr.items() if k in live}

    def set_nodes(self, nodes: Iterable[Mapping[str, Any]]) -> None:
        infos = (parse_node(obj) for obj in nodes)
        self._nodes = {n.name: n for n in infos if n is not None}

    # -- lookups

    def nodes(self) -> list[NodeInfo]:
        return list(self._nodes.values())

    def service(self, ip: str) -> Service | None:
        return self._by_ip.get(ip)

    def services(self) -> list[Service]:
        return list(dict.fromkeys(self._by_ip.values()))

    def node_port(self, node_port: int, protocol: str) -> tuple[Service, ServicePort] | None:
        return self._by_node_port.get((node_port, protocol))

    def node_ports(self) -> dict[tuple[int, str], tuple[Service, ServicePort]]:
        """(nodePort, protocol) -> its Service and Service port, for every NodePort."""
        return dict(self._by_node_port)

    def node(self, name: str) -> NodeInfo | None:
        return self._nodes.get(name)

    def node_of(self, endpoint: Endpoint) -> NodeInfo | None:
        """The endpoint's node: its slice's nodeName, else the Node whose podCIDR holds it."""
        if endpoint.node is not None:
            return self._nodes.get(endpoint.node)
        ip = ipaddress.ip_address(endpoint.ip)
        return next((n for n in self._nodes.values() if any(ip in c for c in n.pod_cidrs)),
                    None)

    def ready_endpoints(self, service: Service, port: ServicePort,
                        family: int = 4) -> list[Endpoint]:
        """The ready endpoints of one Service port of one address family (the ClusterIP's),
        deduplicated, in a stable order."""
        found: dict[Address, Endpoint] = {}
        for slc in self._slices.get(service.key, ()):
            if slc.family != family:
                continue
            number = self._slice_port(slc, port)
            if number is None:
                continue
            for ip, node, pod in slc.endpoints:
                found.setdefault((ip, number), Endpoint(ip, number, node, pod))
        return sorted(found.values(),
                      key=lambda e: (ipaddress.ip_address(e.ip), e.port))

    @staticmethod
    def _slice_port(slc: _Slice, port: ServicePort) -> int | None:
        if slc.ports is None:
            return port.target_port if isinstance(port.target_port, int) else None
        return next((number for name, number, protocol in slc.ports
                     if name == port.name and protocol == port.protocol), None)

    # -- choosing

    def choose(self, ip: str, port: int, protocol: str, client_ip: str,
               exclude: Iterable[Address] = ()) -> Choice:
        """The endpoint for a new connection from `client_ip` to `ip:port`; `exclude` holds
        endpoints that already failed this connection (they are skipped, pin or not)."""
        svc = self._by_ip.get(ip)
        if svc is None:
            return Choice(None, None, None, "no service")
        sport = svc.port_for(port, protocol)
        if sport is None:
            return Choice(svc, None, None, "no such port")
        return self._pick(svc, sport, client_ip, exclude, None, family_of(ip))

    def choose_node_port(self, node_port: int, protocol: str, client_ip: str,
                         exclude: Iterable[Address] = (),
                         is_local: Callable[[Endpoint], bool] | None = None) -> Choice:
        """The endpoint for a new connection from `client_ip` to this node's `node_port`.
        With `externalTrafficPolicy: Local` only endpoints `is_local` accepts are candidates
        (kube-proxy's rule: the source is kept, so the reply must leave by this node)."""
        found = self._by_node_port.get((node_port, protocol))
        if found is None:
            return Choice(None, None, None, "no service")
        svc, sport = found
        keep = is_local if svc.external_local and is_local is not None else None
        return self._pick(svc, sport, client_ip, exclude, keep)

    def _pick(self, svc: Service, sport: ServicePort, client_ip: str,
              exclude: Iterable[Address], keep: Callable[[Endpoint], bool] | None,
              family: int = 4) -> Choice:
        ready = self.ready_endpoints(svc, sport, family)
        skip = set(exclude)
        candidates = [e for e in ready if e.address not in skip]
        if keep is not None:
            local = [e for e in candidates if keep(e)]
            if not local and candidates:
                return Choice(svc, sport, None, "no local endpoints", len(ready))
            candidates = local
        if not candidates:
            return Choice(svc, sport, None, "no ready endpoints", len(ready))
        now = self.clock()
        pin_key = (svc.key, sport.port, sport.protocol, client_ip)
        if svc.affinity_s is not None:
            pinned = self._pins.get(pin_key)
            if pinned is not None and now - pinned[1] <= svc.affinity_s:
                chosen = next((e for e in candidates if e.address == pinned[0]), None)
                if chosen is not None:
                    self._pin(pin_key, chosen, now)
                    return Choice(svc, sport, chosen, "affinity", len(ready))
        rr_key = (svc.key, sport.port, sport.protocol)
        turn = self._rr.get(rr_key, 0)
        self._rr[rr_key] = turn + 1
        chosen = candidates[turn % len(candidates)]
        if svc.affinity_s is not None:
            self._pin(pin_key, chosen, now)
        return Choice(svc, sport, chosen, "round-robin", len(ready))

    def _pin(self, key: tuple[str, int, str, str], endpoint: Endpoint, now: float) -> None:
        self._pins[key] = (endpoint.address, now)
        self._pins.move_to_end(key)
        while len(self._pins) > self.max_pins:
            self._pins.popitem(last=False)      # least recently used: bounded under a flood

    def pins(self) -> int:
        return len(self._pins)


@dataclass(slots=True)
class UdpFlow:
    """One client socket's datagrams to one Service port: the proxy sends them to `endpoint`
    from `proxy` (the ClusterIP and a port of its own), so the replies come back to it."""

    client: Address
    service: Address
    endpoint: Endpoint
    proxy: Address
    last: float
    via: Any = field(default=None, compare=False)   # how to reach the client (a tunnel)


class UdpFlows:
    """The proxy's UDP conntrack: flows by (client, service) and by their proxy address,
    forgotten after `timeout_s` without traffic, at most `max_flows` at once."""

    def __init__(self, *, timeout_s: float = UDP_TIMEOUT_S, max_flows: int = 16384,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self.max_flows = max_flows
        self.clock = clock
        self._out: OrderedDict[tuple[Address, Address], UdpFlow] = OrderedDict()
        self._back: dict[Address, UdpFlow] = {}
        self._next_port: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._out)

    def outbound(self, client: Address, service: Address) -> UdpFlow | None:
        """The live flow of `client` to `service` (refreshed), or None."""
        self._expire()
        flow = self._out.get((client, service))
        if flow is not None:
            self._touch(flow)
        return flow

    def reply(self, src: Address, dst: Address) -> UdpFlow | None:
        """The flow a datagram from `src` to the proxy address `dst` answers, or None."""
        self._expire()
        flow = self._back.get(dst)
        if flow is None or flow.endpoint.address != src:
            return None
        self._touch(flow)
        return flow

    def add(self, client: Address, service: Address, endpoint: Endpoint,
            via: Any = None) -> UdpFlow | None:
        """A new flow with a free proxy port on the ClusterIP; None if none is free."""
        self._expire()
        self.drop(client, service)
        while len(self._out) >= self.max_flows:
            _, oldest = self._out.popitem(last=False)
            self._back.pop(oldest.proxy, None)
        low, high = EPHEMERAL
        start = self._next_port.get(service[0], low)
        port = start
        while (service[0], port) in self._back:
            port = low if port >= high else port + 1
            if port == start:
                return None
        self._next_port[service[0]] = low if port >= high else port + 1
        flow = UdpFlow(client, service, endpoint, (service[0], port), self.clock(), via)
        self._out[(client, service)] = flow
        self._back[flow.proxy] = flow
        return flow

    def drop(self, client: Address, service: Address) -> None:
        flow = self._out.pop((client, service), None)
        if flow is not None:
            self._back.pop(flow.proxy, None)

    def _touch(self, flow: UdpFlow) -> None:
        flow.last = self.clock()
        self._out.move_to_end((flow.client, flow.service))

    def _expire(self) -> None:
        now = self.clock()
        while self._out:
            flow = next(iter(self._out.values()))
            if now - flow.last <= self.timeout_s:
                break
            self.drop(flow.client, flow.service)
