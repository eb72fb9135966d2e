"""Pod images for bench/netpol.py (`image: py:netpol_pods:server|client`, from bench/pods/ on
the agents' PYTHONPATH).

`server`: 64-byte echo on ports 7000 (the port the bench's policies allow) and 7001 (one they
do not: a refused connect there shows the policies are in force).

`client`: a control server on the pod's own loopback, 127.0.0.1:9000, driven by the bench
through `exec ... curl` (loopback never leaves the pod, so no policy applies to it):

- `GET /rr?host=IP&port=P&seconds=S`: 64-byte request/response rate over one connection;
- `GET /crr?host=IP&port=P&seconds=S`: rate of connect + one 64-byte exchange + close;
- `GET /connects?host=IP&port=P`: `ok` or why a connect failed (`refused`, ...);
- `GET /watch?host=IP&port=P&until=refused|ok`: connects back to back in the background until
  a connect turns out `until`; answers once the watch runs (`started`);
- `GET /result`: `pending`, or the wall-clock time (time.time()) of that first connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from typing import Any

from clusterip_pods import MSG, _echo, _rate

CONTROL_PORT = 9000
WATCH_LIMIT_S = 30.0


async def server(ctx: Any) -> None:
    for port in (7000, 7001):
        await ctx.net.start_server(_echo, port=port)
    await asyncio.Event().wait()


async def _connect_outcome(ctx: Any, host: str, port: int) -> str:
    try:
        _, writer = await asyncio.wait_for(ctx.net.open_connection(host, port), 5)
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"error-{exc.errno}"
    writer.close()
    return "ok"


async def _crr(ctx: Any, host: str, port: int, seconds: float) -> float:
    request, done = b"q" * MSG, 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        reader, writer = await ctx.net.open_connection(host, port)
        writer.write(request)
        await reader.readexactly(MSG)
        writer.close()
        done += 1
    return done / elapsed


async def client(ctx: Any) -> None:
    watch: dict[str, Any] = {"task": None, "result": "pending"}

    async def watcher(host: str, port: int, until: str, started: asyncio.Future[None]) -> None:
        deadline = time.monotonic() + WATCH_LIMIT_S
        first = True
        while time.monotonic() < deadline:
            outcome = await _connect_outcome(ctx, host, port)
            if first:
                first = False
                if outcome == until:
                    watch["result"] = "already"
                    started.set_result(None)
                    return
                started.set_result(None)
            elif outcome == until:
                watch["result"] = f"{time.time():.6f}"
                return
            await asyncio.sleep(0.001)
        watch["result"] = "gave up"

    async def handle(query: dict[str, str], path: str) -> str:
        host, port = query.get("host", ""), int(query.get("port", "7000"))
        seconds = float(query.get("seconds", "3"))
        if path == "/rr":
            return f"{await _rate(ctx, host, port, 1, seconds):.1f}"
        if path == "/crr":
            return f"{await _crr(ctx, host, port, seconds):.1f}"
        if path == "/connects":
            return await _connect_outcome(ctx, host, port)
        if path == "/watch":
            if watch["task"] is not None and not watch["task"].done():
                watch["task"].cancel()
            watch["result"] = "pending"
            started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            watch["task"] = asyncio.create_task(
                watcher(host, port, query.get("until", "refused"), started), name="watch")
            await started
            return "started"
        if path == "/result":
            return str(watch["result"])
        return f"unknown path {path}"

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            words = (await reader.readline()).decode(errors="replace").split()
            while (await reader.readline()).strip():
                pass
            url = urllib.parse.urlsplit(words[1] if len(words) == 3 else "/")
            query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
            try:
                body = (await handle(query, url.path) + "\n").encode()
                status = "200 OK"
            except (ValueError, OSError, asyncio.IncompleteReadError) as exc:
                body, status = f"{type(exc).__name__}: {exc}\n".encode(), "500 Error"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    await ctx.net.start_server(control, host="127.0.0.1", port=CONTROL_PORT)
    await asyncio.Event().wait()
