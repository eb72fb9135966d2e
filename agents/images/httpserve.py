"""Serving an aiohttp application on a pod's ports, the way the emulated web servers do.

aiohttp's protocol runs over the pod's virtual transports (`ctx.net.create_server`). Each
server decides its own `Server` header: aiohttp's default (`Python/3.11 aiohttp/...`) would
give the emulation away, so it is replaced by the real server's, or removed for servers that
send none (Go's net/http).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiohttp import web

from agents.images import ContainerContext


def server_header(app: web.Application, value: str | None) -> None:
    """Send `Server: value` on every response (None: no Server header, like Go)."""

    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.popall("Server", None)
        if value is not None:
            response.headers["Server"] = value

    app.on_response_prepare.append(hook)


def peer(request: web.Request) -> tuple[str, int]:
    """The client's (ip, port) as this pod sees it (the caller's pod IP: no NAT in between)."""
    transport = request.transport
    name = transport.get_extra_info("peername") if transport is not None else None
    if name:
        return str(name[0]), int(name[1])
    return request.remote or "", 0


def local_port(request: web.Request) -> int:
    transport = request.transport
    name = transport.get_extra_info("sockname") if transport is not None else None
    return int(name[1]) if name else 0


def clf_time(when: datetime | None = None) -> str:
    """`07/Dec/2026:14:05:01 +0000`, the access-log time of nginx and Apache."""
    return (when or datetime.now(UTC)).strftime("%d/%b/%Y:%H:%M:%S %z")


def tcp_ports(ctx: ContainerContext) -> list[int]:
    """The manifest's TCP containerPorts, in order, without repeats."""
    ports: list[int] = []
    for p in ctx.ports:
        if str(p.get("protocol", "TCP")).upper() != "TCP":
            continue
        try:
            port = int(p["containerPort"])
        except (KeyError, TypeError, ValueError):
            continue
        if port not in ports:
            ports.append(port)
    return ports


async def serve(ctx: ContainerContext, app: web.Application, ports: list[int], *,
                stop: asyncio.Future[int] | None = None) -> int:
    """Serve `app` on `ports` of the pod until cancelled, or until `stop` gives an exit code.

    A port already taken raises OSError (EADDRINUSE), which ends the container like a real
    server's failed bind.
    """
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    assert runner.server is not None
    servers = []
    try:
        for port in ports:
            servers.append(await ctx.net.create_server(runner.server, port=port))
        done = stop if stop is not None else asyncio.get_running_loop().create_future()
        return await done
    finally:
        for server in servers:
            server.close()
        await runner.cleanup()
        for server in servers:
            await server.wait_closed()
