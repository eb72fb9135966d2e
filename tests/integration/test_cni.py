"""The CNI across real processes: gossiped routes and tunnels between agents.

Every test here drives a real `podnet up --detach` cluster (control plane and agents as
separate processes) with the CLI, kubectl and the agents' own JSON logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import CROSS_NODE_PODS, RunningCluster, start_cluster, stop_cluster, wait_for

PODS = CROSS_NODE_PODS + "---\n" + textwrap.dedent("""\
    apiVersion: v1
    kind: Pod
    metadata: {name: echo-3}
    spec:
      nodeName: node-3
      containers: [{name: echo, image: podnet/echo, ports: [{containerPort: 8080}]}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: udp-2}
    spec:
      nodeName: node-2
      containers: [{name: udp, image: "py:podapps:udp_echo"}]
    """)


@pytest.fixture(scope="module")
def cni(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("cni"), 3)
    try:
        manifest = cluster.state_dir / "pods.yaml"
        manifest.write_text(PODS)
        assert cluster.kubectl("apply", "-f", str(manifest)).returncode == 0
        for name in ("client", "echo-2", "echo-3", "udp-2"):
            cluster.running_pod(name)
        yield cluster
    finally:
        stop_cluster(cluster)


def ip(cluster: RunningCluster, pod: str) -> str:
    found = cluster.pod(pod)
    assert found is not None
    return str(found["status"]["podIP"])


def routes(cluster: RunningCluster, node: str | None = None) -> dict[str, Any]:
    args = ["routes", "-o", "json"] + (["--node", node] if node else [])
    result = cluster.podnet(*args)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def states(view: list[dict[str, Any]]) -> dict[str, str]:
    return {r["node"]: r["state"] for r in view}


def converged(cluster: RunningCluster, expect: dict[str, str]) -> bool:
    views = routes(cluster)
    return all(states(views.get(n, [])) == expect for n in views) and len(views) > 0


def test_every_agent_learns_every_route(cni: RunningCluster) -> None:
    nodes = {n["name"]: n for n in cni.info["nodes"]}
    wait_for(lambda: converged(cni, {n: "alive" for n in nodes}), 20,
             what="all three agents seeing three alive routes")
    views = routes(cni)
    assert set(views) == set(nodes)
    for view in views.values():
        by_node = {r["node"]: r for r in view}
        for name, node in nodes.items():
            assert by_node[name]["podCIDR"] == node["podCIDR"]
            assert by_node[name]["address"] == node["address"]
    table = cni.podnet("routes", "--node", "node-1").stdout
    assert table.splitlines()[0] == "node-1 sees:"
    assert "POD CIDR" in table and "alive" in table


def test_cross_node_http_no_nat(cni: RunningCluster) -> None:
    for target in ("echo-2", "echo-3"):
        result = cni.podnet("exec", "client", "--", "curl", "-s", "-m", "5",
                            f"http://{ip(cni, target)}:8080/across")
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["pod"] == target and answer["path"] == "/across"
        assert answer["client"].rpartition(":")[0] == ip(cni, "client")


def test_cross_node_udp_keeps_the_source_address(cni: RunningCluster, tmp_path: Path) -> None:
    manifest = tmp_path / "probe.yaml"
    manifest.write_text(textwrap.dedent(f"""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: udp-probe}}
        spec:
          nodeName: node-1
          containers: [{{name: p, image: "py:podapps:udp_probe", args: ["{ip(cni, 'udp-2')}"]}}]
        """))
    assert cni.kubectl("apply", "-f", str(manifest)).returncode == 0
    probe_ip = ip(cni, "udp-probe") if cni.running_pod("udp-probe") else ""
    logs = wait_for(lambda: (out := cni.kubectl("logs", "udp-probe").stdout)
                    and "echo:hello" in out and out, 20, what="UDP replies across nodes")
    line = next(ln for ln in logs.splitlines() if ln.startswith("echo:hello"))
    assert f" from {probe_ip}:" in line


def test_pod_view_of_routes_and_ping(cni: RunningCluster) -> None:
    table = cni.podnet("exec", "client", "--", "ip", "route").stdout
    node1 = cni.info["nodes"][0]["podCIDR"]
    assert f"{node1} dev eth0 proto kernel scope link src {ip(cni, 'client')}" in table
    assert "10.244.0.0/16 via" in table
    result = cni.podnet("exec", "client", "--", "ping", "-c", "3", "-i", "0.2",
                        ip(cni, "echo-3"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 packets transmitted, 3 received, 0% packet loss" in result.stdout
    assert "rtt min/avg/max/mdev" in result.stdout
    assert result.stdout.count("icmp_seq=") == 3


def test_no_route_to_a_cidr_nobody_owns(cni: RunningCluster) -> None:
    result = cni.podnet("exec", "client", "--", "curl", "-sS", "-m", "5",
                        "http://10.244.200.7:8080/")
    assert result.returncode == 7
    assert "No route to host" in result.stderr


def test_forged_gossip_is_rejected_and_changes_nothing(cni: RunningCluster) -> None:
    import urllib.error
    import urllib.request

    before = routes(cni, "node-1")["node-1"]
    address = cni.info["nodes"][0]["address"]
    fake = {"node": "node-9", "podCIDR": "10.244.9.0/24", "address": "127.0.0.1:9"}
    from podnet.gossipwire import REQUEST_TYPES

    paths = [f"/gossip/v1/{kind}" for kind in sorted(REQUEST_TYPES)] + ["/tunnel"]
    for path in paths:
        for body in (b"garbage", json.dumps(fake).encode(), b"{" * 10000):
            req = urllib.request.Request(f"http://{address}{path}", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=5)
            assert 400 <= err.value.code < 500
    after = routes(cni, "node-1")["node-1"]
    assert {r["node"] for r in after} == {r["node"] for r in before}
    assert "node-9" not in {r["node"] for r in after}
    log = agent_log(cni, "node-1")
    assert any(e.get("event") == "gossip.rejected" and e.get("reason") for e in log)


# ----------------------------------------------------------------- failures (own clusters)


def agent_log(cluster: RunningCluster, node: str) -> list[dict[str, Any]]:
    path = Path(cluster.info["logs_dir"], f"agent-{node}.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start_agent(cluster: RunningCluster, node: str) -> subprocess.Popen[bytes]:
    """Start a node's agent again by hand, as `podnet up` does."""
    ready = cluster.state_dir / "run" / f"{node}-again.json"
    log = (cluster.state_dir / "logs" / f"agent-{node}-again.stderr").open("ab")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    return subprocess.Popen(
        [sys.executable, "-m", "agents", "--name", node, "--controlplane", cluster.info["api"],
         "--state-dir", str(cluster.state_dir.resolve()),
         "--secret-file", str(cluster.state_dir.resolve() / "secret"),
         "--listen-port", "0", "--ready-file", str(ready)],
        stdout=log, stderr=log, env=env, start_new_session=True)


