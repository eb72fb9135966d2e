"""Readiness and liveness probes on a real cluster: Ready follows the readiness probe, a
failing liveness probe restarts the container."""

from __future__ import annotations

from typing import Any

from harness import RunningCluster, wait_for


def pod(name: str, **probes: Any) -> dict[str, Any]:
    container = {"name": "web", "image": "podnet/echo",
                 "ports": [{"name": "http", "containerPort": 8080}], **probes}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [container]}}


def ready(cluster: RunningCluster, name: str) -> str | None:
    for cond in ((cluster.pod(name) or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status"))
    return None


def test_readiness_probe_gates_ready(cluster: RunningCluster) -> None:
    good = pod("probed-good", readinessProbe={"httpGet": {"path": "/", "port": "http"},
                                              "periodSeconds": 1})
    bad = pod("probed-bad", readinessProbe={"tcpSocket": {"port": 9999}, "periodSeconds": 1,
                                            "failureThreshold": 1})
    for body in (good, bad):
        assert cluster.api("POST", "/api/v1/namespaces/default/pods", body)[0] == 201
    wait_for(lambda: ready(cluster, "probed-good") == "True", 20, what="good probe Ready")
    wait_for(lambda: (cluster.pod("probed-bad") or {}).get("status", {}).get("phase")
             == "Running", 20, what="bad probe pod running")
    assert ready(cluster, "probed-bad") == "False"
    line = next(ln for ln in cluster.kubectl("get", "pods").stdout.splitlines()
                if ln.startswith("probed-bad "))
    assert line.split()[1] == "0/1"


def test_failing_liveness_probe_restarts_the_container(cluster: RunningCluster) -> None:
    body = pod("probed-live", livenessProbe={"tcpSocket": {"port": 9999}, "periodSeconds": 1,
                                             "failureThreshold": 2})
    assert cluster.api("POST", "/api/v1/namespaces/default/pods", body)[0] == 201

    def restarts() -> int:
        statuses = ((cluster.pod("probed-live") or {}).get("status") or {}).get(
            "containerStatuses") or [{}]
        return int(statuses[0].get("restartCount", 0))

    wait_for(lambda: restarts() >= 1, 30, what="a liveness restart")
    described = cluster.kubectl("describe", "pod", "probed-live").stdout
    assert "Liveness probe failed" in described
