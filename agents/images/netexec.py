"""`agnhost netexec`: the HTTP and UDP server Kubernetes' own network e2e tests talk to.

HTTP on `--http-port` (8080): `/` ("NOW: <time>"), `/hostname`, `/clientip` (the caller's
`ip:port`, so a test sees whether its source address survived), `/echo?msg=&code=`,
`/header?key=`, `/dial?request=&protocol=http|udp&host=&port=&tries=` (this pod calls
another and answers JSON `{"errors":[...],"responses":[...]}`), `/shell?cmd=` (the toolbox's
`sh -c`, JSON `{"error":...,"output":...}`), `/exit?code=`, `/shutdown`, `/healthz`,
`/readyz`, `/redirect?location=&code=`. UDP on `--udp-port` (8081, -1 turns it off):
"hostname", "echo X" and "clientip". Status codes and bodies follow agnhost's netexec,
including its quirks (`/dial` answers 200 even when every try failed; "responses" is left out
when the last try failed; UDP commands are lowercased before they are answered).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web

from agents.images import ContainerContext
from agents.images.golog import go_time, marshal, printf
from agents.images.httpserve import peer, serve, server_header
from agents.toolbox import run_command
from agents.toolbox.httpclient import (
    HttpError,
    Progress,
    build_request,
    parse_url,
    read_body,
    read_head,
)
from agents.toolbox.netutil import resolve, strerror
from podnet.addresses import hostport

DIAL_TIMEOUT_S = 5.0    # agnhost's HTTP client timeout and UDP read deadline
MAX_TRIES = 1000        # beyond agnhost: one request must not keep a pod busy for hours
NETEXEC_FLAGS: dict[str, bool | int | str] = {
    "http-port": 8080, "udp-port": 8081, "sctp-port": -1, "http-override": "",
    "udp-listen-addresses": "", "delay-shutdown": 0, "tls-cert-file": "",
    "tls-private-key-file": ""}


def udp_reply(data: bytes, hostname: str, client: tuple[str, int]) -> bytes | None:
    """netexec's answer to one UDP datagram; None for an unknown command (no answer)."""
    text = data.decode("utf-8", "replace").strip().lower()
    if text == "hostname":
        return hostname.encode()
    if text.startswith("echo "):
        return text.split(" ", 1)[1].encode()
    if text == "clientip":
        return hostport(client[0], client[1]).encode()
    return None


@dataclass(frozen=True)
class Dial:
    host: str
    port: int
    request: str
    protocol: str   # "http" or "udp"
    tries: int


class BadDial(ValueError):
    """A /dial query agnhost answers with 400 and this text."""


def parse_dial(query: Mapping[str, str]) -> Dial:
    """The /dial parameters, checked in agnhost's order."""
    tries_text = query.get("tries", "")
    tries = 1
    if tries_text:
        try:
            tries = int(tries_text)
        except ValueError:
            raise BadDial(f'tries parameter is invalid. strconv.Atoi: parsing "{tries_text}": '
                          "invalid syntax") from None
        if tries > MAX_TRIES:
            raise BadDial(f"tries parameter is invalid. at most {MAX_TRIES} tries")
    request = query.get("request", "")
    if not request:
        raise BadDial("request parameter not specified. <nil>")
    protocol = query.get("protocol", "").lower() or "http"
    if protocol not in ("http", "udp"):
        raise BadDial(f"unsupported protocol. {query.get('protocol', '')}")
    port_text = query.get("port", "")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise BadDial(f"host and/or port param are invalid. address {port_text}: invalid port")
    return Dial(query.get("host", ""), int(port_text), request, protocol, tries)


def dial_output(responses: list[str], errors: list[str], last: str) -> str:
    """The /dial body: as agnhost builds it, "responses" only if the last try answered."""
    output: dict[str, list[str]] = {}
    if last:
        output["responses"] = responses
    if errors:
        output["errors"] = errors
    return marshal(output)


def _errno_text(exc: OSError) -> str:
    return strerror(exc).lower()


async def _http_try(ctx: ContainerContext, ip: str, dial: Dial) -> str:
    url = parse_url(f"http://{ip}:{dial.port}/{dial.request}")
    shown = f"http://{ip}:{dial.port}/{dial.request}"
    try:
        async with asyncio.timeout(DIAL_TIMEOUT_S):
            try:
                reader, writer = await ctx.net.open_connection(ip, dial.port)
            except OSError as e:
                raise RuntimeError(f'Get "{shown}": dial tcp {ip}:{dial.port}: connect: '
                                   f"{_errno_text(e)}") from None
            try:
                writer.write(build_request("GET", url, [
                    ("Host", url.authority), ("User-Agent", "Go-http-client/1.1"),
                    ("Accept-Encoding", "gzip")], b""))
                response = await read_head(reader)
                body = bytearray()

                async def sink(data: bytes) -> None:
                    body.extend(data)

                await read_body(reader, response, sink, Progress())
                return body.decode("utf-8", "replace")
            except (HttpError, OSError, asyncio.IncompleteReadError) as e:
                raise RuntimeError(f'Get "{shown}": EOF ({e})') from None
            finally:
                writer.close()
    except TimeoutError:
        raise RuntimeError(f'Get "{shown}": context deadline exceeded (Client.Timeout '
                           "exceeded while awaiting headers)") from None


