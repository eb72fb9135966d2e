"""NetworkFaults through the real kubectl and `podnet fault`, `--duration` expiry, the cluster
seed in the signed cluster-info, and `podnet node pause|resume|stop|start` seen in the routes."""

from __future__ import annotations

import json
import re
import ssl
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness import RunningCluster, start_cluster, stop_cluster, wait_for

from podnet.auth import load_secret
from podnet.pki import verify_cluster_info

FAULTS = "/apis/podnet.dev/v1alpha1/networkfaults"

LAB = """\
apiVersion: podnet.dev/v1alpha1
kind: NetworkFault
metadata: {name: slow-node-2}
spec:
  from: {node: node-1}
  to: {node: node-2}
  delayMs: 100
  jitterMs: 10
  lossPct: 5
---
apiVersion: podnet.dev/v1alpha1
kind: NetworkFault
metadata: {name: lossy-dns}
spec:
  from: {selector: "app=client", namespace: default}
  to: {service: kube-system/kube-dns}
  direction: to
  protocol: udp
  port: 53
  lossPct: 30
  seed: 7
"""

BAD = """\
apiVersion: podnet.dev/v1alpha1
kind: NetworkFault
metadata: {name: slow-node-2}
spec:
  from: {node: node-1, namespace: default}
  to: {node: node-2}
  delayMs: 100
  lossPct: 250
"""


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    running = start_cluster(tmp_path_factory.mktemp("faults"), 2, "--seed", "42")
    try:
        yield running
    finally:
        stop_cluster(running)


def fault(cluster: RunningCluster, name: str) -> dict[str, Any] | None:
    code, body = cluster.api("GET", f"{FAULTS}/{name}")
    return body if code == 200 else None


def test_kubectl_discovers_applies_gets_and_deletes(seeded: RunningCluster) -> None:
    listed = seeded.kubectl("api-resources", "--api-group=podnet.dev", check=True).stdout
    row = next(line.split() for line in listed.splitlines() if "networkfaults" in line)
    assert row == ["networkfaults", "netfault", "podnet.dev/v1alpha1", "false", "NetworkFault"]
    applied = seeded.kubectl("apply", "-f", "-", input=LAB)
    assert applied.returncode == 0, applied.stderr
    assert "networkfault.podnet.dev/slow-node-2 created" in applied.stdout
    table = seeded.kubectl("get", "networkfaults", check=True).stdout.splitlines()
    assert table[0].split() == ["NAME", "FROM", "TO", "EFFECT", "EXPIRES", "AGE"]
    rows = {line.split()[0]: re.split(r"\s{2,}", line.strip()) for line in table[1:]}
    assert rows["slow-node-2"][:5] == ["slow-node-2", "node/node-1", "node/node-2",
                                       "delay=100ms±10ms loss=5%", "<none>"]
    assert rows["lossy-dns"][:5] == ["lossy-dns", "default:app=client",
                                     "svc/kube-system/kube-dns", "loss=30%", "<none>"]
    wide = seeded.kubectl("get", "netfault", "lossy-dns", "-o", "wide", check=True).stdout
    assert wide.splitlines()[1].split()[-3:] == ["to", "udp:53", "7"]
    got = json.loads(seeded.kubectl("get", "networkfault", "slow-node-2", "-o", "json",
                                    check=True).stdout)
    assert got["spec"]["direction"] == "both" and got["spec"]["protocol"] == "all"
    assert "namespace" not in got["metadata"]
    again = seeded.kubectl("apply", "-f", "-", input=LAB, check=True).stdout
    assert "networkfault.podnet.dev/slow-node-2 unchanged" in again
    deleted = seeded.kubectl("delete", "networkfault", "lossy-dns")
    assert deleted.returncode == 0, deleted.stderr
    assert fault(seeded, "lossy-dns") is None


def test_bad_fault_is_refused_naming_the_field(seeded: RunningCluster) -> None:
    before = fault(seeded, "slow-node-2")
    assert before is not None
    refused = seeded.kubectl("apply", "-f", "-", input=BAD)
    assert refused.returncode != 0
    assert "spec.from" in refused.stderr and "spec.lossPct" in refused.stderr, refused.stderr
    code, status = seeded.api("POST", FAULTS, {
        "apiVersion": "podnet.dev/v1alpha1", "kind": "NetworkFault",
        "metadata": {"name": "nope"},
        "spec": {"from": {"pod": "web"}, "to": {"node": "node-2"}, "direction": "sideways",
                 "duration": "30"}})
    assert code == 422
    causes = {c["field"] for c in status["details"]["causes"]}
    assert causes == {"spec.from.pod", "spec.direction", "spec.duration"}
    assert fault(seeded, "slow-node-2") == before     # untouched, same resourceVersion
    assert fault(seeded, "nope") is None


