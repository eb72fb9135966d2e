"""`py:podapps.netpol_probe:serve`: the pod of a NetworkPolicy truth table.

It serves TCP and UDP on ports 80 and 81, or on the ports its args name (a TCP connection
gets `<ns>/<pod>\\n` and is closed; a UDP datagram gets `<ns>/<pod>` back), like the upstream
`netpol` e2e pods, and it probes other pods on request: an HTTP server on the pod's own
loopback, 127.0.0.1:8080 (never reachable from outside the pod, so no NetworkPolicy applies
to it), answers

    GET /probe?to=IP,IP,...[&ports=P,P...][&protocols=tcp,udp]
        ->  one line per (IP, port, protocol): `IP PORT PROTO RESULT`

where RESULT is `ok <ns>/<pod>` (the answer) or why there was none (`refused`, `timeout`,
`error-<errno>`, `closed`). All probes of a request run at once, so one `kubectl exec ...
curl` (or `podnet exec`) measures a whole row of the matrix in about the time of its slowest probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import urllib.parse
from typing import Any

from podapps.probe_common import CONTROL_PORT, outcome, serve_control, udp_answerer

PORTS = (80, 81)
PROTOCOLS = ("tcp", "udp")
TCP_TIMEOUT_S = 2.0
# A denied datagram may vanish without a word: resend a few times, then call it denied.
UDP_TRIES = 5
UDP_WAIT_S = 0.2
MAX_TARGETS = 64


async def serve(ctx: Any) -> None:
    me = f"{ctx.pod.namespace}/{ctx.pod.name}"
    try:
        ports = [int(a) for a in ctx.args] or list(PORTS)
    except ValueError:
        ctx.stdout.write(f"usage: serve [PORT...] (got {ctx.args})\n")
        return

    async def answer_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(f"{me}\n".encode())
            await writer.drain()
        writer.close()

    answer_udp = udp_answerer(lambda data: me.encode())
    for port in ports:
        await ctx.net.start_server(answer_tcp, port=port)
        await ctx.net.create_datagram_endpoint(answer_udp, local_addr=("0.0.0.0", port))

    async def control(request: list[str]) -> tuple[str, bytes]:
        return await _handle(ctx, request)

    await serve_control(ctx, control)
    ctx.stdout.write(f"{me} serving tcp+udp {ports}, probes on 127.0.0.1:{CONTROL_PORT}\n")
    await asyncio.Event().wait()


async def _handle(ctx: Any, request: list[str]) -> tuple[str, bytes]:
    if len(request) != 3 or request[0] != "GET":
        return "400 Bad Request", b"expected GET /probe?to=IP,IP,...\n"
    url = urllib.parse.urlsplit(request[1])
    if url.path != "/probe":
        return "404 Not Found", b"only /probe\n"
    query = urllib.parse.parse_qs(url.query)

    def words(name: str) -> list[str]:
        return [w for w in ",".join(query.get(name, [])).split(",") if w]
    targets = words("to")
    protocols = words("protocols") or list(PROTOCOLS)
    try:
        for target in targets:
            ipaddress.IPv4Address(target)
        ports = [int(p) for p in words("ports")] or list(PORTS)
    except ValueError as exc:
        return "400 Bad Request", f"{exc}\n".encode()
    if not targets or len(targets) * len(ports) > MAX_TARGETS * 2:
        return "400 Bad Request", f"give 1..{MAX_TARGETS} IPs in ?to=\n".encode()
    if not set(protocols) <= set(PROTOCOLS) or not all(0 < p < 65536 for p in ports):
        return "400 Bad Request", b"protocols are tcp and udp, ports 1..65535\n"
    jobs = [(ip, port, proto) for ip in targets for port in ports for proto in protocols]
    results = await asyncio.gather(*(probe(ctx.net, *job) for job in jobs))
    lines = [f"{ip} {port} {proto} {result}" for (ip, port, proto), result in zip(jobs, results,
                                                                        strict=True)]
    return "200 OK", ("\n".join(lines) + "\n").encode()


async def probe(net: Any, ip: str, port: int, proto: str) -> str:
    return await outcome(_probe_tcp(net, ip, port) if proto == "tcp"
                         else _probe_udp(net, ip, port))


async def _probe_tcp(net: Any, ip: str, port: int) -> str:
    reader, writer = await asyncio.wait_for(net.open_connection(ip, port), TCP_TIMEOUT_S)
    try:
        data = await asyncio.wait_for(reader.readline(), TCP_TIMEOUT_S)
    finally:
        writer.close()
    return f"ok {data.decode(errors='replace').strip()}" if data else "closed"


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def _probe_udp(net: Any, ip: str, port: int) -> str:
    transport, reply = await net.create_datagram_endpoint(_Reply, remote_addr=(ip, port))
    try:
        for _ in range(UDP_TRIES):
            transport.sendto(b"?")
            with contextlib.suppress(TimeoutError):
                data = await asyncio.wait_for(asyncio.shield(reply.answer), UDP_WAIT_S)
                return f"ok {data.decode(errors='replace').strip()}"
        raise TimeoutError
    finally:
        transport.close()
        if reply.answer.done() and not reply.answer.cancelled():
            reply.answer.exception()        # an error that came late: seen, not "never retrieved"