class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _udp_try(ctx: ContainerContext, ip: str, dial: Dial) -> str:
    transport, protocol = await ctx.net.create_datagram_endpoint(
        _UdpClient, remote_addr=(ip, dial.port))
    local = transport.get_extra_info("sockname")
    try:
        transport.sendto(dial.request.encode())
        try:
            async with asyncio.timeout(DIAL_TIMEOUT_S):
                data = await protocol.reply
        except TimeoutError:
            raise RuntimeError(f"reading from udp connection failed. err:'read udp "
                               f"{local[0]}:{local[1]}->{ip}:{dial.port}: i/o timeout'") from None
        except OSError as e:
            raise RuntimeError(f"reading from udp connection failed. err:'read udp "
                               f"{local[0]}:{local[1]}->{ip}:{dial.port}: read: "
                               f"{_errno_text(e)}'") from None
        return data.decode("utf-8", "replace")
    finally:
        transport.close()


async def run_dial(ctx: ContainerContext, dial: Dial) -> str:
    """Try `dial.tries` times; the /dial body."""
    try:
        ip = await resolve(ctx.net, dial.host, dial.port) if dial.host else "127.0.0.1"
    except OSError:
        raise BadDial(f"host and/or port param are invalid. lookup {dial.host}: "
                      "no such host") from None
    attempt = _http_try if dial.protocol == "http" else _udp_try
    responses: list[str] = []
    errors: list[str] = []
    last = ""
    for _ in range(dial.tries):
        try:
            last = await attempt(ctx, ip, dial)
            responses.append(last)
        except RuntimeError as e:
            last = ""
            errors.append(str(e))
    return dial_output(responses, errors, last)


async def shell(ctx: ContainerContext, command: str) -> str:
    """/shell: `sh -c command` with stdout and stderr together, as CombinedOutput."""
    if ctx.target is None:
        return marshal({"error": "fork/exec /bin/sh: no such file or directory"})
    out = bytearray()
    code = await run_command(ctx.target, ["sh", "-c", command], None, out.extend, out.extend)
    result: dict[str, str] = {}
    if out:
        result["output"] = out.decode("utf-8", "replace")
    if code:
        result["error"] = f"exit status {code}"
    return marshal(result)


def _text(body: str, status: int = 200) -> web.Response:
    # Go's net/http sniffs text bodies as text/plain; charset=utf-8.
    response = web.Response(status=status, body=body.encode())
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    return response


