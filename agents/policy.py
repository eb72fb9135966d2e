"""NetworkPolicy enforcement in the agent: what it watches, how it judges a flow, what it logs.

Every agent follows Pods, Namespaces, Nodes and NetworkPolicies of the whole cluster (four
`Informer`s) into a `PolicyState`, which answers "who is this IP" (`Peer`) and holds the
compiled `PolicySet`. The caches outlive the control plane, so enforcement of the policies
already seen keeps working while it is down. The node network (`agents/netstack.py`) asks the
`Enforcer` once per connection and once per new UDP flow:

- egress is judged by the source pod's agent, for pod IPs and kube-dns (`KUBE_DNS`: the
  control plane answers 10.96.0.10, policy sees the coredns pod of a real cluster). Other
  Service IPs are judged where the real endpoint is known: the destination agent judges the
  client's egress too for streams the ClusterIP proxy brings in (their tunnel peer is the
  control plane), since it watches the same objects.
- ingress is judged by the destination pod's agent when a stream or datagram is delivered
  (same node, from a tunnel, via the proxy or a NodePort).
- TCP is judged at connect only: the replies and everything after ride the accepted
  connection, and a policy change leaves established connections alone (as conntrack-based
  CNIs do); new connections follow the new rules.
- UDP: an allowed flow (src, dst) is remembered (`Conntrack`, idle timeout, bounded); its
  datagrams and the replies (dst -> src) pass without a new verdict. A denied flow is
  remembered too, until the policies change, so a denied sender costs one verdict per flow.

Each verdict is one `policy.verdict` log event (per direction judged).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog

from podnet.client import ApiClient
from podnet.informer import Informer, key_of
from podnet.policy.engine import KUBE_DNS, NAMESPACE_NAME_LABEL, Peer, PolicySet, Verdict
from podnet.resources import BY_KIND

__all__ = ["Conntrack", "Enforcer", "PolicyState", "PolicyWatch"]

Address = tuple[str, int]
Key = tuple[str, str]

UDP_IDLE_S = 30.0           # a UDP flow's conntrack entry lives this long without traffic
MAX_UDP_FLOWS = 8192        # conntrack entries kept per agent (oldest evicted first)
_TERMINAL = ("Succeeded", "Failed")


# --- who is who --------------------------------------------------------------------------


def named_ports(pod: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """The pod's container port names -> (containerPort, protocol)."""
    out: dict[str, tuple[int, str]] = {}
    spec = pod.get("spec") or {}
    for container in (spec.get("containers") or []) if isinstance(spec, dict) else []:
        if not isinstance(container, dict):
            continue
        for port in container.get("ports") or []:
            if not isinstance(port, dict):
                continue
            name, number = port.get("name"), port.get("containerPort")
            if isinstance(name, str) and name and isinstance(number, int):
                out.setdefault(name, (number, str(port.get("protocol") or "TCP").upper()))
    return out


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


