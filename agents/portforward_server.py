"""The agent's port-forward endpoint: `GET /pods/{namespace}/{name}/portforward?port=P`, a
WebSocket per forwarded connection (the control plane opens one for each connection kubectl
forwards; see controlplane/portforward.py).

The connection goes to 127.0.0.1:P inside the pod's own network stack, as kubelet's
port-forward enters the pod's network namespace, so the pod sees it come from localhost. The
first message is text: `{"connected": true, "flow": ID}`, or `{"error": TEXT}` in the words
kubectl prints after kubelet's prefix (`failed to connect to localhost:80 inside the pod's
network namespace: dial tcp4 127.0.0.1:80: connect: connection refused`). Then binary messages
carry bytes both ways; an empty one ends that direction (TCP half-close), and the WebSocket
closes (1000) once both directions have ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.typedefs import Handler

from agents.netstack import LOOPBACK, PodNet, current_flow

log = structlog.get_logger()

Lookup = Callable[[str, str], PodNet | None]
READ_BYTES = 64 * 1024


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Failure", "message": message, "reason": reason,
                              "code": code}, status=code)


def _go_error(exc: OSError) -> str:
    """An OSError as Go's net package words it (what kubelet's message carries)."""
    if exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


class PortForwardEndpoint:
    """The handler, and the open connections it must hang up when the agent stops (aiohttp
    would otherwise wait for each WebSocket handler until its shutdown timeout)."""

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.sockets: set[web.WebSocketResponse] = set()

    async def handler(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        text = request.query.get("port", "")
        if not text.isdigit() or not 0 < int(text) < 65536:
            return _status(400, "BadRequest", f"invalid port {text!r}: must be 1..65535")
        port = int(text)
        net = self.lookup(namespace, name)
        if net is None:
            return _status(404, "NotFound", f'pod "{name}" is not running on this node')
        ws = web.WebSocketResponse(autoping=True)
        if not ws.can_prepare(request).ok:
            return _status(400, "BadRequest", "port-forward needs a WebSocket upgrade")
        await ws.prepare(request)
        self.sockets.add(ws)
        try:
            with structlog.contextvars.bound_contextvars(pod=name, namespace=namespace):
                await _forward(ws, net, port)
        finally:
            self.sockets.discard(ws)
        return ws

    async def on_shutdown(self, _: web.Application) -> None:
        for ws in list(self.sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"agent stopping")


def portforward_handler(lookup: Lookup) -> Handler:
    """The bare handler (for apps that never shut down with connections open)."""
    return PortForwardEndpoint(lookup).handler


async def _forward(ws: web.WebSocketResponse, net: PodNet, port: int) -> None:
    flow = net.new_flow()
    token = current_flow.set(flow)      # the connection below logs under this flow id
    try:
        reader, writer = await net.open_connection(LOOPBACK, port)
    except OSError as e:
        reason = (f"failed to connect to localhost:{port} inside the pod's network namespace: "
                  f"dial tcp4 {LOOPBACK}:{port}: connect: {_go_error(e)}")
        log.info("portforward.connection", flow=flow, port=port, verdict="failed",
                 reason=reason)
        with contextlib.suppress(ConnectionError):
            await ws.send_str(json.dumps({"error": reason}))
            await ws.close()
        return
    finally:
        current_flow.reset(token)
    log.info("portforward.connection", flow=flow, port=port, verdict="connected")
    try:
        await ws.send_str(json.dumps({"connected": True, "flow": flow}))
        to_pod = asyncio.create_task(_to_pod(ws, writer), name=f"portforward {flow} to pod")
        from_pod = asyncio.create_task(_from_pod(ws, reader),
                                       name=f"portforward {flow} from pod")
        try:
            # Over when both directions have ended, or at once when the control plane hangs
            # up or a copy fails.
            pending: set[asyncio.Task[Any]] = {to_pod, from_pod}
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(t.exception() is not None for t in done):
                    return
                if to_pod in done and not to_pod.result():
                    return
        finally:
            for task in (to_pod, from_pod):
                task.cancel()
            await asyncio.gather(to_pod, from_pod, return_exceptions=True)
    except ConnectionError:
        pass
    finally:
        writer.close()
        if not ws.closed:
            await ws.close()
        log.info("portforward.connection", flow=flow, port=port, verdict="closed")


async def _to_pod(ws: web.WebSocketResponse, writer: asyncio.StreamWriter) -> bool:
    """Copy the client's bytes into the pod. True when the client ended its side (empty
    message), False when the WebSocket closed first."""
    while True:
        msg = await ws.receive()
        if msg.type != WSMsgType.BINARY:
            return False
        if not msg.data:
            if writer.can_write_eof():
                writer.write_eof()
            return True
        writer.write(msg.data)
        await writer.drain()


async def _from_pod(ws: web.WebSocketResponse, reader: asyncio.StreamReader) -> None:
    """Copy the pod's bytes to the client; an empty message says the pod closed its side."""
    while data := await reader.read(READ_BYTES):
        await ws.send_bytes(data)
    await ws.send_bytes(b"")
