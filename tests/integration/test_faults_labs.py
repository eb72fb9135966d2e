"""examples/faults/README.md, lab by lab, with the real kubectl and podnet CLI: each lab's file
applied unchanged, and what the README says to look for, on one 3-node cluster.

Timing words in the README are checked only where the configuration fixes them: a round trip
across a 100 ms each-way delay cannot take less than 0.2 s. Every change is waited for by
polling; nothing asserts how long a change took to arrive.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import PODNET, TESTS, RunningCluster, start_cluster, stop_cluster, wait_for

pytestmark = pytest.mark.kubectl

LABS = Path(__file__).resolve().parents[2] / "examples" / "faults"
POLL_S = 30.0
DELAY_RTT_S = 0.2       # slow-node.yaml: delayMs 100, direction both -> 2 x 100 ms a round trip


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("faults-labs"), 3)
    try:
        kubectl(cluster, "apply", "-f", str(LABS / "pods.yaml"))
        kubectl(cluster, "wait", "--for=condition=Ready", "pod", "--all", "--timeout=60s")
        yield cluster
    finally:
        stop_cluster(cluster)


def kubectl(cluster: RunningCluster, *args: str) -> str:
    result = cluster.kubectl(*args)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return str(result.stdout)


def podnet(cluster: RunningCluster, *args: str) -> str:
    """The podnet CLI as the README types it (the cluster found through PODNET_STATE_DIR)."""
    env = dict(os.environ, PODNET_STATE_DIR=str(cluster.state_dir), PYTHONPATH=str(TESTS))
    result = subprocess.run([*PODNET, *args], capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == 0, f"podnet {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


def ip(cluster: RunningCluster, pod: str) -> str:
    return kubectl(cluster, "get", "pod", pod, "-o", "jsonpath={.status.podIP}")


def curl_time(cluster: RunningCluster, pod: str) -> float:
    out = kubectl(cluster, "exec", "client", "--", "curl", "-s", "-o", "/dev/null", "-w",
                  "%{time_total}\n", f"http://{ip(cluster, pod)}:8080/")
    return float(out)


def curl_exit(cluster: RunningCluster, pod: str) -> int:
    result = cluster.kubectl("exec", "client", "--", "curl", "-s", "-m", "5",
                             f"http://{ip(cluster, pod)}:8080/")
    return result.returncode


def events(cluster: RunningCluster, pattern: str) -> list[dict[str, Any]]:
    out = podnet(cluster, "logs", "--event", pattern, "-o", "json")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_slow_node(lab: RunningCluster) -> None:
    kubectl(lab, "apply", "-f", str(LABS / "slow-node.yaml"))
    assert "slow-node" in kubectl(lab, "get", "networkfaults")
    # Across the slow link: at least one round trip, 2 x 100 ms, whatever else happens.
    wait_for(lambda: curl_time(lab, "web-2") >= DELAY_RTT_S, POLL_S, interval_s=0.2,
             what="curl to web-2 (node-2) slowed by the fault")
    # On the client's own node: untouched (a delay there would add the same 0.2 s).
    assert curl_time(lab, "web-1") < DELAY_RTT_S
    delayed = [e for e in events(lab, "fault.*")
               if e.get("event") == "fault.delayed" and "slow-node" in json.dumps(e)]
    assert delayed, "no fault.delayed event naming slow-node"
    explained = podnet(lab, "explain", "default/client", "default/web-2", "--port", "8080")
    assert "slow-node" in explained, explained
    kubectl(lab, "delete", "-f", str(LABS / "slow-node.yaml"))
    wait_for(lambda: curl_time(lab, "web-2") < DELAY_RTT_S, POLL_S, interval_s=0.2,
             what="web-2 fast again after the delete")


def dig(lab: RunningCluster, *opts: str) -> str:
    result = lab.kubectl("exec", "client", "--", "dig", *opts,
                         "kubernetes.default.svc.cluster.local")
    return str(result.stdout)


def test_lossy_dns(lab: RunningCluster) -> None:
    kubectl(lab, "apply", "-f", str(LABS / "lossy-dns.yaml"))
    retry = ";; communications error to 10.96.0.10#53: timed out"

    # What the README says dig shows: a lost query (one line per try), then the answer from
    # a later try. With 40% loss a run has that shape with probability 0.4 x (1 - 0.4^5).
    def retried_then_answered() -> str | None:
        out = dig(lab, "+time=1", "+tries=6")
        return out if retry in out and "status: NOERROR" in out else None
    out = wait_for(retried_then_answered, POLL_S, interval_s=0.1,
                   what="dig retrying, then answered")
    kubernetes_ip = kubectl(lab, "get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}")
    assert kubernetes_ip in out
    dropped = [e for e in events(lab, "fault.dropped") if "lossy-dns" in json.dumps(e)]
    assert dropped, "no fault.dropped event naming lossy-dns"

    kubectl(lab, "delete", "-f", str(LABS / "lossy-dns.yaml"))
    assert "lossy-dns" not in kubectl(lab, "get", "networkfaults")

    # Without the fault a single try is enough, time after time (under the fault, ten in a
    # row without a loss would have probability 0.6^10 < 1%).
    def ten_clean() -> bool:
        return all("status: NOERROR" in dig(lab, "+time=1", "+tries=1") for _ in range(10))
    wait_for(ten_clean, POLL_S, interval_s=0.2, what="ten lookups without a retry")


def route_state(lab: RunningCluster, seen_by: str, node: str) -> str:
    views = json.loads(podnet(lab, "routes", "--node", seen_by, "-o", "json"))
    states = [r["state"] for r in views.get(seen_by, []) if r.get("node") == node]
    return states[0] if states else "absent"


def test_partitioned_node(lab: RunningCluster) -> None:
    assert route_state(lab, "node-1", "node-3") == "alive"
    assert curl_exit(lab, "web-3") == 0
    kubectl(lab, "apply", "-f", str(LABS / "partitioned-node.yaml"))
    wait_for(lambda: route_state(lab, "node-1", "node-3") == "dead", POLL_S, interval_s=0.2,
             what="node-1 seeing node-3 dead")
    # The way there, as the logs tell it: suspect, then dead.
    states = [e.get("state") for e in events(lab, "gossip.member")
              if e.get("node") == "node-1" and e.get("member") == "node-3"]
    assert "suspect" in states and "dead" in states[states.index("suspect"):], states
    # node-3 sees the others the same way.
    wait_for(lambda: route_state(lab, "node-3", "node-1") == "dead", POLL_S, interval_s=0.2,
             what="node-3 seeing node-1 dead")
    # Its route gone, a connect to web-3 fails at once: curl's "Couldn't connect" (7), not
    # its timeout (28). web-2, on a reachable node, still answers.
    assert curl_exit(lab, "web-3") == 7
    assert curl_exit(lab, "web-2") == 0

    podnet(lab, "fault", "del", "--all")
    wait_for(lambda: route_state(lab, "node-1", "node-3") == "alive", POLL_S, interval_s=0.2,
             what="node-3 alive again for node-1")
    wait_for(lambda: curl_exit(lab, "web-3") == 0, POLL_S, interval_s=0.2,
             what="web-3 answering after the heal")
