"""Network faults in the agent: what it watches, and where the faults act on traffic.

Every agent follows NetworkFaults, Pods, Nodes and Services of the whole cluster (four
`Informer`s) into a `FaultState`, which answers "who is this IP" (`Endpoint`) and holds the
`FaultSet` in force (`podnet/faults/model.py`). `FaultEngine` is the node network's hook
(`NodeNetwork.faults`); it acts once per effect, on the sending side:

- UDP: each datagram a pod of this node sends is judged where it leaves (`datagram`): lost
  (seeded, per sequence number in its flow), delayed by delay +- jitter, paced by the rate
  (a datagram that would wait longer than `UDP_QUEUE_S` for the bucket is dropped, as a full
  queue does), or dropped by a partition. Replies are judged by the replier's agent.
- TCP: the agent of the pod that connects wraps both directions of the stream (`FaultLink`):
  each chunk waits for delay +- jitter (+ an RTO-like retransmit delay when the loss model
  says a segment was lost) in a FIFO, so chunks never overtake each other; the rate paces the
  FIFO and its bounded size pushes back on the writer (the writer's `drain()` blocks). A
  partition leaves new connects unanswered (the caller's own timeout fires) and stalls open
  streams; data held longer than `user_timeout_s` resets them (a TCP user timeout).
  Streams the ClusterIP proxy brings in are wrapped by the endpoint's agent instead (only it
  knows both pods); the client's agent matches faults on the Service the flow was sent to.
- Node agents: a partition between node/A and node/B also cuts their gossip (`node_cut`), so
  SWIM suspects, declares dead and withdraws routes, and heals when the fault goes.

With no fault in force `active` is False and the node network does not call in at all: one
attribute check per connect and per datagram. Events: `fault.delayed` (once per flow),
`fault.dropped` (per datagram, at most `DROP_EVENTS_PER_S` per fault and second, the rest
counted in `fault.dropped_summary`), `fault.partitioned` (once per flow), `fault.reset`.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog

from agents.netstack import HIGH_WATER, NodeNetwork, StreamPeer
from podnet.addresses import address as _fmt
from podnet.client import ApiClient
from podnet.faults.lookup import endpoints_by_ip
from podnet.faults.model import Endpoint, Fault, FaultSet, TokenBucket, parse_faults
from podnet.informer import Informer
from podnet.resources import BY_KIND

__all__ = ["FaultEngine", "FaultLink", "FaultState", "FaultWatch"]

Address = tuple[str, int]
Obj = Mapping[str, Any]
Key = tuple[str, str]

# Open streams that cannot deliver for this long under a partition are reset, like a TCP
# user timeout (Linux's default retransmission limit takes ~15 minutes; 15 s keeps a drill
# short and is what many services set). Env PODNET_FAULT_USER_TIMEOUT_S overrides it.
USER_TIMEOUT_S = 15.0
SYN_TIMEOUT_S = 127.0       # an unanswered connect fails after this (Linux: 6 SYN retries)
UDP_QUEUE_S = 0.5           # a rate-limited datagram that would wait longer is dropped
MAX_DELAYED_DATAGRAMS = 10_000   # in flight per agent (netem's queue limit is 1000 per qdisc)
MAX_UDP_FLOWS = 8192
DROP_EVENTS_PER_S = 100
SEGMENT = 16384             # a stream chunk is delayed, lost and paced in pieces this big


def _key(obj: Obj) -> Key:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        meta = {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _labels(obj: Obj) -> dict[str, str]:
    meta = obj.get("metadata")
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _pod_cidr(node: Obj) -> str:
    spec = node.get("spec")
    return str(spec.get("podCIDR") or "") if isinstance(spec, Mapping) else ""


def user_timeout_from_env() -> float:
    text = os.environ.get("PODNET_FAULT_USER_TIMEOUT_S", "")
    try:
        value = float(text) if text else USER_TIMEOUT_S
    except ValueError:
        return USER_TIMEOUT_S
    return value if 0 < value < 86400 else USER_TIMEOUT_S


# --- who is who --------------------------------------------------------------------------------


class FaultState:
    """NetworkFaults, Pods, Nodes and Services as last seen; the endpoint for an IP."""

    def __init__(self, *, cluster_seed: int = 0, dns_ip: str = "10.96.0.10") -> None:
        self.cluster_seed = cluster_seed
        self.dns_ip = dns_ip
        self.pods: dict[Key, Obj] = {}
        self.services: dict[Key, Obj] = {}
        self.nodes: dict[str, str] = {}          # name -> podCIDR
        self.fault_objects: dict[str, Obj] = {}
        self.version = 0                         # bumped on every fault change
        self.errors: list[str] = []
        self._faults: FaultSet | None = None
        self._by_ip: dict[str, Endpoint] | None = None
        self._cidrs: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = []

    def replace(self, kind: str, items: Iterable[Obj]) -> None:
        items = [i for i in items if isinstance(i, Mapping)]
        if kind == "NetworkFault":
            self.fault_objects = {_key(i)[1]: i for i in items}
            self._faults_changed()
            return
        if kind == "Pod":
            self.pods = {_key(i): i for i in items}
        elif kind == "Service":
            self.services = {_key(i): i for i in items}
        elif kind == "Node":
            self.nodes = {_key(i)[1]: _pod_cidr(i) for i in items}
        self._by_ip = None

    def apply(self, kind: str, event: str, obj: Obj) -> None:
        if not isinstance(obj, Mapping):
            return
        key, gone = _key(obj), event == "DELETED"
        if kind == "NetworkFault":
            if gone:
                self.fault_objects.pop(key[1], None)
            else:
                self.fault_objects[key[1]] = obj
            self._faults_changed()
            return
        table: dict[Key, Obj] | None = (self.pods if kind == "Pod" else
                                        self.services if kind == "Service" else None)
        if table is not None:
            if gone:
                table.pop(key, None)
            else:
                table[key] = obj
        elif kind == "Node":
            if gone:
                self.nodes.pop(key[1], None)
            else:
                self.nodes[key[1]] = _pod_cidr(obj)
        self._by_ip = None

    def _faults_changed(self) -> None:
        self._faults = None
        self.version += 1

    @property
    def faults(self) -> FaultSet:
        if self._faults is None:
            self._faults, self.errors = parse_faults(self.fault_objects.values(),
                                                     cluster_seed=self.cluster_seed)
        return self._faults

    def endpoint(self, ip: str) -> Endpoint:
        if self._by_ip is None:
            self._index()
        assert self._by_ip is not None
        found = self._by_ip.get(ip)
        if found is not None:
            return found
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return Endpoint(ip=ip)
        for net, node in self._cidrs:
            if addr in net:     # a node's gateway, or a pod we have not seen yet
                return Endpoint(ip=ip, node=node)
        return Endpoint(ip=ip)

    def _index(self) -> None:
        by_ip = endpoints_by_ip(self.pods.values(), self.services.values(), self.dns_ip)
        cidrs = []
        for node, cidr in self.nodes.items():
            try:
                cidrs.append((ipaddress.ip_network(cidr), node))
            except ValueError:
                continue
        self._cidrs = cidrs
        self._by_ip = by_ip


# --- logging, rate-limited ---------------------------------------------------------------------


class _DropLog:
    """`fault.dropped` per datagram, at most DROP_EVENTS_PER_S per fault and second; what was
    left out is counted in one `fault.dropped_summary` when the next second starts."""

    def __init__(self, log: Any, clock: Callable[[], float]) -> None:
        self.log = log
        self.clock = clock
        self.window: dict[str, tuple[float, int, int]] = {}   # fault -> (start, logged, skipped)

    def __call__(self, fault: str, **fields: Any) -> None:
        now = self.clock()
        start, logged, skipped = self.window.get(fault, (now, 0, 0))
        if now - start >= 1.0:
            if skipped:
                self.log.info("fault.dropped_summary", fault=fault, suppressed=skipped,
                              seconds=round(now - start, 3))
            start, logged, skipped = now, 0, 0
        if logged < DROP_EVENTS_PER_S:
            self.log.info("fault.dropped", fault=fault, **fields)
            logged += 1
        else:
            skipped += 1
        self.window[fault] = (start, logged, skipped)


# --- the hook ------------------------------------------------------------------------------------


class _UdpFlow:
    __slots__ = ("faults", "label", "logged", "seq")

    def __init__(self, faults: list[Fault], label: str) -> None:
        self.faults = faults
        self.label = label
        self.seq = 0
        self.logged = False


class FaultEngine:
    """The node network's fault hook (`NodeNetwork.faults`)."""

    def __init__(self, state: FaultState, node: str, *, user_timeout_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 network: NodeNetwork | None = None) -> None:
        self.state = state
        self.node = node
        self.network = network
        self.user_timeout_s = user_timeout_s if user_timeout_s is not None \
            else user_timeout_from_env()
        self.clock = clock
        self.active = False         # the one check the data path makes
        self.version = -1
        self.log = structlog.get_logger().bind(component="faults", node=node)
        self._dropped = _DropLog(self.log, clock)
        self._udp: OrderedDict[tuple[Address, Address], _UdpFlow] = OrderedDict()
        self._buckets: dict[tuple[str, bool], TokenBucket] = {}
        self._in_flight = 0
        self._links: weakref.WeakSet[FaultLink] = weakref.WeakSet()
        self.refresh()

    # -- changes

    def refresh(self) -> None:
        """After any change of faults: re-match flows; open streams pick up the change."""
        if self.version == self.state.version:
            return
        self.version = self.state.version
        faults = self.state.faults
        self.active = bool(faults)
        # Sequence numbers count from 0 again: the same traffic after a change of faults
        # meets the same decisions (the same seed drops the same datagrams).
        self._udp.clear()
        self._buckets.clear()
        for problem in self.state.errors:
            self.log.warning("fault.unreadable", problem=problem)
        for link in list(self._links):
            link.refresh()
        if self.active and self.network is not None:
            # connections opened before the fault: they cross it too from now on
            spliced = self.network.splice_faults(self)
            if spliced:
                self.log.info("fault.spliced", connections=spliced)

    def forget_unmatched(self) -> None:
        for key in [k for k, flow in self._udp.items() if not flow.faults]:
            del self._udp[key]

    # -- node agents

    def node_cut(self, peer: str) -> bool:
        """A partition cuts this node's messages to node `peer`."""
        return self.active and bool(self.state.faults.node_partitioned(self.node, peer))

    # -- datagrams

    def datagram(self, src: Address, dst: Address, data: bytes, flow: str,
                 send: Callable[[Address, Address, bytes, str], None], *,
                 arriving: bool = False) -> bool:
        """Judge one datagram leaving a pod of this node (or, with `arriving`, one arriving
        from a Service IP: the proxy's replies, which no agent sent). True: taken (dropped,
        or `send` will be called later); False: pass it on now, untouched."""
        key = (src, dst)
        entry = self._udp.get(key)
        if entry is None:
            a, b = self.state.endpoint(src[0]), self.state.endpoint(dst[0])
            # arriving: only the proxy's replies are judged here; its sender's agent judged
            # anything else
            faults = ([] if arriving and not a.services
                      else self.state.faults.matching(a, b, dst[1], "udp"))
            entry = _UdpFlow(faults, f"{a.describe()}:{src[1]}>{b.describe()}:{dst[1]}/udp")
            self._udp[key] = entry
            while len(self._udp) > MAX_UDP_FLOWS:
                self._udp.popitem(last=False)
        if not entry.faults:
            return False
        seq = entry.seq
        entry.seq += 1
        fields = {"flow": flow, "src": _fmt(src), "dst": _fmt(dst), "protocol": "udp"}
        delay = 0.0
        for fault in entry.faults:
            if fault.partition:
                if not entry.logged:
                    entry.logged = True
                    self.log.info("fault.partitioned", fault=fault.name, **fields)
                return True
            if fault.drops(entry.label, seq):
                self._dropped(fault.name, seq=seq, **fields)
                return True
            delay += fault.delay_s(entry.label, seq)
        now = self.clock()
        paced = 0.0     # several rates: the slowest decides (each bucket takes the bytes)
        for fault in entry.faults:
            if fault.rate_kbit > 0:
                wait = self._bucket(fault, True, now).reserve(len(data) + 28, now)
                if wait > UDP_QUEUE_S:
                    self._dropped(fault.name, seq=seq, reason="rate", **fields)
                    return True
                paced = max(paced, wait)
        delay += paced
        if not entry.logged and delay > 0:
            entry.logged = True
            self.log.info("fault.delayed", faults=[f.name for f in entry.faults],
                          delay_ms=_configured_ms(entry.faults), **fields)
        if delay <= 0:
            return False
        if self._in_flight >= MAX_DELAYED_DATAGRAMS:
            self._dropped(entry.faults[0].name, seq=seq, reason="queue full", **fields)
            return True
        self._in_flight += 1
        asyncio.get_running_loop().call_later(delay, self._late, send, src, dst, data, flow)
        return True

    def _late(self, send: Callable[[Address, Address, bytes, str], None], src: Address,
              dst: Address, data: bytes, flow: str) -> None:
        self._in_flight -= 1
        try:
            send(src, dst, data, flow)
        except OSError as exc:
            # too late to tell the sender (a datagram's error comes with the send that
            # carried it); a lost datagram is what the application expects of UDP anyway
            self.log.debug("fault.late_send_failed", flow=flow, src=_fmt(src), dst=_fmt(dst),
                           error=str(exc))

    def _bucket(self, fault: Fault, forward: bool, now: float) -> TokenBucket:
        """One bucket per fault and direction: flows through one shaped link share it."""
        bucket = self._buckets.get((fault.name, forward))
        if bucket is None:
            bucket = self._buckets[(fault.name, forward)] = TokenBucket(fault.rate_kbit, now)
        return bucket

    # -- streams

    def stream(self, src: Address, dst: Address, flow: str) -> FaultLink | None:
        """The faults of a new TCP connection src -> dst, or None when none applies."""
        a, b = self.state.endpoint(src[0]), self.state.endpoint(dst[0])
        faults = self.state.faults
        if not (faults.matching(a, b, dst[1], "tcp") or faults.matching(b, a, dst[1], "tcp")):
            return None
        link = FaultLink(self, a, b, src, dst, flow)
        self._links.add(link)
        return link


