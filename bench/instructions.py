"""The data path's cost in CPU instructions per operation, before (`--baseline`) vs now.

Wall-clock request/response rates on this shared 2-core machine move by +-30% from one run to
the next (an A/A run of the same code gives 0.74x-1.34x), far too much to see a 3% change.
The number of instructions a run executes does not depend on the machine's other load, so
this counts them with `valgrind --tool=callgrind` (its "Collected : N" total; no profile is
written) for the two trees:

- "baseline": the tree at `--baseline` (default `b0a5495^`, the last commit before the
  IPv4/IPv6 dual-stack work), extracted with `git archive`;
- "now": this working tree, uncommitted changes included (or `--now REF`, extracted too).

For each tree, a child Python (this file with `--child`, `PYTHONHASHSEED=0`, the tree first
on sys.path, logging configured at info as an agent does: JSON file + stderr) builds, in one
process, two emulated nodes as bench/tunnel_node.py does (a NodeNetwork each with a server
pod echoing 64 bytes and a client pod, a TunnelManager, an aiohttp server on 127.0.0.1, each
node's route to the other), and then runs three cases, each after a warm-up:

- same-node:  64-byte round trips over one stream between two pods of one NodeNetwork;
- cross-node: 64-byte round trips over one stream from node a's client to node b's server,
              through the WebSocket tunnel;
- new conns:  cross-node connections, each opened, used for one round trip and closed.

A child runs every case with its small count, or one case with its large count and the
others small. The per-operation figure of a case is

    (Ir(that case large) - Ir(all small)) / (n_large - n_small)

so start-up, imports, warm-up and teardown cancel out. The ratio is baseline/now as a speed
ratio: >= 0.97x means "now" costs at most ~3% more instructions per operation.

    .venv/bin/python bench/instructions.py [--baseline REF] [--now REF] [--rr 2000]
                                           [--conns 200] [--jobs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VALGRIND = "/usr/bin/valgrind"
DEFAULT_BASELINE = "b0a5495^"
TARGET_RATIO = 0.97
MSG = 64
PORT = 7000
WARMUP = 50
CASES = ("same-node", "cross-node", "new conns")
COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


# --------------------------------------------------------------------------------- the child

async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The server pod: 64 bytes back for every 64 bytes in, until EOF."""
    try:
        while True:
            writer.write(await reader.readexactly(MSG))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _round_trips(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       n: int) -> None:
    request = b"q" * MSG
    for _ in range(n):
        writer.write(request)
        await reader.readexactly(MSG)


