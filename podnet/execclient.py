"""The client side of exec, used by `podnet exec POD -- CMD`.

It opens the control plane's `GET /api/v1/namespaces/NS/pods/POD/exec?command=...` WebSocket
(the control plane relays it verbatim to the pod's agent) and speaks `v5.channel.k8s.io` as
kubectl does: stdout/stderr from channels 1/2 to the given files, local stdin to channel 0
followed by the `FF 00` close signal at EOF, and the exit code from the channel-3 Status.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import ssl
import stat
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, BinaryIO
from urllib.parse import quote

import aiohttp

from podnet import execproto
from podnet.execproto import Channel

READ_BYTES = 32 * 1024  # kubectl's stdin copy buffer


class ExecError(Exception):
    """Exec could not run or did not end normally; `reason`/`code` come from a server Status."""

    def __init__(self, message: str, *, reason: str | None = None, code: int | None = None
                 ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.code = code


def exec_url(api_url: str, namespace: str, pod: str) -> str:
    return (f"{api_url.rstrip('/')}/api/v1/namespaces/{quote(namespace, safe='')}"
            f"/pods/{quote(pod, safe='')}/exec")


def exec_params(argv: list[str], container: str | None, *, stdin: bool, tty: bool
                ) -> list[tuple[str, str]]:
    """kubectl's query: one `command` per argv word; no stderr with a tty (it is merged)."""
    params = [("command", word) for word in argv]
    if container:
        params.append(("container", container))
    params += [("stdin", "true" if stdin else "false"), ("stdout", "true"),
               ("tty", "true" if tty else "false")]
    if not tty:
        params.append(("stderr", "true"))
    return params


async def exec_in_pod(api_url: str, token: str, namespace: str, pod: str, container: str | None,
                      argv: list[str], *, stdin: bool, stdout: BinaryIO, stderr: BinaryIO,
                      stdin_source: BinaryIO | None = None, tty: bool = False,
                      ssl_context: ssl.SSLContext | None = None) -> int:
    """Run argv in the pod and return its exit code.

    Raises ExecError when the server refuses the session (with the Status' message, reason and
    HTTP code), when the command fails for a reason other than its exit code, or when the
    connection ends without a normal close. `stdin_source` defaults to this process' stdin.
    """
    if not argv:
        raise ExecError("you must specify at least one command for the container")
    url = exec_url(api_url, namespace, pod)
    params = exec_params(argv, container, stdin=stdin, tty=tty)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context else None
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            ws = await session.ws_connect(url, params=params, headers=headers,
                                          protocols=execproto.PROTOCOLS, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as e:
            raise await _refusal(session, url, params, headers, e.status) from None
        except aiohttp.ClientError as e:
            raise ExecError(f"cannot reach the API server at {api_url}: {e}") from None
        async with ws:
            if ws.protocol not in execproto.PROTOCOLS:
                raise ExecError("the server selected no exec subprotocol "
                                f"(offered {', '.join(execproto.PROTOCOLS)})")
            source = stdin_source if stdin_source is not None else sys.stdin.buffer
            async with _stdin_pump(ws, source if stdin else None):
                status, close_code = await _read_session(ws, stdout, stderr)
    if close_code != aiohttp.WSCloseCode.OK:
        # kubectl: "error reading from error stream: ... close 1006 (abnormal closure)", exit 1
        raise ExecError("error reading from error stream: websocket closed abnormally "
                        f"({close_code or aiohttp.WSCloseCode.ABNORMAL_CLOSURE})")
    if status is None:
        return 0  # kubectl: a normal close without a Status is success
    try:
        code = execproto.exit_code_from_status(status)
    except ValueError as e:
        raise ExecError(str(e)) from None
    if status.get("status") == "Failure" and status.get("reason") != execproto.NON_ZERO_EXIT:
        raise ExecError(str(status.get("message") or "exec failed"),
                        reason=status.get("reason"))
    return code


async def _read_session(ws: aiohttp.ClientWebSocketResponse, stdout: BinaryIO,
                        stderr: BinaryIO) -> tuple[dict[str, Any] | None, int | None]:
    """Copy output until the session ends.

    Returns the channel-3 Status (if one came) and the server's close code, None when the
    connection ended without a close frame.
    """
    status: dict[str, Any] | None = None
    while True:
        msg = await ws.receive()
        if msg.type == aiohttp.WSMsgType.CLOSE:
            return status, int(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.ERROR):
            return status, None
        if msg.type != aiohttp.WSMsgType.BINARY:
            continue
        try:
            channel, payload = execproto.decode(msg.data)
        except ValueError:
            continue  # kubectl ignores channels it did not open
        if channel == Channel.STDOUT:
            stdout.write(payload)
            stdout.flush()
        elif channel == Channel.STDERR:
            stderr.write(payload)
            stderr.flush()
        elif channel == Channel.ERROR:
            try:
                decoded = json.loads(payload)
            except ValueError:
                raise ExecError(f"malformed exec status: {payload[:200]!r}") from None
            if isinstance(decoded, dict):
                status = decoded


async def _refusal(session: aiohttp.ClientSession, url: str, params: list[tuple[str, str]],
                   headers: dict[str, str], http_code: int) -> ExecError:
    """Why the upgrade was refused.

    aiohttp drops the refusal's body, so ask again without upgrading (kubectl likewise retries,
    with SPDY) and read the Status the server answers.
    """
    try:
        async with session.get(url, params=params, headers=headers) as resp:
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status" and body.get("message"):
        return ExecError(str(body["message"]), reason=body.get("reason"),
                         code=body.get("code", http_code))
    return ExecError(f"exec refused by the server (HTTP {http_code})", code=http_code)


@contextlib.asynccontextmanager
async def _stdin_pump(ws: aiohttp.ClientWebSocketResponse,
                      source: BinaryIO | None) -> AsyncIterator[None]:
    """Send `source` to channel 0 in the background while the session runs."""
    if source is None:
        yield
        return
    task = asyncio.create_task(_send_stdin(ws, source), name="exec stdin")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await task


async def _send_stdin(ws: aiohttp.ClientWebSocketResponse, source: BinaryIO) -> None:
    async with contextlib.aclosing(_chunks(source)) as chunks:
        async for data in chunks:
            await ws.send_bytes(execproto.encode(Channel.STDIN, data))
    if ws.protocol == execproto.PROTOCOL_V5:
        await ws.send_bytes(execproto.close_signal(Channel.STDIN))


async def _chunks(source: BinaryIO) -> AsyncGenerator[bytes, None]:
    """Read `source` without blocking the loop.

    Pipes, terminals and sockets are read through the event loop; a thread would stay blocked
    on a terminal after the command ended. Regular files and in-memory buffers never block, so
    they are read directly.
    """
    fd = _pollable_fd(source)
    if fd is None:
        while data := source.read(READ_BYTES):
            yield data
            await asyncio.sleep(0)  # let output flow between large chunks
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_BYTES)
    # A duplicate, so closing the transport does not close the caller's stdin.
    pipe = os.fdopen(os.dup(fd), "rb", buffering=0)
    was_blocking = os.get_blocking(fd)
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe)
    except OSError:
        pipe.close()  # e.g. /dev/null, which epoll refuses: it reads as EOF anyway
        return
    try:
        while data := await reader.read(READ_BYTES):
            yield data
    finally:
        transport.close()
        os.set_blocking(fd, was_blocking)  # the flag is shared with whoever owns this stdin


def _pollable_fd(source: BinaryIO) -> int | None:
    try:
        fd = source.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode):
        return fd
    return None
