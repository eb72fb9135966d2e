"""iputils ping: ICMP echo through the pod's network stack (`PodNet.ping`).

Output and exit codes are iputils': the `PING ... bytes of data.` header, one line per reply
(ttl 64 from this node, 63 from another node, like a routed hop), `Destination Host
Unreachable` from the pod's gateway when there is no route, and the statistics block. Exit 0
when any reply came, 1 when none did, 2 on usage errors and unknown hosts.

Flags: -c COUNT, -i INTERVAL, -W TIMEOUT (seconds to wait for each reply), -s SIZE, -q,
-4 / -6 (the family; an IPv6 literal is pinged over IPv6 without -6, as iputils does, with
its `PING host(ip) 56 data bytes` header).
Without -c it runs until the exec session ends, printing the statistics as it stops.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import math
import random
import socket
import time
from dataclasses import dataclass, field

from agents.toolbox.core import Command, Proc
from agents.toolbox.netutil import is_ip_literal, resolve

USAGE = ("\nUsage\n  ping [options] <destination>\n\nOptions:\n"
         "  -c <count>         stop after <count> replies\n"
         "  -i <interval>      seconds between sending each packet\n"
         "  -q                 quiet output\n"
         "  -s <size>          use <size> as number of data bytes to be sent\n"
         "  -W <timeout>       time to wait for response\n")
DEFAULT_TIMEOUT_S = 10.0        # iputils waits this long for a reply that is late
MIN_INTERVAL_S = 0.002          # iputils' floor for non-root users is 2 ms


class _UsageError(Exception):
    pass


@dataclass
class Options:
    host: str = ""
    count: int | None = None
    interval_s: float = 1.0
    timeout_s: float = DEFAULT_TIMEOUT_S
    size: int = 56
    quiet: bool = False
    ipv4: bool = False
    ipv6: bool = False


@dataclass
class Stats:
    sent: int = 0
    errors: int = 0
    rtts_ms: list[float] = field(default_factory=list)


def _number(flag: str, text: str, *, integer: bool = False) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise _UsageError(f"ping: invalid argument: '{text}'\n") from None
    if value < 0 or (flag == "c" and value == 0):
        raise _UsageError(f"ping: invalid argument: '{text}': out of range\n")
    return value


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
        pos = 1
        while pos < len(arg):
            letter = arg[pos]
            pos += 1
            if letter in "qn46":    # -n: numeric output only, which is all we print anyway
                opts.quiet |= letter == "q"
                opts.ipv4 |= letter == "4"
                opts.ipv6 |= letter == "6"
                continue
            if letter not in "ciWs":
                raise _UsageError(f"ping: invalid option -- '{letter}'\n{USAGE}")
            value = arg[pos:]
            if not value:
                if i >= len(args):
                    raise _UsageError(f"ping: option requires an argument -- '{letter}'\n"
                                      f"{USAGE}")
                value = args[i]
                i += 1
            if letter == "c":
                opts.count = int(_number(letter, value, integer=True))
            elif letter == "i":
                opts.interval_s = max(_number(letter, value), MIN_INTERVAL_S)
            elif letter == "W":
                opts.timeout_s = _number(letter, value)
            else:
                opts.size = int(_number(letter, value, integer=True))
                if opts.size > 65507:
                    raise _UsageError(f"ping: invalid argument: '{value}': out of range\n")
            break
    if len(rest) != 1:
        raise _UsageError(f"ping: usage error: Destination address required\n{USAGE}"
                          if not rest else USAGE)
    opts.host = rest[0]
    return opts


def _gateway(proc: Proc, v6: bool = False) -> str:
    """The pod's default gateway (who reports an unreachable host), as `ip route` shows it."""
    for destination, rest in proc.target.routes:
        words = rest.split()
        if destination == "default" and "via" in words[:-1]:
            via = words[words.index("via") + 1]
            if (":" in via) == v6:
                return via
    network = ipaddress.IPv4Network(f"{proc.target.pod_ip}/24", strict=False)
    return str(network.network_address + 1)