def test_podnet_fault_add_list_del(seeded: RunningCluster) -> None:
    added = seeded.podnet("fault", "add", "web-slow", "--from", "app=client", "--to",
                          "svc/default/web", "--delay-ms", "50", "--loss-pct", "1.5",
                          "--protocol", "tcp", "--port", "80")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "networkfault/web-slow created"
    spec = (fault(seeded, "web-slow") or {})["spec"]
    assert spec == {"from": {"selector": "app=client"}, "to": {"service": "default/web"},
                    "direction": "both", "protocol": "tcp", "port": 80, "delayMs": 50,
                    "lossPct": 1.5}
    assert "web-slow" in seeded.kubectl("get", "networkfaults", check=True).stdout
    # Zero means zero: re-adding with the delay at 0 leaves no delay at all.
    reset = seeded.podnet("fault", "add", "web-slow", "--from", "app=client", "--to",
                          "svc/default/web", "--delay-ms", "0", "--loss-pct", "1.5",
                          "--protocol", "tcp", "--port", "80")
    assert reset.stdout.strip() == "networkfault/web-slow configured", reset.stderr
    assert "delayMs" not in (fault(seeded, "web-slow") or {})["spec"]
    listed = seeded.podnet("fault", "list", check=True).stdout.splitlines()
    assert listed[0].split() == ["NAME", "FROM", "TO", "MATCH", "EFFECT", "EXPIRES", "AGE"]
    assert any(line.split()[:6] == ["web-slow", "app=client", "<->", "svc/default/web",
                                    "tcp:80", "loss=1.5%"] for line in listed)
    as_json = json.loads(seeded.podnet("fault", "list", "-o", "json", check=True).stdout)
    assert as_json["kind"] == "NetworkFaultList"
    assert {i["metadata"]["name"] for i in as_json["items"]} == {"slow-node-2", "web-slow"}
    bad = seeded.podnet("fault", "add", "x", "--from", "node/node-1", "--to", "web")
    assert bad.returncode == 2
    assert bad.stderr.startswith("podnet fault add: --to: 'web' is neither")
    assert bad.stderr.count("\n") == 1
    missing = seeded.podnet("fault", "del", "no-such-fault")
    assert missing.returncode == 1 and "not found" in missing.stderr
    gone = seeded.podnet("fault", "del", "--all", check=True).stdout
    assert set(gone.split("\n")) >= {"networkfault/web-slow deleted",
                                     "networkfault/slow-node-2 deleted"}
    assert seeded.podnet("fault", "list", check=True).stdout.strip() == "No network faults."


def test_duration_expiry(seeded: RunningCluster) -> None:
    seeded.podnet("fault", "add", "brief", "--from", "node/node-1", "--to", "node/node-2",
                  "--partition", "--duration", "2s", check=True)
    scheduled = wait_for(lambda: (fault(seeded, "brief") or {}).get("status", {})
                         .get("expiresAt"), 5, what="status.expiresAt")
    assert scheduled.endswith("Z")
    listed = seeded.podnet("fault", "list", check=True).stdout
    assert "partition" in listed
    wait_for(lambda: fault(seeded, "brief") is None, 10, what="the expired fault deleted")


def test_cluster_seed_in_signed_cluster_info(seeded: RunningCluster) -> None:
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(seeded.info["api"] + "/podnet/cluster-info", timeout=10,
                                context=insecure) as resp:
        info = json.loads(resp.read())
    assert info["faultSeed"] == 42
    assert verify_cluster_info(load_secret(Path(seeded.info["secret_file"])), info)


def node2_state(cluster: RunningCluster) -> str | None:
    result = cluster.podnet("routes", "--node", "node-1", "-o", "json")
    if result.returncode != 0:
        return None
    routes = json.loads(result.stdout).get("node-1") or []
    return next((str(r["state"]) for r in routes if r.get("node") == "node-2"), None)


def test_node_pause_resume_stop_start(seeded: RunningCluster) -> None:
    assert wait_for(lambda: node2_state(seeded) == "alive", 10, what="node-2 alive")
    paused = seeded.podnet("node", "pause", "node-2")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("node-2: paused its agent (pid ")
    wait_for(lambda: node2_state(seeded) in ("suspect", "dead"), 15,
             what="node-1 suspecting node-2")
    resumed = seeded.podnet("node", "resume", "node-2")
    assert resumed.returncode == 0 and "SIGCONT" in resumed.stdout
    wait_for(lambda: node2_state(seeded) == "alive", 15, what="node-2 alive again")

    stopped = seeded.podnet("node", "stop", "node-2")
    assert stopped.returncode == 0 and "it has exited" in stopped.stdout, stopped.stdout
    not_paused = seeded.podnet("node", "resume", "node-2")
    assert not_paused.returncode == 1
    assert "is stopped, not paused" in not_paused.stderr
    assert "podnet node start node-2" in not_paused.stderr
    started = seeded.podnet("node", "start", "node-2")
    assert started.returncode == 0, started.stderr
    seeded.info = json.loads((seeded.state_dir / "cluster.json").read_text())
    wait_for(lambda: node2_state(seeded) == "alive", 20, what="restarted node-2 alive")
    unknown = seeded.podnet("node", "pause", "node-9")
    assert unknown.returncode == 2 and "no node 'node-9'" in unknown.stderr


def test_faults_survive_a_restart_and_expired_ones_go_at_start_up(
        seeded: RunningCluster) -> None:
    seeded.podnet("fault", "add", "keep", "--from", "node/node-1", "--to", "ns/default",
                  "--delay-ms", "5", check=True)
    seeded.podnet("fault", "add", "brief", "--from", "node/node-1", "--to", "ns/default",
                  "--delay-ms", "5", "--duration", "1s", check=True)
    expires = wait_for(lambda: (fault(seeded, "brief") or {}).get("status", {})
                       .get("expiresAt"), 5, what="status.expiresAt")
    seeded.podnet("down", check=True)
    deadline = datetime.fromisoformat(expires)
    wait_for(lambda: datetime.now(UTC) > deadline, 5, what="the fault's expiry to pass")
    restarted = start_cluster(seeded.state_dir, 2, "--seed", "42")
    seeded.info = restarted.info        # the fixture stops the new processes
    wait_for(lambda: fault(seeded, "brief") is None, 10, what="the expired fault deleted")
    kept = fault(seeded, "keep")
    assert kept is not None and kept["spec"]["delayMs"] == 5
