"""`py:podapps.faults_probe:serve`: the pod of the network-fault proofs.

Every pod serves, on its pod IP:
- TCP 7000: 64-byte request/response echo (reads exactly 64 bytes, writes them back);
- UDP 7001: echoes every datagram back to its sender;
- TCP 7002: a sink for bulk transfers: reads to EOF, then answers
  `<bytes> <bytes after the first chunk> <seconds from first to last chunk>\\n`;
- UDP 7003: one-way datagrams `<tag>:<seq>` are counted per tag (nothing is answered, so a
  one-way partition can be seen from the side that receives).

and measures, on request, from inside the pod (so neither exec nor the API is in any figure),
through an HTTP server on its own loopback 127.0.0.1:8080 (never leaves the pod, so no fault
applies to it):

    GET /rr?host=IP&n=50           one line per request: its round trip in ms (one connection)
    GET /udp?host=IP&n=2000&sport=P  `sent N received M` then `lost a,b,c` (seqs with no echo)
    GET /bulk?host=IP&bytes=N      the sink's answer and the rate it saw: `kbit K bytes B s S`
    GET /send?host=IP&n=20&tag=T   sends n one-way datagrams to IP:7003
    GET /count?tag=T               how many one-way datagrams with tag T arrived here
    GET /connect?host=IP,IP&port=P&timeout=S  per IP, at once: `IP ok|refused|timeout|error-N`
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections import Counter
from typing import Any

from podapps.probe_common import CONTROL_PORT, outcome, serve_control, udp_answerer

RR_PORT, ECHO_PORT, SINK_PORT, COUNT_PORT = 7000, 7001, 7002, 7003
MSG = 64
CHUNK = 16 * 1024
# UDP is sent in batches small enough for the receiver's socket buffer (DGRAM_RCVBUF holds
# ~800 small datagrams), so only the fault can lose one; a batch is over once no echo has
# come for QUIET_S (a cross-node round trip is ~1 ms, 100 ms of silence means the rest are lost).
UDP_BATCH = 100
QUIET_S = 0.1
MAX_N = 10_000
MAX_BYTES = 64 * 1024 * 1024


async def serve(ctx: Any) -> None:
    counts: Counter[str] = Counter()

    async def rr(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                writer.write(await reader.readexactly(MSG))
                await writer.drain()
        writer.close()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = after_first = 0
        first = last = 0.0
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(CHUNK):
                last = time.perf_counter()
                if total == 0:
                    first = last
                else:
                    after_first += len(chunk)
                total += len(chunk)
            writer.write(f"{total} {after_first} {last - first:.6f}\n".encode())
            await writer.drain()
        writer.close()

    class Count(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            tag = data.split(b":", 1)[0].decode(errors="replace")[:64]
            if len(counts) < 1000 or tag in counts:     # bounded: garbage cannot grow it
                counts[tag] += 1

    await ctx.net.start_server(rr, port=RR_PORT)
    await ctx.net.start_server(sink, port=SINK_PORT)
    await ctx.net.create_datagram_endpoint(udp_answerer(lambda data: data),
                                           local_addr=("0.0.0.0", ECHO_PORT))
    await ctx.net.create_datagram_endpoint(Count, local_addr=("0.0.0.0", COUNT_PORT))

    async def control(words: list[str]) -> tuple[str, bytes]:
        url = urllib.parse.urlsplit(words[1] if len(words) == 3 else "/")
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        try:
            return "200 OK", (await _handle(ctx, url.path, query, counts)).encode()
        except (ValueError, KeyError, OSError, TimeoutError,
                asyncio.IncompleteReadError) as exc:
            return "500 Error", f"{type(exc).__name__}: {exc}\n".encode()

    await serve_control(ctx, control)
    ctx.stdout.write(f"faults_probe on {ctx.pod.ip}: rr {RR_PORT}, udp echo {ECHO_PORT}, "
                     f"sink {SINK_PORT}, count {COUNT_PORT}, control 127.0.0.1:{CONTROL_PORT}\n")
    await asyncio.Event().wait()


def _bounded(query: dict[str, str], name: str, default: int, top: int) -> int:
    value = int(query.get(name, default))
    if not 0 < value <= top:
        raise ValueError(f"{name} must be 1..{top}")
    return value


async def _handle(ctx: Any, path: str, query: dict[str, str], counts: Counter[str]) -> str:
    if path == "/count":
        return f"{counts[query['tag']]}\n"
    host = query["host"]
    if path == "/rr":
        times = await _rr(ctx, host, _bounded(query, "n", 50, MAX_N))
        return "".join(f"{t * 1000:.3f}\n" for t in times)
    if path == "/udp":
        n = _bounded(query, "n", 2000, MAX_N)
        lost = await _udp(ctx, host, n, int(query.get("sport", "0")))
        return f"sent {n} received {n - len(lost)}\nlost {','.join(map(str, lost))}\n"
    if path == "/bulk":
        return await _bulk(ctx, host, _bounded(query, "bytes", 1 << 20, MAX_BYTES))
    if path == "/send":
        n, tag = _bounded(query, "n", 20, MAX_N), query["tag"]
        transport, _ = await ctx.net.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=(host, COUNT_PORT))
        try:
            for seq in range(n):
                transport.sendto(f"{tag}:{seq}".encode())
                await asyncio.sleep(0)
        finally:
            transport.close()
        return f"sent {n}\n"
    if path == "/connect":
        port, timeout = int(query.get("port", RR_PORT)), float(query.get("timeout", "2"))
        hosts = host.split(",")[:64]
        outcomes = await asyncio.gather(*(_connect(ctx, h, port, timeout) for h in hosts))
        return "".join(f"{h} {outcome}\n" for h, outcome in zip(hosts, outcomes, strict=True))
    raise ValueError(f"unknown path {path}")


async def _connect(ctx: Any, host: str, port: int, limit_s: float) -> str:
    async def attempt() -> str:
        _, writer = await asyncio.wait_for(ctx.net.open_connection(host, port), limit_s)
        writer.close()
        return "ok"

    return await outcome(attempt())


async def _rr(ctx: Any, host: str, n: int) -> list[float]:
    """n 64-byte round trips over one connection, each timed on its own."""
    reader, writer = await asyncio.wait_for(ctx.net.open_connection(host, RR_PORT), 5)
    request, times = b"r" * MSG, []
    try:
        for _ in range(n):
            start = time.perf_counter()
            writer.write(request)
            await asyncio.wait_for(reader.readexactly(MSG), 10)
            times.append(time.perf_counter() - start)
    finally:
        writer.close()
    return times


async def _udp(ctx: Any, host: str, n: int, sport: int) -> list[int]:
    """Sends datagrams 0..n-1 (`<seq>` padded to 64 bytes) from `sport` (0: any) to the echo
    port; the sequence numbers whose echo never came back."""
    echoed: set[int] = set()
    arrived = asyncio.Event()

    class Collect(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            with contextlib.suppress(ValueError):
                echoed.add(int(data.split(b" ", 1)[0]))
                arrived.set()

    local = ("0.0.0.0", sport) if sport else None
    transport, _ = await ctx.net.create_datagram_endpoint(
        Collect, local_addr=local, remote_addr=(host, ECHO_PORT))
    try:
        for start in range(0, n, UDP_BATCH):
            batch = range(start, min(n, start + UDP_BATCH))
            for seq in batch:
                transport.sendto(f"{seq} ".encode().ljust(MSG, b"."))
            while not all(seq in echoed for seq in batch):
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), QUIET_S)
                except TimeoutError:
                    break
    finally:
        transport.close()
    return [seq for seq in range(n) if seq not in echoed]


async def _bulk(ctx: Any, host: str, size: int) -> str:
    reader, writer = await asyncio.wait_for(ctx.net.open_connection(host, SINK_PORT), 5)
    try:
        block = b"b" * CHUNK
        sent = 0
        while sent < size:
            piece = block[:min(CHUNK, size - sent)]
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
        writer.write_eof()
        words = (await asyncio.wait_for(reader.readline(), 120)).split()
    finally:
        writer.close()
    total, after_first, seconds = int(words[0]), int(words[1]), float(words[2])
    kbit = after_first * 8 / 1000 / seconds if seconds > 0 else 0.0
    return f"kbit {kbit:.1f} bytes {total} s {seconds:.3f}\n"
