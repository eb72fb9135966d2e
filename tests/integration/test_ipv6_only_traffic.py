"""A single-stack IPv6 cluster (`podnet up --cluster-cidr fd00:10:244::/56 --service-cidr
fd00:10:96::/112`): pods get one IPv6 address, reach each other across nodes with the source
kept, resolve Services through kube-dns at fd00:10:96::a, and reach a ClusterIP.

Needs two one-line changes outside the data path's files (agents/nodeports.py and
podnet/policy/state.py parse their CIDRs as IPv4 only, so the agent exits at start): until
they land this module is an expected failure, strict, so it is noticed when they do."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from harness import RunningCluster, start_cluster, stop_cluster

OBJECTS = textwrap.dedent("""\
    apiVersion: v1
    kind: Pod
    metadata: {name: client}
    spec:
      nodeName: node-1
      containers: [{name: toolbox, image: podnet/toolbox}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: web-2, labels: {app: web}}
    spec:
      nodeName: node-2
      containers: [{name: echo, image: podnet/echo, ports: [{containerPort: 8080}]}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec:
      selector: {app: web}
      ports: [{port: 80, targetPort: 8080}]
    """)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    running = start_cluster(tmp_path_factory.mktemp("ipv6only"), 2,
                            "--cluster-cidr", "fd00:10:244::/56",
                            "--service-cidr", "fd00:10:96::/112")
    try:
        for obj in yaml.safe_load_all(OBJECTS):
            plural = "services" if obj["kind"] == "Service" else "pods"
            code, body = running.api("POST", f"/api/v1/namespaces/default/{plural}", obj)
            assert code == 201, body
        for name in ("client", "web-2"):
            running.running_pod(name)
        yield running
    finally:
        stop_cluster(running)


def curl(cluster: RunningCluster, url: str) -> dict[str, Any]:
    result = cluster.podnet("exec", "client", "--", "curl", "-s", "-g", url, timeout_s=30)
    assert result.returncode == 0, (result.stdout, result.stderr)
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def test_ipv6_only_pods_talk_across_nodes_and_through_a_service(cluster: RunningCluster) -> None:
    client, web = cluster.pod("client"), cluster.pod("web-2")
    assert client is not None and web is not None
    client_ip = client["status"]["podIP"]
    assert [e["ip"] for e in client["status"]["podIPs"]] == [client_ip] and ":" in client_ip
    body = curl(cluster, f"http://[{web['status']['podIP']}]:8080/")
    assert str(body["client"]).rsplit(":", 1)[0].strip("[]") == client_ip
    resolv = cluster.podnet("exec", "client", "--", "cat", "/etc/resolv.conf").stdout
    assert resolv.startswith("nameserver fd00:10:96::a\n")
    body = curl(cluster, "http://web/")
    assert body["pod"] == "web-2" and str(body["client"]).rsplit(":", 1)[0].strip("[]") == client_ip
