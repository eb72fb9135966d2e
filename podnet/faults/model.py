"""The NetworkFault model: which faults a flow crosses, and what each does to it. No I/O.

A stored `podnet.dev/v1alpha1` NetworkFault (cluster-scoped) is read into a `Fault` by
`parse_fault`; a `FaultSet` answers which faults a flow (source `Endpoint`, destination
`Endpoint`, destination port, protocol) crosses, honouring each fault's direction:

- `to` (from -> to only): the flow's source matches `spec.from` and its destination `spec.to`;
- `from` (to -> from only): the reverse;
- `both` (the default): either.

`port` filters on the port the flow was addressed to (the server's port, for both directions
of a connection), `protocol` on tcp / udp (`all` matches both).

Randomness is deterministic: a fault's decisions for a datagram or chunk are a keyed hash of
(the fault's seed, a stable name of the flow, the datagram's sequence number in that flow, what
is drawn), never a shared RNG whose state depends on what else ran. So the same seed and the
same traffic drop the same sequence numbers, whatever the timing and interleaving of flows.
The seed is `spec.seed` when set, else derived from the cluster seed and the fault's name.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from podnet.selectors import LabelSelector, SelectorError

__all__ = [
    "DIRECTIONS",
    "PROTOCOLS",
    "RTO_S",
    "Endpoint",
    "Fault",
    "FaultError",
    "FaultSet",
    "Selector",
    "TokenBucket",
    "derived_seed",
    "ip_in",
    "parse_fault",
    "parse_faults",
    "selector_from_text",
]

DIRECTIONS = ("to", "from", "both")
PROTOCOLS = ("tcp", "udp", "all")
SELECTOR_KINDS = ("node", "pod", "namespace", "selector", "service")

# TCP loss is modelled as retransmission: a lost chunk arrives late by one retransmission
# timeout per lost attempt, doubling each time (Linux: 200 ms minimum RTO, exponential backoff),
# never corrupted or missing. Attempts are capped so a 100% loss cannot stall for ever here;
# a partition is the way to cut a link.
RTO_S = 0.2
MAX_RETRANSMITS = 6

# Token bucket burst: at most this long of traffic at the configured rate, and never less than
# one large chunk, so a sender is paced smoothly instead of in big lumps.
BURST_S = 0.02
MIN_BURST_BYTES = 1500

_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
MAX_DELAY_MS = 60_000
MAX_RATE_KBIT = 100_000_000


class FaultError(ValueError):
    """A NetworkFault that cannot be read; the message starts with the field path."""


@dataclass(frozen=True)
class Endpoint:
    """One end of a flow, as far as faults care. A node agent itself (gossip, tunnels) is an
    endpoint with `node` set and no pod."""

    ip: str = ""
    node: str = ""
    namespace: str = ""
    pod: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    services: frozenset[str] = frozenset()    # "ns/name" of the Service a flow was sent to

    def describe(self) -> str:
        if self.pod:
            return f"{self.namespace}/{self.pod}"
        if self.services:
            return "svc/" + ",".join(sorted(self.services))
        if self.node and not self.ip:
            return f"node/{self.node}"
        return self.ip or (f"node/{self.node}" if self.node else "?")


@dataclass(frozen=True)
class Selector:
    """One side of a fault: exactly one of node, pod ("ns/name"), namespace, label selector
    (optionally within a namespace), service ("ns/name")."""

    kind: str
    value: str
    namespace: str = ""
    labels: LabelSelector | None = field(default=None, compare=False, hash=False)

    def matches(self, ep: Endpoint) -> bool:
        if self.kind == "node":
            return ep.node == self.value
        if self.kind == "pod":
            return bool(ep.pod) and f"{ep.namespace}/{ep.pod}" == self.value
        if self.kind == "namespace":
            return bool(ep.pod) and ep.namespace == self.value
        if self.kind == "service":
            return self.value in ep.services
        # label selector: pods only (a node agent or a Service IP has no pod labels)
        if not ep.pod or (self.namespace and ep.namespace != self.namespace):
            return False
        return self.labels is not None and self.labels.matches(ep.labels)

    def text(self) -> str:
        """The CLI spelling: node/NAME, pod/NS/NAME, ns/NAME, svc/NS/NAME, or the selector."""
        if self.kind == "selector":
            return self.value + (f" (ns {self.namespace})" if self.namespace else "")
        prefix = {"node": "node", "pod": "pod", "namespace": "ns", "service": "svc"}[self.kind]
        return f"{prefix}/{self.value}"


@dataclass(frozen=True)
class Fault:
    name: str
    src: Selector
    dst: Selector
    direction: str = "both"
    protocol: str = "all"
    port: int | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rate_kbit: float = 0.0
    partition: bool = False
    seed: int = 0

    @property
    def idle(self) -> bool:
        """True when the fault does nothing (every value 0): zero means zero."""
        return not (self.partition or self.delay_ms > 0 or self.jitter_ms > 0
                    or self.loss_pct > 0 or self.rate_kbit > 0)

    def effects(self) -> str:
        """What it does, in a few words: "delay 100ms +-10ms, loss 5%" (or "nothing")."""
        parts = []
        if self.partition:
            parts.append("partition")
        if self.delay_ms or self.jitter_ms:
            parts.append(f"delay {self.delay_ms:g}ms"
                         + (f" +-{self.jitter_ms:g}ms" if self.jitter_ms else ""))
        if self.loss_pct:
            parts.append(f"loss {self.loss_pct:g}%")
        if self.rate_kbit:
            parts.append(f"rate {self.rate_kbit:g}kbit/s")
        return ", ".join(parts) or "nothing (every value 0)"

    @property
    def node_level(self) -> bool:
        """Between node selectors on both sides: also cuts the agents' own traffic."""
        return self.src.kind == "node" and self.dst.kind == "node"

    # -- randomness (keyed hash: see the module docstring)

    def draw(self, flow: str, seq: int, purpose: str) -> float:
        """A uniform number in [0, 1) for this fault, flow, sequence number and purpose."""
        digest = hashlib.blake2b(f"{flow}\0{seq}\0{purpose}".encode(), digest_size=8,
                                 key=struct.pack(">q", self.seed & 0x7FFF_FFFF_FFFF_FFFF))
        return (int.from_bytes(digest.digest(), "big") >> 11) / float(1 << 53)

    def drops(self, flow: str, seq: int) -> bool:
        """Whether datagram `seq` of `flow` is lost (partition drops everything)."""
        if self.partition:
            return True
        if self.loss_pct <= 0:
            return False
        if self.loss_pct >= 100:
            return True
        return self.draw(flow, seq, "loss") < self.loss_pct / 100.0

    def delay_s(self, flow: str, seq: int) -> float:
        """delay + uniform jitter in [-J, +J], clamped at 0, in seconds."""
        delay = self.delay_ms
        if self.jitter_ms > 0:
            delay += (2.0 * self.draw(flow, seq, "jitter") - 1.0) * self.jitter_ms
        return max(0.0, delay) / 1000.0

    def retransmit_s(self, flow: str, seq: int) -> float:
        """TCP: the extra delay of a chunk whose segments were lost and sent again (0 when
        none was lost): one RTO per lost attempt, doubling, capped at MAX_RETRANSMITS."""
        if self.loss_pct <= 0:
            return 0.0
        p = min(self.loss_pct, 100.0) / 100.0
        extra, rto = 0.0, RTO_S
        for attempt in range(MAX_RETRANSMITS):
            if self.draw(flow, seq, f"loss{attempt}") >= p:
                break
            extra += rto
            rto *= 2
        return extra

    def matches(self, src: Endpoint, dst: Endpoint, port: int, protocol: str) -> bool:
        if self.protocol != "all" and protocol != self.protocol:
            return False
        if self.port is not None and port != self.port:
            return False
        if self.direction != "from" and self.src.matches(src) and self.dst.matches(dst):
            return True
        return (self.direction != "to" and self.dst.matches(src)
                and self.src.matches(dst))


