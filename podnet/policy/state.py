"""Who is who, for NetworkPolicy: pods, namespaces, nodes and policies as last seen, and the
`Peer` for an IP (pure, no I/O).

Fed from informers in the agents (`agents/policy.py`) and from the store in the control
plane's ClusterIP proxy (which judges UDP through Service IPs: it is the only one that sees
both the client and the endpoint). Lookups are rebuilt lazily, once per burst of changes, so a
busy watch costs nothing on the data path until a flow needs an answer.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from podnet.addresses import address as _fmt
from podnet.policy.engine import KUBE_DNS, NAMESPACE_NAME_LABEL, Peer, PolicySet, Verdict

__all__ = ["PolicyState", "named_ports", "verdict_fields"]

Address = tuple[str, int]
Key = tuple[str, str]
Obj = Mapping[str, Any]
_TERMINAL = ("Succeeded", "Failed")


def _key(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def named_ports(pod: Obj) -> dict[str, tuple[int, str]]:
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


def _labels(obj: Obj) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


class PolicyState:
    """Pods, Namespaces, Nodes and NetworkPolicies as last seen; peers by IP."""

    def __init__(self, *, dns_ip: str = KUBE_DNS.ip,
                 service_cidr: str = "10.96.0.0/12",
                 service_cidrs: Sequence[str] = ()) -> None:
        self.pods: dict[Key, Obj] = {}
        self.namespaces: dict[str, dict[str, str]] = {}
        self.nodes: dict[str, str] = {}     # node name -> podCIDR
        self.policy_objects: dict[Key, Obj] = {}
        self.dns = KUBE_DNS if dns_ip == KUBE_DNS.ip else dataclasses.replace(KUBE_DNS, ip=dns_ip)
        self.service_cidr = ipaddress.ip_network(service_cidr)
        # Every family's service range (dual-stack): a ClusterIP of either is proxied.
        self.service_cidrs = [ipaddress.ip_network(c)
                              for c in dict.fromkeys([service_cidr, *service_cidrs])]
        self.generation = 0     # bumped on every policy change
        self.version = 0        # bumped on every change at all (a denied flow is judged again)
        self._peers: dict[str, Peer] | None = None
        self._policies: PolicySet | None = None
        self.errors: list[str] = []

    # -- feeding

    def replace(self, kind: str, items: Iterable[Obj]) -> None:
        self.version += 1
        if kind == "Pod":
            self.pods = {_key(i): i for i in items}
        elif kind == "Namespace":
            self.namespaces = {_key(i)[1]: _labels(i) for i in items}
        elif kind == "Node":
            self.nodes = {_key(i)[1]: str((i.get("spec") or {}).get("podCIDR") or "")
                          for i in items}
        elif kind == "NetworkPolicy":
            self.policy_objects = {_key(i): i for i in items}
            self._policies = None
            self.generation += 1
        self._peers = None

    def apply(self, kind: str, event: str, obj: Obj) -> None:
        key = _key(obj)
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
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.service_cidrs)

    def verdicts(self, src: Address, dst: Address, protocol: str, *, egress: bool,
                 ingress: bool) -> list[tuple[Peer, Verdict]]:
        """(judged pod, verdict) for each direction judged; an empty list when neither end
        is a pod this place should judge.

        A Service IP other than kube-dns stands for an endpoint not known here: as a
        destination, its egress is judged where the endpoint is (the agent the ClusterIP proxy
        opens the stream to); as a source, it is a UDP flow the proxy translated and already
        judged."""
        src_peer, dst_peer = self.peer(src[0]), self.peer(dst[0])
        policies = self.policies
        out: list[tuple[Peer, Verdict]] = []
        if egress and src_peer.is_pod and not self._proxied(dst_peer):
            out.append((src_peer, policies.egress(src_peer, dst_peer, dst[1], protocol)))
        if ingress and dst_peer.is_pod and not self._proxied(src_peer):
            out.append((dst_peer, policies.ingress(src_peer, dst_peer, dst[1], protocol)))
        return out

    def _proxied(self, peer: Peer) -> bool:
        return not peer.is_pod and self.is_service(peer.ip)

    def _build_peers(self) -> dict[str, Peer]:
        peers: dict[str, Peer] = {self.dns.ip: self.dns}
        for name, cidr in self.nodes.items():
            try:
                net = ipaddress.ip_network(cidr)
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
            # A dual-stack pod is the same peer at each of its addresses (status.podIPs).
            extra = [e.get("ip") for e in status.get("podIPs") or [] if isinstance(e, dict)]
            node = (pod.get("spec") or {}).get("nodeName")
            for addr in dict.fromkeys([ip, *(a for a in extra if isinstance(a, str) and a)]):
                peers[addr] = Peer(addr, namespace, name, _labels(pod), ns_labels,
                                   named_ports(pod), node=node)
        return peers


def verdict_fields(flow: str, src: Address, dst: Address, protocol: str, pod: Peer,
                   verdict: Verdict) -> dict[str, Any]:
    """The fields of a `policy.verdict` log event."""
    return {"flow": flow, "pod": pod.pod, "namespace": pod.namespace,
            "src": _fmt(src), "dst": _fmt(dst), "port": dst[1],
            "protocol": protocol, "proto": protocol, "direction": verdict.direction,
            "verdict": verdict.word, "policy": verdict.policy, "rule": verdict.rule,
            "reason": verdict.reason}
