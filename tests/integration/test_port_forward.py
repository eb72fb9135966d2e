"""`kubectl port-forward` against a real cluster, with the real kubectl: a listener on 127.0.0.1
whose connections land on the pod's own localhost, over the WebSocket tunnel (kubectl 1.31+'s
default) and the plain SPDY upgrade (its fallback, and all older kubectl)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import KUBECTL, RunningCluster, wait_for
from podapps.bulk import pattern

from podnet.wire import portforward, spdy

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")

MANIFEST = """\
apiVersion: v1
kind: Pod
metadata: {name: echo, labels: {app: echo}}
spec:
  nodeName: node-1
  containers:
  - {name: echo, image: podnet/echo, ports: [{name: http, containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: bulk}
spec:
  nodeName: node-2
  containers:
  - {name: bulk, image: "py:podapps.bulk:serve", args: ["9000"], ports: [{containerPort: 9000}]}
"""
BULK_BYTES = 2_000_000
FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)")


class PortForward:
    """`kubectl port-forward ARGS` as a child process, with its output collected as it comes."""

    def __init__(self, cluster: RunningCluster, *args: str, kubectl: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        assert KUBECTL is not None
        self.proc = subprocess.Popen(
            [kubectl or KUBECTL, "port-forward", *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, KUBECONFIG=str(cluster.kubeconfig),
                     KUBECACHEDIR=str(cluster.state_dir / "kcache"), **(env or {})))
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._drain, args=(pipe, lines), daemon=True)
                         for pipe, lines in ((self.proc.stdout, self.out),
                                             (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()
        found = wait_for(self._forwarding, 30, what=f"kubectl port-forward {' '.join(args)} "
                                                    "to print its listener")
        self.port, self.remote = int(found[1]), int(found[2])

    @staticmethod
    def _drain(pipe: Any, lines: list[str]) -> None:
        for line in pipe:
            lines.append(line.rstrip("\n"))

    def _forwarding(self) -> re.Match[str] | None:
        if self.proc.poll() is not None and not self.out:
            raise AssertionError(f"kubectl port-forward exited {self.proc.returncode}: "
                                 f"{self.err}")
        return next((m for line in self.out if (m := FORWARDING.search(line))), None)

    def exited(self) -> int:
        code = self.proc.wait(timeout=30)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.exited()

    def get(self, path: str = "/") -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as resp:
            assert resp.status == 200
            body: dict[str, Any] = json.loads(resp.read())
            return body


@pytest.fixture(scope="module")
def pods(cluster: RunningCluster) -> RunningCluster:
    cluster.kubectl("apply", "-f", "-", input=MANIFEST, check=True)
    cluster.running_pod("echo")
    cluster.running_pod("bulk")
    return cluster


@pytest.fixture
def forward(pods: RunningCluster) -> Iterator[list[PortForward]]:
    """Port-forwards a test starts, all stopped at its end."""
    started: list[PortForward] = []
    yield started
    for pf in started:
        pf.stop()


def log_events(cluster: RunningCluster, process: str, event: str) -> list[dict[str, Any]]:
    path = Path(cluster.state_dir) / "logs" / f"{process}.jsonl"
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            out.append(record)
    return out


def test_requests_reach_the_pod_from_its_own_localhost(
        pods: RunningCluster, forward: list[PortForward]) -> None:
    pf = PortForward(pods, "pod/echo", "0:8080")
    forward.append(pf)
    assert pf.remote == 8080
    for i in range(5):
        body = pf.get(f"/seq/{i}")
        assert (body["pod"], body["path"]) == ("echo", f"/seq/{i}")
        # As in Kubernetes, the pod sees the forwarded connection come from its localhost.
        assert body["client"].startswith("127.0.0.1:"), body["client"]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        paths = [body["path"] for body in pool.map(pf.get, [f"/par/{i}" for i in range(16)])]
    assert paths == [f"/par/{i}" for i in range(16)]
    wait_for(lambda: sum("Handling connection for" in line for line in pf.out) == 21, 10,
             what="kubectl to report 21 connections")


def test_service_form_forwards_to_a_backing_pod_and_its_target_port(
        pods: RunningCluster, forward: list[PortForward]) -> None:
    pf = PortForward(pods, "svc/echo", "0:80")
    forward.append(pf)
    assert pf.remote == 8080          # kubectl mapped port 80 to targetPort "http"
    assert pf.get("/via-service")["pod"] == "echo"


def bulk_down(port: int, size: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(f"DOWN {size}\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def bulk_up(port: int, data: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(b"UP\n" + data)
        s.shutdown(socket.SHUT_WR)      # the pod must see EOF to answer: half-close carried
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer.decode().strip()


@pytest.mark.parametrize("websockets", ["true", "false"])
def test_two_megabytes_each_way_across_nodes(
        pods: RunningCluster, forward: list[PortForward], websockets: str) -> None:
    def opened() -> list[dict[str, Any]]:
        return [r for r in log_events(pods, "controlplane", "portforward.session")
                if r.get("verdict") == "opened"]

    opened_before = len(opened())
    pf = PortForward(pods, "pod/bulk", "0:9000",
                     env={"KUBECTL_PORT_FORWARD_WEBSOCKETS": websockets})
    forward.append(pf)
    expected = pattern(BULK_BYTES)
    assert bulk_down(pf.port, BULK_BYTES) == expected
    data = pattern(BULK_BYTES)[::-1]
    assert bulk_up(pf.port, data) == f"{BULK_BYTES} {hashlib.sha256(data).hexdigest()}"
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: bulk_down(pf.port, 300_000), range(3)))
    assert results == [pattern(300_000)] * 3
    sessions = opened()[opened_before:]
    assert sessions[0]["pod"] == "bulk"
    assert sessions[0]["protocol"] == ("websocket" if websockets == "true" else "spdy")


def test_a_port_with_no_listener(pods: RunningCluster, forward: list[PortForward]) -> None:
    pf = PortForward(pods, "pod/echo", "0:81")
    forward.append(pf)
    with socket.create_connection(("127.0.0.1", pf.port), timeout=30) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            assert s.recv(1024) == b""
        except ConnectionResetError:
            pass
    # kubectl prints kubelet's words, then (since 1.28) gives up on the whole session.
    assert pf.exited() == 1
    pod = pods.pod("echo")
    assert pod is not None
    uid = pod["metadata"]["uid"]
    assert any(f"an error occurred forwarding {pf.port} -> 81: error forwarding port 81 to pod "
               f"echo, uid {uid}: failed to connect to localhost:81 inside the pod's network "
               "namespace: dial tcp4 127.0.0.1:81: connect: connection refused" in line
               for line in pf.err), pf.err
    assert "error: lost connection to pod" in pf.err
    # The pod and the API server are fine: the next port-forward works.
    again = PortForward(pods, "pod/echo", "0:8080")
    forward.append(again)
    assert again.get("/after-refusal")["path"] == "/after-refusal"


def test_the_connection_is_one_flow_in_the_logs(
        pods: RunningCluster, forward: list[PortForward]) -> None:
    pf = PortForward(pods, "pod/echo", "0:8080")
    forward.append(pf)
    client = pf.get("/logged")["client"]

    def flow() -> str | None:
        for record in log_events(pods, "agent-node-1", "portforward.connection"):
            if record.get("verdict") == "connected" and record.get("pod") == "echo":
                delivered = [r for r in log_events(pods, "agent-node-1", "flow.delivered")
                             if r.get("flow") == record["flow"] and r.get("src") == client]
                if delivered:
                    return str(record["flow"])
        return None

    flow_id = wait_for(flow, 10, what="the agent's portforward.connection and flow.delivered")
    delivered = [r for r in log_events(pods, "agent-node-1", "flow.delivered")
                 if r.get("flow") == flow_id]
    assert delivered[0]["dst"] == "127.0.0.1:8080"
    assert any(r.get("flow") == flow_id
               for r in log_events(pods, "controlplane", "portforward.connection"))


def _old_kubectl() -> str | None:
    if KUBECTL is None:
        return None
    path = Path(os.path.realpath(KUBECTL)).parent / "kubectl.1.28"
    return str(path) if path.exists() else None


@pytest.mark.skipif(_old_kubectl() is None, reason="no kubectl 1.28 next to the dispatcher")
def test_kubectl_1_28_over_plain_spdy(pods: RunningCluster, forward: list[PortForward]) -> None:
    pf = PortForward(pods, "pod/echo", "0:8080", kubectl=_old_kubectl() or "")
    forward.append(pf)
    assert [pf.get(f"/old/{i}")["path"] for i in range(3)] == [f"/old/{i}" for i in range(3)]
    sessions = [r for r in log_events(pods, "controlplane", "portforward.session")
                if r.get("verdict") == "opened"]
    assert sessions[-1]["protocol"] == "spdy"


def test_kubectl_is_told_when_the_pod_is_missing(pods: RunningCluster) -> None:
    result = pods.kubectl("port-forward", "pod/nope", "0:80", timeout_s=30)
    assert result.returncode == 1
    assert 'pods "nope" not found' in result.stderr


async def test_clients_that_do_not_speak_the_protocol_get_clear_errors(
        pods: RunningCluster) -> None:
    url = pods.info["api"] + "/api/v1/namespaces/default/pods/echo/portforward"
    auth = {"Authorization": f"Bearer {pods.token}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pods.ssl)) as http:
        async with http.get(url, headers=auth) as resp:          # no upgrade at all
            assert resp.status == 400
            assert "WebSocket upgrade" in (await resp.json())["message"]
        async with http.post(url, headers={**auth, "Connection": "Upgrade",
                                           "Upgrade": "SPDY/3.1"}) as resp:
            assert resp.status == 400
            assert "X-Stream-Protocol-Version" in (await resp.json())["message"]
        # The right upgrade, then bytes that are not SPDY: a GOAWAY saying so, then the end.
        async with http.ws_connect(url, headers=auth,
                                   protocols=(portforward.WEBSOCKET_PROTOCOL,)) as ws:
            assert ws.protocol == portforward.WEBSOCKET_PROTOCOL
            await ws.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.BINARY
            assert spdy.FrameDecoder().feed(msg.data) == [
                spdy.GoAway(0, spdy.GoAwayStatus.PROTOCOL_ERROR)]
            assert (await ws.receive(timeout=10)).type in (aiohttp.WSMsgType.CLOSE,
                                                           aiohttp.WSMsgType.CLOSED)
    assert pods.kubectl("get", "pod", "echo").returncode == 0    # the server carries on
