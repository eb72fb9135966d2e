"""BusyBox nc: `nc -z [-v] [-w SECS] HOST PORT` probes a port; `nc HOST PORT` relays stdin
and stdout over a stream; `nc -l -p PORT` accepts one connection and relays it.

Messages are BusyBox's, on stderr: `HOST (IP:PORT) open`, `nc: HOST (IP:PORT): Connection
refused`, `nc: bad address 'HOST'`. Exit status is 0 on success and 1 on any failure.
`-4` / `-6` pick the address family (a listener takes both families by default, as
BusyBox's `[::]` socket does; `-4` listens on 0.0.0.0 only, `-6` on `::` only).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from agents.toolbox.core import Command, Proc
from agents.toolbox.netutil import close_quietly, family_of, resolve, strerror
from podnet.addresses import hostport

USAGE = ("Usage: nc [OPTIONS] HOST PORT  - connect\n"
         "nc [OPTIONS] -l -p PORT [HOST] [PORT]  - listen\n")


class _UsageError(Exception):
    pass


@dataclass
class Options:
    zero_io: bool = False
    verbose: bool = False
    listen: bool = False
    wait_s: float | None = None
    local_port: int | None = None
    ipv4: bool = False
    ipv6: bool = False
    host: str = ""
    port: int = 0


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _UsageError(f"nc: bad port '{text}'\n")
    return int(text)


def parse_args(args: list[str]) -> Options:
    opts = Options()
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or len(arg) == 1:
            rest.append(arg)
            continue
        for pos in range(1, len(arg)):
            letter = arg[pos]
            if letter in "zvln46":  # -n (numeric only) changes nothing: we print no names
                opts.zero_io |= letter == "z"
                opts.verbose |= letter == "v"
                opts.listen |= letter == "l"
                opts.ipv4 |= letter == "4"
                opts.ipv6 |= letter == "6"
                continue
            if letter not in "wp":
                raise _UsageError(f"nc: invalid option -- '{letter}'\n{USAGE}")
            value = arg[pos + 1:]
            if not value:
                if i >= len(args):
                    raise _UsageError(f"nc: option requires an argument -- '{letter}'\n{USAGE}")
                value = args[i]
                i += 1
            if letter == "p":
                opts.local_port = _port(value)
            else:
                try:
                    opts.wait_s = float(value)
                except ValueError:
                    raise _UsageError(f"nc: invalid number '{value}'\n") from None
            break
    if opts.listen:
        if opts.local_port is None and rest:
            opts.local_port = _port(rest[-1])
        if opts.local_port is None:
            raise _UsageError(USAGE)
        return opts
    if len(rest) != 2:
        raise _UsageError(USAGE)
    opts.host, opts.port = rest[0], _port(rest[1])
    return opts


async def _relay(proc: Proc, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """stdin -> stream and stream -> stdout until the peer closes its side."""

    async def pump_stdin() -> None:
        while data := await proc.read_stdin():
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # tell the peer we are done; keep reading its answer

    pump = asyncio.create_task(pump_stdin(), name="nc stdin")
    try:
        while data := await reader.read(65536):
            proc.stdout.write(data)
            await proc.drain()
    finally:
        pump.cancel()
        try:
            await pump
        except (asyncio.CancelledError, OSError):
            pass


async def _connect(proc: Proc, opts: Options) -> int:
    try:
        ip = await resolve(proc.target.net, opts.host, opts.port,
                           family_of(opts.ipv4, opts.ipv6))
    except socket.gaierror:
        proc.stderr.write(f"nc: bad address '{opts.host}'\n")
        return 1
    where = f"{opts.host} ({hostport(ip, opts.port)})"
    try:
        async with asyncio.timeout(opts.wait_s):
            reader, writer = await proc.target.net.open_connection(ip, opts.port)
    except (OSError, TimeoutError) as e:
        if opts.verbose or not opts.zero_io:
            proc.stderr.write(f"nc: {where}: {strerror(e)}\n")
        return 1
    try:
        if opts.verbose:
            proc.stderr.write(f"{where} open\n")
        if not opts.zero_io:
            await _relay(proc, reader, writer)
    finally:
        await close_quietly(writer)
    return 0


async def _listen(proc: Proc, opts: Options) -> int:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.put_nowait((reader, writer))

    assert opts.local_port is not None
    try:
        host = "::" if opts.ipv6 else "0.0.0.0" if opts.ipv4 else None
        server = await proc.target.net.start_server(on_connect, host, opts.local_port)
    except OSError as e:
        proc.stderr.write(f"nc: bind: {strerror(e)}\n")
        return 1
    try:
        if opts.verbose:
            proc.stderr.write(f"listening on [::]:{opts.local_port} ...\n")
        reader, writer = await accepted.get()
    finally:
        server.close()  # nc serves one connection; later ones are refused
    try:
        if opts.verbose:
            peer = writer.get_extra_info("peername") or ("?", 0)
            here = writer.get_extra_info("sockname") or (proc.target.pod_ip, 0)
            local = proc.target.pod_ip if here[0] in ("0.0.0.0", "::") else here[0]
            proc.stderr.write(f"connect to [{local}]:{opts.local_port} "
                              f"from {hostport(peer[0], peer[1])} ([{peer[0]}]:{peer[1]})\n")
        await _relay(proc, reader, writer)
    finally:
        await close_quietly(writer)
        # Connections that raced in before close() are refused like the kernel would.
        while not accepted.empty():
            await close_quietly(accepted.get_nowait()[1])
    return 0


async def nc(proc: Proc, argv: list[str]) -> int:
    try:
        opts = parse_args(argv[1:])
    except _UsageError as e:
        proc.stderr.write(str(e))
        return 1
    return await (_listen(proc, opts) if opts.listen else _connect(proc, opts))


COMMANDS: dict[str, Command] = {"nc": nc, "netcat": nc}
