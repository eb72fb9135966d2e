"""The NetworkPolicy engine: which flows the stored policies allow, and why (pure, no I/O).

A flow is judged twice, as in Kubernetes: for egress at its source pod and for ingress at its
destination pod; it passes only if both allow it. For one direction:

- A pod is *isolated* for ingress (egress) iff some NetworkPolicy in its namespace selects it
  (`spec.podSelector`, empty = every pod) and lists that direction in `spec.policyTypes`. When
  `policyTypes` is absent (the API defaults it, but stored objects may predate that) it is
  Ingress, plus Egress when `spec.egress` has rules.
- A pod that is not isolated allows everything: "no policy selects this pod: allowed by default".
- An isolated pod allows a flow iff some rule of some selecting policy allows it (policies and
  rules only ever add). An empty rule list allows nothing (default deny).
- A rule allows a flow when its peer list (`from` / `to`) matches the other end (absent or
  empty: any peer) and its port list matches the destination port (absent or empty: all ports).
- Peers: `podSelector` alone selects pods in the policy's own namespace; `namespaceSelector`
  alone selects every pod in the matching namespaces; both in ONE peer must both match (AND);
  separate peers are alternatives (OR). Selectors never match something that is not a pod.
  `ipBlock` matches by IP address, `cidr` minus every `except` block. Kubernetes leaves it to
  the implementation whether an ipBlock matches pod IPs; podnet matches any IP, pod or not,
  as Calico does.
- Ports: `protocol` defaults to TCP; `port` absent = every port of that protocol; a number,
  optionally up to `endPort` inclusive; or a name, resolved against the DESTINATION pod's
  container ports (for ingress that is the selected pod, for egress the peer), which must
  have that name with the same protocol. SCTP rules never match: podnet carries TCP and UDP.

Two exceptions hold before any policy, as the Kubernetes docs state: a pod can always reach
itself, and traffic between a pod and the node it runs on is always allowed.

Every `Verdict` names the policy and the rule field path that allowed the flow
(`spec.ingress[0].from[1]`), or says why it was denied. Stored objects are validated by the
API; anything malformed that still reaches the engine is contained: a policy whose
`podSelector` cannot be read is skipped, a peer or port entry that cannot be read matches
nothing, and each problem is listed in `PolicySet.errors`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from podnet.selectors import LabelSelector, SelectorError

__all__ = [
    "EGRESS",
    "INGRESS",
    "KUBE_DNS",
    "NAMESPACE_NAME_LABEL",
    "Peer",
    "PolicySet",
    "Verdict",
]

INGRESS = "ingress"
EGRESS = "egress"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DEFAULT_ALLOW = "no policy selects this pod: allowed by default"

_PROTOCOLS = ("TCP", "UDP", "SCTP")
_CACHE_LIMIT = 4096         # distinct (direction, namespace, labels) remembered per PolicySet
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Peer:
    """One end of a flow, as NetworkPolicy sees it.

    `namespace` is None for anything that is not a pod (a node's gateway, the host, a client
    outside the cluster). `node` is the node a pod runs on, or the node whose address a
    non-pod peer is; it only serves the "a pod's own node is always allowed" exception.
    Hashing and equality use the identity fields, not the mappings.
    """

    ip: str
    namespace: str | None = None
    pod: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    namespace_labels: Mapping[str, str] = field(
        default_factory=dict, hash=False, compare=False)
    named_ports: Mapping[str, tuple[int, str]] = field(
        default_factory=dict, hash=False, compare=False)
    node: str | None = None

    def __post_init__(self) -> None:
        # Every namespace carries its name as a label (the API server sets it since 1.21);
        # a caller that only knows the name still gets `namespaceSelector` by name right.
        if self.namespace is not None and NAMESPACE_NAME_LABEL not in self.namespace_labels:
            labels = dict(self.namespace_labels)
            labels[NAMESPACE_NAME_LABEL] = self.namespace
            object.__setattr__(self, "namespace_labels", labels)

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None

    def __str__(self) -> str:
        if self.namespace is None:
            return self.ip
        return f"{self.namespace}/{self.pod or '?'} ({self.ip})"


@dataclass(frozen=True)
class Verdict:
    """The decision for one direction of one flow."""

    allowed: bool
    direction: str  # INGRESS | EGRESS
    policy: str | None  # "ns/name" of the policy whose rule allowed it (None otherwise)
    rule: str | None  # the rule's field path, e.g. "spec.ingress[0].from[1]"
    reason: str  # one sentence a user can read
    selected_by: tuple[str, ...] = ()  # the policies that isolate the pod in this direction

    @property
    def word(self) -> str:
        return "allowed" if self.allowed else "denied"


# kube-dns has no pod in podnet (the control plane answers 10.96.0.10:53); policy sees it as
# the pod it is in a real cluster, so the usual DNS allow rule works unchanged.
KUBE_DNS = Peer(
    "10.96.0.10",
    namespace="kube-system",
    pod="coredns",
    labels={"k8s-app": "kube-dns"},
    namespace_labels={NAMESPACE_NAME_LABEL: "kube-system"},
    named_ports={"dns": (53, "UDP"), "dns-tcp": (53, "TCP"), "metrics": (9153, "TCP")},
)


# --- compiled form ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ports:
    """One entry of a rule's `ports`."""

    path: str
    protocol: str
    number: int | None = None  # None with name None: every port
    end: int | None = None
    name: str | None = None
    broken: bool = False

    def matches(self, port: int, protocol: str, dst: Peer) -> bool:
        if self.broken or protocol != self.protocol:
            return False
        if self.name is not None:
            named = dst.named_ports.get(self.name)
            return named is not None and named[0] == port and named[1].upper() == protocol
        if self.number is None:
            return True
        if self.end is not None:
            return self.number <= port <= self.end
        return port == self.number