def _configured_ms(faults: Iterable[Fault]) -> float:
    return sum(f.delay_ms for f in faults)


# --- one faulted TCP stream ----------------------------------------------------------------------

_EOF = object()
_CLOSE = object()


class FaultLink:
    """Both directions of one TCP stream under faults: `forward` carries what the connecting
    side writes, `back` what the accepting side writes. Each is a `_Lane` that stands between
    a writer and the end it writes into."""

    def __init__(self, engine: FaultEngine, a: Endpoint, b: Endpoint, src: Address,
                 dst: Address, flow: str) -> None:
        self.engine = engine
        self.a, self.b, self.src, self.dst, self.flow = a, b, src, dst, flow
        self.label = f"{a.describe()}:{src[1]}>{b.describe()}:{dst[1]}/tcp"
        self.version = -1
        self.fwd: list[Fault] = []
        self.bwd: list[Fault] = []
        self.delay_logged = False
        self.cut_logged = False
        self.lanes: list[_Lane] = []
        self.dead = False
        self._match()

    def _match(self) -> None:
        faults = self.engine.state.faults
        self.version = self.engine.version
        self.fwd = faults.matching(self.a, self.b, self.dst[1], "tcp")
        self.bwd = faults.matching(self.b, self.a, self.dst[1], "tcp")

    def faults(self, forward: bool) -> list[Fault]:
        if self.version != self.engine.version:
            self._match()
        return self.fwd if forward else self.bwd

    def partitioned(self, forward: bool) -> bool:
        return any(f.partition for f in self.faults(forward))

    def fields(self) -> dict[str, Any]:
        return {"flow": self.flow, "src": _fmt(self.src), "dst": _fmt(self.dst),
                "protocol": "tcp"}

    def connect_delay_s(self) -> float | None:
        """The handshake's extra time (one round trip through the faults), or None when a
        partition leaves the SYN or its answer unanswered."""
        fwd, bwd = self.faults(True), self.faults(False)
        cut = [f for f in fwd + bwd if f.partition]
        if cut:
            if not self.cut_logged:
                self.cut_logged = True
                self.engine.log.info("fault.partitioned", fault=cut[0].name, **self.fields())
            return None
        delay = (sum(f.delay_s(self.label, -1) for f in fwd)
                 + sum(f.delay_s(self.label + "<", -1) for f in bwd))
        if delay > 0 or any(f.delay_ms or f.jitter_ms or f.loss_pct for f in fwd + bwd):
            self._log_delayed()
        return delay

    async def connect(self, unroutable: Callable[[], bool] | None = None) -> None:
        """The handshake from the connecting side: one round trip through the faults. Under a
        partition the SYN is resent as Linux does (after 1 s, then doubling) until the
        partition ends, or fails with ETIMEDOUT after SYN_TIMEOUT_S (127 s, as an unanswered
        SYN does), or with EHOSTUNREACH once `unroutable()` says the route is gone; the
        caller's own timeout usually fires first."""
        waited, backoff = 0.0, 1.0
        while True:
            delay = self.connect_delay_s()
            if delay is not None:
                if delay > 0:
                    await asyncio.sleep(delay)
                return
            if waited >= SYN_TIMEOUT_S:
                raise TimeoutError(errno.ETIMEDOUT, "Connection timed out")
            step = min(backoff, SYN_TIMEOUT_S - waited)
            await asyncio.sleep(step)
            waited += step
            backoff *= 2
            if unroutable is not None and unroutable():
                # the route went away meanwhile (gossip declared the node dead): the next
                # SYN has nowhere to go, as a kernel says
                raise OSError(errno.EHOSTUNREACH, "No route to host")

    def _log_delayed(self) -> None:
        if not self.delay_logged:
            self.delay_logged = True
            self.engine.log.info("fault.delayed",
                                 faults=sorted({f.name for f in self.fwd + self.bwd}),
                                 delay_ms=_configured_ms(self.fwd),
                                 reply_delay_ms=_configured_ms(self.bwd), **self.fields())

    def inbound(self, target: StreamPeer) -> StreamPeer:
        """The lane toward the connecting side's end `target` (what the accepting side's end
        writes into). Call before `outbound`."""
        back = _Lane(self, target, forward=False)
        self.lanes = [back]
        return back

    def outbound(self, target: StreamPeer) -> StreamPeer:
        """The lane toward the accepting side's end `target` (what the connecting side's end
        writes into), paired with the `inbound` lane."""
        back = self.lanes[0]
        forward = _Lane(self, target, forward=True)
        forward.other, back.other = back, forward
        self.lanes = [forward, back]
        forward.pump()      # the far end may have become ready while we were connecting
        return forward

    def refresh(self) -> None:
        for lane in self.lanes:
            lane.pump()

    def reset(self) -> None:
        """The user timeout expired under a partition: both ends see the connection fail."""
        if self.dead:
            return
        self.dead = True
        self.engine.log.info("fault.reset", after_s=self.engine.user_timeout_s,
                             **self.fields())
        for lane in self.lanes:
            lane.fail(TimeoutError(errno.ETIMEDOUT, "Connection timed out"))


