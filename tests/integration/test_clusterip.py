"""ClusterIP Services across real processes: pods reach a Service's virtual IP through the
control plane's proxy, which picks a ready endpoint on any node and keeps the client's IP.

One `podnet up --detach` cluster with 2 nodes; Services and their EndpointSlices come from the
control plane's own controllers (the pods carry the labels the Services select)."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from harness import RunningCluster, start_cluster, stop_cluster, wait_for

from podnet import tunnel as proto
from podnet.auth import derive_key, load_secret
from podnet.client import fetch_cluster_info
from podnet.tunnelnet import CONTROLPLANE

ECHO = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  nodeName: {node}
  containers: [{{name: echo, image: podnet/echo, ports: [{{name: http, containerPort: 8080}}]}}]
"""

SERVICES = textwrap.dedent("""\
    apiVersion: v1
    kind: Pod
    metadata: {name: client}
    spec:
      nodeName: node-1
      containers: [{name: toolbox, image: podnet/toolbox}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec:
      selector: {app: web}
      ports: [{name: http, port: 80, targetPort: http}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: sticky}
    spec:
      selector: {app: web}
      sessionAffinity: ClientIP
      ports: [{port: 80, targetPort: 8080}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: nobody}
    spec:
      selector: {app: no-such-app}
      ports: [{port: 80, targetPort: 8080}]
    """)

