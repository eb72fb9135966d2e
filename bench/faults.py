"""What the network-fault machinery costs a data path no fault touches, and how exact a delay is.

Two real clusters side by side in one run (`podnet up --detach`, 2 nodes each: a control
plane and 2 agents as separate processes):

- "before": the tree at `--baseline` (default: the commit before agents/faults.py came in),
  extracted with `git archive` and put first on PYTHONPATH, so its processes run that code;
- "now": this working tree.

In each, a client pod on node-1 and a server pod on node-2 run `py:podapps.faults_probe`
(tests/podapps/), which times every 64-byte request/response over one TCP connection itself,
inside the pod (exec and the API are not in the figure). Alternating run by run (the order
rotates so machine drift hits every mode alike):

- "before":       no fault machinery at all;
- "no fault":     this tree, no NetworkFault in the cluster;
- "elsewhere":    this tree, one NetworkFault (100 ms delay) between two other pods x -> y, so
                  the machinery is live but this path matches nothing.

Figures, medians over `--runs`: the p50 round trip of each run and the request/response rate
it makes (1 / p50), which the ratios compare; and the mean rate (n / sum of the times), shown
for information only: on this shared 2-core machine other processes preempt the pods, and a
few stalls of milliseconds move the mean by tens of percent run to run while the median
stays put. Target (issue 10): "no fault" >= 0.97x "before"; "elsewhere" is reported beside it.

Then a configured delay's accuracy, in "now": a fault client -> server (direction to) of
`--delay-ms`; (median RTT with it - median RTT without) / delay, over `--delay-n` requests.

    .venv/bin/python bench/faults.py [--requests 2000] [--runs 7] [--delay-ms 20] [--delay-n 100]
                                     [--baseline REF]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness import RunningCluster, start_cluster, stop_cluster, wait_for  # noqa: E402

from podnet.eventloop import loop_name  # noqa: E402
from podnet.execclient import exec_in_pod  # noqa: E402

TARGET_RATIO = 0.97
FAULTS = "/apis/podnet.dev/v1alpha1/networkfaults"
IMAGE = "py:podapps.faults_probe:serve"
PODS = {"client": "node-1", "server": "node-2", "x": "node-1", "y": "node-2"}
ELSEWHERE_MS = 100


def default_baseline() -> str:
    """The parent of the commit that added agents/faults.py (the fault enforcement)."""
    out = subprocess.run(["git", "log", "--format=%H", "--diff-filter=A", "--",
                          "agents/faults.py"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    return f"{out[-1]}^" if out else "HEAD"


def extract(ref: str, into: Path) -> str:
    """`git archive REF` unpacked into `into`; the full commit id."""
    commit = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT,
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return commit


@contextlib.contextmanager
def pythonpath(*paths: str) -> Iterator[None]:
    """PYTHONPATH for the processes `podnet up` starts (they inherit it): first entries win
    over the editable install, whose finder comes after the path."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def ask(cluster: RunningCluster, pod: str, path: str) -> str:
    """GET the probe's loopback control server in `pod`, through exec + curl."""
    out, err = io.BytesIO(), io.BytesIO()
    code = asyncio.run(exec_in_pod(
        cluster.info["api"], cluster.token, "default", pod, None,
        ["curl", "-s", "-m", "120", f"http://127.0.0.1:8080{path}"], stdin=False,
        stdout=out, stderr=err, ssl_context=cluster.ssl))
    if code != 0:
        raise RuntimeError(f"{pod} {path}: exit {code}: {err.getvalue().decode()}")
    return out.getvalue().decode()


def rtts(cluster: RunningCluster, ips: dict[str, str], n: int,
         src: str = "client", dst: str = "server") -> list[float]:
    """n per-request round trips in ms, timed inside the client pod."""
    values = [float(v) for v in ask(cluster, src, f"/rr?host={ips[dst]}&n={n}").split()]
    if len(values) != n:
        raise RuntimeError(f"expected {n} timings, got {len(values)}")
    return values


