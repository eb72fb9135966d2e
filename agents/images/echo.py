"""`podnet/echo`: an HTTP/1.1 server that answers every request with who served it and who asked.

An ordinary aiohttp web application, served by aiohttp's own protocol over the pod's virtual
transports (`ctx.net.create_server(runner.server, ...)`), on each TCP `containerPort` (8080 if
none). One access line per request goes to the container's stdout, as `kubectl logs` shows.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiohttp import web

from agents.images import ContainerContext
from podnet.addresses import hostport

DEFAULT_PORT = 8080
CONTEXT = web.AppKey("context", ContainerContext)


def _ports(ctx: ContainerContext) -> list[int]:
    ports = [int(p["containerPort"]) for p in ctx.ports
             if "containerPort" in p and str(p.get("protocol", "TCP")).upper() == "TCP"]
    return list(dict.fromkeys(ports)) or [DEFAULT_PORT]


async def _echo(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    local = transport.get_extra_info("sockname") if transport is not None else None
    # An IPv6 client is written [addr]:port, as in a URL.
    client = hostport(peer[0], peer[1]) if peer else (request.remote or "")
    body = await request.read()
    response = web.json_response({
        "pod": ctx.pod.name,
        "namespace": ctx.pod.namespace,
        "podIP": ctx.pod.ip,
        "node": ctx.pod.node,
        "hostname": ctx.pod.hostname,
        "container": ctx.name,
        "port": local[1] if local else None,
        "client": client,
        "method": request.method,
        "path": request.path,
        "query": request.query_string,
        "httpVersion": f"{request.version.major}.{request.version.minor}",
        "headers": dict(request.headers),
        "body": body.decode("utf-8", "replace"),
    })
    # Common Log Format, like the access log of a real web server.
    when = datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S %z")
    size = len(response.body) if isinstance(response.body, bytes) else 0
    ctx.stdout.write(f'{client} - - [{when}] "{request.method} {request.path_qs} '
                     f'HTTP/{request.version.major}.{request.version.minor}" '
                     f'{response.status} {size}\n')
    ctx.stdout.flush()
    return response


async def run(ctx: ContainerContext) -> None:
    app = web.Application()
    app[CONTEXT] = ctx
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app, access_log=None)    # we print our own access line
    await runner.setup()
    assert runner.server is not None
    servers = []
    try:
        for port in _ports(ctx):
            servers.append(await ctx.net.create_server(runner.server, port=port))
        ctx.log.info("echo.listening", ip=ctx.pod.ip, ports=_ports(ctx))
        await asyncio.get_running_loop().create_future()    # serve until cancelled
    finally:
        for server in servers:
            server.close()
        await runner.cleanup()      # closes idle keep-alive connections, lets requests finish
        for server in servers:
            await server.wait_closed()
