"""Tunnel transport: pod streams, datagrams and echo requests over one WebSocket per peer.

The I/O half of `podnet.tunnel` (which is the pure protocol), shared by every process that
carries pod traffic: the agents (`agents/tunnels.py` adds the route table and the node's pod
stacks) and the control plane's ClusterIP proxy (`controlplane/proxy.py`). `TunnelPeer` dials
peers (`ws://ADDR/tunnel`, lazily, once per peer), accepts them on `GET /tunnel`, runs the
handshake and multiplexes streams and datagrams over each WebSocket; what an inbound stream
or datagram is delivered to is the subclass's business (`on_open`, `on_datagram`).

Failures are the kernel's: a peer that cannot be dialed -> EHOSTUNREACH; nobody listening ->
ECONNREFUSED; a WebSocket lost -> every stream through it is reset. A peer that comes back is
dialed again on the next connect.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any, NamedTuple, Protocol

import aiohttp
import structlog
from aiohttp import web

from podnet.auth import derive_key
from podnet.tunnel import (
    MAX_RECORD,
    TAG,
    WINDOW,
    Address,
    Data,
    Dgram,
    Fin,
    Open,
    OpenFail,
    OpenOk,
    Ping,
    Pong,
    ReplayGuard,
    Rst,
    Session,
    TunnelError,
    Writable,
    accept_hello,
    accept_welcome,
    make_hello,
    make_welcome,
)

log = structlog.get_logger().bind(component="tunnel")

MAX_WS_MESSAGE = MAX_RECORD + TAG + 4096
HELD_DATAGRAMS = 64         # queued while the tunnel is being dialed, like the kernel's ARP queue
# No WebSocket heartbeat by default: a dead peer is the route table's business (gossip marks its
# routes dead, which resets its tunnels), and aiohttp's heartbeat costs a timer reset per message.
HEARTBEAT_S: float | None = None
# The control plane's name in tunnel handshakes: not a DNS label, so no Node can be called so.
CONTROLPLANE = "@controlplane"


def unreachable() -> OSError:
    return OSError(errno.EHOSTUNREACH, "No route to host")


def reset() -> ConnectionResetError:
    return ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")


def error(err: int) -> OSError:
    """The exception a socket call raises for `err` (as carried in OPEN_FAIL and RST)."""
    if err == errno.ECONNREFUSED:
        return ConnectionRefusedError(err, os.strerror(err))
    if err == errno.ECONNRESET:
        return reset()
    return OSError(err, os.strerror(err))


def errname(err: int | None) -> str:
    return errno.errorcode.get(err or 0, str(err))


class StreamPeer(Protocol):
    """One end of a stream as the other end sees it (the seam `agents.netstack.StreamPeer`
    describes; restated here because podnet cannot import agents). A `TunnelEnd` is one, so
    two of them can be connected to each other directly: that is how a proxy splices."""

    def ready(self) -> bool: ...

    def deliver(self, data: bytes) -> None: ...

    def deliver_eof(self) -> None: ...

    def hang_up(self, exc: Exception | None) -> None: ...

    def wake(self) -> None: ...


class LinkCounters:
    """Cumulative traffic with one peer over the tunnels to or from it that have ended (kept
    across re-dials), and every error with it; `TunnelPeer.link_stats()` adds the live
    tunnels' own counts. Off the data path: a live tunnel counts only its bytes, one int add
    per WebSocket record each way (its records are its session's sequence numbers, which it
    keeps anyway), and hands everything over here when it ends."""

    __slots__ = ("bytes_in", "bytes_out", "errors", "records_in", "records_out")

    def __init__(self) -> None:
        self.bytes_out = 0
        self.bytes_in = 0
        self.records_out = 0
        self.records_in = 0
        # Tunnel failures and rejections, failed dials, streams refused or reset by the peer.
        self.errors = 0

    def as_dict(self) -> dict[str, int]:
        return {"bytes_out": self.bytes_out, "bytes_in": self.bytes_in,
                "records_out": self.records_out, "records_in": self.records_in,
                "errors": self.errors}


def _records(session: Session) -> tuple[int, int]:
    """Records sealed and records accepted so far: the session's sequence numbers (each
    record's MAC covers its own), so counting them again per record would be paying twice."""
    return session.records_sent, session.records_received