class _Lane:
    """One direction of a faulted stream (a `StreamPeer` for its writer): chunks wait in a
    FIFO until their release time, so jitter never reorders and loss only makes them late."""

    def __init__(self, link: FaultLink, target: StreamPeer, *, forward: bool) -> None:
        self.link = link
        self.target = target
        self.forward = forward
        self.other: _Lane = self
        self.queue: deque[tuple[float, object]] = deque()
        self.queued = 0
        self.seq = 0
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.stall: asyncio.TimerHandle | None = None
        self.closed = False
        self.wake_scheduled = False
        self.loop = asyncio.get_running_loop()

    # StreamPeer, as the writer sees it

    def ready(self) -> bool:
        # bounded: beyond HIGH_WATER bytes in the lane the writer keeps (and counts) its own
        # buffer, so drain() blocks: the delay and the rate push back like a TCP window
        return not self.closed and self.queued < HIGH_WATER

    def deliver(self, data: bytes) -> None:
        if self.closed:
            return
        link = self.link
        now = self.loop.time()
        faults = link.faults(self.forward)
        label = link.label if self.forward else link.label + "<"
        # a writer's flush may be one large chunk: it travels as segments, each with its own
        # delay, loss draw and place in the rate, so a paced transfer arrives paced
        for start in range(0, len(data), SEGMENT):
            segment = data[start:start + SEGMENT] if len(data) > SEGMENT else data
            seq, self.seq = self.seq, self.seq + 1
            delay = paced = 0.0
            for fault in faults:
                delay += fault.delay_s(label, seq) + fault.retransmit_s(label, seq)
                if fault.rate_kbit > 0:
                    t = link.engine.clock()
                    paced = max(paced, link.engine._bucket(fault, self.forward, t).reserve(
                        len(segment), t))
            delay += paced
            if delay > 0:
                link._log_delayed()
            release = max(self.last, now + delay)
            self.last = release
            self.queue.append((release, segment))
            self.queued += len(segment)
        self.pump()

    def deliver_eof(self) -> None:
        if not self.closed:
            self.queue.append((max(self.last, self.loop.time()), _EOF))
            self.pump()

    def hang_up(self, exc: Exception | None) -> None:
        if self.closed:
            return
        if exc is None:     # a clean close goes behind the data, like a FIN
            self.queue.append((max(self.last, self.loop.time()), _CLOSE))
            self.pump()
            return
        self.fail(exc)      # a reset overtakes everything

    def wake(self) -> None:
        # our writer is ready to receive again: what flows toward it may move. From the
        # loop, never synchronously: the reader resuming may not be waiting for data yet
        # (asyncio's StreamReader resumes before it creates its waiter)
        other = self.other
        if not other.wake_scheduled:
            other.wake_scheduled = True
            self.loop.call_soon(other.pump)

    # moving chunks

    def pump(self) -> None:
        self.wake_scheduled = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.closed:
            return
        if self.link.partitioned(self.forward):
            if self.queue and self.stall is None:
                self.stall = self.loop.call_later(self.link.engine.user_timeout_s,
                                                  self.link.reset)
            return
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
        was_full = self.queued >= HIGH_WATER
        now = self.loop.time()
        queue = self.queue
        while queue:
            release, item = queue[0]
            if release > now:
                self.timer = self.loop.call_at(release, self.pump)
                break
            if item is _CLOSE:
                queue.popleft()
                self.closed = True
                self.target.hang_up(None)
                return
            if not self.target.ready():
                break           # its wake() (through our partner lane) brings us back
            queue.popleft()
            if item is _EOF:
                self.target.deliver_eof()
            else:
                assert isinstance(item, bytes)
                self.queued -= len(item)
                self.target.deliver(item)
            if self.closed:
                return
        if was_full and self.queued < HIGH_WATER:
            self.other.target.wake()    # the writer may push what it held back

    def fail(self, exc: Exception) -> None:
        if self.closed:
            return
        self.closed = True
        for handle in (self.timer, self.stall):
            if handle is not None:
                handle.cancel()
        self.queue.clear()
        self.queued = 0
        self.target.hang_up(exc)


