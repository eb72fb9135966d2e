"""`traefik/whoami`: a Go server that answers with who it is and the request it got.

`-port` (default 80, or `$WHOAMI_PORT_NUMBER`), `-name` (or `$WHOAMI_NAME`). Any path prints
`Hostname:`, one `IP:` per address, `RemoteAddr:` (the caller's `ip:port`) and the request as
Go writes it (request line, Host, User-Agent, the other headers sorted); `/api` the same as
JSON; `/health` 200.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from agents.images import ContainerContext
from agents.images.flags import FlagError, FlagValue, parse_flags
from agents.images.golog import marshal, printf
from agents.images.httpserve import peer, serve, server_header
from podnet.addresses import hostport


def canonical(name: str) -> str:
    """Go's canonical header key: `x-forwarded-for` -> `X-Forwarded-For`."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def whoami_text(*, name: str, hostname: str, ips: list[str], remote: str, method: str,
                target: str, version: str, host: str,
                headers: list[tuple[str, str]]) -> str:
    """The body of `GET /` (pure)."""
    lines = [f"Name: {name}\n"] if name else []
    lines.append(f"Hostname: {hostname}\n")
    lines += [f"IP: {ip}\n" for ip in ips]
    lines.append(f"RemoteAddr: {remote}\n")
    dump = [f"{method} {target} {version}", f"Host: {host}"]
    rest = [(canonical(k), v) for k, v in headers if k.lower() != "host"]
    dump += [f"{k}: {v}" for k, v in rest if k == "User-Agent"]
    dump += [f"{k}: {v}" for k, v in sorted(rest) if k != "User-Agent"]
    return "".join(lines) + "\r\n".join(dump) + "\r\n\r\n"


def port_and_name(args: list[str], env: Mapping[str, str]) -> tuple[int, str]:
    defaults: dict[str, FlagValue] = {
        "port": int(env["WHOAMI_PORT_NUMBER"]) if env.get("WHOAMI_PORT_NUMBER", "").isdigit()
        else 80, "name": env.get("WHOAMI_NAME", ""), "verbose": False, "cert": "", "key": "",
        "cacert": ""}
    flags, _ = parse_flags(args, defaults)
    return int(flags["port"]), str(flags["name"])


async def run(ctx: ContainerContext, argv: list[str]) -> int:
    try:
        port, name = port_and_name(argv[1:], ctx.env)
    except (FlagError, ValueError) as e:
        ctx.stdout.write(f"{e}\n")
        return 2
    hostname = ctx.pod.hostname or ctx.pod.name
    ips = ["127.0.0.1", ctx.pod.ip]

    async def handle(request: web.Request) -> web.Response:
        ip, client_port = peer(request)
        if request.path == "/health":
            return web.Response(status=200)
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        if request.path == "/api":
            body = marshal({"hostname": hostname, "ip": ips,
                            "headers": {canonical(k): [v] for k, v in request.headers.items()},
                            "url": request.path_qs, "host": request.host,
                            "method": request.method, "name": name,
                            "remoteAddr": hostport(ip, client_port)})
            return web.Response(body=body.encode(), content_type="application/json")
        text = whoami_text(name=name, hostname=hostname, ips=ips, remote=hostport(ip, client_port),
                           method=request.method, target=request.raw_path, version=version,
                           host=request.host, headers=list(request.headers.items()))
        response = web.Response(body=text.encode())
        response.headers["Content-Type"] = "text/plain; charset=utf-8"
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server_header(app, None)
    printf(ctx, f"Starting up on port {port}")
    return await serve(ctx, app, [port])