class TunnelStream(NamedTuple):
    peer: str               # the node at the other end
    flow: str
    src: Address            # who opened the stream
    dst: Address
    unsent: int             # bytes from the local pod waiting for credit
    unread: int             # bytes from the peer waiting for the local pod to read
    credit: int             # bytes the peer still lets us send


class TunnelEnd:
    """The stand-in for a stream end on another node (a `StreamPeer` to the local end).

    Outbound, the local end's bytes become DATA frames within the stream's credit. Inbound,
    DATA goes straight into the local end while it is reading; while it is paused it waits in
    `inbox` (at most one window, since the sender never exceeds its credit), and credit is
    returned only as the local end takes it, which is what slows a fast sender down.
    """

    __slots__ = (
        "_tunnel",
        "dst",
        "eof_pending",
        "flow",
        "flush_scheduled",
        "gone",
        "inbox",
        "local",
        "opened",
        "sid",
        "src",
    )

    def __init__(self, tunnel: Tunnel, sid: int, src: Address, dst: Address, flow: str,
                 local: StreamPeer | None) -> None:
        self._tunnel = tunnel
        self.sid = sid
        self.src, self.dst, self.flow = src, dst, flow
        self.local = local
        self.opened = False
        self.gone = False               # the local end hung up (or was reset)
        self.eof_pending = False        # a FIN waits behind `inbox`
        self.flush_scheduled = False
        self.inbox: deque[bytes] = deque()

    # -- StreamPeer: called by the local end

    def ready(self) -> bool:
        return self.opened and self._tunnel.session.can_send(self.sid)

    def deliver(self, data: bytes) -> None:
        tunnel = self._tunnel
        tunnel.session.send(self.sid, data)
        tunnel.push()

    def deliver_eof(self) -> None:
        self._tunnel.session.finish(self.sid)
        self._tunnel.kick()
        self._maybe_done()

    def hang_up(self, exc: Exception | None) -> None:
        if self.gone:
            return
        self.gone = True
        self.local = None
        session = self._tunnel.session
        if exc is None and not self.inbox:
            session.finish(self.sid)        # FIN; the entry lives until the peer's FIN
            if not session.has_stream(self.sid):
                self._tunnel.forget(self)
        else:
            # A reset, or a close with unread data: the kernel answers both with RST.
            session.reset(self.sid, errno.ECONNRESET)
            self.inbox.clear()
            self._tunnel.forget(self)
            self._tunnel.host.log.info(
                "tunnel.stream_reset", flow=self.flow, by="local", peer=self._tunnel.peer,
                reason="aborted" if exc is not None else "closed with unread data")
        self._tunnel.kick()

    def wake(self) -> None:
        # Deferred, never from inside the call: the local end calls this from resume_reading(),
        # and StreamReader resumes *before* it sets up its waiter, so data handed over right
        # now would pause it again with nobody left to wake it.
        if (self.inbox or self.eof_pending) and not self.flush_scheduled:
            self.flush_scheduled = True
            self._tunnel.loop.call_soon(self._flush_inbox)

    # -- called by the tunnel for inbound frames

    def on_data(self, data: bytes) -> None:
        local = self.local
        if local is None:   # data for a closed socket: the kernel resets the connection
            self._tunnel.session.reset(self.sid, errno.ECONNRESET)
            self._tunnel.forget(self)
            return
        if not self.inbox and local.ready():
            local.deliver(data)
            self._tunnel.session.consumed(self.sid, len(data))
        else:
            self.inbox.append(data)

    def on_fin(self) -> None:
        if self.local is None:
            self._tunnel.forget(self)       # both sides have closed
        elif self.inbox:
            self.eof_pending = True
        else:
            self.local.deliver_eof()
            self._maybe_done()

    def on_reset(self, exc: Exception, *, log: bool = True) -> None:
        if log:
            self._tunnel.host.log.info("tunnel.stream_reset", flow=self.flow, by="peer",
                                          peer=self._tunnel.peer, error=str(exc))
        local, self.local = self.local, None
        self.gone = True
        self.inbox.clear()
        self._tunnel.forget(self)
        if local is not None:
            local.hang_up(exc)

    def _maybe_done(self) -> None:
        # Both FINs have crossed and nothing waits here: the stream is over. A pod's socket
        # would also hang up later, but when the other end is a tunnel stream too (a proxy
        # splicing two tunnels) nobody else will, so the entry is dropped now.
        if not self.inbox and not self.eof_pending \
                and not self._tunnel.session.has_stream(self.sid):
            self._tunnel.forget(self)

    def _flush_inbox(self) -> None:
        self.flush_scheduled = False
        session = self._tunnel.session
        inbox = self.inbox
        while inbox and self.local is not None and self.local.ready():
            data = inbox.popleft()
            self.local.deliver(data)
            session.consumed(self.sid, len(data))
        if not inbox and self.eof_pending and self.local is not None:
            self.eof_pending = False
            self.local.deliver_eof()
            self._maybe_done()
        if session.output_size:
            self._tunnel.kick()         # the credit the pod just made room for


