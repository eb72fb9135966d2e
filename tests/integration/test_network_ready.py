"""A Ready node is a reachable node: `podnet up` returns, and a node reports Ready, only once
its route table holds every other node's podCIDR and theirs hold its (kubelet's NetworkReady,
the NetworkUnavailable condition).

The regression this guards against: right after `podnet up --detach`, a pod on node-1 curling
a pod on node-2 got "No route to host" because gossip had not converged yet. Each round here
starts a fresh cluster, so every round exercises start-up, and curls the moment both pods are
Ready: no sleeps, no retries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from harness import CROSS_NODE_PODS, RunningCluster, start_cluster, stop_cluster

ROUNDS = 20


def _conditions(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in node.get("status", {}).get("conditions", [])}


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_cross_node_curl_works_as_soon_as_up_returns(tmp_path: Path, round_: int) -> None:
    cluster = start_cluster(tmp_path / "state", 3)
    try:
        _check_round(cluster, tmp_path)
    finally:
        stop_cluster(cluster)


def _check_round(cluster: RunningCluster, tmp_path: Path) -> None:
    # Every node says its network is available, and why, the moment `up` has returned.
    code, nodes = cluster.api("GET", "/api/v1/nodes")
    assert code == 200
    for node in nodes["items"]:
        conds = _conditions(node)
        assert conds["Ready"]["status"] == "True", node["metadata"]["name"]
        assert conds["NetworkUnavailable"]["status"] == "False", conds["NetworkUnavailable"]
        assert conds["NetworkUnavailable"]["reason"] == "RouteCreated"
    manifest = tmp_path / "pods.yaml"
    manifest.write_text(CROSS_NODE_PODS)
    applied = cluster.kubectl("apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    echo = cluster.running_pod("echo-2")
    cluster.running_pod("client")
    result = cluster.podnet("exec", "client", "--", "curl", "-sS", "-m", "5",
                            f"http://{echo['status']['podIP']}:8080/")
    assert result.returncode == 0, (result.stdout, result.stderr)
    reply = json.loads(result.stdout)
    assert reply["pod"] == "echo-2"
    client = cluster.pod("client")
    assert client is not None
    assert reply["client"].split(":")[0] == client["status"]["podIP"]
