"""ClusterIP request/response rate against the direct cross-node pod-IP rate, same run.

A real cluster (`podnet up --detach`: control plane and 2 agents as separate processes). A
server pod on node-2 (64-byte echo) behind a Service; a client pod on node-1 measures 64-byte
request/response rates to the server's pod IP (node-1 -> node-2 tunnel) and to the Service's
ClusterIP (node-1 -> control plane proxy -> node-2: one extra hop), alternating run by run,
and prints them to its log, which this script reads through the API. Medians over `--runs`.
Target: ClusterIP >= 0.5x direct.

    .venv/bin/python bench/clusterip.py [--seconds 3] [--runs 3] [--conns 1,16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from harness import RunningCluster, start_cluster, stop_cluster, wait_for  # noqa: E402

TARGET = 0.5


def pod(name: str, node: str, image: str, args: list[str] | None = None,
        labels: dict[str, str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": image}
    if args:
        container["args"] = args
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"nodeName": node, "containers": [container]}}


def create(cluster: RunningCluster, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    code, body = cluster.api("POST", f"/api/v1/namespaces/default/{plural}", obj)
    assert code == 201, body
    return dict(body)


def client_log(cluster: RunningCluster) -> str:
    req = urllib.request.Request(cluster.info["api"] + "/api/v1/namespaces/default/pods/"
                                 "client/log", headers={"Authorization": f"Bearer {cluster.token}"})
    try:
        with urllib.request.urlopen(req, timeout=10, context=cluster.ssl) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--conns", default="1,16")
    args = parser.parse_args()
    conns = [int(c) for c in args.conns.split(",")]
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE / "pods"), os.environ.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryDirectory(prefix="podnet-bench-") as tmp:
        cluster = start_cluster(Path(tmp), 2)
        try:
            create(cluster, "pods", pod("server", "node-2", "py:clusterip_pods:server",
                                        labels={"app": "rr"}))
            svc = create(cluster, "services", {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "rr"},
                "spec": {"selector": {"app": "rr"}, "ports": [{"port": 80, "targetPort": 7000}]}})
            server = cluster.running_pod("server")
            wait_for(lambda: _ready_endpoints(cluster) == 1, 20, what="the Service's endpoint")
            create(cluster, "pods", pod("client", "node-1", "py:clusterip_pods:client", [
                server["status"]["podIP"], svc["spec"]["clusterIP"], str(args.seconds),
                str(args.runs), *map(str, conns)]))
            cluster.running_pod("client")
            budget = 30 + len(conns) * args.runs * 2 * (args.seconds + 1)
            started = time.monotonic()
            log = wait_for(lambda: (text := client_log(cluster)).endswith("done\n") and text,
                           budget, interval_s=0.5, what="the client's measurements")
            print(f"== ClusterIP vs direct pod IP, cross-node, 64-byte request/response "
                  f"(median of {args.runs} x {args.seconds:g}s, real processes, "
                  f"{time.monotonic() - started:.0f}s)")
            rows = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
            failed = False
            for n in conns:
                direct = statistics.median(r["rate"] for r in rows
                                           if r["conns"] == n and r["path"] == "direct")
                via = statistics.median(r["rate"] for r in rows
                                        if r["conns"] == n and r["path"] == "clusterip")
                ratio = via / direct if direct else 0.0
                failed |= ratio < TARGET
                print(f"  rr {n:>2} conn{'s' if n > 1 else ' '}  clusterip {via:>9,.0f}  "
                      f"direct {direct:>9,.0f} rt/s  x{ratio:.2f} "
                      f"{'ok' if ratio >= TARGET else 'BELOW TARGET'}")
            return 1 if failed else 0
        finally:
            stop_cluster(cluster)


def _ready_endpoints(cluster: RunningCluster) -> int:
    code, body = cluster.api("GET", "/apis/discovery.k8s.io/v1/namespaces/default/"
                                    "endpointslices?labelSelector=kubernetes.io/service-name=rr")
    if code != 200:
        return 0
    return sum(1 for s in body["items"] for ep in s.get("endpoints") or []
               if (ep.get("conditions") or {}).get("ready") is not False)


if __name__ == "__main__":
    sys.exit(main())
