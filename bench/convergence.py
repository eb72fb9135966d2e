"""Gossip convergence with N real processes on this machine, beside the model for the settings.

    .venv/bin/python bench/convergence.py [--sizes 10,30,60] [--trials 3]

For each N, N gossip-only nodes (bench/gossip_node.py: GossipService + RouteTable + aiohttp on
127.0.0.1, each seeded with up to 3 earlier nodes) start and converge; then:

- idle CPU per process over a few seconds, from /proc/<pid>/stat (utime + stime);
- (a) join: a new node starts; the time from its READY (gossip running) until every other
  node has its route alive. Target < 2 s at 30 nodes (Serf's model for 30 nodes at 200 ms and
  fanout 3);
- (b) withdraw: one node is SIGKILLed; the time until every other node has its route dead.
  Target < 6 s at 30 nodes (memberlist's LAN defaults take about 6-12 s). On loopback a
  killed process's port refuses at once, so probes fail in ~1 ms; a second node is therefore
  SIGSTOPped too ("hang": its kernel still accepts connections that never answer, as with a
  frozen or unplugged host), which makes every probe wait out its timeouts.

Times are medians over --trials (max in brackets), read from each process's own log lines
(one machine, one wall clock). The model columns are computed from the same settings:
- join ~ (log_{1+f}(N) + ln(N)/f) rounds x gossip interval + half an interval (the first
  round's phase): push gossip where every informed node tells f peers a round, plus the
  tail (Pittel); Serf's rule of thumb log_f(N) rounds is printed too;
- suspect: the median time from the kill until the first node suspects it (the detection
  part of withdraw; the rest is the suspicion timeout and one dissemination);
- withdraw ~ probe interval x (N-1)/N (the first of N-1 round-robin probers to reach the dead
  node) + probe timeout + indirect-probe timeout (hang only) + suspicion timeout + one
  dissemination (the last node hears `dead` from the first whose suspicion timer expired).
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

    def disagreement(self) -> str:
        """Who sees whom how, where that is not alive (for a failed run)."""
        names = {n.name for n in self.nodes}
        views = [f"{n.name} sees {o} {n.state_of(o)}" for n in self.nodes for o in sorted(names)
                 if n.state_of(o) != "alive"]
        exited = [f"{n.name} exited {n.proc.returncode}" for n in self.nodes
                  if n.proc.returncode is not None]
        return "; ".join(exited + views[:20]) + f" ({len(views)} views)"

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


def model_withdraw_s(n: int, s: GossipSettings, *, timeouts: bool) -> float:
    """First probe + (probe timeouts, when the node hangs rather than refuses connections)
    + suspicion timeout + one dissemination."""
    join, _ = model_join_s(n, s)
    waits = s.probe_timeout_ms + s.indirect_probe_timeout_ms if timeouts else 0
    return (s.probe_interval_ms * (n - 1) / n + waits + s.suspicion_timeout_ms) / 1000 + join


def fmt(values: list[float], failed: int = 0) -> str:
    if not values:
        return "   n/a"
    text = f"{statistics.median(values):5.2f} ({max(values):4.2f})"
    return text + (f" +{failed} timed out" if failed else "")


@dataclass
class Withdrawals:
    """One way of losing a node: how long until it is dead everywhere, and first suspected."""
    dead: list[float] = field(default_factory=list)
    suspected: list[float] = field(default_factory=list)
    failed: int = 0


@dataclass
class Result:
    n: int
    start_s: float = 0.0
    joins: list[float] = field(default_factory=list)
    failed_join: int = 0
    killed: Withdrawals = field(default_factory=Withdrawals)  # SIGKILL: connections refused
    hung: Withdrawals = field(default_factory=Withdrawals)    # SIGSTOP: requests time out
    idle: list[float] = field(default_factory=list)   # CPU seconds per second, per process


async def lose_one(cluster: Cluster, victim: Node, sig: int, into: Withdrawals) -> None:
    """Signal `victim` (SIGKILL: dead, its port refuses; SIGSTOP: hung, its kernel still
    accepts connections that never answer, like a frozen host) and time the withdrawal."""
    at = time.time()
    victim.proc.send_signal(sig)
    rest = [x for x in cluster.nodes if x is not victim]
    if await cluster.until(seen_by(rest, victim.name, "dead", at)):
        into.dead.append(last_seen(rest, victim.name, "dead", at) - at)
        firsts = [t for x in rest if (t := x.first(victim.name, "suspect", at)) is not None]
        if firsts:
            into.suspected.append(min(firsts) - at)
    else:
        into.failed += 1
    await cluster.kill(victim)  # a stopped process dies of SIGKILL too


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
            raise RuntimeError(f"{n} nodes did not converge in 60 s: {cluster.disagreement()}")
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
            # (b) a node's route is withdrawn everywhere: killed, then (another one) hung
            for sig, into in ((signal.SIGKILL, r.killed), (signal.SIGSTOP, r.hung)):
                await lose_one(cluster, rng.choice([x for x in cluster.nodes if x is not new]),
                               sig, into)
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
          f"suspicion {s.suspicion_timeout_ms} ms; {trials} trials; seconds as median (max)")
    print("join: a new node's route everywhere (target < 2 s at N=30); withdraw: a lost "
          "node's route dead everywhere (target < 6 s at N=30), SIGKILL (port refuses) and "
          "SIGSTOP (hangs: probes time out); susp: until the first node suspects it")
    print(f"{'N':>3} | {'join':>11} {'model':>5} {'log_f':>5} | {'kill':>11} {'model':>5} "
          f"{'susp':>4} | {'hang':>11} {'model':>5} {'susp':>4} | {'idle CPU/proc':>13} "
          f"{'all procs':>10} | start")
    with tempfile.TemporaryDirectory(prefix="podnet-gossip-bench-") as tmpname:
        for n in sizes:
            tmp = Path(tmpname) / f"n{n}"
            tmp.mkdir()
            r = await measure(n, trials, tmp, rng)
            model_join, serf = model_join_s(n, s)
            cells = [f"{n:>3}", f"{fmt(r.joins, r.failed_join):>11} {model_join:5.2f} "
                                f"{serf:5.2f}"]
            for w, timeouts in ((r.killed, False), (r.hung, True)):
                susp = statistics.median(w.suspected) if w.suspected else math.nan
                cells.append(f"{fmt(w.dead, w.failed):>11} "
                             f"{model_withdraw_s(n, s, timeouts=timeouts):5.2f} {susp:4.2f}")
            cells.append(f"{100 * statistics.median(r.idle):5.2f}% ({100 * max(r.idle):4.2f}%) "
                         f"{sum(r.idle):5.2f} cores")
            cells.append(f"{r.start_s:4.1f} s")
            print(" | ".join(cells), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,30,60", help="cluster sizes, comma-separated")
    p.add_argument("--trials", type=int, default=3,
                   help="per size: joins, kills and hangs (each a new random node)")
    args = p.parse_args()
    asyncio.run(main_async([int(x) for x in args.sizes.split(",")], args.trials))


if __name__ == "__main__":
    main()
