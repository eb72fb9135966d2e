"""Discovery: an agent started by hand with no --controlplane finds a `podnet up` cluster
with mDNS (zeroconf bound to 127.0.0.1, as `podnet up` binds it), joins it and runs pods.

Other clusters may advertise on 127.0.0.1 at the same time (parallel test runs): the agent
must pick ours by its secret, which is what the wrong-secret test checks from the other side.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import RunningCluster, start_cluster, stop_cluster, wait_for

from podnet.discovery import SERVICE_TYPE, parse_txt

AGENT = [sys.executable, "-m", "agents"]
POD = {"apiVersion": "v1", "kind": "Pod"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    running = start_cluster(tmp_path_factory.mktemp("discovery"), 2)
    try:
        yield running
    finally:
        stop_cluster(running)


def start_agent(cluster: RunningCluster, name: str, secret: Path,
                *extra: str) -> subprocess.Popen[str]:
    # No --controlplane: the agent has to find the control plane by itself.
    return subprocess.Popen(
        [*AGENT, "--name", name, "--secret-file", str(secret),
         "--state-dir", str(cluster.state_dir), "--listen-port", "0", *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def node_ready(cluster: RunningCluster, name: str) -> bool:
    code, node = cluster.api("GET", f"/api/v1/nodes/{name}")
    return code == 200 and any(c.get("type") == "Ready" and c.get("status") == "True"
                               for c in node.get("status", {}).get("conditions", []))


def test_agent_without_controlplane_joins_and_takes_pods(cluster: RunningCluster,
                                                         tmp_path: Path) -> None:
    ready = tmp_path / "node-3.json"
    agent = start_agent(cluster, "node-3", cluster.state_dir / "secret",
                        "--ready-file", str(ready))
    try:
        wait_for(lambda: ready.exists() or agent.poll() is not None, 20,
                 what="node-3 registered")
        assert agent.poll() is None, agent.communicate()[1][-2000:]
        assert json.loads(ready.read_text())["name"] == "node-3"
        wait_for(lambda: node_ready(cluster, "node-3"), 15, what="node-3 Ready")
        pods = [("echo-3", "node-3", "podnet/echo"), ("client", "node-1", "podnet/toolbox")]
        for name, node, image in pods:
            code, body = cluster.api("POST", "/api/v1/namespaces/default/pods", {
                **POD, "metadata": {"name": name},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": image}]}})
            assert code == 201, body
        ip = cluster.running_pod("echo-3")["status"]["podIP"]
        cluster.running_pod("client")

        def reached() -> str | None:  # node-1 learns node-3's route by gossip: may take a beat
            result = cluster.podnet("exec", "client", "--", "curl", "-s", "--max-time", "5",
                                    f"http://{ip}:8080/", timeout_s=30)
            return result.stdout if result.returncode == 0 else None
        body = json.loads(wait_for(reached, 20, interval_s=0.5,
                                   what=f"curl from node-1 to {ip} on node-3"))
        assert body, body
    finally:
        stop(agent)


def test_wrong_secret_fails_with_a_clear_line(cluster: RunningCluster, tmp_path: Path) -> None:
    wrong = tmp_path / "secret"
    wrong.write_text(os.urandom(32).hex() + "\n")
    wrong.chmod(0o600)
    # Long enough to see our advertisement on a loaded CI machine: with a wrong secret the
    # agent waits all of it anyway, looking for a control plane that would accept it.
    agent = start_agent(cluster, "node-9", wrong, "--discovery-timeout-s", "8")
    try:
        _, err = agent.communicate(timeout=30)
    finally:
        stop(agent)
    assert agent.returncode == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("podnet agent: found "), last
    assert cluster.info["api"] in last and "--controlplane URL" in last, last
    assert not node_ready(cluster, "node-9")


def test_the_advertisement_never_carries_the_secret(cluster: RunningCluster) -> None:
    from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, Zeroconf

    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        names: set[str] = set()
        browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[
            lambda **kw: names.add(kw["name"])])

        def ours() -> ServiceInfo | None:
            for name in list(names):
                info = zc.get_service_info(SERVICE_TYPE, name, 2000)
                if info and parse_txt(info.properties).api == cluster.info["api"]:
                    return info
            return None
        try:
            info = wait_for(ours, 10, what="our control plane's advertisement")
        finally:
            browser.cancel()
    finally:
        zc.close()
    secret = (cluster.state_dir / "secret").read_bytes().strip()
    raw = b"".join(k + (v or b"") for k, v in info.properties.items())
    assert secret not in raw
    assert {k.decode() for k in info.properties} == {"txtvers", "cluster", "api", "dns"}
