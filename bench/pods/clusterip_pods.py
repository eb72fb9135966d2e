"""Pod images for bench/clusterip.py (`image: py:clusterip_pods:server|client`; the bench puts
bench/pods/ on the agents' PYTHONPATH: a directory of its own, so nothing else in bench/ can
shadow an installed module).

`server`: 64-byte echo on port 7000. `client ARGS`: `POD_IP CLUSTER_IP SECONDS RUNS CONNS...`,
measures 64-byte request/response rates to the server pod directly and through the ClusterIP,
alternating the two paths run by run, and prints one JSON line per measurement, then `done`.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

MSG = 64
PORT = 7000
WARMUP_S = 0.3


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            writer.write(await reader.readexactly(MSG))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def server(ctx: Any) -> None:
    srv = await ctx.net.start_server(_echo, port=PORT)
    async with srv:
        await srv.serve_forever()


async def _rate(ctx: Any, host: str, port: int, conns: int, seconds: float) -> float:
    streams = [await ctx.net.open_connection(host, port) for _ in range(conns)]
    request = b"q" * MSG
    counts = [0] * conns
    measuring = False
    stop = False

    async def one(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not stop:
            writer.write(request)
            await reader.readexactly(MSG)
            if measuring:
                counts[i] += 1

    tasks = [asyncio.create_task(one(i, r, w), name=f"rr-{i}")
             for i, (r, w) in enumerate(streams)]
    await asyncio.sleep(WARMUP_S)
    measuring = True
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    measuring = False
    elapsed = time.perf_counter() - start
    stop = True
    await asyncio.gather(*tasks)
    for _, writer in streams:
        writer.close()
    return sum(counts) / elapsed


async def client(ctx: Any) -> None:
    pod_ip, cluster_ip, seconds, runs = ctx.args[0], ctx.args[1], float(ctx.args[2]), \
        int(ctx.args[3])
    for conns in (int(c) for c in ctx.args[4:]):
        for run in range(runs):
            for path, host, port in (("direct", pod_ip, PORT), ("clusterip", cluster_ip, 80)):
                rate = await _rate(ctx, host, port, conns, seconds)
                ctx.stdout.write(json.dumps({"path": path, "conns": conns, "run": run,
                                             "rate": rate}) + "\n")
                ctx.stdout.flush()
    ctx.stdout.write("done\n")
    ctx.stdout.flush()
    await asyncio.Event().wait()