@dataclass(frozen=True)
class _PeerSpec:
    """One entry of a rule's `from` / `to`."""

    path: str
    pods: LabelSelector | None = None
    namespaces: LabelSelector | None = None
    cidr: IPNetwork | None = None
    excepts: tuple[IPNetwork, ...] = ()
    broken: bool = False

    def matches(self, other: Peer, policy_namespace: str) -> bool:
        if self.broken:
            return False
        if self.cidr is not None:
            try:
                addr = ipaddress.ip_address(other.ip)
            except ValueError:
                return False
            if addr.version != self.cidr.version or addr not in self.cidr:
                return False
            return not any(addr in ex for ex in self.excepts if ex.version == addr.version)
        if other.namespace is None:
            return False  # selectors only ever select pods
        if self.namespaces is None:
            if other.namespace != policy_namespace:
                return False
        elif not self.namespaces.matches(other.namespace_labels):
            return False
        return self.pods is None or self.pods.matches(other.labels)


@dataclass(frozen=True)
class _Rule:
    path: str  # "spec.ingress[0]"
    peers: tuple[_PeerSpec, ...] | None  # None: any peer
    ports: tuple[_Ports, ...] | None  # None: every port

    def allows(self, other: Peer, dst: Peer, port: int, protocol: str,
               policy_namespace: str) -> tuple[str, str | None] | None:
        """(peer path, ports path) of the match, or None."""
        port_path: str | None = None
        if self.ports is not None:
            for entry in self.ports:
                if entry.matches(port, protocol, dst):
                    port_path = entry.path
                    break
            else:
                return None
        if self.peers is None:
            return self.path, port_path
        for peer in self.peers:
            if peer.matches(other, policy_namespace):
                return peer.path, port_path
        return None


