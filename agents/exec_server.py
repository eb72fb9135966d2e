"""The agent's exec endpoint: `GET /pods/{namespace}/{name}/exec?command=...` over WebSocket.

It speaks kubectl's `v5.channel.k8s.io` (and v4) protocol, see `podnet.execproto`: the command
runs as a toolbox command inside the pod's network stack; stdout/stderr stream out on channels 1
and 2 (merged into 1 for a tty), channel 0 feeds stdin until the `FF 00` close signal, and the
session ends with exactly one channel-3 Status and a normal close (1000), which is what makes
kubectl exit with the command's exit code.

Errors known before the upgrade (unknown pod or container, no command, not a WebSocket request)
are answered as a JSON Status with an HTTP error code, so kubectl prints
`Error from server (BadRequest): ...` (it retries once with SPDY and gets the same answer).
Authentication is the agent app's middleware's job, not this handler's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler

from agents.toolbox import ExecTarget, run_command
from podnet import execproto
from podnet.apierrors import ApiError, bad_request
from podnet.execproto import Channel

log = structlog.get_logger()

Lookup = Callable[[str, str, str | None], ExecTarget | str | ApiError]

# Output waiting to be sent to a slow client is bounded: commands block in drain() above HIGH
# and resume below LOW.
OUTBOX_HIGH_BYTES = 256 * 1024
OUTBOX_LOW_BYTES = 64 * 1024
STDIN_LIMIT_BYTES = 256 * 1024
STDIN_PAUSED_POLL_S = 1.0


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1", "yes")


def _error(err: ApiError) -> web.Response:
    return web.json_response(err.status(), status=err.code)


class _Outbox:
    """Channel messages from a running command to the WebSocket, in order, bounded."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._pending = 0
        self._room = asyncio.Event()
        self._room.set()

    def put(self, channel: Channel, data: bytes) -> None:
        if data:
            self._pending += len(data)
            if self._pending > OUTBOX_HIGH_BYTES:
                self._room.clear()
            self._queue.put_nowait(execproto.encode(channel, data))

    async def drain(self) -> None:
        await self._room.wait()

    def finish(self) -> None:
        self._queue.put_nowait(None)

    async def run(self) -> None:
        """Send until `finish()`; a client that went away just ends it."""
        while (message := await self._queue.get()) is not None:
            self._pending -= len(message) - 1
            if self._pending <= OUTBOX_LOW_BYTES:
                self._room.set()
            try:
                await self._ws.send_bytes(message)
            except ConnectionError:
                self._room.set()  # nobody will read it; never block the command on it
                return


