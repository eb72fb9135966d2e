"""`registry.k8s.io/e2e-test-images/agnhost`: the multi-tool of Kubernetes' e2e tests.

ENTRYPOINT `/agnhost`, CMD `pause`; the first argument picks the subcommand:
`netexec` (see `netexec`), `serve-hostname`, `pause`, `dns-suffix`, `dns-server-list`,
`etc-hosts`. `registry.k8s.io/serve_hostname` is the older stand-alone `serve-hostname`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiohttp import web

from agents.images import ContainerContext
from agents.images.flags import FlagError, FlagValue, parse_flags
from agents.images.golog import printf
from agents.images.httpserve import peer, serve, server_header
from agents.images.netexec import NETEXEC_FLAGS, netexec
from podnet.addresses import hostport

SERVE_HOSTNAME_FLAGS: dict[str, FlagValue] = {
    "tcp": False, "udp": False, "http": True, "close": False, "port": 9376}
SUBCOMMANDS = ("netexec", "serve-hostname", "pause", "dns-suffix", "dns-server-list",
               "etc-hosts")


def resolv_values(resolv_conf: str, keyword: str) -> list[str] | None:
    """The words after the first line starting with `keyword` (agnhost's dns-suffix and
    dns-server-list), or None when there is no such line."""
    for line in resolv_conf.split("\n"):
        if line.startswith(keyword):
            return line.split(" ")[1:]
    return None


async def pause(ctx: ContainerContext) -> int:
    ctx.stdout.write("Paused\n")
    await asyncio.get_running_loop().create_future()
    return 0


class _Hostname(asyncio.Protocol):
    """serve-hostname --tcp: write the hostname, close."""

    def __init__(self, ctx: ContainerContext, hostname: str) -> None:
        self.ctx = ctx
        self.hostname = hostname

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        ip, port = transport.get_extra_info("peername") or ("", 0)
        printf(self.ctx, f"TCP request from {hostport(ip, port)}")
        transport.write(self.hostname.encode())
        transport.close()


class _HostnameUdp(asyncio.DatagramProtocol):
    def __init__(self, ctx: ContainerContext, hostname: str) -> None:
        self.ctx = ctx
        self.hostname = hostname
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        printf(self.ctx, f"UDP request from {hostport(str(addr[0]), addr[1])}")
        if self.transport is not None:
            self.transport.sendto(self.hostname.encode(), addr)


async def serve_hostname(ctx: ContainerContext, flags: Mapping[str, FlagValue]) -> int:
    if flags["http"] and (flags["tcp"] or flags["udp"]):
        printf(ctx, "Can't serve TCP/UDP mode and HTTP mode at the same time")
        return 1
    hostname = ctx.pod.hostname or ctx.pod.name
    port = int(flags["port"])
    closers: list[asyncio.AbstractServer | asyncio.BaseTransport] = []
    try:
        if flags["tcp"]:
            closers.append(await ctx.net.create_server(lambda: _Hostname(ctx, hostname),
                                                       port=port))
        if flags["udp"]:
            transport, _ = await ctx.net.create_datagram_endpoint(
                lambda: _HostnameUdp(ctx, hostname), local_addr=("0.0.0.0", port))
            closers.append(transport)
        printf(ctx, f"Serving on port {port}.")
        if flags["http"]:
            close = bool(flags["close"])

            async def handle(request: web.Request) -> web.Response:
                ip, client_port = peer(request)
                printf(ctx, f"HTTP request from {hostport(ip, client_port)}")
                response = web.Response(body=hostname.encode())
                response.headers["Content-Type"] = "text/plain; charset=utf-8"
                if close:
                    response.force_close()
                    response.headers["Connection"] = "close"
                return response

            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            server_header(app, None)
            return await serve(ctx, app, [port])
        await asyncio.get_running_loop().create_future()
        return 0
    finally:
        for closer in closers:
            closer.close()


async def agnhost(ctx: ContainerContext, argv: list[str]) -> int:
    """`/agnhost SUBCOMMAND [flags]`, with cobra's messages for what it does not know."""
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        ctx.stdout.write("Usage:\n  app [command]\n\nAvailable Commands (emulated by podnet):\n"
                         + "".join(f"  {name}\n" for name in SUBCOMMANDS))
        return 0
    sub, rest = argv[1], argv[2:]
    try:
        if sub == "netexec":
            flags, extra = parse_flags(rest, NETEXEC_FLAGS)
        elif sub == "serve-hostname":
            flags, extra = parse_flags(rest, SERVE_HOSTNAME_FLAGS)
        elif sub in ("pause", "dns-suffix", "dns-server-list", "etc-hosts"):
            flags, extra = parse_flags(rest, {})
        else:
            ctx.stdout.write(f'Error: unknown command "{sub}" for "app"\n'
                             "Run 'app --help' for usage.\n")
            return 1
        if extra:
            raise FlagError(f'unknown command "{extra[0]}" for "app {sub}"')
    except FlagError as e:
        ctx.stdout.write(f"Error: {e}\nRun 'app {sub} --help' for usage.\n")
        return 1
    if sub == "netexec":
        return await netexec(ctx, flags)
    if sub == "serve-hostname":
        return await serve_hostname(ctx, flags)
    if sub == "pause":
        return await pause(ctx)
    return dns_tool(ctx, sub)


def dns_tool(ctx: ContainerContext, sub: str) -> int:
    """dns-suffix, dns-server-list, etc-hosts: print from the pod's files and exit."""
    files = ctx.target.files if ctx.target is not None else {}
    if sub == "etc-hosts":
        hosts = files.get("/etc/hosts")
        if hosts is None:
            ctx.stdout.write("panic: open /etc/hosts: no such file or directory\n")
            return 2
        ctx.stdout.write(hosts + "\n")
        return 0
    keyword = "search" if sub == "dns-suffix" else "nameserver"
    values = resolv_values(files.get("/etc/resolv.conf", ""), keyword)
    if values is None:
        ctx.stdout.write("panic: Could not find DNS search list!\n")
        return 2
    ctx.stdout.write(",".join(values) + "\n")
    return 0


async def serve_hostname_image(ctx: ContainerContext, argv: list[str]) -> int:
    """The stand-alone `/serve_hostname` binary (Go flags: `-port`, `-tcp`, `-udp`, `-http`)."""
    try:
        flags, _ = parse_flags(argv[1:], SERVE_HOSTNAME_FLAGS)
    except FlagError as e:
        ctx.stdout.write(f"{e}\n")
        return 2
    return await serve_hostname(ctx, flags)