@dataclass(frozen=True)
class _Policy:
    namespace: str
    name: str
    selector: LabelSelector
    ingress: tuple[_Rule, ...] | None  # None: does not isolate for ingress
    egress: tuple[_Rule, ...] | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class _Compiler:
    """Reads one stored policy, collecting problems instead of raising."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.errors: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.errors.append(f"{self.key}: {path}: {message}")

    def selector(self, spec: Any, path: str) -> LabelSelector | None:
        try:
            return LabelSelector.from_spec(spec)
        except SelectorError as err:
            self.problem(path, str(err))
            return None

    def policy(self, namespace: str, name: str, spec: Mapping[str, Any]) -> _Policy | None:
        selector = self.selector(spec.get("podSelector") or {}, "spec.podSelector")
        if selector is None:
            return None
        types = spec.get("policyTypes")
        if not types:
            # The API's defaulting, for objects stored without it.
            types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
        if not isinstance(types, list):
            self.problem("spec.policyTypes", "must be a list")
            return None
        ingress = self.rules(spec.get("ingress"), "spec.ingress", "from") \
            if "Ingress" in types else None
        egress = self.rules(spec.get("egress"), "spec.egress", "to") \
            if "Egress" in types else None
        return _Policy(namespace, name, selector, ingress, egress)

    def rules(self, raw: Any, path: str, peers_key: str) -> tuple[_Rule, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.problem(path, "must be a list")
            return ()
        out: list[_Rule] = []
        for i, rule in enumerate(raw):
            rpath = f"{path}[{i}]"
            if not isinstance(rule, Mapping):
                self.problem(rpath, "must be an object")
                continue
            peers_raw = rule.get(peers_key)
            peers: tuple[_PeerSpec, ...] | None = None
            if peers_raw:
                if isinstance(peers_raw, list):
                    peers = tuple(self.peer(p, f"{rpath}.{peers_key}[{j}]")
                                  for j, p in enumerate(peers_raw))
                else:
                    self.problem(f"{rpath}.{peers_key}", "must be a list")
                    peers = ()
            ports_raw = rule.get("ports")
            ports: tuple[_Ports, ...] | None = None
            if ports_raw:
                if isinstance(ports_raw, list):
                    ports = tuple(self.port(p, f"{rpath}.ports[{j}]")
                                  for j, p in enumerate(ports_raw))
                else:
                    self.problem(f"{rpath}.ports", "must be a list")
                    ports = ()
            out.append(_Rule(rpath, peers, ports))
        return tuple(out)

    def peer(self, raw: Any, path: str) -> _PeerSpec:
        broken = _PeerSpec(path, broken=True)
        if not isinstance(raw, Mapping):
            self.problem(path, "must be an object")
            return broken
        block = raw.get("ipBlock")
        if block is not None:
            return self.ip_block(block, path)
        pods_raw, ns_raw = raw.get("podSelector"), raw.get("namespaceSelector")
        if pods_raw is None and ns_raw is None:
            self.problem(path, "must specify a peer (podSelector, namespaceSelector or ipBlock)")
            return broken
        pods = self.selector(pods_raw, f"{path}.podSelector") if pods_raw is not None else None
        nss = self.selector(ns_raw, f"{path}.namespaceSelector") if ns_raw is not None else None
        if (pods_raw is not None and pods is None) or (ns_raw is not None and nss is None):
            return broken
        return _PeerSpec(path, pods=pods, namespaces=nss)

    def ip_block(self, raw: Any, path: str) -> _PeerSpec:
        broken = _PeerSpec(path, broken=True)
        if not isinstance(raw, Mapping):
            self.problem(f"{path}.ipBlock", "must be an object")
            return broken
        try:
            cidr = ipaddress.ip_network(str(raw.get("cidr")), strict=False)
        except ValueError:
            self.problem(f"{path}.ipBlock.cidr", f"{raw.get('cidr')!r} is not a CIDR")
            return broken
        excepts: list[IPNetwork] = []
        raw_except = raw.get("except") or []
        if not isinstance(raw_except, list):
            self.problem(f"{path}.ipBlock.except", "must be a list")
            return broken
        for k, text in enumerate(raw_except):
            try:
                excepts.append(ipaddress.ip_network(str(text), strict=False))
            except ValueError:
                self.problem(f"{path}.ipBlock.except[{k}]", f"{text!r} is not a CIDR")
                return broken
        return _PeerSpec(path, cidr=cidr, excepts=tuple(excepts))

    def port(self, raw: Any, path: str) -> _Ports:
        if not isinstance(raw, Mapping):
            self.problem(path, "must be an object")
            return _Ports(path, "TCP", broken=True)
        protocol = raw.get("protocol") or "TCP"
        if protocol not in _PROTOCOLS:
            self.problem(f"{path}.protocol", f"unsupported protocol {protocol!r}")
            return _Ports(path, str(protocol), broken=True)
        port, end = raw.get("port"), raw.get("endPort")
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if end is not None and (not isinstance(end, int) or isinstance(end, bool)):
            self.problem(f"{path}.endPort", "must be an integer")
            return _Ports(path, protocol, broken=True)
        if port is None:
            return _Ports(path, protocol)
        if isinstance(port, str):
            return _Ports(path, protocol, name=port)
        if not isinstance(port, int) or isinstance(port, bool):
            self.problem(f"{path}.port", "must be a number or a port name")
            return _Ports(path, protocol, broken=True)
        return _Ports(path, protocol, number=port, end=end)


# --- the set -------------------------------------------------------------------------------


class PolicySet:
    """Every NetworkPolicy of the cluster, compiled once; judging a flow does no parsing."""

    def __init__(self, policies: Iterable[Mapping[str, Any]]) -> None:
        self.errors: list[str] = []
        by_ns: dict[str, list[_Policy]] = {}
        for obj in policies:
            compiled = self._compile(obj)
            if compiled is not None:
                by_ns.setdefault(compiled.namespace, []).append(compiled)
        for items in by_ns.values():
            items.sort(key=lambda p: p.name)
        self._by_namespace: dict[str, tuple[_Policy, ...]] = {
            ns: tuple(items) for ns, items in by_ns.items()}
        # Which policies isolate a pod depends only on its namespace and labels: remembered,
        # so a connection costs a dict lookup, not a selector match per policy.
        self._isolating_cache: dict[tuple[str, str, frozenset[tuple[str, str]]],
                                    list[_Policy]] = {}

    def _compile(self, obj: Mapping[str, Any]) -> _Policy | None:
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        if not isinstance(meta, Mapping):
            self.errors.append("a NetworkPolicy without metadata was skipped")
            return None
        namespace, name = meta.get("namespace"), meta.get("name")
        if not isinstance(namespace, str) or not isinstance(name, str):
            self.errors.append("a NetworkPolicy without namespace/name was skipped")
            return None
        spec = obj.get("spec")
        compiler = _Compiler(f"{namespace}/{name}")
        compiled = None
        if isinstance(spec, Mapping):
            compiled = compiler.policy(namespace, name, spec)
        else:
            compiler.problem("spec", "must be an object")
        self.errors.extend(compiler.errors)
        if compiled is None:
            self.errors.append(f"{namespace}/{name}: skipped (cannot tell which pods it selects)")
        return compiled

    def __len__(self) -> int:
        return sum(len(items) for items in self._by_namespace.values())

    @property
    def names(self) -> list[str]:
        return sorted(p.key for items in self._by_namespace.values() for p in items)

    def namespaces(self) -> set[str]:
        """Namespaces with at least one policy (pods elsewhere are never isolated)."""
        return set(self._by_namespace)

    def selecting(self, pod: Peer, direction: str) -> tuple[str, ...]:
        """The policies that isolate `pod` for `direction`, as "ns/name", sorted."""
        return tuple(p.key for p in self._isolating(pod, direction))

    def _isolating(self, pod: Peer, direction: str) -> list[_Policy]:
        if pod.namespace is None:
            return []
        policies = self._by_namespace.get(pod.namespace)
        if not policies:
            return []
        key = (direction, pod.namespace, frozenset(pod.labels.items()))
        cached = self._isolating_cache.get(key)
        if cached is not None:
            return cached
        out = []
        for policy in policies:
            rules = policy.ingress if direction == INGRESS else policy.egress
            if rules is not None and policy.selector.matches(pod.labels):
                out.append(policy)
        if len(self._isolating_cache) >= _CACHE_LIMIT:
            self._isolating_cache.clear()
        self._isolating_cache[key] = out
        return out

    def ingress(self, src: Peer, dst: Peer, port: int, protocol: str) -> Verdict:
        """May `dst` receive this flow from `src`?"""
        return self._judge(INGRESS, dst, src, src, dst, port, protocol)

    def egress(self, src: Peer, dst: Peer, port: int, protocol: str) -> Verdict:
        """May `src` send this flow to `dst`?"""
        return self._judge(EGRESS, src, dst, src, dst, port, protocol)

    def judge(self, src: Peer, dst: Peer, port: int,
              protocol: str) -> tuple[Verdict, Verdict]:
        """(egress at the source, ingress at the destination); the flow passes iff both allow."""
        return self.egress(src, dst, port, protocol), self.ingress(src, dst, port, protocol)

    def _judge(self, direction: str, subject: Peer, other: Peer, src: Peer, dst: Peer,
               port: int, protocol: str) -> Verdict:
        protocol = protocol.upper()
        if subject.namespace is None:
            return Verdict(True, direction, None, None,
                           f"{subject.ip} is not a pod: NetworkPolicy does not apply")
        if src.ip == dst.ip:
            return Verdict(True, direction, None, None, "a pod can always reach itself")
        if other.namespace is None and other.node is not None and other.node == subject.node:
            return Verdict(True, direction, None, None,
                           "traffic between a pod and its own node is always allowed")
        isolating = self._isolating(subject, direction)
        if not isolating:
            return Verdict(True, direction, None, None, DEFAULT_ALLOW)
        selected_by = tuple(p.key for p in isolating)
        for policy in isolating:
            rules = policy.ingress if direction == INGRESS else policy.egress
            for rule in rules or ():
                hit = rule.allows(other, dst, port, protocol, policy.namespace)
                if hit is None:
                    continue
                peer_path, port_path = hit
                reason = f"allowed by {policy.key} {peer_path}"
                if port_path is not None:
                    reason += f" ({port_path})"
                return Verdict(True, direction, policy.key, peer_path, reason, selected_by)
        verb = "selects" if len(selected_by) == 1 else "select"
        reason = (f"denied: {', '.join(selected_by)} {verb} this pod for {direction} "
                  "and no rule allows it")
        return Verdict(False, direction, None, None, reason, selected_by)