class _StdinGate(asyncio.ReadTransport):
    """Flow control for stdin: the StreamReader pauses us when the command is not reading.

    StreamReader calls pause_reading() above twice its limit and resume_reading() once the
    command has read it down; the receive loop waits on `open` so a client that sends faster
    than the command reads is held back by TCP instead of growing the buffer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.open.set()

    def pause_reading(self) -> None:
        self.open.clear()

    def resume_reading(self) -> None:
        self.open.set()

    def is_reading(self) -> bool:
        return self.open.is_set()


async def _receive(ws: web.WebSocketResponse, stdin: asyncio.StreamReader | None,
                   gone: Callable[[], bool]) -> None:
    """Feed channel 0 into stdin until the close signal; returns when the client is gone.

    While stdin is paused, pings wait too (kubectl tolerates about a minute of that), and a
    client that leaves is only noticed by polling `gone()`, since nothing reads its socket.
    """
    gate = _StdinGate()
    stdin_open = stdin is not None
    if stdin is not None:
        stdin.set_transport(gate)
    try:
        while True:
            while not gate.open.is_set():
                if gone():
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STDIN_PAUSED_POLL_S):
                        await gate.open.wait()
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                            WSMsgType.ERROR):
                return
            if msg.type != WSMsgType.BINARY:
                continue  # kubectl never sends text; ignore rather than end the session
            try:
                channel, payload = execproto.decode(msg.data)
            except ValueError as e:
                log.warning("exec.bad_message", error=str(e))
                continue
            if stdin is None or not stdin_open:
                continue  # stdin after the close signal is dropped, as a closed pipe would
            if channel == Channel.STDIN:
                stdin.feed_data(payload)
            elif channel == Channel.CLOSE and payload == bytes([Channel.STDIN]):
                stdin.feed_eof()
                stdin_open = False
                gate.resume_reading()  # nothing more to hold back; keep answering pings
            # Resize (4) has nothing to act on: toolbox commands do not draw on a terminal.
    finally:
        if stdin is not None and stdin_open:
            stdin.feed_eof()


def exec_handler(lookup: Lookup) -> Handler:
    """The aiohttp handler for `/pods/{namespace}/{name}/exec`.

    `lookup(namespace, pod, container)` returns the ExecTarget, or why there is none: a text
    (answered 400 BadRequest) or an ApiError (answered with its own code, e.g. 404 NotFound).
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        pod = request.match_info["name"]
        argv = request.query.getall("command", [])
        container = request.query.get("container") or None
        found = lookup(namespace, pod, container)
        if isinstance(found, ApiError):
            return _error(found)
        if isinstance(found, str):
            return _error(bad_request(found))
        if not argv:
            return _error(bad_request("you must specify at least one command for the container"))
        ws = web.WebSocketResponse(protocols=execproto.PROTOCOLS)
        ready = ws.can_prepare(request)
        if not ready.ok:
            return _error(bad_request("Upgrade request required"))
        if ready.protocol is None:
            return _error(bad_request(
                "exec needs the WebSocket subprotocol " + " or ".join(execproto.PROTOCOLS)))
        await ws.prepare(request)
        with structlog.contextvars.bound_contextvars(pod=pod, namespace=namespace):
            await _session(ws, found, argv, gone=lambda: request.transport is None,
                           tty=_flag(request, "tty"),
                           stdin=_flag(request, "stdin"), stdout=_flag(request, "stdout"),
                           stderr=_flag(request, "stderr"))
        return ws

    return handler


async def _session(ws: web.WebSocketResponse, target: ExecTarget, argv: list[str], *,
                   gone: Callable[[], bool], tty: bool, stdin: bool, stdout: bool,
                   stderr: bool) -> None:
    outbox = _Outbox(ws)
    reader = asyncio.StreamReader(limit=STDIN_LIMIT_BYTES) if stdin else None

    def out(data: bytes) -> None:
        if stdout:
            outbox.put(Channel.STDOUT, data)

    def err(data: bytes) -> None:
        # A tty has one output stream; otherwise stderr only goes where it was asked for.
        if tty:
            out(data)
        elif stderr:
            outbox.put(Channel.STDERR, data)

    label = f"exec {target.namespace}/{target.pod}: {argv[0]}"
    log.info("exec.start", argv=argv, tty=tty, stdin=stdin)
    sender = asyncio.create_task(outbox.run(), name=f"{label} (output)")
    receiver = asyncio.create_task(_receive(ws, reader, gone), name=f"{label} (input)")
    command = asyncio.create_task(
        run_command(target, argv, reader, out, err, tty=tty, drain=outbox.drain), name=label)
    try:
        await asyncio.wait({command, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if not command.done():
            # The receiver only ends when the client has gone: nobody is left to see the end.
            log.info("exec.abandoned", argv=argv)
            return
        status = _status(command, argv)
        outbox.finish()
        await sender
        await ws.send_bytes(execproto.encode_status(status))
        log.info("exec.end", argv=argv, status=status.get("status"),
                 reason=status.get("reason"))
    except ConnectionError:
        log.info("exec.abandoned", argv=argv)
    finally:
        for task in (command, receiver, sender):
            task.cancel()
        for task in (command, receiver, sender):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await ws.close()


def _status(command: asyncio.Task[int], argv: list[str]) -> dict[str, object]:
    exc = command.exception()
    if exc is not None:
        log.error("exec.crashed", argv=argv, error=repr(exc))
        return execproto.status_failure(f"toolbox {argv[0]} failed: {exc!r}")
    code = command.result()
    return execproto.status_for_exit(code & 0xFF, argv)
