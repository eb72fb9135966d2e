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
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog

from podnet.client import ApiClient
from podnet.informer import Informer, key_of
from podnet.policy.state import PolicyState, named_ports, verdict_fields
from podnet.resources import BY_KIND

__all__ = ["Conntrack", "Enforcer", "PolicyState", "PolicyWatch", "named_ports"]

Address = tuple[str, int]

UDP_IDLE_S = 30.0           # a UDP flow's conntrack entry lives this long without traffic
MAX_UDP_FLOWS = 8192        # conntrack entries kept per agent (oldest evicted first)


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

    def _judge(self, src: Address, dst: Address, flow: str, protocol: str, egress: bool,
               ingress: bool) -> bool:
        allowed = True
        for pod, verdict in self.state.verdicts(src, dst, protocol, egress=egress,
                                                ingress=ingress):
            self.log.info("policy.verdict", **verdict_fields(flow, src, dst, protocol, pod,
                                                             verdict))
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
