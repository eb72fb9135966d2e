"""How fast a NetworkPolicy change takes effect in every agent (the issue's "within 1 s").

    .venv/bin/python bench/netpol_propagation.py [--runs 10]

A 2-node `podnet up --policy-reject` cluster (denied connects are refused at once, so a probe
answers without waiting for a timeout), a server pod on node-1, a client pod on node-2. Each
run applies a default-deny-ingress policy with the real `kubectl apply`, then:

1. reads when each agent logged `policy.changed` for it, relative to the moment `kubectl
   apply` returned (negative: the agents had it before kubectl had finished);
2. probes from the client (through its loopback probe server, one `exec`) until a connect to
   the server is refused: the time until that first refused connect, and how many probes it
   took (1 means the first connect after `kubectl apply` returned was already denied).

The policy is then deleted and the client probed until it connects again.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import json
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from harness import RunningCluster, start_cluster, stop_cluster  # noqa: E402

from podnet.execclient import exec_in_pod  # noqa: E402

PODS = textwrap.dedent("""\
    apiVersion: v1
    kind: Pod
    metadata: {name: server, labels: {app: server}}
    spec: {nodeName: node-1, containers: [{name: p, image: "py:podapps.netpol_probe:serve"}]}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: client}
    spec: {nodeName: node-2, containers: [{name: p, image: "py:podapps.netpol_probe:serve"}]}
    """)


async def probe(cluster: RunningCluster, ip: str) -> str:
    out = io.BytesIO()
    await exec_in_pod(cluster.info["api"], cluster.token, "default", "client", None,
                      ["curl", "-s", f"http://127.0.0.1:8080/probe?to={ip}&ports=80"
                                     "&protocols=tcp"],
                      stdin=False, stdout=out, stderr=io.BytesIO(), ssl_context=cluster.ssl)
    return out.getvalue().decode().split(" ", 3)[-1].strip()


def changed_at(cluster: RunningCluster, name: str) -> dict[str, float]:
    seen: dict[str, float] = {}
    for path in (cluster.state_dir / "logs").glob("agent-*.jsonl"):
        for line in path.read_text().splitlines():
            if '"policy.changed"' in line and f'"default/{name}"' in line:
                event = json.loads(line)
                ts = datetime.datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
                seen.setdefault(event["node"], ts.timestamp())
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="podnet-netpol-bench-"))
    cluster = start_cluster(state, 2, "--policy-reject")
    try:
        cluster.kubectl("apply", "-f", "-", input=PODS, check=True)
        ip = cluster.running_pod("server", timeout_s=60)["status"]["podIP"]
        cluster.running_pod("client", timeout_s=60)
        agent_ms: list[float] = []
        denied_ms: list[float] = []
        probes_needed: list[int] = []
        for run in range(args.runs):
            name = f"deny-{run}"
            cluster.kubectl("apply", "-f", "-", check=True, input=textwrap.dedent(f"""\
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {{name: {name}}}
                spec: {{podSelector: {{}}, policyTypes: [Ingress]}}
                """))
            returned = time.time()
            probes = 0
            while True:
                probes += 1
                if asyncio.run(probe(cluster, ip)) == "refused":
                    denied = time.time()
                    break
            seen = changed_at(cluster, name)
            lag = [(t - returned) * 1000 for t in seen.values()]
            agent_ms.append(max(lag))
            denied_ms.append((denied - returned) * 1000)
            probes_needed.append(probes)
            print(f"run {run}: agents had it at {', '.join(f'{v:+.1f}' for v in lag)} ms; "
                  f"first refused connect {denied_ms[-1]:.1f} ms after kubectl returned "
                  f"(probe #{probes})")
            cluster.kubectl("delete", "networkpolicy", name, check=True)
            while asyncio.run(probe(cluster, ip)) == "refused":
                pass
        print(f"slowest agent: {max(agent_ms):+.1f} ms (median {statistics.median(agent_ms):+.1f})"
              f"; first refused connect: max {max(denied_ms):.1f} ms, probes needed: "
              f"max {max(probes_needed)}")
    finally:
        stop_cluster(cluster)
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
