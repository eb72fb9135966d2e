"""One gossip-only node for bench/convergence.py: a GossipService, its RouteTable and an aiohttp
server on 127.0.0.1 (port 0), and nothing else of an agent.

    python bench/gossip_node.py --index 3 --seeds 127.0.0.1:4001,127.0.0.1:4002

The cluster secret comes from the environment (PODNET_BENCH_SECRET), never argv. stdout
carries one line per fact, with this process's wall clock (all processes share one machine):

    READY <ts> <address>
    ROUTE <ts> <node> <state> <incarnation>      (state "gone" when forgotten)

SIGTERM/SIGINT stop it cleanly; the benchmark also SIGKILLs nodes on purpose.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.cni.gossip import GossipService, GossipSettings
from agents.cni.routes import Route, RouteTable
from podnet import eventloop, logs


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # the benchmark reads as it happens, and may SIGKILL us any time


async def run(index: int, seeds: list[str]) -> None:
    name = f"node-{index}"
    secret = os.environ["PODNET_BENCH_SECRET"].encode()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    routes = RouteTable(name)

    def on_change(old: Route | None, new: Route | None) -> None:
        if new is None:
            if old is not None:
                say(f"ROUTE {time.time():.6f} {old.node} gone {old.incarnation}")
        elif old is None or (old.state, old.incarnation) != (new.state, new.incarnation):
            say(f"ROUTE {time.time():.6f} {new.node} {new.state} {new.incarnation}")

    routes.on_change(on_change)
    svc = GossipService(name, f"10.{index // 250}.{index % 250}.0/24", address, secret, routes,
                        GossipSettings(), seeds=seeds)
    app = web.Application()
    svc.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.SockSite(runner, sock).start()
        async with svc:
            say(f"READY {time.time():.6f} {address}")
            await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--seeds", default="")
    args = p.parse_args()
    logs.configure(f"bench-node-{args.index}", component="gossip",
                   node=f"node-{args.index}", level=os.environ.get("PODNET_LOG_LEVEL",
                                                                   "warning"))
    eventloop.run(run(args.index, [s for s in args.seeds.split(",") if s]))


if __name__ == "__main__":
    main()
