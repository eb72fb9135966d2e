"""The node's route table: which node owns a podCIDR, and how to reach its agent.

Routes are learned by gossip (never from the control plane on the data path). A route is
`alive`, `suspect` (its node missed probes; traffic still goes there) or `dead` (withdrawn:
lookups miss it and new connections fail with EHOSTUNREACH at once). Dead routes stay in the
table for display until membership forgets them.

No I/O. `lookup()` is on every new connection's and every datagram's path, so it is a dict
lookup per distinct prefix length (one, normally), not a scan. A dual-stack node's route holds
a podCIDR per family (`pod_cidrs`); IPv6 ones are indexed apart, so an IPv4 lookup does exactly
what it did before IPv6 existed.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field

ALIVE, SUSPECT, DEAD = "alive", "suspect", "dead"
STATES = (ALIVE, SUSPECT, DEAD)

Listener = Callable[["Route | None", "Route | None"], None]


@dataclass(frozen=True)
class Route:
    pod_cidr: str            # "10.244.2.0/24"
    node: str                # "node-2"
    address: str             # the agent's "host:port"
    state: str = ALIVE       # alive | suspect | dead
    incarnation: int = 0     # the owner's incarnation (bumped on restart and to refute)
    counter: int = 0         # the owner's change counter within an incarnation
    since: float = field(default_factory=time.time, compare=False)  # wall time of last change
    pod_cidrs: tuple[str, ...] = ()  # dual-stack: every podCIDR, pod_cidr first; else ()

    @property
    def cidrs(self) -> tuple[str, ...]:
        return self.pod_cidrs or (self.pod_cidr,)

    @property
    def usable(self) -> bool:
        return self.state != DEAD

    @property
    def version(self) -> str:
        return f"{self.incarnation}.{self.counter}"


class RouteTable:
    """Routes by node, with fast longest-prefix lookup over the usable ones."""

    def __init__(self, self_node: str) -> None:
        self.self_node = self_node
        self._by_node: dict[str, Route] = {}
        # prefix length -> {network int: route}, only usable routes; IPv6 podCIDRs apart
        self._index: dict[int, dict[int, Route]] = {}
        self._index6: dict[int, dict[int, Route]] = {}
        self._listeners: list[Listener] = []

    def on_change(self, listener: Listener) -> None:
        """Call `listener(old, new)` after every change (new is None on removal)."""
        self._listeners.append(listener)

    def update(self, route: Route) -> None:
        """Insert or replace the route of `route.node`."""
        for cidr in route.cidrs:
            ipaddress.ip_network(cidr)  # garbage never enters the table
        if route.state not in STATES:
            raise ValueError(f"unknown route state {route.state!r}")
        old = self._by_node.get(route.node)
        if old == route:
            return
        self._by_node[route.node] = route
        self._reindex()
        for listener in list(self._listeners):
            listener(old, route)

    def remove(self, node: str) -> None:
        old = self._by_node.pop(node, None)
        if old is None:
            return
        self._reindex()
        for listener in list(self._listeners):
            listener(old, None)

    def _reindex(self) -> None:
        index: dict[int, dict[int, Route]] = {}
        index6: dict[int, dict[int, Route]] = {}
        for route in self._by_node.values():
            if route.usable:
                for cidr in route.cidrs:
                    net = ipaddress.ip_network(cidr)
                    into = index if net.version == 4 else index6
                    into.setdefault(net.prefixlen, {})[int(net.network_address)] = route
        # Longest prefix first.
        self._index = dict(sorted(index.items(), reverse=True))
        self._index6 = dict(sorted(index6.items(), reverse=True))

    def lookup(self, ip: str) -> Route | None:
        """The usable route whose podCIDR holds `ip`, or None (no route to host)."""
        try:
            value = int(ipaddress.IPv4Address(ip))
        except ValueError:
            return self._lookup6(ip)
        for prefix, nets in self._index.items():
            mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
            route = nets.get(value & mask)
            if route is not None:
                return route
        return None

    def _lookup6(self, ip: str) -> Route | None:
        if not self._index6:
            return None
        try:
            value = int(ipaddress.IPv6Address(ip))
        except ValueError:
            return None
        full = (1 << 128) - 1
        for prefix, nets in self._index6.items():
            route = nets.get(value & (full << (128 - prefix)) & full)
            if route is not None:
                return route
        return None

    def get(self, node: str) -> Route | None:
        return self._by_node.get(node)

    def all(self) -> list[Route]:
        """Every route, dead ones included, sorted by podCIDR."""
        return sorted(self._by_node.values(), key=lambda r: _sort_key(r.pod_cidr))


def _sort_key(cidr: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(cidr)
    return net.version, int(net.network_address), net.prefixlen