def test_traffic_keeps_flowing_with_the_control_plane_stopped(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "c", 2)
    try:
        manifest = tmp_path / "m.yaml"
        manifest.write_text(textwrap.dedent("""\
            apiVersion: v1
            kind: Pod
            metadata: {name: server}
            spec:
              nodeName: node-2
              containers: [{name: e, image: podnet/echo, ports: [{containerPort: 8080}]}]
            """))
        assert cluster.kubectl("apply", "-f", str(manifest)).returncode == 0
        server_ip = ip(cluster, "server") if cluster.running_pod("server") else ""
        manifest.write_text(textwrap.dedent(f"""\
            apiVersion: v1
            kind: Pod
            metadata: {{name: prober}}
            spec:
              nodeName: node-1
              containers: [{{name: p, image: "py:podapps:http_prober", args: ["{server_ip}"]}}]
            """))
        assert cluster.kubectl("apply", "-f", str(manifest)).returncode == 0
        cluster.running_pod("prober")
        wait_for(lambda: any(e.get("event") == "probe.ok" for e in agent_log(cluster, "node-1")),
                 20, what="the prober reaching the server across nodes")
        os.kill(int(cluster.info["controlplane"]["pid"]), signal.SIGKILL)
        killed_at = time.time()
        time.sleep(3)

        def after_kill(event: str) -> int:
            return sum(1 for e in agent_log(cluster, "node-1") if e.get("event") == event
                       and _ts(e) > killed_at + 0.5)

        assert after_kill("probe.ok") >= 5
        assert after_kill("probe.failed") == 0
    finally:
        stop_cluster(cluster)


def _ts(event: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()


def test_a_killed_agent_is_withdrawn_and_returns(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "c", 3)
    again: subprocess.Popen[bytes] | None = None
    try:
        manifest = tmp_path / "m.yaml"
        manifest.write_text(PODS)
        assert cluster.kubectl("apply", "-f", str(manifest)).returncode == 0
        for name in ("client", "echo-3"):
            cluster.running_pod(name)
        target = ip(cluster, "echo-3")
        wait_for(lambda: converged(cluster, {"node-1": "alive", "node-2": "alive",
                                             "node-3": "alive"}), 20, what="convergence")
        os.kill(int(cluster.info["nodes"][2]["pid"]), signal.SIGKILL)

        def withdrawn() -> bool:
            views = routes(cluster)
            return all(states(views[n]).get("node-3") == "dead" for n in ("node-1", "node-2"))

        wait_for(withdrawn, 30, interval_s=0.3, what="node-3's route dead at the other agents")
        result = cluster.podnet("exec", "client", "--", "curl", "-sS", "-m", "10",
                                f"http://{target}:8080/")
        # Fails fast with EHOSTUNREACH (curl's 7), not by running out its 10 s (curl's 28).
        assert result.returncode == 7
        assert "No route to host" in result.stderr

        again = start_agent(cluster, "node-3")
        wait_for(lambda: converged(cluster, {"node-1": "alive", "node-2": "alive",
                                             "node-3": "alive"}), 30, interval_s=0.3,
                 what="node-3 alive again everywhere")
        cluster.running_pod("echo-3", timeout_s=30)
        result = wait_for(lambda: (r := cluster.podnet(
            "exec", "client", "--", "curl", "-s", "-m", "5",
            f"http://{ip(cluster, 'echo-3')}:8080/")).returncode == 0 and r,
            30, what="traffic to node-3 again")
        assert json.loads(result.stdout)["pod"] == "echo-3"
    finally:
        if again is not None:
            again.kill()
            again.wait()
        stop_cluster(cluster)
