"""NodePort allocation rules, without I/O (kube-apiserver's node port allocator).

What is in use is whatever the stored Services hold (their `spec.ports[].nodePort` and
`spec.healthCheckNodePort`), read at each allocation and never cached: a restarted control
plane has every port it handed out, a deleted Service's ports are free at once, and a create
that fails later (name taken, dry run) cannot leak one.

A port belongs to one Service, whatever the protocol: Kubernetes allocates numbers, not
number/protocol pairs. One Service may reuse its own port for TCP and UDP.

Dynamic ports are random, preferring the upper part of the range (Kubernetes' static
subrange, 1.29+): users who pick `nodePort` themselves pick low numbers and rarely collide.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_RANGE = "30000-32767"
EXTERNAL_TYPES = ("NodePort", "LoadBalancer")
Owner = tuple[str, str]     # (namespace, name)


class RangeError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PortRange:
    first: int
    last: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    @property
    def size(self) -> int:
        return self.last - self.first + 1


def parse_range(text: str) -> PortRange:
    """`--service-node-port-range`: "A-B", "A+N" (A to A+N) or one port, as Kubernetes
    takes it."""
    value = text.strip()
    try:
        if "-" in value:
            low, _, high = value.partition("-")
            first, last = int(low), int(high)
        elif "+" in value:
            low, _, extra = value.partition("+")
            first = int(low)
            last = first + int(extra)
        else:
            first = last = int(value)
    except ValueError:
        raise RangeError(f"expected a port range like {DEFAULT_RANGE}, got {text!r}") from None
    if not 1 <= first <= last <= 65535:
        raise RangeError(f"expected ports 1-65535 with the first not above the last, got "
                         f"{text!r}")
    return PortRange(first, last)


def needs_node_ports(spec: Mapping[str, Any]) -> bool:
    """Whether a Service of this spec is given node ports when it names none."""
    kind = spec.get("type")
    if kind == "NodePort":
        return True
    return kind == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is not False


def needs_health_check(spec: Mapping[str, Any]) -> bool:
    """LoadBalancer with `externalTrafficPolicy: Local`: the cloud load balancer's probe
    port (`healthCheckNodePort`)."""
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value else None


def ports_of(spec: Mapping[str, Any]) -> list[int]:
    """Every node port a stored Service spec holds (its ports' and its health check's)."""
    ports = spec.get("ports")
    found = [_int(p.get("nodePort")) for p in ports if isinstance(p, Mapping)] \
        if isinstance(ports, list) else []
    found.append(_int(spec.get("healthCheckNodePort")))
    return [p for p in found if p is not None]


def used_ports(services: Iterable[Mapping[str, Any]]) -> dict[int, Owner]:
    """nodePort -> the Service holding it, over stored Services."""
    out: dict[int, Owner] = {}
    for svc in services:
        spec, meta = svc.get("spec"), svc.get("metadata")
        if not isinstance(spec, Mapping) or not isinstance(meta, Mapping):
            continue
        owner = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        for port in ports_of(spec):
            out.setdefault(port, owner)
    return out


class Allocator:
    """Checks and hands out node ports against a `used` map (see `used_ports`)."""

    def __init__(self, ports: PortRange, rng: random.Random | None = None) -> None:
        self.range = ports
        self.rng = rng or random.Random()

    def check(self, port: int, owner: Owner, used: Mapping[int, Owner]) -> str | None:
        """Why `owner` may not have `port` (Kubernetes' words), or None."""
        if port not in self.range:
            return (f"provided port is not in the valid range. The range of valid ports is "
                    f"{self.range}")
        holder = used.get(port)
        if holder is not None and holder != owner:
            return "provided port is already allocated"
        return None

    def allocate(self, used: Mapping[int, Owner], taken: Iterable[int] = ()) -> int | None:
        """A free port (None when the range is full); `taken` are ports this request has
        already claimed."""
        busy = set(used) | set(taken)
        first, last = self.range.first, self.range.last
        band = min(max(16, self.range.size // 32), 128)
        upper = first + band if first + band <= last else first
        for _ in range(32):     # random probes find a free port at once unless nearly full
            port = self.rng.randint(upper, last)
            if port not in busy:
                return port
        for candidate in itertools.chain(range(upper, last + 1), range(first, upper)):
            if candidate not in busy:
                return candidate
        return None
