"""Gossip convergence with N real processes on this machine, beside the model for the settings.

    .venv/bin/python bench/convergence.py [--sizes 10,30,60] [--trials 3]

For each N, N gossip-only nodes (bench/gossip_node.py: GossipService + RouteTable + aiohttp on
127.0.0.1, each seeded with up to 3 earlier nodes) start and converge; then:

- idle CPU per process over a few seconds, from /proc/<pid>/stat (utime + stime);
- (a) join: a new node starts; the time from its READY (gossip running) until every other
  node has its route alive. Target < 2 s at 30 nodes (Serf's model for 30 nodes at 200 ms and
  fanout 3);
- (b) withdraw: one node is SIGKILLed; the time until every other node has its route dead.
  Target < 6 s at 30 nodes (memberlist's LAN defaults take about 6-12 s).

Times are medians over --trials (max in brackets), read from each process's own log lines
(one machine, one wall clock). The model columns are computed from the same settings:
- join ~ (log_{1+f}(N) + ln(N)/f) rounds x gossip interval + half an interval (the first
  round's phase): push gossip where every informed node tells f peers a round, plus the
  tail (Pittel); Serf's rule of thumb log_f(N) rounds is printed too;
- withdraw ~ probe interval x (N-1)/N (the first of N-1 round-robin probers to reach the dead
  node) + probe timeout + indirect-probe timeout + suspicion timeout + one dissemination (the
  last node hears `dead` from the first whose suspicion timer expired).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.cni.gossip import GossipSettings  # noqa: E402
from podnet import eventloop  # noqa: E402

NODE = str(ROOT / "bench" / "gossip_node.py")
TICKS = os.sysconf("SC_CLK_TCK")
WAIT_S = 30.0


@dataclass
class Node:
    index: int
    proc: asyncio.subprocess.Process
    address: str = ""
    ready_ts: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    # node -> [(ts, state)], in the order this process saw them
    seen: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"node-{self.index}"

    def state_of(self, node: str) -> str | None:
        events = self.seen.get(node)
        return events[-1][1] if events else None

    def first(self, node: str, state: str, after: float = 0.0) -> float | None:
        return next((ts for ts, s in self.seen.get(node, []) if s == state and ts >= after),
                    None)

    async def read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            parts = raw.decode().split()
            if parts[:1] == ["READY"]:
                self.ready_ts, self.address = float(parts[1]), parts[2]
                self.ready.set()
            elif parts[:1] == ["ROUTE"]:
                self.seen.setdefault(parts[2], []).append((float(parts[1]), parts[3]))

    def cpu_s(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


class Cluster:
    def __init__(self, tmp: Path, rng: random.Random) -> None:
        self.tmp = tmp
        self.rng = rng
        self.nodes: list[Node] = []      # live ones
        self.env = {**os.environ, "PODNET_BENCH_SECRET": secrets.token_hex(32),
                    "PYTHONPATH": str(ROOT)}

    async def spawn(self, index: int) -> Node:
        seeds = [n.address for n in self.rng.sample(self.nodes, min(3, len(self.nodes)))]
        with (self.tmp / f"node-{index}.log").open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, NODE, "--index", str(index), "--seeds", ",".join(seeds),
                stdout=asyncio.subprocess.PIPE, stderr=err, env=self.env)
        node = Node(index, proc)
        node.reader = asyncio.create_task(node.read(), name=f"read:{node.name}")
        try:
            await asyncio.wait_for(node.ready.wait(), WAIT_S)
        except TimeoutError:
            await self.kill(node)
            raise RuntimeError(f"{node.name} did not start; see {self.tmp}") from None
        self.nodes.append(node)
        return node

    async def kill(self, node: Node, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            node.proc.send_signal(sig)
        try:
            await asyncio.wait_for(node.proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                node.proc.kill()
            await node.proc.wait()
        if node.reader is not None:
            await node.reader
        if node in self.nodes:
            self.nodes.remove(node)

    async def close(self) -> None:
        for node in list(self.nodes):
            with contextlib.suppress(ProcessLookupError):
                node.proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*(self.kill(n, signal.SIGTERM) for n in list(self.nodes)))

    def converged(self) -> bool:
        names = {n.name for n in self.nodes}
        return all(all(n.state_of(o) == "alive" for o in names) for n in self.nodes)

    async def until(self, check: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return True
            await asyncio.sleep(0.05)
        return False


def seen_by(nodes: list[Node], name: str, state: str, after: float) -> Callable[[], bool]:
    return lambda: all(x.first(name, state, after) is not None for x in nodes)


def last_seen(nodes: list[Node], name: str, state: str, after: float) -> float:
    """When the last of `nodes` first saw `name` in `state` (after `after`)."""
    return max(x.first(name, state, after) or 0.0 for x in nodes)


def model_join_s(n: int, s: GossipSettings) -> tuple[float, float]:
    interval = s.gossip_interval_ms / 1000
    rounds = math.log(n, 1 + s.fanout) + math.log(n) / s.fanout
    return rounds * interval + interval / 2, math.log(n, s.fanout) * interval


def model_withdraw_s(n: int, s: GossipSettings) -> float:
    join, _ = model_join_s(n, s)
    return (s.probe_interval_ms * (n - 1) / n + s.probe_timeout_ms
            + s.indirect_probe_timeout_ms + s.suspicion_timeout_ms) / 1000 + join


def fmt(values: list[float], failed: int) -> str:
    if not values:
        return "   n/a"
    text = f"{statistics.median(values):5.2f} ({max(values):4.2f})"
    return text + (f" +{failed} timed out" if failed else "")


@dataclass
class Result:
    n: int
    start_s: float = 0.0
    joins: list[float] = field(default_factory=list)
    withdraws: list[float] = field(default_factory=list)
    failed_join: int = 0
    failed_withdraw: int = 0
    idle: list[float] = field(default_factory=list)   # CPU seconds per second, per process


async def measure(n: int, trials: int, tmp: Path, rng: random.Random) -> Result:
    cluster = Cluster(tmp, rng)
    r = Result(n)
    try:
        t0 = time.monotonic()
        await cluster.spawn(0)
        for batch_start in range(1, n, 8):  # a few at a time: 2 cores, ~0.3 s CPU per start
            await asyncio.gather(*(cluster.spawn(i)
                                   for i in range(batch_start, min(n, batch_start + 8))))
        if not await cluster.until(cluster.converged, 60):
            raise RuntimeError(f"{n} nodes did not converge in 60 s; logs in {tmp}")
        r.start_s = time.monotonic() - t0
        await asyncio.sleep(2)
        before = {x.proc.pid: x.cpu_s() for x in cluster.nodes}
        w0 = time.monotonic()
        await asyncio.sleep(5)
        wall = time.monotonic() - w0
        r.idle = [(x.cpu_s() - before[x.proc.pid]) / wall for x in cluster.nodes]

        next_index = n
        for _ in range(trials):
            # (a) a new node's route reaches everyone
            new = await cluster.spawn(next_index)
            next_index += 1
            others = [x for x in cluster.nodes if x is not new]
            if await cluster.until(seen_by(others, new.name, "alive", new.ready_ts - 1)):
                r.joins.append(last_seen(others, new.name, "alive", 0) - new.ready_ts)
            else:
                r.failed_join += 1
            await asyncio.sleep(1)
            # (b) a SIGKILLed node's route is withdrawn everywhere
            victim = rng.choice([x for x in cluster.nodes if x is not new])
            killed_at = time.time()
            await cluster.kill(victim)
            rest = list(cluster.nodes)
            if await cluster.until(seen_by(rest, victim.name, "dead", killed_at)):
                r.withdraws.append(last_seen(rest, victim.name, "dead", killed_at) - killed_at)
            else:
                r.failed_withdraw += 1
            await asyncio.sleep(1)
    finally:
        await cluster.close()
    return r


async def main_async(sizes: list[int], trials: int) -> None:
    s = GossipSettings()
    rng = random.Random(1)
    print(f"gossip convergence, {os.cpu_count()} CPUs, loop={eventloop.loop_name()}; settings: "
          f"gossip {s.gossip_interval_ms} ms x fanout {s.fanout}, push-pull "
          f"{s.push_pull_interval_ms} ms, probe {s.probe_interval_ms} ms (timeouts "
          f"{s.probe_timeout_ms}+{s.indirect_probe_timeout_ms} ms, k={s.indirect_probes}), "
          f"suspicion {s.suspicion_timeout_ms} ms; {trials} trials; median (max) seconds")
    print(f"{'N':>3} | {'join':>16} {'model':>5} {'log_f N':>7} {'target':>6} | "
          f"{'withdraw':>16} {'model':>5} {'target':>6} | {'idle CPU/proc':>13} "
          f"{'all procs':>9} | start")
    with tempfile.TemporaryDirectory(prefix="podnet-gossip-bench-") as tmpname:
        for n in sizes:
            tmp = Path(tmpname) / f"n{n}"
            tmp.mkdir()
            r = await measure(n, trials, tmp, rng)
            model_join, serf = model_join_s(n, s)
            print(f"{n:>3} | {fmt(r.joins, r.failed_join):>16} {model_join:5.2f} "
                  f"{serf:7.2f} {'< 2':>6} | {fmt(r.withdraws, r.failed_withdraw):>16} "
                  f"{model_withdraw_s(n, s):5.2f} {'< 6':>6} | "
                  f"{100 * statistics.median(r.idle):5.2f}% ({100 * max(r.idle):4.2f}%) "
                  f"{sum(r.idle):6.2f} cores | {r.start_s:4.1f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,30,60", help="cluster sizes, comma-separated")
    p.add_argument("--trials", type=int, default=3, help="joins and kills per size")
    args = p.parse_args()
    asyncio.run(main_async([int(x) for x in args.sizes.split(",")], args.trials))


if __name__ == "__main__":
    main()