def start(state: Path, *paths: str) -> tuple[RunningCluster, dict[str, str]]:
    with pythonpath(*paths):
        cluster = start_cluster(state, 2)
    for name, node in PODS.items():
        code, body = cluster.api("POST", "/api/v1/namespaces/default/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "probe", "image": IMAGE}]}})
        if code != 201:
            raise RuntimeError(f"pod {name}: {code} {body}")
    ips = {name: cluster.running_pod(name, timeout_s=60)["status"]["podIP"] for name in PODS}
    rtts(cluster, ips, 10)          # the tunnels dialed, the connection path warm
    return cluster, ips


def fault(name: str, src: str, dst: str, delay_ms: float) -> dict[str, Any]:
    return {"apiVersion": "podnet.dev/v1alpha1", "kind": "NetworkFault",
            "metadata": {"name": name},
            "spec": {"from": {"pod": f"default/{src}"}, "to": {"pod": f"default/{dst}"},
                     "direction": "to", "delayMs": delay_ms}}


def set_fault(cluster: RunningCluster, ips: dict[str, str], body: dict[str, Any] | None,
              name: str, src: str, dst: str, delay_ms: float, baseline_ms: float) -> None:
    """Create (body) or delete the fault `name` and wait until src -> dst shows it (or not)."""
    code, answer = (cluster.api("POST", FAULTS, body) if body is not None
                    else cluster.api("DELETE", f"{FAULTS}/{name}"))
    if code not in (200, 201):
        raise RuntimeError(f"fault {name}: {code} {answer}")
    want_delayed = body is not None

    def seen() -> bool:
        delayed = statistics.median(rtts(cluster, ips, 3, src, dst)) > baseline_ms + delay_ms / 2
        return delayed == want_delayed
    wait_for(seen, 30, interval_s=0.1, what=f"fault {name} {'on' if want_delayed else 'off'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--delay-n", type=int, default=100)
    parser.add_argument("--baseline", default=None, metavar="REF")
    args = parser.parse_args()
    ref = args.baseline or default_baseline()
    tests = str(ROOT / "tests")
    with tempfile.TemporaryDirectory(prefix="podnet-bench-faults-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        commit = extract(ref, src)
        clusters: dict[str, tuple[RunningCluster, dict[str, str]]] = {}
        try:
            clusters["before"] = start(Path(tmp) / "before", str(src), tests)
            clusters["now"] = start(Path(tmp) / "now", str(ROOT), tests)
            now, now_ips = clusters["now"]
            base_xy = statistics.median(rtts(now, now_ips, 20, "x", "y"))
            rates: dict[str, list[float]] = {}
            p50s: dict[str, list[float]] = {}
            modes = ["before", "no fault", "elsewhere"]
            elsewhere = False
            for run in range(args.runs):
                order = modes[run % 3:] + modes[:run % 3]
                for mode in order:
                    cluster, ips = clusters["before" if mode == "before" else "now"]
                    if mode != "before" and (mode == "elsewhere") != elsewhere:
                        elsewhere = mode == "elsewhere"
                        set_fault(now, now_ips,
                                  fault("elsewhere", "x", "y", ELSEWHERE_MS) if elsewhere
                                  else None, "elsewhere", "x", "y", ELSEWHERE_MS, base_xy)
                    times = rtts(cluster, ips, args.requests)
                    rates.setdefault(mode, []).append(len(times) / (sum(times) / 1000))
                    p50s.setdefault(mode, []).append(statistics.median(times))
            if elsewhere:
                set_fault(now, now_ips, None, "elsewhere", "x", "y", ELSEWHERE_MS, base_xy)

            # A configured delay's accuracy, in "now".
            without = statistics.median(rtts(now, now_ips, args.delay_n))
            set_fault(now, now_ips, fault("delay", "client", "server", args.delay_ms),
                      "delay", "client", "server", args.delay_ms, without)
            delayed = statistics.median(rtts(now, now_ips, args.delay_n))
            set_fault(now, now_ips, None, "delay", "client", "server", args.delay_ms, without)
            after = statistics.median(rtts(now, now_ips, args.delay_n))
        finally:
            for cluster, _ in clusters.values():
                stop_cluster(cluster)
    print(f"== Network faults: cross-node 64-byte request/response over 1 connection, timed in "
          f"the client pod ({args.requests} requests a run, median of {args.runs} runs, "
          f"alternating, real processes, {loop_name()})")
    print(f"  before = {ref} ({commit[:10]}), no fault / elsewhere = this tree")
    p50 = {m: statistics.median(v) for m, v in p50s.items()}
    failed = False
    for mode in modes:
        ratio = p50["before"] / p50[mode]
        verdict = ""
        if mode == "no fault":
            failed |= ratio < TARGET_RATIO
            verdict = " ok" if ratio >= TARGET_RATIO else " BELOW TARGET"
        print(f"  {mode:<10} p50 {p50[mode] * 1000:5.0f} us = {1000 / p50[mode]:>6,.0f} rt/s  "
              f"x{ratio:.3f} of before{verdict}   mean {statistics.median(rates[mode]):>6,.0f}"
              f" rt/s (runs: {', '.join(f'{r:,.0f}' for r in rates[mode])})")
    accuracy = (delayed - without) / args.delay_ms
    print(f"  delay {args.delay_ms:g} ms (client -> server): median RTT {without:.3f} -> "
          f"{delayed:.3f} ms, increase / configured = {accuracy:.3f}; after delete "
          f"{after:.3f} ms (n={args.delay_n})")
    print(f"  command: .venv/bin/python bench/faults.py --requests {args.requests} "
          f"--runs {args.runs} --delay-ms {args.delay_ms:g} --delay-n {args.delay_n} "
          f"--baseline {ref}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
