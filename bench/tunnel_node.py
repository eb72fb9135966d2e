"""One agent-like process for bench/cross_node.py: a NodeNetwork, its TunnelManager and an aiohttp
server on 127.0.0.1, plus the same workloads over raw TCP for the baseline.

It attaches a server pod (`<podCIDR>.2`: 64-byte echo on 7000, byte sink on 7001) and a client
pod (`<podCIDR>.3`), and also listens with the same handlers on real 127.0.0.1 ports. It prints
one JSON line (its addresses) on stdout, then serves control requests from the orchestrator:

    POST /bench/routes   [{"cidr": ..., "node": ..., "address": "host:port"}, ...]
    GET  /bench/run?kind=rr|bulk&path=podnet|raw&host=IP&port=N&conns=N&seconds=S
    POST /bench/quit

    .venv/bin/python bench/tunnel_node.py --node a --pod-cidr 10.244.1.0/24 --secret-hex HEX
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.cni.routes import Route, RouteTable
from agents.netstack import NodeNetwork, PodNet
from agents.tunnels import TunnelManager
from podnet import logs
from podnet.eventloop import loop_name, run

RR_PORT, SINK_PORT = 7000, 7001
MSG = 64
CHUNK = 64 * 1024
BULK_LIMIT = 2**20      # reader buffer limit for bulk, on both paths (64 KiB starves TCP too)
WARMUP = 200

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Opener = Callable[[str, int], Awaitable[Streams]]


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            writer.write(await reader.readexactly(MSG))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    total = 0
    try:
        while data := await reader.read(BULK_LIMIT):
            total += len(data)
        writer.write(total.to_bytes(8, "big"))
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def rr(open_: Opener, host: str, port: int, conns: int, seconds: float) -> dict[str, float]:
    streams = [await open_(host, port) for _ in range(conns)]
    request = b"q" * MSG
    counts = [0] * conns
    samples: list[int] = []
    clock = time.perf_counter_ns
    started = asyncio.Event()
    stop = False

    async def one(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(WARMUP):
            writer.write(request)
            await reader.readexactly(MSG)
        await started.wait()
        while not stop:
            sent = clock()
            writer.write(request)
            await reader.readexactly(MSG)
            counts[i] += 1
            if i == 0:
                samples.append(clock() - sent)

    tasks = [asyncio.create_task(one(i, r, w)) for i, (r, w) in enumerate(streams)]
    await asyncio.sleep(0.3)            # warm-up rounds first
    counts = [0] * conns
    samples.clear()
    start = clock()
    started.set()
    await asyncio.sleep(seconds)
    stop = True
    total = sum(counts)
    elapsed = (clock() - start) / 1e9
    await asyncio.gather(*tasks)
    for _, writer in streams:
        writer.close()
    return {"rate": total / elapsed,
            "p50_us": statistics.median(samples) / 1000 if samples else 0.0}


async def bulk(open_: Opener, host: str, port: int, seconds: float) -> dict[str, float]:
    reader, writer = await open_(host, port)
    chunk = b"b" * CHUNK
    sent = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(16):
            writer.write(chunk)
            await writer.drain()
        sent += 16 * CHUNK
    writer.write_eof()
    received = int.from_bytes(await reader.readexactly(8), "big")
    elapsed = time.perf_counter() - start
    writer.close()
    if received != sent:
        raise RuntimeError(f"sink counted {received} bytes, {sent} were sent")
    return {"mbps": sent / elapsed / 1e6}


def setup_logging(args: argparse.Namespace) -> None:
    if args.logs_dir:
        Path(args.logs_dir).mkdir(parents=True, exist_ok=True)
        # Logging as an agent does (JSON file + stderr), for bench/logging_overhead.py.
        logs.configure(f"bench-{args.node}", component="agent", node=args.node,
                       logs_dir=Path(args.logs_dir), level=args.log_level,
                       stderr=(Path(args.logs_dir) / f"bench-{args.node}.stderr").open("a"))
    else:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


async def main(args: argparse.Namespace) -> None:
    prefix = args.pod_cidr.rsplit(".", 1)[0]
    network = NodeNetwork(args.node, args.pod_cidr)
    table = RouteTable(args.node)
    tunnels = TunnelManager(args.node, bytes.fromhex(args.secret_hex), table, network)
    server_pod = network.attach(f"{prefix}.2", pod="server", namespace="bench", hostname="server")
    client_pod: PodNet = network.attach(f"{prefix}.3", pod="client", namespace="bench",
                                        hostname="client")
    await server_pod.start_server(echo, port=RR_PORT)
    await server_pod.start_server(sink, port=SINK_PORT, limit=BULK_LIMIT)
    raw_rr = await asyncio.start_server(echo, "127.0.0.1", 0)
    raw_sink = await asyncio.start_server(sink, "127.0.0.1", 0, limit=BULK_LIMIT)
    done = asyncio.Event()

    async def pod_open(host: str, port: int) -> Streams:
        return await client_pod.open_connection(host, port, limit=BULK_LIMIT)

    async def raw_open(host: str, port: int) -> Streams:
        return await asyncio.open_connection(host, port, limit=BULK_LIMIT)

    async def set_routes(request: web.Request) -> web.Response:
        for item in await request.json():
            table.update(Route(item["cidr"], item["node"], item["address"]))
        return web.json_response({"ok": True})

    async def run_one(request: web.Request) -> web.Response:
        q = request.query
        open_ = pod_open if q["path"] == "podnet" else raw_open
        host, port, seconds = q["host"], int(q["port"]), float(q["seconds"])
        if q["kind"] == "rr":
            result = await rr(open_, host, port, int(q.get("conns", "1")), seconds)
        else:
            result = await bulk(open_, host, port, seconds)
        return web.json_response(result)

    async def quit_(_: web.Request) -> web.Response:
        done.set()
        return web.json_response({"ok": True})

    app = web.Application()
    tunnels.add_routes(app)
    app.router.add_post("/bench/routes", set_routes)
    app.router.add_get("/bench/run", run_one)
    app.router.add_post("/bench/quit", quit_)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({
        "node": args.node, "address": f"127.0.0.1:{port}", "loop": loop_name(),
        "server_pod": server_pod.ip, "client_pod": client_pod.ip,
        "raw_rr": raw_rr.sockets[0].getsockname()[1],
        "raw_sink": raw_sink.sockets[0].getsockname()[1]}), flush=True)
    try:
        await done.wait()
        await asyncio.sleep(0.05)       # let the quit answer go out
    finally:
        raw_rr.close()
        raw_sink.close()
        await tunnels.close()
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", required=True)
    parser.add_argument("--pod-cidr", required=True)
    parser.add_argument("--secret-hex", required=True)
    parser.add_argument("--logs-dir", default=None, help="log like an agent, into this dir")
    parser.add_argument("--log-level", default="info")
    parsed = parser.parse_args()
    setup_logging(parsed)
    run(main(parsed))