async def _child_main(args: argparse.Namespace) -> None:
    # Imported here: the tree under test is first on sys.path by now (see child()).
    from aiohttp import web

    from agents.cni.routes import Route, RouteTable
    from agents.netstack import NodeNetwork, PodNet
    from agents.tunnels import TunnelManager

    secret = b"k" * 32

    @dataclass
    class Node:
        network: Any
        tunnels: Any
        runner: web.AppRunner
        server: PodNet
        client: PodNet
        address: str
        table: Any

    async def node(name: str, pod_cidr: str) -> Node:
        # The IPv4-only constructors, the same positional API at b0a5495^ and since: the
        # dual-stack keywords (NodeNetwork pod_cidrs/cluster_cidrs, TunnelManager
        # service_cidrs, Route pod_cidrs) are left at their single-stack defaults.
        prefix = pod_cidr.rsplit(".", 1)[0]
        network = NodeNetwork(name, pod_cidr)
        table = RouteTable(name)
        tunnels = TunnelManager(name, secret, table, network)
        server = network.attach(f"{prefix}.2", pod="server", namespace="bench",
                                hostname="server")
        client = network.attach(f"{prefix}.3", pod="client", namespace="bench",
                                hostname="client")
        await server.start_server(_echo, port=PORT)
        app = web.Application()
        tunnels.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        return Node(network, tunnels, runner, server, client, f"127.0.0.1:{port}", table)

    a = await node("bench-a", "10.244.1.0/24")
    b = await node("bench-b", "10.244.2.0/24")
    a.table.update(Route("10.244.2.0/24", "bench-b", b.address))
    b.table.update(Route("10.244.1.0/24", "bench-a", a.address))

    # (a) same-node: node a's client -> node a's server.
    reader, writer = await a.client.open_connection(a.server.ip, PORT)
    await _round_trips(reader, writer, WARMUP + args.same)
    writer.close()

    # (b) cross-node: node a's client -> node b's server (the first round trips dial).
    reader, writer = await a.client.open_connection(b.server.ip, PORT)
    await _round_trips(reader, writer, WARMUP + args.cross)
    writer.close()

    # (c) new connections, cross-node.
    for _ in range(WARMUP // 5 + args.conns):
        reader, writer = await a.client.open_connection(b.server.ip, PORT)
        await _round_trips(reader, writer, 1)
        writer.close()
        await writer.wait_closed()

    await asyncio.sleep(0.05)       # the last closes reach the far side
    for n in (a, b):
        await n.tunnels.close()
        await n.runner.cleanup()


def child(args: argparse.Namespace) -> None:
    """Measure one tree: `args.tree` first on sys.path, logging as an agent."""
    tree = str(Path(args.tree).resolve())
    sys.path.insert(0, tree)
    from podnet import logs
    from podnet.eventloop import run

    for module in (logs, sys.modules["podnet.eventloop"]):
        if not str(module.__file__).startswith(tree + os.sep):
            raise RuntimeError(f"{module.__name__} imported from {module.__file__}, not {tree}")
    with tempfile.TemporaryDirectory(prefix="podnet-bench-instr-") as tmp:
        logs_dir = Path(tmp)
        with (logs_dir / "agent.stderr").open("a") as stderr:
            logs.configure("bench-instr", component="agent", node="bench", logs_dir=logs_dir,
                           level="info", stderr=stderr)
            run(_child_main(args))
    import agents.netstack
    if not str(agents.netstack.__file__).startswith(tree + os.sep):
        raise RuntimeError(f"agents.netstack imported from {agents.netstack.__file__}")


# -------------------------------------------------------------------------------- the parent

@dataclass(frozen=True)
class Sizes:
    same: int
    cross: int
    conns: int

    def __str__(self) -> str:
        return f"same-node {self.same} RR, cross-node {self.cross} RR, {self.conns} conns"

    def argv(self) -> list[str]:
        return ["--same", str(self.same), "--cross", str(self.cross),
                "--conns", str(self.conns)]


def count(tree: Path, sizes: Sizes) -> int:
    """Instructions of one child run under callgrind on `tree`."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("PYTHONPATH", None)
    cmd = [VALGRIND, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
           str(Path(__file__).resolve()), "--child", str(tree), *sizes.argv()]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
    found = COLLECTED.findall(proc.stderr)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"{shlex.join(cmd)}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return int(found[-1])


def plan(small: Sizes, large: Sizes) -> list[Sizes]:
    """All small first, then each case large alone (in CASES order)."""
    return [small,
            Sizes(large.same, small.cross, small.conns),
            Sizes(small.same, large.cross, small.conns),
            Sizes(small.same, small.cross, large.conns)]


def per_op(irs: Sequence[int], small: Sizes, large: Sizes) -> list[float]:
    deltas = (large.same - small.same, large.cross - small.cross, large.conns - small.conns)
    return [(ir - irs[0]) / d for ir, d in zip(irs[1:], deltas, strict=True)]


def measure_all(trees: dict[str, Path], small: Sizes, large: Sizes,
                jobs: int) -> dict[str, list[float]]:
    """Per-operation instructions for every tree and case; the runs spread over `jobs`."""
    runs = [(label, sizes) for label in trees for sizes in plan(small, large)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lambda run: count(trees[run[0]], run[1]), runs))
    out: dict[str, list[float]] = {}
    for label in trees:
        irs = [ir for (lab, _), ir in zip(runs, results, strict=True) if lab == label]
        out[label] = per_op(irs, small, large)
    return out


def table(rows: Iterable[tuple[str, float, float]]) -> str:
    lines = [f"  {'case':<12} {'baseline instr/op':>18} {'now instr/op':>14} "
             f"{'ratio':>7}  verdict"]
    for case, base, now in rows:
        ratio = base / now
        verdict = "ok" if ratio >= TARGET_RATIO else f"SLOWER by {now / base - 1:.1%}"
        lines.append(f"  {case:<12} {base:>18,.0f} {now:>14,.0f} {ratio:>6.3f}x  {verdict}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE,
                        help=f"git ref of the 'baseline' tree (default {DEFAULT_BASELINE})")
    parser.add_argument("--now", default=None,
                        help="git ref of the 'now' tree (default: this working tree)")
    parser.add_argument("--rr", type=int, default=2000,
                        help="round trips between the small and large runs, per RR case")
    parser.add_argument("--conns", type=int, default=200,
                        help="connections between the small and large runs")
    parser.add_argument("--small", type=int, default=100,
                        help="round trips (and a tenth as many connections) in a small run")
    parser.add_argument("--jobs", type=int, default=2, help="callgrind runs at once")
    parser.add_argument("--child", metavar="TREE", dest="tree", default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--same", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cross", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tree is not None:
        child(args)
        return

    # Sibling import, as bench/dual_stack.py does (this directory is sys.path[0]); only the
    # parent needs it, the child must import nothing from this checkout before its tree.
    from faults import extract

    small = Sizes(args.small, args.small, max(1, args.small // 10))
    large = Sizes(args.small + args.rr, args.small + args.rr, small.conns + args.conns)
    command = shlex.join([".venv/bin/python", "bench/instructions.py", "--baseline",
                          args.baseline, *(["--now", args.now] if args.now else []),
                          "--rr", str(args.rr), "--conns", str(args.conns),
                          "--small", str(args.small), "--jobs", str(args.jobs)])
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="podnet-bench-instr-") as tmp:
        trees: dict[str, Path] = {"baseline": Path(tmp) / "baseline"}
        trees["baseline"].mkdir()
        base_commit = extract(args.baseline, trees["baseline"])
        if args.now:
            trees["now"] = Path(tmp) / "now"
            trees["now"].mkdir()
            now_desc = extract(args.now, trees["now"])[:12]
        else:
            trees["now"] = ROOT
            now_desc = "working tree " + str(ROOT)
        print(f"callgrind instructions per operation (PYTHONHASHSEED=0, 64-byte messages, "
              f"logging at info)\n  baseline: {args.baseline} = {base_commit[:12]}\n"
              f"  now:      {now_desc}\n  small run: {small}\n  large run: {large} (one case "
              f"at a time)", flush=True)
        figures = measure_all(trees, small, large, args.jobs)
    print(table(zip(CASES, figures["baseline"], figures["now"], strict=True)))
    print(f"  (ratio = baseline/now instructions per op; target >= {TARGET_RATIO}x; "
          f"{time.monotonic() - started:.0f} s)")
    print(f"  command: {command}")


if __name__ == "__main__":
    main()