class FaultSet:
    """The faults in force, asked per new flow (not per packet: callers cache the answer)."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        # idle faults (all values 0) are kept out entirely: zero means zero
        self.all: tuple[Fault, ...] = tuple(sorted(faults, key=lambda f: f.name))
        self.faults: tuple[Fault, ...] = tuple(f for f in self.all if not f.idle)

    def __bool__(self) -> bool:
        return bool(self.faults)

    def __len__(self) -> int:
        return len(self.faults)

    def matching(self, src: Endpoint, dst: Endpoint, port: int, protocol: str) -> list[Fault]:
        if not self.faults:
            return []
        return [f for f in self.faults if f.matches(src, dst, port, protocol)]

    def node_partitioned(self, a: str, b: str) -> list[Fault]:
        """Partitions between node agents a and b (either direction as its `direction` says:
        returns those cutting a -> b)."""
        if not self.faults:
            return []
        src, dst = Endpoint(node=a), Endpoint(node=b)
        return [f for f in self.faults if f.partition and f.node_level
                and f.matches(src, dst, 0, "udp")]


# --- the rate limit ---------------------------------------------------------------------------


class TokenBucket:
    """Paces bytes at `rate_kbit` kbit/s with a bounded burst. `reserve(n, now)` takes n bytes
    and says how long the sender must wait before they may go (0 when within the burst); the
    debt it leaves makes the next sender wait longer, so a writer that awaits each answer gets
    exactly the rate and nothing is buffered beyond one burst."""

    def __init__(self, rate_kbit: float, now: float, *, burst_bytes: float | None = None) -> None:
        if rate_kbit <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate_kbit * 1000.0 / 8.0        # bytes per second
        self.burst = (burst_bytes if burst_bytes is not None
                      else max(MIN_BURST_BYTES, self.rate * BURST_S))
        self.tokens = self.burst
        self.stamp = now

    def reserve(self, nbytes: int, now: float) -> float:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        self.tokens -= nbytes
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate


# --- parsing ---------------------------------------------------------------------------------


def _name_ok(text: str) -> bool:
    return bool(_NAME.fullmatch(text)) and len(text) <= 253


def _ns_name(path: str, value: Any) -> str:
    if not isinstance(value, str) or value.count("/") != 1:
        raise FaultError(f"{path}: must be \"NAMESPACE/NAME\", got {value!r}")
    ns, name = value.split("/")
    if not (_name_ok(ns) and _name_ok(name)):
        raise FaultError(f"{path}: {value!r} is not a valid NAMESPACE/NAME")
    return value


def _selector(path: str, spec: Any) -> Selector:
    if not isinstance(spec, Mapping):
        raise FaultError(f"{path}: must be an object with one of "
                         + ", ".join(SELECTOR_KINDS))
    unknown = sorted(set(spec) - set(SELECTOR_KINDS))
    if unknown:
        raise FaultError(f"{path}.{unknown[0]}: unknown field (expected one of "
                         + ", ".join(SELECTOR_KINDS) + ")")
    kinds = [k for k in ("node", "pod", "selector", "service") if spec.get(k) is not None]
    if not kinds and spec.get("namespace") is not None:
        kinds = ["namespace"]
    if len(kinds) != 1:
        raise FaultError(f"{path}: exactly one of node, pod, namespace, selector, service "
                         f"is required (got {', '.join(kinds) or 'none'})")
    kind = kinds[0]
    value = spec.get(kind)
    namespace = spec.get("namespace")
    if namespace is not None and kind != "namespace" and kind != "selector":
        raise FaultError(f"{path}.namespace: only allowed alone or with selector")
    if namespace is not None and (not isinstance(namespace, str) or not _name_ok(namespace)):
        raise FaultError(f"{path}.namespace: {namespace!r} is not a valid namespace name")
    if kind in ("pod", "service"):
        return Selector(kind, _ns_name(f"{path}.{kind}", value))
    if kind in ("node", "namespace"):
        if not isinstance(value, str) or not _name_ok(value):
            raise FaultError(f"{path}.{kind}: {value!r} is not a valid name")
        return Selector(kind, value)
    if not isinstance(value, str) or not value.strip():
        raise FaultError(f"{path}.selector: must be a non-empty label selector")
    try:
        labels = LabelSelector.parse(value)
    except SelectorError as exc:
        raise FaultError(f"{path}.selector: {exc}") from None
    return Selector("selector", value, str(namespace or ""), labels)


def selector_from_text(text: str, path: str = "selector") -> Selector:
    """The CLI spelling: node/NAME, pod/NS/NAME, ns/NAME, svc/NS/NAME (svc/NAME means the
    default namespace), or a label selector such as app=web."""
    if not isinstance(text, str) or not text:
        raise FaultError(f"{path}: empty selector")
    head, _, rest = text.partition("/")
    if head == "node":
        return _selector(path, {"node": rest})
    if head == "pod":
        return _selector(path, {"pod": rest})
    if head == "ns":
        return _selector(path, {"namespace": rest})
    if head == "svc":
        return _selector(path, {"service": rest if "/" in rest else f"default/{rest}"})
    return _selector(path, {"selector": text})


def _number(path: str, value: Any, *, maximum: float) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FaultError(f"{path}: must be a number, got {value!r}")
    if value != value or value < 0 or value > maximum:   # NaN, negative, absurd
        raise FaultError(f"{path}: must be between 0 and {maximum:g}, got {value!r}")
    return float(value)


def derived_seed(cluster_seed: int, name: str) -> int:
    digest = hashlib.blake2b(f"{cluster_seed}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def parse_fault(obj: Mapping[str, Any], *, cluster_seed: int = 0) -> Fault:
    """A stored NetworkFault -> `Fault`; raises FaultError naming the field at fault."""
    if not isinstance(obj, Mapping):
        raise FaultError("object: must be a map")
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not _name_ok(name):
        raise FaultError(f"metadata.name: {name!r} is not a valid name")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise FaultError("spec: must be an object")
    src = _selector("spec.from", spec.get("from"))
    dst = _selector("spec.to", spec.get("to"))
    direction = spec.get("direction") or "both"
    if direction not in DIRECTIONS:
        raise FaultError(f"spec.direction: must be one of to, from, both, got {direction!r}")
    protocol = spec.get("protocol") or "all"
    if isinstance(protocol, str):
        protocol = protocol.lower()
    if protocol not in PROTOCOLS:
        raise FaultError(f"spec.protocol: must be one of tcp, udp, all, got {protocol!r}")
    port = spec.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 1 <= port <= 65535):
        raise FaultError(f"spec.port: must be a port number 1-65535, got {port!r}")
    loss = _number("spec.lossPct", spec.get("lossPct"), maximum=100)
    partition = spec.get("partition", False)
    if partition is None:
        partition = False
    if not isinstance(partition, bool):
        raise FaultError(f"spec.partition: must be true or false, got {partition!r}")
    seed = spec.get("seed")
    if seed is None:
        seed = derived_seed(cluster_seed, name)
    elif isinstance(seed, bool) or not isinstance(seed, int) or seed < 0 or seed >= 1 << 63:
        raise FaultError(f"spec.seed: must be an integer 0 <= seed < 2^63, got {seed!r}")
    return Fault(
        name=name, src=src, dst=dst, direction=direction, protocol=protocol, port=port,
        delay_ms=_number("spec.delayMs", spec.get("delayMs"), maximum=MAX_DELAY_MS),
        jitter_ms=_number("spec.jitterMs", spec.get("jitterMs"), maximum=MAX_DELAY_MS),
        loss_pct=loss,
        rate_kbit=_number("spec.rateKbit", spec.get("rateKbit"), maximum=MAX_RATE_KBIT),
        partition=partition, seed=seed)


def parse_faults(objs: Iterable[Mapping[str, Any]], *,
                 cluster_seed: int = 0) -> tuple[FaultSet, list[str]]:
    """Every readable fault, and one problem line per unreadable one (never raises)."""
    faults: list[Fault] = []
    problems: list[str] = []
    for obj in objs:
        try:
            faults.append(parse_fault(obj, cluster_seed=cluster_seed))
        except FaultError as exc:
            meta = obj.get("metadata") if isinstance(obj, Mapping) else None
            name = meta.get("name") if isinstance(meta, Mapping) else None
            problems.append(f"{name}: {exc}")
    return FaultSet(faults), problems


def ip_in(ip: str, cidr: str) -> bool:
    """Whether ip lies in cidr (False for anything unreadable)."""
    try:
        return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(cidr, strict=False)
    except ValueError:
        return False
