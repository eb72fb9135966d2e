"""`kubectl port-forward`: the API server's end of `pods/NAME/portforward`.

kubectl (1.31+) opens a WebSocket with the subprotocol `SPDY/3.1+portforward.k8s.io` and speaks
SPDY/3.1 inside its binary messages; older kubectl, or 1.31+ when that upgrade fails or
`KUBECTL_PORT_FORWARD_WEBSOCKETS=false`, sends a `POST` with `Upgrade: SPDY/3.1` and
`X-Stream-Protocol-Version: portforward.k8s.io`, and speaks SPDY on the raw connection after the
101. Both end up as a byte channel under one `PortForwardSession` (podnet/wire/portforward.py).

Each forwarded connection (a data/error stream pair) becomes one WebSocket to the agent of the
pod (`/pods/NS/NAME/portforward?port=P`), which connects to 127.0.0.1:P inside the pod's own
network stack, as kubelet's port-forward does inside the pod's netns. The agent first sends one
text message (`{"connected": true, "flow": ...}` or `{"error": "..."}`), then binary messages
carry the bytes; an empty binary message is the end of one direction (a TCP half-close), and
the WebSocket's close ends the connection.

Memory stays bounded: bytes from kubectl wait in a per-connection inbox of at most
`INBOX_LIMIT_BYTES` (the session stops reading its channel while one is full), and bytes to
kubectl are written only as fast as the channel drains and, with a peer that does SPDY flow
control, as its windows allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import aiohttp
import structlog
from aiohttp import web

from podnet.wire import portforward as pf
from podnet.wire.spdy import GoAwayStatus, RstStatus

log = structlog.get_logger()

INBOX_LIMIT_BYTES = 256 * 1024    # bytes from kubectl waiting for one connection's agent
CHANNEL_LIMIT_BYTES = 256 * 1024  # bytes of the upgraded connection waiting to be decoded
AGENT_READ_BYTES = 64 * 1024
_EOF = b""


class ForwardError(Exception):
    """The pod's port could not be reached; the text is what kubectl prints after kubelet's
    `error forwarding port P to pod NAME, uid UID: `."""


# ---------------------------------------------------------------------- byte channels

class Channel(Protocol):
    """The client's byte stream, whatever carries it."""

    async def read(self) -> bytes: ...          # b"" at the end

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class WebSocketChannel:
    """SPDY tunnelled in WebSocket binary messages (message boundaries mean nothing)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    async def read(self) -> bytes:
        while True:
            msg = await self.ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                if msg.data:
                    return cast(bytes, msg.data)
                continue
            if msg.type == aiohttp.WSMsgType.TEXT:
                # kubectl's tunnel refuses text messages too; a client that sends one is not
                # speaking the tunnelling protocol.
                log.warning("portforward.bad_message", reason="text message in the SPDY tunnel")
            return b""

    async def write(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def close(self) -> None:
        await self.ws.close()


class UpgradedChannel:
    """The raw connection after `101 Switching Protocols` to SPDY/3.1.

    aiohttp only hands over connections upgraded to WebSocket, so this plugs itself in where
    aiohttp feeds a request's payload (the hook its WebSocket support uses) and writes to the
    transport directly. Reading is paused while `CHANNEL_LIMIT_BYTES` wait to be decoded.
    """

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._paused = False
        self._ready = asyncio.Event()

    def attach(self) -> None:
        """Take over the connection's input (before the 101 goes out, so nothing is missed)."""
        protocol = self._request.protocol
        protocol.set_parser(cast(Any, self))
        protocol.keep_alive(False)

    # The payload-parser interface aiohttp calls.
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if data:
            self._chunks.append(bytes(data))
            self._size += len(data)
            if self._size > CHANNEL_LIMIT_BYTES and not self._paused:
                self._pause(True)
            self._ready.set()
        return False, b""

    def feed_eof(self) -> None:
        self._eof = True
        self._ready.set()

    async def read(self) -> bytes:
        while not self._chunks:
            if self._eof:
                return b""
            self._ready.clear()
            await self._ready.wait()
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        if self._paused:
            self._pause(False)
        return data

    def _pause(self, paused: bool) -> None:
        # The transport itself: aiohttp's protocol would pause its HTTP parser, which this
        # connection no longer uses.
        self._paused = paused
        transport = self._request.transport
        if transport is not None and not transport.is_closing():
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()

    async def write(self, data: bytes) -> None:
        transport = self._request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        transport.write(data)
        await self._request.protocol._drain_helper()

    async def close(self) -> None:
        transport = self._request.transport
        if transport is not None:
            transport.close()


