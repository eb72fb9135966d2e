"""Same-node pod-to-pod request/response rate, against a real TCP loopback baseline.

One connection, 64-byte request, 64-byte response, one outstanding at a time, with asyncio
streams on both paths: PodNet (`open_connection`/`start_server` between two pods of one
NodeNetwork) and real TCP on 127.0.0.1 inside the same process. Runs alternate between the two
paths so machine noise hits both alike; rates and p50 latencies are medians over the runs.

    .venv/bin/python bench/same_node_rr.py [--seconds 12] [--runs 5] [--rounds N] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.netstack import NodeNetwork

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
WARMUP = 500


class Run(NamedTuple):
    rate: float         # round trips per second
    p50_us: float


async def responder(size: int, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            writer.write(await reader.readexactly(size))
            await writer.drain()
    except asyncio.IncompleteReadError:
        pass
    finally:
        writer.close()


async def ping_pong(streams: Streams, size: int, seconds: float, rounds: int | None) -> Run:
    reader, writer = streams
    request = b"q" * size
    for _ in range(WARMUP):
        writer.write(request)
        await writer.drain()
        await reader.readexactly(size)
    clock = time.perf_counter_ns
    samples: list[int] = []
    deadline = clock() + int(seconds * 1e9)
    start = clock()
    now = start
    while (len(samples) < rounds) if rounds else (now < deadline):
        sent = now
        writer.write(request)
        await writer.drain()
        await reader.readexactly(size)
        now = clock()
        samples.append(now - sent)
    return Run(len(samples) / ((now - start) / 1e9), statistics.median(samples) / 1000)


async def podnet_path(size: int) -> tuple[Streams, Callable[[], Awaitable[None]]]:
    node = NodeNetwork("bench", "10.244.0.0/24")
    client = node.attach("10.244.0.2", pod="client", namespace="bench", hostname="client")
    server = node.attach("10.244.0.3", pod="server", namespace="bench", hostname="server")
    listener = await server.start_server(lambda r, w: responder(size, r, w), port=8080)
    streams = await client.open_connection("10.244.0.3", 8080)

    async def close() -> None:
        streams[1].close()
        await streams[1].wait_closed()
        listener.close()
        await listener.wait_closed()
        node.detach(client.ip)
        node.detach(server.ip)

    return streams, close


async def tcp_path(size: int) -> tuple[Streams, Callable[[], Awaitable[None]]]:
    listener = await asyncio.start_server(lambda r, w: responder(size, r, w), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    streams = await asyncio.open_connection("127.0.0.1", port)

    async def close() -> None:
        streams[1].close()
        await streams[1].wait_closed()
        listener.close()
        await listener.wait_closed()

    return streams, close


async def measure(args: argparse.Namespace) -> dict[str, list[Run]]:
    paths = {"podnet": podnet_path, "tcp": tcp_path}
    results: dict[str, list[Run]] = {name: [] for name in paths}
    per_run = args.seconds / (len(paths) * args.runs)
    for _ in range(args.runs):
        for name, setup in paths.items():
            streams, close = await setup(args.size)
            try:
                results[name].append(await ping_pong(streams, args.size, per_run, args.rounds))
            finally:
                await close()
    return results


def report(loop_name: str, results: dict[str, list[Run]]) -> float:
    rate = {name: statistics.median(r.rate for r in runs) for name, runs in results.items()}
    p50 = {name: statistics.median(r.p50_us for r in runs) for name, runs in results.items()}
    ratio = rate["podnet"] / rate["tcp"]
    print(f"[{loop_name}] podnet same-node : {rate['podnet']:>10,.0f} round trips/s  "
          f"p50 {p50['podnet']:7.1f} us  (runs: "
          + ", ".join(f"{r.rate:,.0f}" for r in results["podnet"]) + ")")
    print(f"[{loop_name}] tcp 127.0.0.1    : {rate['tcp']:>10,.0f} round trips/s  "
          f"p50 {p50['tcp']:7.1f} us  (runs: "
          + ", ".join(f"{r.rate:,.0f}" for r in results["tcp"]) + ")")
    verdict = "ok" if ratio >= 1.0 else "BELOW TARGET"
    print(f"[{loop_name}] ratio podnet/tcp : {ratio:.2f}x  (target >= 1.0: {verdict})")
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0,
                        help="measuring time per event loop, split over runs and paths")
    parser.add_argument("--runs", type=int, default=5, help="runs per path (median reported)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="fixed round trips per run instead of a time box")
    parser.add_argument("--size", type=int, default=64, help="message size in bytes")
    parser.add_argument("--uvloop", action="store_true", help="also measure under uvloop")
    args = parser.parse_args(argv)

    loops: list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]] = [
        ("asyncio", asyncio.new_event_loop)]
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            print("uvloop is not importable: measuring stock asyncio only", file=sys.stderr)
        else:
            loops.append(("uvloop", uvloop.new_event_loop))
    print(f"same-node request/response: {args.size}-byte messages, 1 connection, "
          f"{args.runs} runs per path, python {sys.version.split()[0]}")
    ratios: list[float] = []
    for name, factory in loops:
        with asyncio.Runner(loop_factory=factory) as runner:
            results: Any = runner.run(measure(args))
        ratios.append(report(name, results))
    return 0 if min(ratios) >= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
