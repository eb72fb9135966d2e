"""A node that comes back: its agent re-asserts its pods' status.

While node-2's agent is paused (SIGSTOP, `podnet node pause`), the control plane's node
lifecycle controller marks the Node NotReady and its pods not Ready. Once the agent runs again
(`podnet node resume`) it heartbeats, sees in its pod watch that the API's status of its pods
is not what it holds, and writes its own again, as kubelet's status manager does: the pods are
Ready again without anything else happening to them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from harness import RunningCluster, cluster_at, wait_for

PODS = """\
apiVersion: v1
kind: Pod
metadata: {name: on-node-2}
spec:
  nodeName: node-2
  containers: [{name: echo, image: podnet/echo, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: also-on-node-2}
spec:
  nodeName: node-2
  containers: [{name: echo, image: podnet/echo, ports: [{containerPort: 8080}]}]
"""
NAMES = ("on-node-2", "also-on-node-2")


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def node(cluster: RunningCluster, name: str) -> dict[str, Any] | None:
    code, body = cluster.api("GET", f"/api/v1/nodes/{name}")
    return body if code == 200 else None


def pods_ready(cluster: RunningCluster, want: str) -> dict[str, dict[str, Any]] | None:
    """The pods' Ready conditions once every one of them has status `want`."""
    conds = {name: condition(cluster.pod(name), "Ready") for name in NAMES}
    return conds if all(c.get("status") == want for c in conds.values()) else None


def resynced(cluster: RunningCluster) -> set[str]:
    """The pods whose status node-2's agent wrote again because the API's differed."""
    path = cluster.state_dir / "logs" / "agent-node-2.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {str(r.get("pod")) for r in records if r.get("event") == "pod.status_resync"}


def test_a_recovered_node_makes_its_pods_ready_again(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Heartbeats well inside a short grace period; no eviction while the node is away, so
    # the very same pods must come back.
    monkeypatch.setenv("PODNET_NODE_MONITOR_GRACE_S", "2")
    monkeypatch.setenv("PODNET_HEARTBEAT_INTERVAL_S", "0.5")
    monkeypatch.setenv("PODNET_POD_EVICTION_TIMEOUT_S", "600")
    with cluster_at(tmp_path / "recovery", 2) as c:
        applied = c.kubectl("apply", "-f", "-", input=PODS)
        assert applied.returncode == 0, applied.stderr
        for name in NAMES:
            c.running_pod(name, timeout_s=30)
        uids = {name: (c.pod(name) or {})["metadata"]["uid"] for name in NAMES}
        # The watch brought the agent its own writes: none of them made it write again.
        assert resynced(c) == set()

        paused = c.podnet("node", "pause", "node-2")
        assert paused.returncode == 0, paused.stderr
        try:
            lost = wait_for(lambda: pods_ready(c, "False"), 30,
                            what="node-2's pods marked not Ready by the node controller")
            assert {cond.get("reason") for cond in lost.values()} == {"NodeNotReady"}
            assert condition(node(c, "node-2"), "Ready").get("status") != "True"
        finally:
            resumed = c.podnet("node", "resume", "node-2")
        assert resumed.returncode == 0, resumed.stderr

        wait_for(lambda: condition(node(c, "node-2"), "Ready").get("status") == "True", 30,
                 what="node-2 Ready again")
        back = wait_for(lambda: pods_ready(c, "True"), 30,
                        what="node-2's pods Ready again, re-posted by its agent")
        assert all(cond.get("reason") != "NodeNotReady" for cond in back.values())
        assert resynced(c) == set(NAMES)
        for name in NAMES:
            pod = c.pod(name)
            assert pod is not None and pod["metadata"]["uid"] == uids[name]  # not replaced
            assert pod["status"]["phase"] == "Running"
            assert condition(pod, "ContainersReady").get("status") == "True"