class Tunnel:
    """One authenticated WebSocket to a peer agent and the streams it carries."""

    def __init__(self, host: TunnelPeer, ws: web.WebSocketResponse |
                 aiohttp.ClientWebSocketResponse, session: Session, peer: str, *,
                 dialed: bool, address: str) -> None:
        self.host = host
        self.ws = ws
        self.session = session
        self.peer = peer
        self.dialed = dialed
        self.address = address          # the peer agent's address (dialed) or remote (accepted)
        self.counters = host.link_counters(peer)    # errors now; the rest when this ends
        self.bytes_out = 0              # WebSocket record bytes written and read
        self.bytes_in = 0
        self.ends: dict[int, TunnelEnd] = {}
        self.opening: dict[int, asyncio.Future[None]] = {}
        self.closed: str | None = None
        self.retired = False            # takes no new streams; closes when its last one ends
        self.loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self._corked = False
        # Set while a send waits for the socket to drain; records queue in the session meanwhile.
        self._blocked: asyncio.Task[None] | None = None
        direction = "->" if dialed else "<-"
        self.name = f"{host.node}{direction}{peer}"
        self._reader: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Tunnel {self.name} streams={len(self.ends)}>"

    def start_reader(self) -> None:
        self._reader = asyncio.create_task(self.read_loop(), name=f"tunnel-reader {self.name}")

    def kick(self) -> None:
        """Output is queued: send it at the end of this loop turn, coalesced into one record
        with whatever else the turn queues (other streams' writes, credits)."""
        if not self._flush_scheduled and self._blocked is None and self.closed is None:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def push(self) -> None:
        """Stream data is queued: like Linux's TCP autocorking, the first record of a loop turn
        goes out at once (a lone request/response pays no extra turn) and anything queued
        later in the same turn is corked into one record by `kick()`."""
        if self._corked or self._flush_scheduled:
            self.kick()
            return
        batch = self.host._batch
        if batch is not None:
            # Queued while an inbound record is being dispatched (a proxy splicing streams):
            # sent once that record is done, so its frames leave in one record, not two.
            if self not in batch:
                batch.append(self)
            return
        self._corked = True
        self.loop.call_soon(self._uncork)
        self._flush()

    def _uncork(self) -> None:
        self._corked = False

    def _flush(self) -> None:
        self._flush_scheduled = False
        session = self.session
        while self._blocked is None and self.closed is None:
            record = session.take_output()
            if record is None:
                return
            self._send(record)

    def _send(self, record: bytes) -> None:
        """Run `ws.send_bytes()` eagerly: without compression it writes to the transport at once
        and only suspends to wait for a full socket buffer to drain. So the common case costs
        no task and no extra loop turn (a writer task would add one per message, a third of a
        small round trip); the rare wait is finished by a task, which then resumes flushing."""
        self.bytes_out += len(record)
        coro = self.ws.send_bytes(record)
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            self.counters.errors += 1
            self.fail(f"write failed: {type(exc).__name__}")
            return
        self._blocked = asyncio.create_task(self._finish_send(coro, waiting),
                                            name=f"tunnel-drain {self.name}")

    async def _finish_send(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        try:
            while True:
                if waiting is None:
                    await asyncio.sleep(0)      # a bare yield: just give the loop a turn
                elif not waiting.done():
                    await _relay(waiting)
                try:
                    waiting = coro.send(None)
                except StopIteration:
                    break
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            self.counters.errors += 1
            self.fail(f"write failed: {type(exc).__name__}")
            return
        finally:
            coro.close()
            self._blocked = None
        self._flush()

    def accept(self, end: TunnelEnd, local: StreamPeer) -> bool:
        """Answer the inbound OPEN of `end` (made by `new_end`) and connect it to `local`.

        False when there is nothing left to answer: the opener reset it meanwhile, or the
        tunnel is gone (an acceptor that decides asynchronously must then drop `local`)."""
        if self.closed is not None or not self.session.has_stream(end.sid):
            return False
        end.local = local
        end.opened = True
        self.ends[end.sid] = end
        self.session.accept(end.sid)
        self.kick()
        return True

    def refuse(self, sid: int, err: int) -> None:
        """Answer an inbound OPEN with OPEN_FAIL (ECONNREFUSED, EHOSTUNREACH, ...)."""
        self.session.refuse(sid, err)
        self.kick()

    def new_end(self, frame: Open) -> TunnelEnd:
        """The stand-in for the opener of an inbound stream, not yet answered."""
        return TunnelEnd(self, frame.sid, frame.src, frame.dst, frame.flow, None)

    def forget(self, end: TunnelEnd) -> None:
        if self.ends.get(end.sid) is end:
            del self.ends[end.sid]
            if self.retired and not self.ends:
                self.fail("retired")

    async def read_loop(self) -> None:
        """Apply inbound records until the WebSocket ends or a record is rejected."""
        reason = "closed by peer"
        receive, binary = self.ws.receive, aiohttp.WSMsgType.BINARY
        closed = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)
        counters = self.counters
        try:
            while True:
                msg = await receive()
                if msg.type is not binary:
                    if msg.type in closed:
                        break
                    reason = f"WebSocket error: {msg.data}" \
                        if msg.type is aiohttp.WSMsgType.ERROR else "unexpected WebSocket message"
                    counters.errors += 1
                    self.host.log.warning("tunnel.rejected", peer=self.peer,
                                             reason=reason, kind=msg.type.name)
                    break
                data = msg.data
                self.bytes_in += len(data)
                try:
                    events = self.session.receive(data)
                except TunnelError as exc:
                    counters.errors += 1
                    reason = exc.reason
                    self.host.log.warning("tunnel.rejected", peer=self.peer,
                                             reason=exc.reason, streams=len(self.ends))
                    break
                host = self.host
                host._batch = []
                try:
                    self._dispatch(events)
                finally:
                    batch, host._batch = host._batch, None
                for tunnel in batch:
                    tunnel.push()
                if self.session.output_size:
                    self.kick()
        except (ConnectionError, aiohttp.ClientError) as exc:
            counters.errors += 1
            reason = f"read failed: {type(exc).__name__}"
        self.fail(reason)

    def _dispatch(self, events: list[Any]) -> None:
        ends = self.ends
        for event in events:
            kind = type(event)
            if kind is Data:
                end = ends.get(event.sid)
                if end is None:
                    continue
                local = end.local
                # The common case inline: the pod is reading and nothing is queued before this.
                if local is not None and not end.inbox and local.ready():
                    local.deliver(event.data)
                    self.session.consumed(event.sid, len(event.data))
                else:
                    end.on_data(event.data)
            elif kind is Writable:
                end = ends.get(event.sid)
                if end is not None and end.local is not None:
                    end.local.wake()
            elif kind is Fin:
                end = ends.get(event.sid)
                if end is not None:
                    end.on_fin()
            elif kind is Rst:
                self.counters.errors += 1       # a stream reset by the peer
                end = ends.get(event.sid)
                if end is not None:
                    end.on_reset(error(event.errno))
            elif kind is Open:
                self.host.on_open(self, event)
            elif kind is OpenOk:
                waiter = self.opening.pop(event.sid, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif kind is OpenFail:
                self.counters.errors += 1       # an open the peer refused
                waiter = self.opening.pop(event.sid, None)
                if waiter is not None and not waiter.done():
                    waiter.set_exception(error(event.errno))
            elif kind is Dgram:
                self.host.on_datagram(self, event)
            elif kind is Ping:
                self.host._answer_ping(self, event)
            elif kind is Pong:
                self.host._pong(event)

    def fail(self, reason: str) -> None:
        """End the tunnel: reset its streams, fail pending connects, close the WebSocket."""
        if self.closed is not None:
            return
        self.closed = reason
        self.host._forget_tunnel(self)
        self._hand_over_counts()
        ends, self.ends = list(self.ends.values()), {}
        for end in ends:
            end.on_reset(reset(), log=False)    # logged once, below
        for waiter in self.opening.values():
            if not waiter.done():
                waiter.set_exception(unreachable())
        self.opening.clear()
        self.host.log.info("tunnel.closed", peer=self.peer, reason=reason,
                              streams_reset=len(ends), direction="out" if self.dialed else "in")
        if self._blocked is not None and asyncio.current_task() is not self._blocked:
            self._blocked.cancel()
        self.host.spawn(self._close_ws(), f"tunnel-close {self.name}")

    def _hand_over_counts(self) -> None:
        """Add this tunnel's traffic to its peer's totals (once: it has just left the live
        set that `link_stats()` reads; a record still read while it closes is not counted)."""
        counters = self.counters
        counters.bytes_out += self.bytes_out
        counters.bytes_in += self.bytes_in
        sent, received = _records(self.session)
        counters.records_out += sent
        counters.records_in += received

    async def _close_ws(self) -> None:
        try:
            await self.ws.close()
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            pass        # the peer is gone already; there is nothing left to tell it

    async def wait_done(self) -> None:
        tasks = [t for t in (self._blocked, self._reader) if t is not None]
        if self._reader is not None and asyncio.current_task() is not self._reader:
            self._reader.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _relay(future: asyncio.Future[Any]) -> None:
    """Wait for a future that a coroutine we drive by hand yielded (it was never awaited by a
    task, so awaiting it directly would trip asyncio's "await wasn't used with future")."""
    relay = asyncio.get_running_loop().create_future()

    def done(_: asyncio.Future[Any]) -> None:
        if not relay.done():
            relay.set_result(None)

    future.add_done_callback(done)
    try:
        await relay
    finally:
        future.remove_done_callback(done)




class TunnelPeer:
    """This process's tunnels to its peers, by peer name: dialing, accepting, multiplexing.

    Subclasses decide where inbound traffic goes (`on_open`, `on_datagram`, `answers_echo`)
    and whether a dial that finished is still wanted (`dial_wanted`)."""

    def __init__(self, node: str, secret: bytes, *, session: aiohttp.ClientSession | None = None,
                 window: int = WINDOW, connect_timeout_s: float = 3.0,
                 handshake_timeout_s: float = 5.0,
                 heartbeat_s: float | None = HEARTBEAT_S) -> None:
        self.node = node
        self.window = window
        self.connect_timeout_s = connect_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self.heartbeat_s = heartbeat_s
        # Bound here, not from the module-level logger: binding resolves structlog's config,
        # which the process sets up after importing this module (else events miss the file).
        self.log = structlog.get_logger().bind(component="tunnel", node=node)
        self._key = derive_key(secret, "tunnel")
        self._guard = ReplayGuard()
        self._http = session
        self._own_http = session is None
        self._dialed: dict[str, Tunnel] = {}
        self._dialing: dict[str, asyncio.Task[Tunnel]] = {}
        self._accepted: set[Tunnel] = set()
        self._retired: set[Tunnel] = set()
        self._held: dict[str, list[tuple[Address, Address, bytes]]] = {}
        self._pings: dict[tuple[str, str, int, int], asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flows = itertools.count(1)
        self._flow_prefix = os.urandom(3).hex()
        self._closing = False
        # Tunnels with stream data queued during the dispatch of an inbound record.
        self._batch: list[Tunnel] | None = None
        self._links: dict[str, LinkCounters] = {}

    # -- wiring

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/tunnel", self._handle)

    def tunnels(self) -> list[tuple[str, str, int]]:
        """(peer, "out"|"in", open streams) for every live tunnel, for status views."""
        return sorted((t.peer, "out" if t.dialed else "in", len(t.ends)) for t in self._live())

    def link_counters(self, peer: str) -> LinkCounters:
        """The counters of every tunnel to or from `peer` (made on first use)."""
        counters = self._links.get(peer)
        if counters is None:
            counters = self._links[peer] = LinkCounters()
        return counters

    def link_stats(self) -> dict[str, dict[str, int]]:
        """Cumulative bytes, records and errors per peer since this process started: the
        ended tunnels' totals plus what each live one has carried so far."""
        stats = {peer: c.as_dict() for peer, c in self._links.items()}
        for tunnel in self._live():
            entry = stats.setdefault(tunnel.peer, LinkCounters().as_dict())
            entry["bytes_out"] += tunnel.bytes_out
            entry["bytes_in"] += tunnel.bytes_in
            sent, received = _records(tunnel.session)
            entry["records_out"] += sent
            entry["records_in"] += received
        return dict(sorted(stats.items()))

    def streams(self) -> list[TunnelStream]:
        """Every stream the tunnels carry, with what each holds in memory right now."""
        out = []
        for tunnel in self._live():
            for end in tunnel.ends.values():
                out.append(TunnelStream(
                    tunnel.peer, end.flow, end.src, end.dst,
                    unsent=tunnel.session.pending_bytes(end.sid),
                    unread=sum(len(chunk) for chunk in end.inbox),
                    credit=tunnel.session.credit(end.sid)))
        return out

    async def close(self) -> None:
        self._closing = True
        dialing = list(self._dialing.values())
        for task in dialing:
            task.cancel()
        await asyncio.gather(*dialing, return_exceptions=True)
        tunnels = self._live()
        for tunnel in tunnels:
            tunnel.fail("agent shutting down")
        for tunnel in tunnels:
            await tunnel.wait_done()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A task owned by this peer: `close()` waits for it."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def new_flow(self) -> str:
        return f"{self._flow_prefix}-{next(self._flows):x}"

    def _live(self) -> list[Tunnel]:
        return [*self._dialed.values(), *self._accepted, *self._retired]

    def fail_peer(self, peer: str, reason: str) -> None:
        """End every tunnel to or from `peer` (its streams are reset) and drop what waits
        for it: it is gone, or it moved and these sockets are stale."""
        for tunnel in self._live():
            if tunnel.peer == peer:
                tunnel.fail(reason)
        self._held.pop(peer, None)

    def _forget_tunnel(self, tunnel: Tunnel) -> None:
        if self._dialed.get(tunnel.peer) is tunnel:
            del self._dialed[tunnel.peer]
        self._accepted.discard(tunnel)
        self._retired.discard(tunnel)

    def _retire(self, tunnel: Tunnel) -> None:
        """A session out of stream ids: new streams get a fresh tunnel, this one lives on
        for the streams it carries and closes with the last of them."""
        self._forget_tunnel(tunnel)
        tunnel.retired = True
        self._retired.add(tunnel)
        self.log.info("tunnel.retired", peer=tunnel.peer, streams=len(tunnel.ends))
        if not tunnel.ends:
            tunnel.fail("retired")

    # -- hooks for subclasses

    def dial_wanted(self, peer: str, address: str) -> bool:
        """Checked once a dial has finished: False drops it (the peer was withdrawn or moved
        while we were dialing)."""
        return True

    def on_open(self, tunnel: Tunnel, frame: Open) -> None:
        """An inbound stream: answer it with `tunnel.accept()` or `tunnel.refuse()` (now, or
        later from a task). Nobody listens here by default."""
        tunnel.refuse(frame.sid, errno.ECONNREFUSED)

    def on_datagram(self, tunnel: Tunnel, frame: Dgram) -> None:
        """An inbound datagram; dropped by default, like UDP to a closed port."""

    def answers_echo(self, ip: str) -> bool:
        """True when an echo request to `ip` is answered here."""
        return False

    # -- dialing

    async def tunnel_to(self, peer: str, address: str) -> Tunnel:
        """The tunnel to `peer` at `address`, dialed if there is none yet."""
        tunnel = self._dialed.get(peer)
        if tunnel is not None and tunnel.session.exhausted:
            self._retire(tunnel)
            tunnel = None
        if tunnel is not None and tunnel.address == address:
            return tunnel
        # Shielded: a caller that gives up (its own timeout) does not abort the dial for others.
        return await asyncio.shield(self._start_dial(peer, address))

    def _start_dial(self, peer: str, address: str) -> asyncio.Task[Tunnel]:
        task = self._dialing.get(peer)
        if task is None:
            task = asyncio.create_task(self._dial(peer, address), name=f"tunnel-dial {peer}")
            self._dialing[peer] = task
            task.add_done_callback(lambda done: self._dial_done(peer, done))
        return task

    def _dial_done(self, peer: str, task: asyncio.Task[Tunnel]) -> None:
        if self._dialing.get(peer) is task:
            del self._dialing[peer]
        held = self._held.pop(peer, [])
        if task.cancelled() or task.exception() is not None:
            return      # the exception is the callers'; held datagrams are lost, like UDP
        tunnel = task.result()
        for src, dst, data in held:
            tunnel.session.datagram(src, dst, self.new_flow(), data)
        if held:
            tunnel.kick()

    async def _dial(self, peer: str, address: str) -> Tunnel:
        if self._closing:
            raise unreachable()
        if self._http is None:
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        url = f"http://{address}/tunnel"
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            async with asyncio.timeout(self.connect_timeout_s + self.handshake_timeout_s):
                ws = await self._http.ws_connect(url, compress=0, max_msg_size=MAX_WS_MESSAGE,
                                                 heartbeat=self.heartbeat_s, autoping=True)
                hello_raw, hello = make_hello(self._key, self.node, peer, now=time.time())
                await ws.send_bytes(hello_raw)
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.BINARY:
                    raise TunnelError("handshake refused by peer")
                keys = accept_welcome(self._key, msg.data, hello, now=time.time())
        except TunnelError as exc:
            self.link_counters(peer).errors += 1
            self.log.warning("tunnel.rejected", peer=peer, address=address,
                             reason=exc.reason, direction="out")
            await self._discard(ws)
            raise unreachable() from None
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            self.link_counters(peer).errors += 1
            self.log.warning("tunnel.dial_failed", peer=peer, address=address,
                             error=str(exc) or type(exc).__name__)
            await self._discard(ws)
            raise unreachable() from None
        except BaseException:
            await self._discard(ws)
            raise
        if self._closing or not self.dial_wanted(peer, address):
            await self._discard(ws)     # withdrawn while we were dialing
            raise unreachable()
        tunnel = Tunnel(self, ws, Session(keys, dialer=True, window=self.window), peer,
                        dialed=True, address=address)
        old = self._dialed.get(peer)
        if old is not None:
            old.fail("replaced")
        self._dialed[peer] = tunnel
        tunnel.start_reader()
        self.log.info("tunnel.up", peer=peer, address=address, direction="out")
        return tunnel

    @staticmethod
    async def _discard(ws: aiohttp.ClientWebSocketResponse | None) -> None:
        if ws is not None:
            try:
                await ws.close()
            except (ConnectionError, aiohttp.ClientError, RuntimeError):
                pass

    # -- accepting

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_WS_MESSAGE,
                                   heartbeat=self.heartbeat_s, autoping=True)
        await ws.prepare(request)
        remote = request.remote
        try:
            async with asyncio.timeout(self.handshake_timeout_s):
                msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.BINARY:
                raise TunnelError("handshake expected")
            hello = accept_hello(self._key, msg.data, me=self.node, now=time.time(),
                                 guard=self._guard)
            welcome, keys = make_welcome(self._key, hello, now=time.time())
            if self._closing:
                raise TunnelError("agent shutting down")
            await ws.send_bytes(welcome)
        except TunnelError as exc:
            self.log.warning("tunnel.rejected", remote=remote, reason=exc.reason, direction="in")
            await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION)
            return ws
        except TimeoutError:
            self.log.warning("tunnel.rejected", remote=remote, reason="handshake timeout",
                             direction="in")
            await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION)
            return ws
        except (ConnectionError, aiohttp.ClientError) as exc:
            self.log.info("tunnel.handshake_aborted", remote=remote, error=type(exc).__name__)
            return ws
        tunnel = Tunnel(self, ws, Session(keys, dialer=False, window=self.window),
                        hello.src_node, dialed=False, address=remote or "")
        self._accepted.add(tunnel)
        self.log.info("tunnel.up", peer=hello.src_node, remote=remote, direction="in")
        try:
            await tunnel.read_loop()
        finally:
            tunnel.fail("handler ended")
            await tunnel.wait_done()
        return ws

    # -- outbound traffic

    async def open_via(self, tunnel: Tunnel, src: Address, dst: Address, local: StreamPeer,
                       flow: str) -> TunnelEnd:
        """Open a stream `src` -> `dst` through `tunnel`; `local` receives what the far end
        sends. Returns the stand-in `local` writes into; raises the far side's OSError."""
        sid = tunnel.session.open(src, dst, flow)
        end = TunnelEnd(tunnel, sid, src, dst, flow, local)
        waiter = asyncio.get_running_loop().create_future()
        tunnel.opening[sid] = waiter
        tunnel.ends[sid] = end
        tunnel.kick()
        try:
            await waiter
        except OSError:
            tunnel.forget(end)
            raise
        except BaseException:
            # The caller gave up (cancelled): abandon the half-open stream.
            tunnel.opening.pop(sid, None)
            tunnel.forget(end)
            tunnel.session.reset(sid, errno.ECONNRESET)
            tunnel.kick()
            raise
        end.opened = True
        return end

    def datagram_to(self, peer: str, address: str, src: Address, dst: Address, data: bytes,
                    flow: str | None = None) -> None:
        """Send a datagram to `peer`; held (a few) while its tunnel is being dialed."""
        tunnel = self._dialed.get(peer)
        if tunnel is not None and tunnel.address == address:
            if tunnel.session.datagram(src, dst, flow or self.new_flow(), data):
                tunnel.kick()
            return
        held = self._held.setdefault(peer, [])
        if len(held) < HELD_DATAGRAMS:
            held.append((src, dst, bytes(data)))
        self._start_dial(peer, address)

    async def ping_via(self, peer: str, address: str, src: str, dst: str, ident: int, seq: int,
                       payload: bytes) -> None:
        """Send an echo request from `src` to `dst` through `peer`; returns on the reply."""
        tunnel = await self.tunnel_to(peer, address)
        key = (src, dst, ident, seq)
        waiter = asyncio.get_running_loop().create_future()
        self._pings[key] = waiter
        try:
            if tunnel.session.echo(Ping(src, dst, ident, seq, payload)):
                tunnel.kick()
            await waiter
        finally:
            if self._pings.get(key) is waiter:
                del self._pings[key]

    # -- inbound echo

    def _answer_ping(self, tunnel: Tunnel, frame: Ping) -> None:
        if self.answers_echo(frame.dst):
            tunnel.session.echo(Pong(frame.dst, frame.src, frame.ident, frame.seq,
                                     frame.payload))
            tunnel.kick()

    def _pong(self, frame: Pong) -> None:
        waiter = self._pings.get((frame.dst, frame.src, frame.ident, frame.seq))
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