# --- watching ------------------------------------------------------------------------------------


class FaultWatch:
    """Follows NetworkFaults, Pods, Nodes and Services into `state` (run it as a named task)
    and tells the engine when faults change."""

    KINDS = ("Node", "Pod", "Service", "NetworkFault")

    def __init__(self, api: ApiClient, state: FaultState, engine: FaultEngine) -> None:
        self.state = state
        self.engine = engine
        self.informers = [self._informer(api, kind) for kind in self.KINDS if kind in BY_KIND]

    def _informer(self, api: ApiClient, kind: str) -> Informer:
        state, engine = self.state, self.engine

        async def on_list(items: list[dict[str, Any]]) -> None:
            state.replace(kind, items)
            if kind == "NetworkFault":
                self._changed("listed", None)
            elif engine.active:
                engine.forget_unmatched()

        async def on_event(event: str, obj: dict[str, Any]) -> None:
            state.apply(kind, event, obj)
            if kind == "NetworkFault":
                self._changed(event.lower(), obj)
            elif engine.active:
                # a pod or Service appeared or moved: UDP flows that matched nothing are
                # matched again (matched ones keep their sequence numbers)
                engine.forget_unmatched()

        return Informer(api, BY_KIND[kind], on_list=on_list, on_event=on_event)

    def _changed(self, change: str, obj: dict[str, Any] | None) -> None:
        self.engine.refresh()
        name = ((obj.get("metadata") or {}).get("name") if isinstance(obj, dict) else None)
        self.engine.log.info("fault.changed", change=change, fault=name,
                             faults=len(self.state.faults))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for informer in self.informers:
                group.create_task(informer.run(), name=f"fault-watch-{informer.res.plural}")