# ---------------------------------------------------------------------- the pod side

class PodConnection(Protocol):
    flow: str

    async def send(self, data: bytes) -> None: ...

    async def send_eof(self) -> None: ...

    async def receive(self) -> bytes: ...      # b"" when the pod has closed its side

    async def close(self) -> None: ...


Dial = Callable[[int], Awaitable[PodConnection]]


class AgentConnection:
    """One forwarded connection through the agent's `/portforward` WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, flow: str) -> None:
        self.ws = ws
        self.flow = flow
        self._ended = False

    async def send(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def send_eof(self) -> None:
        await self.ws.send_bytes(b"")

    async def receive(self) -> bytes:
        if self._ended:
            return b""
        msg = await self.ws.receive()
        if msg.type == aiohttp.WSMsgType.BINARY:
            if not msg.data:
                self._ended = True
            return cast(bytes, msg.data)
        self._ended = True
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED) and self.ws.close_code in (None, 1000):
            return b""
        if self.ws.close_code == aiohttp.WSCloseCode.GOING_AWAY:
            raise ForwardError("the agent of the pod's node is stopping")
        raise ForwardError(f"lost the connection to the pod's agent "
                           f"(close code {self.ws.close_code})")

    async def close(self) -> None:
        await self.ws.close()


def agent_dialer(http: aiohttp.ClientSession, base_url: str, token: str) -> Dial:
    """Dial ports of one pod through its agent (`base_url` = `http://agent/pods/NS/NAME`)."""

    async def dial(port: int) -> PodConnection:
        try:
            ws = await http.ws_connect(f"{base_url}/portforward?port={port}",
                                       headers={"Authorization": f"Bearer {token}"},
                                       autoping=True, max_msg_size=4 * 1024 * 1024)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise ForwardError(f"cannot reach the pod's agent: {e}") from None
        try:
            first = await asyncio.wait_for(ws.receive(), 10.0)
            hello = json.loads(first.data) if first.type == aiohttp.WSMsgType.TEXT else None
        except (TimeoutError, ValueError, aiohttp.ClientError):
            hello = None
        if not isinstance(hello, dict) or not hello.get("connected"):
            await ws.close()
            why = hello.get("error") if isinstance(hello, dict) else None
            raise ForwardError(str(why or "the pod's agent did not answer"))
        return AgentConnection(ws, str(hello.get("flow", "")))

    return dial


# ---------------------------------------------------------------------- the session

@dataclass
class _Pair:
    request_id: str
    port: int | None
    port_text: str
    data: int
    error: int
    inbox: deque[bytes] = field(default_factory=deque)
    inbox_bytes: int = 0
    inbox_ready: asyncio.Event = field(default_factory=asyncio.Event)
    window: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class ForwardSession:
    """One kubectl port-forward session: its SPDY session, its channel, one task per pair."""

    def __init__(self, channel: Channel, dial: Dial, *, namespace: str, pod: str, uid: str,
                 protocol: str) -> None:
        self.channel = channel
        self.dial = dial
        self.namespace, self.pod, self.uid = namespace, pod, uid
        self.protocol = protocol
        self.spdy = pf.PortForwardSession()
        self._pairs: dict[int, _Pair] = {}         # by data and by error stream id
        self._write_lock = asyncio.Lock()
        self._drained = asyncio.Event()
        self._served = 0

    async def run(self) -> None:
        log.info("portforward.session", pod=self.pod, namespace=self.namespace,
                 protocol=self.protocol, verdict="opened")
        reason = "the client closed the connection"
        try:
            while not self.spdy.closed:
                data = await self.channel.read()
                if not data:
                    break
                for event in self.spdy.receive(data):
                    if isinstance(event, pf.Closed):
                        reason = event.reason
                        if event.error:
                            log.warning("portforward.protocol_error", pod=self.pod,
                                        namespace=self.namespace, reason=event.reason)
                    else:
                        self._handle(event)
                await self._flush()
                await self._wait_for_room()
        except ConnectionError as e:
            reason = f"connection lost: {e}"
        finally:
            await self._shutdown()
            log.info("portforward.session", pod=self.pod, namespace=self.namespace,
                     protocol=self.protocol, verdict="closed", reason=reason,
                     connections=self._served,
                     peer_flow_control=self.spdy.enforce_send_window,
                     overrun_bytes=self.spdy.overrun_bytes)

    async def stop(self) -> None:
        """End the session from our side (server shutdown)."""
        self.spdy.close(GoAwayStatus.OK)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._flush()
        await self.channel.close()

    # -- events from the client

    def _handle(self, event: pf.Event) -> None:
        pair: _Pair | None
        if isinstance(event, pf.PairReady):
            pair = _Pair(event.request_id, event.port, event.port_text, event.data_stream,
                         event.error_stream)
            self._pairs[pair.data] = self._pairs[pair.error] = pair
            self._served += 1
            pair.task = asyncio.create_task(
                self._forward(pair), name=f"portforward {self.namespace}/{self.pod} "
                                          f"request {pair.request_id} port {pair.port_text}")
        elif isinstance(event, pf.Data):
            pair = self._pairs.get(event.stream_id)
            if pair is None or event.stream_id != pair.data:
                self.spdy.consumed(event.stream_id, len(event.data))  # nothing reads it
                return
            pair.inbox.append(event.data)
            pair.inbox_bytes += len(event.data)
            pair.inbox_ready.set()
        elif isinstance(event, pf.RemoteEnd):
            pair = self._pairs.get(event.stream_id)
            if pair is not None and event.stream_id == pair.data:
                pair.inbox.append(_EOF)
                pair.inbox_ready.set()
        elif isinstance(event, pf.Reset):
            pair = self._pairs.get(event.stream_id)
            if pair is not None and pair.task is not None:
                pair.task.cancel()
        elif isinstance(event, pf.WindowOpen):
            for pair in self._pairs.values():
                pair.window.set()
        elif isinstance(event, pf.Refused):
            log.warning("portforward.stream_refused", pod=self.pod, namespace=self.namespace,
                        stream=event.stream_id, reason=event.reason)

    async def _wait_for_room(self) -> None:
        """Stop reading from the client while some connection's inbox is full.

        This cannot deadlock against our own window waits: a peer that does flow control
        stays within our 64 KiB window, below the inbox limit, so we never stop reading its
        WINDOW_UPDATEs; and a peer that does not (kubectl) is never waited on for window."""
        while any(p.inbox_bytes > INBOX_LIMIT_BYTES for p in self._pairs.values()):
            self._drained.clear()
            await self._drained.wait()

    async def _flush(self) -> None:
        async with self._write_lock:
            out = self.spdy.take_output()
            if out:
                await self.channel.write(out)

    # -- one forwarded connection

    async def _forward(self, pair: _Pair) -> None:
        fields = {"pod": self.pod, "namespace": self.namespace, "port": pair.port_text,
                  "request": pair.request_id}
        conn: PodConnection | None = None
        try:
            if pair.port is None:
                raise ForwardError(f"invalid port {pair.port_text!r}")
            conn = await self.dial(pair.port)
            log.info("portforward.connection", **fields, flow=conn.flow, verdict="connected")
            await self._relay(pair, conn)
            await self._finish(pair)
            log.info("portforward.connection", **fields, flow=conn.flow, verdict="closed")
        except ForwardError as e:
            message = (f"error forwarding port {pair.port_text} to pod {self.pod}, "
                       f"uid {self.uid}: {e}")
            log.info("portforward.connection", **fields, verdict="failed", reason=str(e))
            with contextlib.suppress(ConnectionError):
                await self._report(pair, message)
        except asyncio.CancelledError:
            # The client reset a stream, or the session is ending. The error stream ends
            # cleanly: kubectl takes a reset error stream for a broken session and quits.
            self.spdy.reset(pair.data, RstStatus.CANCEL)
            self.spdy.end(pair.error)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._flush()
        except ConnectionError:
            pass    # the client went away; the session is ending
        except Exception as e:  # a bug: say so where kubectl shows it, keep the session
            log.exception("portforward.relay_failed", **fields, error=repr(e))
            with contextlib.suppress(Exception):
                await self._report(pair, f"internal error: {e!r}")
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            self._drop(pair)

    async def _report(self, pair: _Pair, message: str) -> None:
        """Put an error on the error stream (kubectl prints it) and end the pair. Never waits
        for window: an error text is short, and a stuck peer must not hold the task."""
        self.spdy.send(pair.error, message.encode())
        await self._finish(pair)

    async def _finish(self, pair: _Pair) -> None:
        # Data stream first: kubectl reads the error stream to its end only after that.
        self.spdy.end(pair.data)
        self.spdy.end(pair.error)
        await self._flush()

    async def _relay(self, pair: _Pair, conn: PodConnection) -> None:
        up = asyncio.create_task(self._to_pod(pair, conn),
                                 name=f"portforward request {pair.request_id} to pod")
        try:
            while chunk := await conn.receive():
                await self._send(pair, pair.data, chunk)
            # The pod closed its side. kubectl then treats the connection as over: it resets
            # the data stream (which cancels this pair) and waits for the error stream to end,
            # so both end now; a client still sending keeps `up` going until then.
            await self._finish(pair)
            await up
        finally:
            up.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, ForwardError):
                await up

    async def _to_pod(self, pair: _Pair, conn: PodConnection) -> None:
        while True:
            while not pair.inbox:
                pair.inbox_ready.clear()
                await pair.inbox_ready.wait()
            chunk = pair.inbox.popleft()
            if not chunk:   # _EOF: the client half-closed
                await conn.send_eof()
                return
            await conn.send(chunk)
            pair.inbox_bytes -= len(chunk)
            self.spdy.consumed(pair.data, len(chunk))
            self._drained.set()
            await self._flush()

    async def _send(self, pair: _Pair, stream_id: int, data: bytes) -> None:
        """Send all of `data` on a stream, waiting for window when the peer enforces one."""
        view = memoryview(data)
        while view:
            pair.window.clear()
            taken = self.spdy.send(stream_id, bytes(view))
            await self._flush()
            view = view[taken:]
            if view and not taken:
                if self.spdy.send_window(stream_id) == 0 and self.spdy.closed:
                    raise ConnectionResetError("the session is closed")
                await pair.window.wait()

    def _drop(self, pair: _Pair) -> None:
        for sid in (pair.data, pair.error):
            if self._pairs.get(sid) is pair:
                del self._pairs[sid]
        self._drained.set()

    async def _shutdown(self) -> None:
        tasks = {p.task for p in self._pairs.values() if p.task is not None}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.spdy.close(GoAwayStatus.OK)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._flush()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.channel.close()


# ---------------------------------------------------------------------- HTTP entry point

def _wants_spdy(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").strip().lower() == "spdy/3.1"


async def serve(request: web.Request, dial: Dial, *, namespace: str, pod: str, uid: str,
                sessions: set[ForwardSession],
                refuse: Callable[[str], Exception]) -> web.StreamResponse:
    """Upgrade the request (WebSocket tunnel or plain SPDY) and run the session to its end.

    `refuse(message)` builds the error raised for a request that cannot be upgraded.
    """
    if _wants_spdy(request):
        offered = [v.strip() for h in request.headers.getall("X-Stream-Protocol-Version", [])
                   for v in h.split(",")]
        if pf.PROTOCOL not in offered:
            raise refuse(f"port-forward needs X-Stream-Protocol-Version {pf.PROTOCOL} "
                         f"(offered: {', '.join(offered) or 'none'})")
        if request.body_exists:
            raise refuse("a SPDY upgrade request must not have a body")
        upgraded = UpgradedChannel(request)
        resp = web.StreamResponse(status=101, headers={
            "Connection": "Upgrade", "Upgrade": "SPDY/3.1",
            "X-Stream-Protocol-Version": pf.PROTOCOL})
        upgraded.attach()
        await resp.prepare(request)
        channel: Channel = upgraded
        protocol = "spdy"
        response: web.StreamResponse = resp
    else:
        ws = web.WebSocketResponse(protocols=(pf.WEBSOCKET_PROTOCOL,), autoping=True)
        ready = ws.can_prepare(request)
        if request.method != "GET" or not ready.ok or ready.protocol is None:
            raise refuse(f"port-forward needs a WebSocket upgrade with the subprotocol "
                         f"{pf.WEBSOCKET_PROTOCOL}, or a SPDY/3.1 upgrade")
        await ws.prepare(request)
        channel = WebSocketChannel(ws)
        protocol = "websocket"
        response = ws
    session = ForwardSession(channel, dial, namespace=namespace, pod=pod, uid=uid,
                             protocol=protocol)
    sessions.add(session)
    try:
        await session.run()
    finally:
        sessions.discard(session)
    return response
