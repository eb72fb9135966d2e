"""Cross-node throughput with logging on (info) vs logging at warning, in the same run.

Two pairs of bench/tunnel_node.py processes (the same ones bench/cross_node.py uses), both
logging as agents do (JSON file + stderr file, podnet.logs): one pair at info, where every flow
logs its route, delivery and close, one pair at warning. Runs alternate between the pairs so
machine noise hits both alike; each figure is the median over `--runs`. The connect-heavy case
(one fresh connection per round trip) is where per-flow logging costs most; bulk and
long-lived request/response show that nothing is logged per byte or per message.
Target: every ratio info/warning >= 0.9.

    .venv/bin/python bench/logging_overhead.py [--seconds 2] [--runs 3] [--no-pin]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
from pathlib import Path

from cross_node import Node, cpus

TARGET = 0.9
CASES = [("rr 1 conn", "rr", 1, 7000, "rate", "rt/s"),
         ("rr 64 conns", "rr", 64, 7000, "rate", "rt/s"),
         ("bulk 64 KiB writes", "bulk", 1, 7001, "mbps", "MB/s")]


def start_pair(level: str, logs_dir: Path, pin: bool) -> tuple[Node, Node]:
    secret = secrets.token_hex(32)
    cpu_a, cpu_b = cpus(pin)
    extra = ("--logs-dir", str(logs_dir / level), "--log-level", level)
    a = Node("bench-a", "10.244.1.0/24", secret, "uvloop", cpu_a, extra)
    try:
        b = Node("bench-b", "10.244.2.0/24", secret, "uvloop", cpu_b, extra)
    except BaseException:
        a.stop()
        raise
    a.call("POST", "/bench/routes", [{"cidr": b.cidr, "node": "bench-b",
                                      "address": b.info["address"]}])
    b.call("POST", "/bench/routes", [{"cidr": a.cidr, "node": "bench-a",
                                      "address": a.info["address"]}])
    return a, b


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podnet-logbench-") as tmp:
        pairs = {level: start_pair(level, Path(tmp), args.pin) for level in ("info", "warning")}
        try:
            ok = True
            print(f"{'case':<22}{'info':>12}{'warning':>12}{'ratio':>8}")
            for label, kind, conns, port, metric, unit in CASES:
                got: dict[str, list[float]] = {"info": [], "warning": []}
                for _ in range(args.runs):
                    for level, (a, b) in pairs.items():
                        result = a.call("GET", f"/bench/run?kind={kind}&path=podnet"
                                               f"&host={b.info['server_pod']}&port={port}"
                                               f"&conns={conns}&seconds={args.seconds}")
                        got[level].append(result[metric])
                info, warning = (statistics.median(got[k]) for k in ("info", "warning"))
                ratio = info / warning if warning else 0.0
                ok = ok and ratio >= TARGET
                print(f"{label:<22}{info:>10.1f} {unit:<5}{warning:>8.1f}{ratio:>8.2f}")
            events = sum(len(f.read_text().splitlines())
                         for f in Path(tmp, "info").glob("*.jsonl"))
            print(f"info-level events logged: {events}; target ratio >= {TARGET}: "
                  f"{'met' if ok else 'NOT met'}")
            return 0 if ok else 1
        finally:
            for a, b in pairs.values():
                a.stop()
                b.stop()


if __name__ == "__main__":
    sys.exit(main())