class PolicyState:
    """Pods, Namespaces, Nodes and NetworkPolicies as last seen; peers by IP (pure, no I/O).

    Lookups are rebuilt lazily, once per burst of changes, so a busy watch costs nothing on
    the data path until a flow needs an answer.
    """

    def __init__(self, *, dns_ip: str = KUBE_DNS.ip,
                 service_cidr: str = "10.96.0.0/12") -> None:
        self.pods: dict[Key, dict[str, Any]] = {}
        self.namespaces: dict[str, dict[str, str]] = {}
        self.nodes: dict[str, str] = {}     # node name -> podCIDR
        self.policy_objects: dict[Key, dict[str, Any]] = {}
        self.dns = KUBE_DNS if dns_ip == KUBE_DNS.ip else dataclasses.replace(KUBE_DNS, ip=dns_ip)
        self.service_cidr = ipaddress.IPv4Network(service_cidr)
        self.generation = 0     # bumped on every policy change
        self.version = 0        # bumped on every change at all (a denied flow is judged again)
        self._peers: dict[str, Peer] | None = None
        self._policies: PolicySet | None = None
        self.errors: list[str] = []

    # -- feeding

    def replace(self, kind: str, items: list[dict[str, Any]]) -> None:
        self.version += 1
        if kind == "Pod":
            self.pods = {key_of(i): i for i in items}
        elif kind == "Namespace":
            self.namespaces = {key_of(i)[1]: _labels(i) for i in items}
        elif kind == "Node":
            self.nodes = {key_of(i)[1]: str((i.get("spec") or {}).get("podCIDR") or "")
                          for i in items}
        elif kind == "NetworkPolicy":
            self.policy_objects = {key_of(i): i for i in items}
            self._policies = None
            self.generation += 1
        self._peers = None

    def apply(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        gone = event == "DELETED"
        self.version += 1
        if kind == "Pod":
            if gone:
                self.pods.pop(key, None)
            else:
                self.pods[key] = obj
        elif kind == "Namespace":
            if gone:
                self.namespaces.pop(key[1], None)
            else:
                self.namespaces[key[1]] = _labels(obj)
        elif kind == "Node":
            if gone:
                self.nodes.pop(key[1], None)
            else:
                self.nodes[key[1]] = str((obj.get("spec") or {}).get("podCIDR") or "")
        elif kind == "NetworkPolicy":
            if gone:
                self.policy_objects.pop(key, None)
            else:
                self.policy_objects[key] = obj
            self._policies = None
            self.generation += 1
            return
        self._peers = None

    # -- answers

    @property
    def policies(self) -> PolicySet:
        if self._policies is None:
            self._policies = PolicySet(self.policy_objects.values())
            self.errors = self._policies.errors
        return self._policies

    def peer(self, ip: str) -> Peer:
        """The pod (or node gateway, or kube-dns) at `ip`; a bare `Peer(ip)` for anything else."""
        peers = self._peers
        if peers is None:
            peers = self._peers = self._build_peers()
        found = peers.get(ip)
        if found is not None:
            return found
        return Peer(ip)

    def is_service(self, ip: str) -> bool:
        try:
            return ipaddress.IPv4Address(ip) in self.service_cidr
        except ValueError:
            return False

    def _build_peers(self) -> dict[str, Peer]:
        peers: dict[str, Peer] = {self.dns.ip: self.dns}
        for name, cidr in self.nodes.items():
            try:
                net = ipaddress.IPv4Network(cidr)
            except ValueError:
                continue
            gateway = str(net.network_address + 1)
            peers[gateway] = Peer(gateway, node=name)
        for (namespace, name), pod in self.pods.items():
            status = pod.get("status") or {}
            ip = status.get("podIP")
            if not isinstance(ip, str) or not ip or status.get("phase") in _TERMINAL:
                continue
            ns_labels = dict(self.namespaces.get(namespace) or {})
            ns_labels.setdefault(NAMESPACE_NAME_LABEL, namespace)
            peers[ip] = Peer(ip, namespace, name, _labels(pod), ns_labels, named_ports(pod),
                             node=(pod.get("spec") or {}).get("nodeName"))
        return peers


# --- UDP conntrack -----------------------------------------------------------------------


class Conntrack:
    """Allowed UDP flows (src, dst) with an idle timeout, oldest evicted past `limit`."""

    def __init__(self, *, idle_s: float = UDP_IDLE_S, limit: int = MAX_UDP_FLOWS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self.limit = limit
        self.clock = clock
        self._flows: OrderedDict[tuple[Address, Address], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._flows)

    def add(self, src: Address, dst: Address) -> None:
        key = (src, dst)
        self._flows[key] = self.clock()
        self._flows.move_to_end(key)
        while len(self._flows) > self.limit:
            self._flows.popitem(last=False)

    def seen(self, src: Address, dst: Address) -> bool:
        """True (and the entry refreshed) when (src, dst) or its reply direction is allowed."""
        now = self.clock()
        for key in ((src, dst), (dst, src)):
            stamp = self._flows.get(key)
            if stamp is None:
                continue
            if now - stamp > self.idle_s:
                del self._flows[key]
                continue
            self._flows[key] = now
            self._flows.move_to_end(key)
            return True
        return False


# --- judging -------------------------------------------------------------------------------


class Enforcer:
    """The node network's policy hook (`NodeNetwork.policy`): True lets a flow pass."""

    def __init__(self, state: PolicyState, node: str, *, reject: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.node = node
        self.reject = reject
        self.conntrack = Conntrack(clock=clock)
        self._denied: OrderedDict[tuple[Address, Address], int] = OrderedDict()
        self.log = structlog.get_logger().bind(component="policy", node=node)

    def stream(self, src: Address, dst: Address, flow: str, *, egress: bool,
               ingress: bool) -> bool:
        return self._judge(src, dst, flow, "tcp", egress, ingress)

    def datagram(self, src: Address, dst: Address, flow: str, *, egress: bool,
                 ingress: bool) -> bool:
        if self.conntrack.seen(src, dst):
            return True
        key = (src, dst)
        if self._denied.get(key) == self.state.version:
            return False
        allowed = self._judge(src, dst, flow, "udp", egress, ingress)
        if allowed:
            self._denied.pop(key, None)
            self.conntrack.add(src, dst)
        else:
            self._denied[key] = self.state.version
            self._denied.move_to_end(key)
            while len(self._denied) > MAX_UDP_FLOWS:
                self._denied.popitem(last=False)
        return allowed

    def verdicts(self, src: Address, dst: Address, protocol: str, *, egress: bool,
                 ingress: bool) -> list[tuple[Peer, Verdict]]:
        """The verdicts a flow gets here: (judged pod, verdict) per direction judged."""
        state = self.state
        src_peer, dst_peer = state.peer(src[0]), state.peer(dst[0])
        policies = state.policies
        out: list[tuple[Peer, Verdict]] = []
        # A Service IP other than kube-dns: the endpoint is not known here; its agent judges.
        if egress and src_peer.is_pod and not (
                state.is_service(dst[0]) and dst_peer is not state.dns):
            out.append((src_peer, policies.egress(src_peer, dst_peer, dst[1], protocol)))
        if ingress and dst_peer.is_pod:
            out.append((dst_peer, policies.ingress(src_peer, dst_peer, dst[1], protocol)))
        return out

    def _judge(self, src: Address, dst: Address, flow: str, protocol: str, egress: bool,
               ingress: bool) -> bool:
        allowed = True
        for pod, verdict in self.verdicts(src, dst, protocol, egress=egress, ingress=ingress):
            self.log.info("policy.verdict", flow=flow, pod=pod.pod, namespace=pod.namespace,
                          src=f"{src[0]}:{src[1]}", dst=f"{dst[0]}:{dst[1]}", port=dst[1],
                          protocol=protocol, proto=protocol, direction=verdict.direction,
                          verdict=verdict.word, policy=verdict.policy, rule=verdict.rule,
                          reason=verdict.reason)
            allowed = allowed and verdict.allowed
        return allowed


# --- watching --------------------------------------------------------------------------------


class PolicyWatch:
    """Follows the four resources into `state` (run it as a named task)."""

    KINDS = ("Namespace", "Node", "Pod", "NetworkPolicy")

    def __init__(self, api: ApiClient, state: PolicyState, node: str = "") -> None:
        self.state = state
        self.log = structlog.get_logger().bind(component="policy", node=node)
        self.informers = [self._informer(api, kind) for kind in self.KINDS]

    def _informer(self, api: ApiClient, kind: str) -> Informer:
        state = self.state

        async def on_list(items: list[dict[str, Any]]) -> None:
            state.replace(kind, items)
            if kind == "NetworkPolicy":
                self._changed("LISTED", None)

        async def on_event(event: str, obj: dict[str, Any]) -> None:
            state.apply(kind, event, obj)
            if kind == "NetworkPolicy":
                self._changed(event, obj)

        return Informer(api, BY_KIND[kind], on_list=on_list, on_event=on_event)

    def _changed(self, event: str, obj: dict[str, Any] | None) -> None:
        """Once per policy change: when this node started enforcing it (the 1 s promise is
        measured from here), and what in it could not be read."""
        policies = self.state.policies
        name = "/".join(key_of(obj)) if obj is not None else None
        self.log.info("policy.changed", change=event.lower(), policy=name,
                      policies=len(policies), generation=self.state.generation)
        for problem in policies.errors:
            if name is None or problem.startswith(name + ":"):
                self.log.warning("policy.unreadable", problem=problem)

    async def synced(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self.informers))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for informer in self.informers:
                group.create_task(informer.run(), name=f"policy-watch-{informer.res.plural}")