def _summary(proc: Proc, opts: Options, ip: str, stats: Stats, elapsed_s: float) -> None:
    received = len(stats.rtts_ms)
    loss = 0 if not stats.sent else round(100 * (stats.sent - received) / stats.sent)
    errors = f", +{stats.errors} errors" if stats.errors else ""
    proc.stdout.write(f"\n--- {opts.host} ping statistics ---\n"
                      f"{stats.sent} packets transmitted, {received} received{errors}, "
                      f"{loss}% packet loss, time {int(elapsed_s * 1000)}ms\n")
    if received:
        rtts = stats.rtts_ms
        avg = sum(rtts) / received
        mdev = math.sqrt(max(sum(r * r for r in rtts) / received - avg * avg, 0.0))
        proc.stdout.write(f"rtt min/avg/max/mdev = {min(rtts):.3f}/{avg:.3f}/{max(rtts):.3f}/"
                          f"{mdev:.3f} ms\n")


async def _probe(proc: Proc, opts: Options, ip: str, seq: int, ident: int,
                 stats: Stats) -> None:
    net = proc.target.net
    try:
        rtt_s = await net.ping(ip, seq=seq, payload_bytes=opts.size, timeout_s=opts.timeout_s,
                               ident=ident)
    except TimeoutError:
        return                  # iputils says nothing about a lost packet
    except OSError as exc:
        stats.errors += 1
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            reason = "Destination Host Unreachable" if exc.errno == errno.EHOSTUNREACH \
                else "Destination Net Unreachable"
            proc.stdout.write(f"From {_gateway(proc, ':' in ip)} icmp_seq={seq} {reason}\n")
        else:
            proc.stdout.write(f"ping: sendmsg: {exc.strerror or exc}\n")
        return
    rtt_ms = rtt_s * 1000
    stats.rtts_ms.append(rtt_ms)
    if not opts.quiet:
        time_text = f"{rtt_ms:.3f}" if rtt_ms < 100 else f"{rtt_ms:.0f}"
        proc.stdout.write(f"{opts.size + 8} bytes from {ip}: icmp_seq={seq} "
                          f"ttl={net.echo_ttl(ip)} time={time_text} ms\n")


async def ping(proc: Proc, argv: list[str]) -> int:
    try:
        opts = parse_args(argv[1:])
    except _UsageError as exc:
        proc.stderr.write(str(exc))
        return 2
    family = socket.AF_INET6 if opts.ipv6 else socket.AF_INET if opts.ipv4 else \
        socket.AF_UNSPEC
    try:
        if is_ip_literal(opts.host):
            ip = str(ipaddress.ip_address(opts.host))
            if family and (":" in ip) != (family == socket.AF_INET6):
                raise ValueError("not of the family asked for")
        else:
            ip = await resolve(proc.target.net, opts.host, 0, family)
    except (socket.gaierror, ValueError):
        reason = "Address family for hostname not supported" \
            if family and is_ip_literal(opts.host) else "Name or service not known"
        proc.stderr.write(f"ping: {opts.host}: {reason}\n")
        return 2
    if ":" in ip:
        proc.stdout.write(f"PING {opts.host}({ip}) {opts.size} data bytes\n")
    else:
        proc.stdout.write(f"PING {opts.host} ({ip}) {opts.size}({opts.size + 28}) "
                          "bytes of data.\n")
    stats = Stats()
    ident = random.getrandbits(16)
    probes: list[asyncio.Task[None]] = []
    start = time.monotonic()
    try:
        seq = 0
        while opts.count is None or seq < opts.count:
            seq += 1
            stats.sent += 1
            probe = asyncio.create_task(_probe(proc, opts, ip, seq, ident, stats),
                                        name=f"ping {ip} seq={seq}")
            probes.append(probe)
            if opts.count is not None and seq == opts.count:
                break
            # The next probe leaves an interval after this one, answered or not (like iputils).
            await asyncio.sleep(opts.interval_s)
            probes = [p for p in probes if not p.done()]
        await asyncio.gather(*probes)
    finally:
        for probe in probes:
            probe.cancel()
        if probes:
            await asyncio.gather(*probes, return_exceptions=True)
        # Interrupted or not, ping ends with its statistics.
        _summary(proc, opts, ip, stats, time.monotonic() - start)
    return 0 if stats.rtts_ms else 1


COMMANDS: dict[str, Command] = {"ping": ping}