def _go_error(text: str, status: int) -> web.Response:
    # http.Error: the text and a newline, nosniff.
    response = _text(text + "\n", status)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def build_app(ctx: ContainerContext, stop: asyncio.Future[int], ready: Callable[[], bool],
              override: str = "") -> web.Application:
    started = time.monotonic()
    hostname = ctx.pod.hostname or ctx.pod.name

    async def root(request: web.Request) -> web.Response:
        printf(ctx, "GET /")
        return _text("NOW: " + go_time(datetime.now(UTC), time.monotonic() - started))

    async def clientip(request: web.Request) -> web.Response:
        printf(ctx, "GET /clientip")
        ip, port = peer(request)
        return _text(hostport(ip, port))

    async def header(request: web.Request) -> web.Response:
        key = request.query.get("key", "")
        if key:
            printf(ctx, f"GET /header?key={key}")
            return _text(request.headers.get(key, ""))
        printf(ctx, "GET /header")
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers.setdefault("-".join(p.capitalize() for p in name.split("-")), []).append(
                value)
        return _text(marshal(headers))

    async def dial(request: web.Request) -> web.Response:
        q = request.query
        printf(ctx, f"GET /dial?host={q.get('host', '')}&protocol={q.get('protocol', '')}"
                    f"&port={q.get('port', '')}&request={q.get('request', '')}"
                    f"&tries={q.get('tries', '')}")
        try:
            return _text(await run_dial(ctx, parse_dial(q)))
        except BadDial as e:
            return _go_error(str(e), 400)

    async def echo(request: web.Request) -> web.Response:
        msg, code_text = request.query.get("msg", ""), request.query.get("code", "")
        printf(ctx, f"GET /echo?msg={msg}&code={code_text}")
        if code_text:
            try:
                code = int(code_text)
            except ValueError:
                return _text(f"argument 'code' must be an integer or empty, got "
                             f"{marshal(code_text)}\n")
            if not 100 <= code <= 999:
                return _go_error(f"invalid WriteHeader code {code}", 500)
            return _text(msg, code)
        return _text(msg)

    async def exit_(request: web.Request) -> web.StreamResponse:
        code_text = request.query.get("code", "")
        printf(ctx, f"GET /exit?code={code_text}&timeout={request.query.get('timeout', '')}"
                    f"&wait={request.query.get('wait', '')}")
        try:
            code = int(code_text) if code_text else 0
        except ValueError:
            return _text(f"argument 'code' must be an integer [0-127] or empty, got "
                         f"{marshal(code_text)}\n")
        return await _answer_then_stop(request, stop, code & 0xFF)

    async def shutdown(request: web.Request) -> web.StreamResponse:
        printf(ctx, "GET /shutdown")
        return await _answer_then_stop(request, stop, 0)

    async def healthz(request: web.Request) -> web.Response:
        printf(ctx, "GET /healthz")
        return _text("", 200 if ready() else 412)

    async def readyz(request: web.Request) -> web.Response:
        printf(ctx, "GET /readyz")
        return _text("ok") if ready() else _text("", 412)

    async def hostname_(request: web.Request) -> web.Response:
        printf(ctx, f"GET {request.path}")
        return _text(hostname)

    async def redirect(request: web.Request) -> web.Response:
        location, code_text = request.query.get("location", ""), request.query.get("code", "")
        printf(ctx, f"{request.method} /redirect?msg={location}&code={code_text}")
        try:
            code = int(code_text) if code_text else 302
        except ValueError:
            return _text(f"argument 'code' must be an integer or empty, got "
                         f"{marshal(code_text)}\n")
        response = _text("", code if 300 <= code <= 399 else 302)
        response.headers["Location"] = location
        return response

    async def shell_(request: web.Request) -> web.Response:
        command = request.query.get("shellCommand", "") or request.query.get("cmd", "")
        printf(ctx, f"GET /shell?cmd={command}")
        output = await shell(ctx, command)
        printf(ctx, f"Output: {output}")
        return _text(output)

    routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
        "/clientip": clientip, "/header": header, "/dial": dial, "/echo": echo,
        "/exit": exit_, "/healthz": healthz, "/readyz": readyz, "/hostname": hostname_,
        "/hostName": hostname_, "/redirect": redirect, "/shell": shell_, "/shutdown": shutdown}

    async def route(request: web.Request) -> web.StreamResponse:
        # --http-override: every request is answered as a GET of that path and query.
        if override:
            request = request.clone(method="GET", rel_url=override)
        # Go's ServeMux: exact paths, and "/" for everything else.
        return await routes.get(request.path, root)(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", route)
    server_header(app, None)
    return app


async def _answer_then_stop(request: web.Request, stop: asyncio.Future[int],
                            code: int) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = 0
    await response.prepare(request)
    await response.write_eof()
    if not stop.done():
        stop.set_result(code)
    return response


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, ctx: ContainerContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        client = (str(addr[0]), int(addr[1]))
        reply = udp_reply(data, self.ctx.pod.hostname or self.ctx.pod.name, client)
        if reply is None:
            printf(self.ctx, f"Unknown UDP command received from {hostport(*client)}: "
                             f"{data.decode('utf-8', 'replace').strip().lower()}")
            return
        if self.transport is not None:
            self.transport.sendto(reply, client)


async def netexec(ctx: ContainerContext, flags: Mapping[str, bool | int | str]) -> int:
    for flag, what in (("tls-cert-file", "TLS"), ("sctp-port", "SCTP")):
        if flags[flag] not in ("", -1):
            printf(ctx, f"netexec --{flag}: {what} is not emulated by podnet")
            return 1
    stop: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    udp_port = int(flags["udp-port"])
    transports: list[asyncio.DatagramTransport] = []
    addresses = [a for a in str(flags["udp-listen-addresses"]).split(",") if a] or [""]
    for address in addresses if udp_port != -1 else []:
        try:
            transport, _ = await ctx.net.create_datagram_endpoint(
                lambda: _UdpServer(ctx), local_addr=(address or "0.0.0.0", udp_port))
        except OSError as e:
            printf(ctx, f"Error occurred: failed to create listener for UDP address "
                        f"{address}:{udp_port}:listen udp {address}:{udp_port}: bind: "
                        f"{e.strerror or e}")
            for transport in transports:
                transport.close()
            return 1
        transports.append(transport)
        printf(ctx, f"Started UDP server on port {address} {udp_port}")
    try:
        app = build_app(ctx, stop, lambda: bool(transports), str(flags["http-override"]))
        http_port = int(flags["http-port"])
        printf(ctx, f"Started HTTP server on port {http_port}")
        ctx.log.info("netexec.listening", http_port=http_port, udp_port=udp_port)
        return await serve(ctx, app, [http_port], stop=stop)
    finally:
        for transport in transports:
            transport.close()
