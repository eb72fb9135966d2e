"""Tunnels between agents: pod streams, datagrams and echo requests over one WebSocket per peer.

`TunnelManager` is the node network's `RemoteDelivery`: a connect to a pod on another node
looks the destination up in the route table, dials that node's agent once (`ws://ADDR/tunnel`,
lazily, on first use) and multiplexes the stream over that WebSocket; the accept side is the
`GET /tunnel` handler on the agent's HTTP app. The protocol (handshake, authenticated records,
credit-based flow control) is `podnet.tunnel`; this module only moves its records and connects
its streams to the pods' virtual transports.

Failures are the kernel's: no route (or a dead one) -> EHOSTUNREACH at once; a peer agent that
cannot be dialed -> EHOSTUNREACH; nobody listening -> ECONNREFUSED; a route withdrawn or a
WebSocket lost -> every stream through it is reset. A node that comes back is dialed again on
the next connect.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple

import aiohttp
import structlog
from aiohttp import web

from agents.cni.routes import DEAD, Route, RouteTable
from agents.netstack import Address, NodeNetwork, StreamPeer, reset, unreachable
from podnet.auth import derive_key
from podnet.tunnel import (
    MAX_RECORD,
    TAG,
    WINDOW,
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

SERVICE_CIDR = "10.96.0.0/12"
MAX_WS_MESSAGE = MAX_RECORD + TAG + 4096
HELD_DATAGRAMS = 64         # queued while the tunnel is being dialed, like the kernel's ARP queue
# No WebSocket heartbeat by default: a dead peer is the route table's business (gossip marks its
# routes dead, which resets its tunnels), and aiohttp's heartbeat costs a timer reset per message.
HEARTBEAT_S: float | None = None

# A route for a destination outside the cluster CIDR (the Service CIDR goes to the control
# plane's ClusterIP proxy in a later step); None -> EHOSTUNREACH.
ServiceRoute = Callable[[str], Route | None]


def _error(err: int) -> OSError:
    if err == errno.ECONNREFUSED:
        return ConnectionRefusedError(err, os.strerror(err))
    if err == errno.ECONNRESET:
        return reset()
    return OSError(err, os.strerror(err))


class TunnelStream(NamedTuple):
    peer: str               # the node at the other end
    flow: str
    src: Address            # who opened the stream
    dst: Address
    unsent: int             # bytes from the local pod waiting for credit
    unread: int             # bytes from the peer waiting for the local pod to read
    credit: int             # bytes the peer still lets us send


class _RemoteEnd:
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

    def __init__(self, tunnel: _Tunnel, sid: int, src: Address, dst: Address, flow: str,
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
            self._tunnel.manager.log.info(
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

    def on_reset(self, exc: Exception, *, log: bool = True) -> None:
        if log:
            self._tunnel.manager.log.info("tunnel.stream_reset", flow=self.flow, by="peer",
                                          peer=self._tunnel.peer, error=str(exc))
        local, self.local = self.local, None
        self.gone = True
        self.inbox.clear()
        self._tunnel.forget(self)
        if local is not None:
            local.hang_up(exc)

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
        if session.output_size:
            self._tunnel.kick()         # the credit the pod just made room for


class _Tunnel:
    """One authenticated WebSocket to a peer agent and the streams it carries."""

    def __init__(self, manager: TunnelManager, ws: web.WebSocketResponse |
                 aiohttp.ClientWebSocketResponse, session: Session, peer: str, *,
                 dialed: bool, address: str) -> None:
        self.manager = manager
        self.ws = ws
        self.session = session
        self.peer = peer
        self.dialed = dialed
        self.address = address          # the peer agent's address (dialed) or remote (accepted)
        self.ends: dict[int, _RemoteEnd] = {}
        self.opening: dict[int, asyncio.Future[None]] = {}
        self.closed: str | None = None
        self.retired = False            # takes no new streams; closes when its last one ends
        self.loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self._corked = False
        # Set while a send waits for the socket to drain; records queue in the session meanwhile.
        self._blocked: asyncio.Task[None] | None = None
        direction = "->" if dialed else "<-"
        self.name = f"{manager.node}{direction}{peer}"
        self._reader: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<_Tunnel {self.name} streams={len(self.ends)}>"

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
        coro = self.ws.send_bytes(record)
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
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
            self.fail(f"write failed: {type(exc).__name__}")
            return
        finally:
            coro.close()
            self._blocked = None
        self._flush()

    def forget(self, end: _RemoteEnd) -> None:
        if self.ends.get(end.sid) is end:
            del self.ends[end.sid]
            if self.retired and not self.ends:
                self.fail("retired")

    async def read_loop(self) -> None:
        """Apply inbound records until the WebSocket ends or a record is rejected."""
        reason = "closed by peer"
        receive, binary = self.ws.receive, aiohttp.WSMsgType.BINARY
        closed = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)
        try:
            while True:
                msg = await receive()
                if msg.type is not binary:
                    if msg.type in closed:
                        break
                    reason = f"WebSocket error: {msg.data}" \
                        if msg.type is aiohttp.WSMsgType.ERROR else "unexpected WebSocket message"
                    self.manager.log.warning("tunnel.rejected", peer=self.peer,
                                             reason=reason, kind=msg.type.name)
                    break
                try:
                    events = self.session.receive(msg.data)
                except TunnelError as exc:
                    reason = exc.reason
                    self.manager.log.warning("tunnel.rejected", peer=self.peer,
                                             reason=exc.reason, streams=len(self.ends))
                    break
                self._dispatch(events)
                if self.session.output_size:
                    self.kick()
        except (ConnectionError, aiohttp.ClientError) as exc:
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
                end = ends.get(event.sid)
                if end is not None:
                    end.on_reset(_error(event.errno))
            elif kind is Open:
                self.manager._accept_stream(self, event)
            elif kind is OpenOk:
                waiter = self.opening.pop(event.sid, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif kind is OpenFail:
                waiter = self.opening.pop(event.sid, None)
                if waiter is not None and not waiter.done():
                    waiter.set_exception(_error(event.errno))
            elif kind is Dgram:
                self.manager._deliver_datagram(event)
            elif kind is Ping:
                self.manager._answer_ping(self, event)
            elif kind is Pong:
                self.manager._pong(event)

    def fail(self, reason: str) -> None:
        """End the tunnel: reset its streams, fail pending connects, close the WebSocket."""
        if self.closed is not None:
            return
        self.closed = reason
        self.manager._forget_tunnel(self)
        ends, self.ends = list(self.ends.values()), {}
        for end in ends:
            end.on_reset(reset(), log=False)    # logged once, below
        for waiter in self.opening.values():
            if not waiter.done():
                waiter.set_exception(unreachable())
        self.opening.clear()
        self.manager.log.info("tunnel.closed", peer=self.peer, reason=reason,
                              streams_reset=len(ends), direction="out" if self.dialed else "in")
        if self._blocked is not None and asyncio.current_task() is not self._blocked:
            self._blocked.cancel()
        self.manager._spawn(self._close_ws(), f"tunnel-close {self.name}")

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


class TunnelManager:
    """This node's tunnels to every other node: the `RemoteDelivery` of its `NodeNetwork`."""

    def __init__(self, node: str, secret: bytes, routes: RouteTable, network: NodeNetwork, *,
                 session: aiohttp.ClientSession | None = None, window: int = WINDOW,
                 connect_timeout_s: float = 3.0, handshake_timeout_s: float = 5.0,
                 heartbeat_s: float | None = HEARTBEAT_S,
                 service_route: ServiceRoute | None = None) -> None:
        self.node = node
        self.routes = routes
        self.network = network
        self.window = window
        self.connect_timeout_s = connect_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self.heartbeat_s = heartbeat_s
        self.service_cidr = ipaddress.IPv4Network(SERVICE_CIDR)
        # The hook for Service IPs: None for now, so they are unreachable like any off-cluster IP.
        self.service_route = service_route
        self.log = log.bind(node=node)
        self._key = derive_key(secret, "tunnel")
        self._guard = ReplayGuard()
        self._http = session
        self._own_http = session is None
        self._dialed: dict[str, _Tunnel] = {}
        self._dialing: dict[str, asyncio.Task[_Tunnel]] = {}
        self._accepted: set[_Tunnel] = set()
        self._retired: set[_Tunnel] = set()
        self._held: dict[str, list[tuple[Address, Address, bytes]]] = {}
        self._pings: dict[tuple[str, str, int, int], asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flows = itertools.count(1)
        self._flow_prefix = os.urandom(3).hex()
        self._closing = False
        routes.on_change(self._on_route_change)
        network.remote = self

    # -- wiring

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/tunnel", self._handle)

    def tunnels(self) -> list[tuple[str, str, int]]:
        """(peer, "out"|"in", open streams) for every live tunnel, for status views."""
        live = [*self._dialed.values(), *self._accepted, *self._retired]
        return sorted((t.peer, "out" if t.dialed else "in", len(t.ends)) for t in live)

    def streams(self) -> list[TunnelStream]:
        """Every stream the tunnels carry, with what each holds in memory right now."""
        out = []
        for tunnel in [*self._dialed.values(), *self._accepted, *self._retired]:
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
        tunnels = [*self._dialed.values(), *self._accepted, *self._retired]
        for tunnel in tunnels:
            tunnel.fail("agent shutting down")
        for tunnel in tunnels:
            await tunnel.wait_done()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None
        if self.network.remote is self:
            self.network.remote = None

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _flow(self) -> str:
        return f"{self._flow_prefix}-{next(self._flows):x}"

    # -- routing

    def _route(self, ip: str) -> Route | None:
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            return None
        if addr in self.network.cluster_cidr:
            route = self.routes.lookup(ip)
        elif addr in self.service_cidr and self.service_route is not None:
            route = self.service_route(ip)
        else:
            route = None
        if route is None or route.node == self.node:
            return None
        return route

    def _on_route_change(self, old: Route | None, new: Route | None) -> None:
        if old is None:
            return
        if new is None:
            reason = "route removed"
        elif new.state == DEAD:
            reason = "route dead"
        elif new.address != old.address:
            reason = "peer address changed"     # restarted elsewhere: this socket is stale
        else:
            return          # alive <-> suspect, version bumps: traffic keeps flowing
        for tunnel in [*self._dialed.values(), *self._accepted, *self._retired]:
            if tunnel.peer == old.node:
                tunnel.fail(reason)
        self._held.pop(old.node, None)

    def _forget_tunnel(self, tunnel: _Tunnel) -> None:
        if self._dialed.get(tunnel.peer) is tunnel:
            del self._dialed[tunnel.peer]
        self._accepted.discard(tunnel)
        self._retired.discard(tunnel)

    def _retire(self, tunnel: _Tunnel) -> None:
        """A session out of stream ids: new streams get a fresh tunnel, this one lives on
        for the streams it carries and closes with the last of them."""
        self._forget_tunnel(tunnel)
        tunnel.retired = True
        self._retired.add(tunnel)
        self.log.info("tunnel.retired", peer=tunnel.peer, streams=len(tunnel.ends))
        if not tunnel.ends:
            tunnel.fail("retired")

    # -- dialing

    async def _tunnel_to(self, route: Route) -> _Tunnel:
        tunnel = self._dialed.get(route.node)
        if tunnel is not None and tunnel.session.exhausted:
            self._retire(tunnel)
            tunnel = None
        if tunnel is not None and tunnel.address == route.address:
            return tunnel
        # Shielded: a caller that gives up (its own timeout) does not abort the dial for others.
        return await asyncio.shield(self._start_dial(route))

    def _start_dial(self, route: Route) -> asyncio.Task[_Tunnel]:
        task = self._dialing.get(route.node)
        if task is None:
            task = asyncio.create_task(self._dial(route), name=f"tunnel-dial {route.node}")
            self._dialing[route.node] = task
            task.add_done_callback(lambda done: self._dial_done(route.node, done))
        return task

    def _dial_done(self, node: str, task: asyncio.Task[_Tunnel]) -> None:
        if self._dialing.get(node) is task:
            del self._dialing[node]
        held = self._held.pop(node, [])
        if task.cancelled() or task.exception() is not None:
            return      # the exception is the callers'; held datagrams are lost, like UDP
        tunnel = task.result()
        for src, dst, data in held:
            tunnel.session.datagram(src, dst, self._flow(), data)
        if held:
            tunnel.kick()

    async def _dial(self, route: Route) -> _Tunnel:
        if self._closing:
            raise unreachable()
        if self._http is None:
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        url = f"http://{route.address}/tunnel"
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            async with asyncio.timeout(self.connect_timeout_s + self.handshake_timeout_s):
                ws = await self._http.ws_connect(url, compress=0, max_msg_size=MAX_WS_MESSAGE,
                                                 heartbeat=self.heartbeat_s, autoping=True)
                hello_raw, hello = make_hello(self._key, self.node, route.node, now=time.time())
                await ws.send_bytes(hello_raw)
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.BINARY:
                    raise TunnelError("handshake refused by peer")
                keys = accept_welcome(self._key, msg.data, hello, now=time.time())
        except TunnelError as exc:
            self.log.warning("tunnel.rejected", peer=route.node, address=route.address,
                             reason=exc.reason, direction="out")
            await self._discard(ws)
            raise unreachable() from None
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            self.log.warning("tunnel.dial_failed", peer=route.node, address=route.address,
                             error=str(exc) or type(exc).__name__)
            await self._discard(ws)
            raise unreachable() from None
        except BaseException:
            await self._discard(ws)
            raise
        current = self.routes.get(route.node)
        if self._closing or current is None or not current.usable \
                or current.address != route.address:
            await self._discard(ws)     # withdrawn while we were dialing
            raise unreachable()
        tunnel = _Tunnel(self, ws, Session(keys, dialer=True, window=self.window), route.node,
                         dialed=True, address=route.address)
        old = self._dialed.get(route.node)
        if old is not None:
            old.fail("replaced")
        self._dialed[route.node] = tunnel
        tunnel.start_reader()
        self.log.info("tunnel.up", peer=route.node, address=route.address, direction="out")
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
        tunnel = _Tunnel(self, ws, Session(keys, dialer=False, window=self.window),
                         hello.src_node, dialed=False, address=remote or "")
        self._accepted.add(tunnel)
        self.log.info("tunnel.up", peer=hello.src_node, remote=remote, direction="in")
        try:
            await tunnel.read_loop()
        finally:
            tunnel.fail("handler ended")
            await tunnel.wait_done()
        return ws

    def _accept_stream(self, tunnel: _Tunnel, frame: Open) -> None:
        end = _RemoteEnd(tunnel, frame.sid, frame.src, frame.dst, frame.flow, None)
        try:
            local = self.network.accept_stream(frame.src, frame.dst, end)
        except OSError as exc:
            err = exc.errno or errno.ECONNREFUSED
            tunnel.session.refuse(frame.sid, err)
            self.log.info("tunnel.stream_in", flow=frame.flow, peer=tunnel.peer,
                          src=f"{frame.src[0]}:{frame.src[1]}",
                          dst=f"{frame.dst[0]}:{frame.dst[1]}", verdict=errno.errorcode[err]
                          if err in errno.errorcode else str(err))
            return
        end.local = local
        end.opened = True
        tunnel.ends[frame.sid] = end
        tunnel.session.accept(frame.sid)
        self.log.info("tunnel.stream_in", flow=frame.flow, peer=tunnel.peer,
                      src=f"{frame.src[0]}:{frame.src[1]}", dst=f"{frame.dst[0]}:{frame.dst[1]}",
                      verdict="accepted")

    # -- RemoteDelivery

    async def open_stream(self, src: Address, dst: Address, local: StreamPeer) -> StreamPeer:
        flow = self._flow()
        where = {"flow": flow, "src": f"{src[0]}:{src[1]}", "dst": f"{dst[0]}:{dst[1]}"}
        route = self._route(dst[0])
        if route is None:
            self.log.info("tunnel.stream_out", **where, verdict="EHOSTUNREACH", reason="no route")
            raise unreachable()
        try:
            tunnel = await self._tunnel_to(route)
        except OSError:
            self.log.info("tunnel.stream_out", **where, peer=route.node, verdict="EHOSTUNREACH",
                          reason="peer agent unreachable")
            raise
        sid = tunnel.session.open(src, dst, flow)
        end = _RemoteEnd(tunnel, sid, src, dst, flow, local)
        waiter = asyncio.get_running_loop().create_future()
        tunnel.opening[sid] = waiter
        tunnel.ends[sid] = end
        tunnel.kick()
        try:
            await waiter
        except OSError as exc:
            tunnel.forget(end)
            self.log.info("tunnel.stream_out", **where, peer=route.node,
                          verdict=errno.errorcode.get(exc.errno or 0, str(exc.errno)))
            raise
        except BaseException:
            # The caller gave up (cancelled): abandon the half-open stream.
            tunnel.opening.pop(sid, None)
            tunnel.forget(end)
            tunnel.session.reset(sid, errno.ECONNRESET)
            tunnel.kick()
            raise
        end.opened = True
        self.log.info("tunnel.stream_out", **where, peer=route.node, verdict="connected")
        return end

    def send_datagram(self, src: Address, dst: Address, data: bytes) -> None:
        route = self._route(dst[0])
        if route is None:
            raise unreachable()
        tunnel = self._dialed.get(route.node)
        if tunnel is not None and tunnel.address == route.address:
            if tunnel.session.datagram(src, dst, self._flow(), data):
                tunnel.kick()
            return
        held = self._held.setdefault(route.node, [])
        if len(held) < HELD_DATAGRAMS:
            held.append((src, dst, bytes(data)))
        self._start_dial(route)

    async def ping(self, src: str, dst: str, ident: int, seq: int, payload: bytes) -> None:
        """Send an echo request from pod `src` to `dst`; returns when the reply arrives."""
        route = self._route(dst)
        if route is None:
            raise unreachable()
        tunnel = await self._tunnel_to(route)
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

    # -- inbound connectionless frames

    def _deliver_datagram(self, frame: Dgram) -> None:
        try:
            self.network.deliver_datagram(frame.src, frame.dst, frame.data)
        except OSError:
            pass        # no socket there: UDP drops it (ICMP errors are not emulated yet)

    def _answer_ping(self, tunnel: _Tunnel, frame: Ping) -> None:
        if self.network.pod(frame.dst) is not None:
            tunnel.session.echo(Pong(frame.dst, frame.src, frame.ident, frame.seq,
                                     frame.payload))
            tunnel.kick()

    def _pong(self, frame: Pong) -> None:
        waiter = self._pings.get((frame.dst, frame.src, frame.ident, frame.seq))
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
