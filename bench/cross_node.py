"""Cross-node pod-to-pod rates through the tunnels, beside raw TCP baselines from the same run.

Two real processes (bench/tunnel_node.py), each an agent-like NodeNetwork + TunnelManager +
aiohttp server on 127.0.0.1 with static routes to the other. A client pod on node A talks to a
server pod on node B through `ctx.net`-style asyncio streams; the baseline runs the very same
client and server code over real TCP between the same two processes. Figures:

- 64-byte request/response over 1 connection (round trips/s, p50 latency)
- the same over 64 concurrent connections
- one bulk stream, 64 KiB writes (MB/s), reader buffer limit 1 MiB on both paths

Runs alternate podnet / raw so machine noise hits both alike; each figure is the median over
`--runs`. Targets: every ratio >= 0.5.

Each node process is pinned to its own CPU (as if on two machines) unless `--no-pin`.

    .venv/bin/python bench/cross_node.py [--loop uvloop|asyncio|both] [--seconds 3] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGET = 0.5


class Node:
    def __init__(self, name: str, cidr: str, secret: str, loop: str, cpu: int | None,
                 extra: tuple[str, ...] = ()) -> None:
        env = dict(os.environ, PODNET_LOOP="asyncio" if loop == "asyncio" else "auto")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "tunnel_node.py"), "--node", name, "--pod-cidr", cidr,
             "--secret-hex", secret, *extra], stdout=subprocess.PIPE, env=env, text=True)
        if cpu is not None:
            os.sched_setaffinity(self.proc.pid, {cpu})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"node {name} did not start")
        self.info: dict[str, Any] = json.loads(line)
        self.cidr = cidr

    def call(self, method: str, path: str, body: Any = None, timeout: float = 120) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{self.info['address']}{path}", data=data,
                                     method=method)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        try:
            self.call("POST", "/bench/quit", timeout=5)
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def cpus(pin: bool) -> tuple[int | None, int | None]:
    """One CPU for each node when pinning (like two machines: every message wakes the other
    CPU); without it, runs where the scheduler puts both on one CPU make wakeups ~10x cheaper
    and the baseline swings by 2-3x between runs."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not pin or len(available) < 2:
        return None, None
    return available[0], available[1]


def bench_loop(loop: str, seconds: float, runs: int,
               pin: bool) -> list[tuple[str, float, float, str]]:
    secret = secrets.token_hex(32)
    cpu_a, cpu_b = cpus(pin)
    a = Node("bench-a", "10.244.1.0/24", secret, loop, cpu_a)
    try:
        b = Node("bench-b", "10.244.2.0/24", secret, loop, cpu_b)
    except BaseException:
        a.stop()
        raise
    try:
        a.call("POST", "/bench/routes", [{"cidr": b.cidr, "node": "bench-b",
                                          "address": b.info["address"]}])
        b.call("POST", "/bench/routes", [{"cidr": a.cidr, "node": "bench-a",
                                          "address": a.info["address"]}])
        pod_ip = b.info["server_pod"]
        cases = [("rr 1 conn", "rr", 1, 7000, "raw_rr", "rate", "rt/s"),
                 ("rr 64 conns", "rr", 64, 7000, "raw_rr", "rate", "rt/s"),
                 ("bulk 64 KiB writes", "bulk", 1, 7001, "raw_sink", "mbps", "MB/s")]
        rows = []
        for label, kind, conns, pod_port, raw_key, metric, unit in cases:
            ours: list[float] = []
            base: list[float] = []
            p50s: list[float] = []
            for _ in range(runs):
                for path, host, port, into in (("podnet", pod_ip, pod_port, ours),
                                               ("raw", "127.0.0.1", b.info[raw_key], base)):
                    result = a.call("GET", f"/bench/run?kind={kind}&path={path}&host={host}"
                                           f"&port={port}&conns={conns}&seconds={seconds}")
                    into.append(result[metric])
                    if path == "podnet" and "p50_us" in result:
                        p50s.append(result["p50_us"])
            mine, raw = statistics.median(ours), statistics.median(base)
            extra = f" p50 {statistics.median(p50s):.0f} us" if p50s else ""
            rows.append((label, mine, raw, unit + extra))
        return rows
    finally:
        a.stop()
        b.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", choices=("uvloop", "asyncio", "both"), default="uvloop")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="let the scheduler place the two node processes")
    args = parser.parse_args()
    loops = ["uvloop", "asyncio"] if args.loop == "both" else [args.loop]
    failed = False
    for loop in loops:
        print(f"== {loop}: podnet cross-node vs raw asyncio TCP between two processes "
              f"(median of {args.runs} x {args.seconds:g}s, "
              f"{'one CPU each' if args.pin else 'unpinned'})")
        for label, mine, raw, unit in bench_loop(loop, args.seconds, args.runs, args.pin):
            ratio = mine / raw if raw else 0.0
            failed |= ratio < TARGET
            print(f"  {label:<20} podnet {mine:>10,.0f}  raw {raw:>10,.0f}  {unit:<20} "
                  f"x{ratio:.2f} {'ok' if ratio >= TARGET else 'BELOW TARGET'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