BACKENDS = {"web-1": "node-1", "web-2": "node-2", "web-3": "node-2"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    running = start_cluster(tmp_path_factory.mktemp("clusterip"), 2)
    try:
        text = "---\n".join([SERVICES] + [ECHO.format(name=n, node=node)
                                          for n, node in BACKENDS.items()])
        for obj in yaml.safe_load_all(text):
            plural = "services" if obj["kind"] == "Service" else "pods"
            code, body = running.api("POST", f"/api/v1/namespaces/default/{plural}", obj)
            assert code == 201, body
        for name in ("client", *BACKENDS):
            running.running_pod(name)
        wait_for(lambda: len(ready_endpoints(running, "web")) == 3, 20,
                 what="3 ready endpoints of web")
        yield running
    finally:
        stop_cluster(running)


def cluster_ip(cluster: RunningCluster, service: str) -> str:
    code, svc = cluster.api("GET", f"/api/v1/namespaces/default/services/{service}")
    assert code == 200, svc
    return str(svc["spec"]["clusterIP"])


def pod_ip(cluster: RunningCluster, pod: str) -> str:
    found = cluster.pod(pod)
    assert found is not None
    return str(found["status"]["podIP"])


def ready_endpoints(cluster: RunningCluster, service: str) -> list[str]:
    code, slices = cluster.api(
        "GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
               f"?labelSelector=kubernetes.io/service-name={service}")
    assert code == 200, slices
    return sorted(address for s in slices["items"] for ep in s.get("endpoints") or []
                  if (ep.get("conditions") or {}).get("ready") is not False
                  for address in ep.get("addresses") or [])


def curl(cluster: RunningCluster, url: str, *extra: str) -> tuple[int, str, str]:
    result = cluster.podnet("exec", "client", "--", "curl", "-s", *extra, url, timeout_s=30)
    return result.returncode, result.stdout, result.stderr


def served(cluster: RunningCluster, url: str) -> dict[str, Any]:
    code, out, err = curl(cluster, url)
    assert code == 0, (code, out, err)
    body: dict[str, Any] = json.loads(out)
    return body


def test_clusterip_answers_with_the_client_pod_ip(cluster: RunningCluster) -> None:
    ip = cluster_ip(cluster, "web")
    body = served(cluster, f"http://{ip}:80/hello")
    assert body["pod"] in BACKENDS
    assert body["path"] == "/hello"
    assert body["port"] == 8080                     # the named targetPort, resolved
    assert body["client"].split(":")[0] == pod_ip(cluster, "client")    # no SNAT


def test_requests_spread_over_every_ready_endpoint(cluster: RunningCluster) -> None:
    ip = cluster_ip(cluster, "web")
    seen = Counter(served(cluster, f"http://{ip}/")["pod"] for _ in range(30))
    assert set(seen) == set(BACKENDS), seen
    assert min(seen.values()) >= 5, seen            # round-robin: 10 each when nothing else runs


def test_client_ip_affinity_pins_one_backend(cluster: RunningCluster) -> None:
    ip = cluster_ip(cluster, "sticky")
    seen = {served(cluster, f"http://{ip}/")["pod"] for _ in range(8)}
    assert len(seen) == 1, seen


def test_no_ready_endpoints_refuses_at_once(cluster: RunningCluster) -> None:
    ip = cluster_ip(cluster, "nobody")
    # curl's own timeout is far away: exit 7 means refused, never a timeout (28).
    code, _, err = curl(cluster, f"http://{ip}/", "-S", "--max-time", "20")
    assert code == 7 and "Connection refused" in err, (code, err)
    # A port the Service does not have is refused too.
    code, _, _ = curl(cluster, f"http://{cluster_ip(cluster, 'web')}:81/", "--max-time", "20")
    assert code == 7


def test_the_tunnel_port_refuses_anything_but_an_agent(cluster: RunningCluster) -> None:
    address = tunnel_address(cluster)
    host, port = address.rsplit(":", 1)
    # Plain HTTP: no page, no upgrade.
    for path in ("/", "/tunnel", "/api/v1/pods"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://{address}{path}", timeout=10)
        assert caught.value.code in (400, 404, 405)
    # Bytes that are not HTTP at all.
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01garbage\r\n\r\n")
        assert sock.recv(100).split(b" ")[1] == b"400"
    # A WebSocket whose handshake is under another secret is closed without a session.
    async def wrong_secret() -> aiohttp.WSMsgType:
        key = derive_key(b"not the cluster secret", "tunnel")
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(f"http://{address}/tunnel") as ws:
            hello, _ = proto.make_hello(key, "node-9", CONTROLPLANE, now=time.time())
            await ws.send_bytes(hello)
            return (await ws.receive()).type

    assert asyncio.run(wrong_secret()) in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


def test_no_real_socket_listens_on_a_clusterip(cluster: RunningCluster) -> None:
    """ClusterIPs are virtual: the only real sockets are the processes' own listen addresses
    (connecting to one from the host shows nothing here, since some sandboxes accept any
    connection through a transparent proxy; the kernel's socket table is what is certain)."""
    listening = Path("/proc/net/tcp")
    if not listening.exists():
        pytest.skip("needs /proc/net/tcp (Linux)")
    service_ips = {cluster_ip(cluster, name) for name in ("web", "sticky", "nobody")}
    local_ips = set()
    for line in listening.read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A":       # LISTEN
            local_ips.add(socket.inet_ntoa(bytes.fromhex(local.split(":")[0])[::-1]))
    assert local_ips and not local_ips & service_ips


def test_a_deleted_backend_gets_no_new_connections(cluster: RunningCluster) -> None:
    ip = cluster_ip(cluster, "web")
    code, body = cluster.api("DELETE", "/api/v1/namespaces/default/pods/web-3",
                             {"gracePeriodSeconds": 0})
    assert code in (200, 202), body
    gone = pod_ip_or_none(cluster, "web-3")
    wait_for(lambda: gone not in ready_endpoints(cluster, "web"), 20,
             what="web-3 to leave the endpoints")
    seen = Counter(served(cluster, f"http://{ip}/")["pod"] for _ in range(12))
    assert "web-3" not in seen and set(seen) == {"web-1", "web-2"}, seen


def pod_ip_or_none(cluster: RunningCluster, pod: str) -> str | None:
    found = cluster.pod(pod)
    return str(found["status"]["podIP"]) if found else None


def tunnel_address(cluster: RunningCluster) -> str:
    info = asyncio.run(fetch_cluster_info(cluster.info["api"],
                                          load_secret(cluster.state_dir / "secret")))
    assert info.tunnel_address
    return info.tunnel_address


def test_kube_dns_answers_over_the_emulated_network(cluster: RunningCluster) -> None:
    """10.96.0.10:53 is served by the control plane's DNS engine, over UDP and over TCP."""
    ip = cluster_ip(cluster, "web")
    for transport in ("+notcp", "+tcp"):
        result = cluster.podnet("exec", "client", "--", "dig", "@10.96.0.10", "+short",
                                transport, "web.default.svc.cluster.local", timeout_s=30)
        if result.returncode == 127 or "not found" in result.stderr:
            pytest.skip("the toolbox has no dig yet")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [ip], (transport, result.stdout)


@pytest.mark.parametrize("name", ["web", "web.default", "web.default.svc.cluster.local"])
def test_service_names_answer(cluster: RunningCluster, name: str) -> None:
    code, out, err = curl(cluster, f"http://{name}/")
    if code == 6:
        pytest.skip(f"pods do not resolve names through cluster DNS yet: {err.strip()}")
    assert code == 0, (code, out, err)
    assert json.loads(out)["pod"] in BACKENDS
