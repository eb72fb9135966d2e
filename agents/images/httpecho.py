"""`hashicorp/http-echo`: answers every request with `-text` (and a newline).

`-listen` (default `:5678`), `-text` (or `$ECHO_TEXT`; without either it exits 127 with
"Missing -text option!"), `-status-code` (200). `/health` answers `{"status":"ok"}`.
"""

from __future__ import annotations

import time

from aiohttp import web

from agents.images import ContainerContext
from agents.images.flags import FlagError, FlagValue, parse_flags
from agents.images.golog import printf
from agents.images.httpserve import local_port, peer, serve, server_header
from podnet.addresses import hostport

VERSION = "1.0.0"


def listen_port(listen: str) -> int:
    """`:5678`, `0.0.0.0:5678` or `[::]:5678` -> 5678."""
    port = listen.rsplit(":", 1)[-1]
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen tcp {listen}: address {port}: invalid port")
    return int(port)


def request_line(*, host: str, remote: str, method: str, uri: str, proto: str, status: int,
                 size: int, agent: str, took_us: float) -> str:
    """http-echo's access log entry (without the logger's timestamp)."""
    return f'{host} {remote} "{method} {uri} {proto}" {status} {size} "{agent}" {took_us:.3f}µs'


async def run(ctx: ContainerContext, argv: list[str]) -> int:
    defaults: dict[str, FlagValue] = {"listen": ":5678", "text": "", "status-code": 200,
                                      "version": False}
    try:
        flags, _ = parse_flags(argv[1:], defaults)
        port = listen_port(str(flags["listen"]))
    except (FlagError, ValueError) as e:
        ctx.stdout.write(f"{e}\n")
        return 2
    if flags["version"]:
        ctx.stdout.write(f"http-echo v{VERSION}\n")
        return 0
    text = str(flags["text"]) or ctx.env.get("ECHO_TEXT", "")
    if not text:
        ctx.stdout.write("Missing -text option!\n")
        return 127
    status = int(flags["status-code"])

    async def handle(request: web.Request) -> web.Response:
        started = time.perf_counter()
        if request.path == "/health":
            response = web.Response(body=b'{"status":"ok"}')
            response.headers["Content-Type"] = "application/json"
        else:
            response = web.Response(status=status if 100 <= status <= 999 else 200,
                                    body=f"{text}\n".encode())
            response.headers["Content-Type"] = "text/plain; charset=utf-8"
        response.headers["X-App-Name"] = "http-echo"
        response.headers["X-App-Version"] = VERSION
        ip, client_port = peer(request)
        assert isinstance(response.body, bytes)
        printf(ctx, request_line(
            host=request.host or hostport(ctx.pod.ip, local_port(request)),
            remote=hostport(ip, client_port), method=request.method, uri=request.raw_path,
            proto=f"HTTP/{request.version.major}.{request.version.minor}",
            status=response.status, size=len(response.body),
            agent=request.headers.get("User-Agent", ""),
            took_us=(time.perf_counter() - started) * 1e6))
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server_header(app, None)
    printf(ctx, f"[INFO] server is listening on {flags['listen']}")
    return await serve(ctx, app, [port])
