"""The API server driven by the real kubectl (and raw HTTP), in-process on 127.0.0.1.

Each test starts its own server on a free port with its own kubectl cache directory, so no
discovery, version or OpenAPI answer leaks between tests. kubectl runs through
`asyncio.create_subprocess_exec`: the server shares the test's event loop.

The server is served over HTTPS with a throwaway self-signed certificate: kubectl sends no
credentials at all to a plain `http://` server (client-go reads a kubeconfig's auth only for
TLS transports), so bearer-token auth can only be exercised with kubectl over TLS.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import ssl
import subprocess
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from controlplane.api import Api
from controlplane.apiserver import build_app
from controlplane.store import Store
from podnet.resources import BY_KIND

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
API_TOKEN = "test-api-token"
AGENT_TOKEN = "test-agent-token"
PODS, NODES = BY_KIND["Pod"], BY_KIND["Node"]

pytestmark = [
    pytest.mark.kubectl,
    pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed"),
]


@dataclass
class Result:
    rc: int
    out: str
    err: str


@dataclass
class Server:
    url: str
    api: Api
    tmp: Path
    kubeconfig: Path
    env: dict[str, str]
    client_ssl: ssl.SSLContext

    def http(self, token: str | None = API_TOKEN) -> aiohttp.ClientSession:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return aiohttp.ClientSession(headers=headers,
                                     connector=aiohttp.TCPConnector(ssl=self.client_ssl))

    async def kubectl(self, *args: str, stdin: str | None = None,
                      timeout_s: float = 60) -> Result:
        proc = await asyncio.create_subprocess_exec(
            KUBECTL, f"--kubeconfig={self.kubeconfig}", *args, env=self.env,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout_s)
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(), err.decode())

    async def ok(self, *args: str, stdin: str | None = None) -> str:
        r = await self.kubectl(*args, stdin=stdin)
        assert r.rc == 0, f"kubectl {' '.join(args)} failed ({r.rc}): {r.err}"
        return r.out


async def _start(app: web.Application,
                 tls: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server) and server.sockets
    return runner, int(server.sockets[0].getsockname()[1])


# ---------------------------------------------------------------------- a fake node agent

def fake_agent_app() -> web.Application:
    """Just enough of an agent for the relays: logs, and exec that echoes its argv."""

    def authorized(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {AGENT_TOKEN}"

    async def log_handler(request: web.Request) -> web.StreamResponse:
        if not authorized(request):
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        container = request.query.get("container", "")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(f"hello from {request.match_info['name']}/{container}\n".encode())
        if request.query.get("follow") == "true":
            for i in range(3):
                await asyncio.sleep(0.05)
                await resp.write(f"tick {i}\n".encode())
        await resp.write_eof()
        return resp

    async def exec_handler(request: web.Request) -> web.StreamResponse:
        if not authorized(request):
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"))
        await ws.prepare(request)
        command = request.query.getall("command", [])
        if command[:1] == ["cat"]:  # echo stdin until kubectl half-closes it (FF 00)
            async for msg in ws:
                data = msg.data
                if data[:1] == b"\x00":
                    await ws.send_bytes(b"\x01" + data[1:])
                elif data[:1] == b"\xff":
                    break
        elif command[:1] == ["burst"]:  # many frames, the Status and the close at once
            for i in range(int(command[1])):
                await ws.send_bytes(b"\x01" + f"line {i}\n".encode())
        else:
            await ws.send_bytes(b"\x01" + (" ".join(command) + "\n").encode())
        if command[:1] == ["false"]:
            status = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                      "message": "command terminated with non-zero exit code",
                      "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}
        else:
            status = {"metadata": {}, "status": "Success"}
        await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/pods/{ns}/{name}/log", log_handler)
    app.router.add_get("/pods/{ns}/{name}/exec", exec_handler)
    return app


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
async def server(tmp_path: Path, certificate: tuple[Path, Path]) -> AsyncIterator[Server]:
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    client_ssl = ssl.create_default_context(cafile=str(cert))
    agent_runner, agent_port = await _start(fake_agent_app())
    addresses = {"node-1": ("127.0.0.1", agent_port), "dead-node": ("127.0.0.1", 1)}
    store = Store.open(tmp_path / "store.db")
    api = Api(store, finalizer_period_s=0.2)
    api.bootstrap()
    await api.start()
    app = build_app(api, api_token=API_TOKEN, agent_token=AGENT_TOKEN,
                    agent_address=addresses.get, max_body_bytes=64 * 1024)
    runner, port = await _start(app, tls)
    url = f"https://127.0.0.1:{port}"
    ca = base64.b64encode(cert.read_bytes()).decode()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(textwrap.dedent(f"""\
        apiVersion: v1
        kind: Config
        clusters: [{{name: podnet, cluster: {{server: "{url}",
                                            certificate-authority-data: {ca}}}}}]
        users: [{{name: admin, user: {{token: {API_TOKEN}}}}}]
        contexts: [{{name: podnet, context: {{cluster: podnet, user: admin, namespace: default}}}}]
        current-context: podnet
        """))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "KUBECACHEDIR": str(tmp_path / "kcache")}
    try:
        yield Server(url, api, tmp_path, kubeconfig, env, client_ssl)
    finally:
        await runner.cleanup()
        await api.close()
        store.close()
        await agent_runner.cleanup()


POD = textwrap.dedent("""\
    apiVersion: v1
    kind: Pod
    metadata:
      name: web
      labels: {app: web, tier: front}
    spec:
      containers:
        - name: main
          image: podnet/echo
          ports: [{containerPort: 8080}]
          env: [{name: MODE, value: "one"}]
    """)


def pod_manifest(name: str, *, labels: dict[str, str] | None = None,
                 node: str | None = None, grace: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "podnet/echo"}]}
    if node:
        spec["nodeName"] = node
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


async def ready_node(api: Api, name: str = "node-1", ready: bool = True) -> None:
    await api.create(NODES, None, {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                   "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}})


async def run_pod(api: Api, name: str, node: str = "node-1", ip: str = "10.244.1.7",
                  **labels: str) -> None:
    await api.create(PODS, "default", pod_manifest(name, labels=labels))
    await api.bind("default", name, node)
    body = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "hostIP": "127.0.0.1"}}
    await api.patch(PODS, "default", name, json.dumps(body).encode(),
                    "application/merge-patch+json", subresource="status")


# ---------------------------------------------------------------------- tests

async def test_version_health_and_auth(server: Server) -> None:
    version = json.loads(await server.ok("get", "--raw", "/version"))
    assert version["minor"] == "32" and version["gitVersion"] == "v1.32.0-podnet"
    out = await server.ok("version")
    assert "Server Version: v1.32.0-podnet" in out
    async with server.http(token=None) as http:
        for path in ("/version", "/healthz", "/readyz", "/livez"):
            async with http.get(server.url + path) as resp:
                assert resp.status == 200, path
        async with http.get(server.url + "/api/v1/pods") as resp:
            assert resp.status == 401
            body = await resp.json()
            assert body["kind"] == "Status" and body["reason"] == "Unauthorized"
        wrong = {"Authorization": "Bearer nope"}
        async with http.get(server.url + "/api/v1/pods", headers=wrong) as resp:
            assert resp.status == 401
        agent = {"Authorization": f"Bearer {AGENT_TOKEN}"}
        async with http.get(server.url + "/api/v1/pods", headers=agent) as resp:
            assert resp.status == 200
            assert (await resp.json())["kind"] == "PodList"


async def test_discovery_and_openapi(server: Server) -> None:
    out = await server.ok("api-resources")
    assert "pods" in out and "po " in out and "namespaces" in out
    async with server.http() as http:
        aggregated = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
                      "application/json")
        async with http.get(server.url + "/api", headers={"Accept": aggregated}) as resp:
            assert "as=APIGroupDiscoveryList" in resp.headers["Content-Type"]
            body = await resp.json(content_type=None)
            pods = next(r for r in body["items"][0]["versions"][0]["resources"]
                        if r["resource"] == "pods")
            assert pods["responseKind"]["kind"] == "Pod" and pods["shortNames"] == ["po"]
        async with http.get(server.url + "/api") as resp:
            assert (await resp.json())["versions"] == ["v1"]
        async with http.get(server.url + "/openapi/v3") as resp:
            root = await resp.json()
        url = root["paths"]["api/v1"]["serverRelativeURL"]
        assert "?hash=" in url
        async with http.get(server.url + url) as resp:
            doc = await resp.json()
        kinds = {op["patch"]["x-kubernetes-group-version-kind"]["kind"]
                 for op in doc["paths"].values()}
        assert {"Pod", "Node", "Namespace"} <= kinds
        async with http.get(server.url + "/openapi/v2") as resp:
            assert resp.status == 404 and (await resp.json())["kind"] == "Status"


async def test_apply_create_configure_unchanged(server: Server) -> None:
    path = server.tmp / "pod.yaml"
    path.write_text(POD)
    assert "pod/web created" in await server.ok("apply", "-f", str(path))
    assert "pod/web unchanged" in await server.ok("apply", "-f", str(path))
    live = server.api.get(PODS, "default", "web")
    assert "kubectl.kubernetes.io/last-applied-configuration" in live["metadata"]["annotations"]
    # A pod's image and labels may change; kubectl sends a strategic merge patch.
    path.write_text(POD.replace("podnet/echo", "podnet/toolbox").replace(", tier: front", ""))
    assert "pod/web configured" in await server.ok("apply", "-f", str(path))
    pod = json.loads(await server.ok("get", "pod", "web", "-o", "json"))
    assert pod["spec"]["containers"][0]["image"] == "podnet/toolbox"
    assert pod["metadata"]["labels"] == {"app": "web"}
    assert pod["spec"]["containers"][0]["ports"][0]["containerPort"] == 8080
    assert pod["metadata"]["generation"] == 2
    # Other container fields are immutable, as in Kubernetes: env/ports changes are refused.
    changed = POD.replace('value: "one"', 'value: "two"').replace("8080", "9090")
    path.write_text(changed)
    r = await server.kubectl("apply", "-f", str(path))
    assert r.rc == 1 and "Forbidden" in r.err and "pod updates may not change" in r.err
    # Server-side apply creates and then merges.
    ssa = POD.replace("name: web", "name: ssa")
    assert "serverside-applied" in await server.ok("apply", "--server-side", "-f", "-",
                                                   stdin=ssa)
    assert "serverside-applied" in await server.ok(
        "apply", "--server-side", "-f", "-", stdin=ssa.replace("tier: front", "tier: back"))
    assert server.api.get(PODS, "default", "ssa")["metadata"]["labels"]["tier"] == "back"


async def test_create_duplicate_and_invalid(server: Server) -> None:
    path = server.tmp / "pod.yaml"
    path.write_text(POD)
    assert "pod/web created" in await server.ok("create", "-f", str(path))
    r = await server.kubectl("create", "-f", str(path))
    assert r.rc == 1
    assert 'Error from server (AlreadyExists)' in r.err and 'pods "web" already exists' in r.err
    bad = POD.replace("name: web", "name: bad").replace("image: podnet/echo", "image: ''")
    r = await server.kubectl("create", "-f", "-", stdin=bad)
    assert r.rc == 1 and "spec.containers[0].image" in r.err and "invalid" in r.err
    r = await server.kubectl("apply", "-f", "-", stdin=POD.replace("name: web", "name: Bad_Name"))
    assert r.rc == 1 and "metadata.name" in r.err
    r = await server.kubectl("create", "-f", "-",
                             stdin=POD.replace("name: web", "name: u").replace(
                                 "  containers:", "  bogusField: 1\n  containers:"))
    assert r.rc == 1 and 'unknown field "spec.bogusField"' in r.err
    r = await server.kubectl("create", "-f", "-", stdin=POD.replace(
        "name: web", "name: elsewhere\n  namespace: nope"))
    assert r.rc == 1 and 'namespaces "nope" not found' in r.err


async def test_get_wide_describe_and_selectors(server: Server) -> None:
    await ready_node(server.api)
    await run_pod(server.api, "alpha", ip="10.244.1.7", app="web")
    await run_pod(server.api, "beta", ip="10.244.1.8", app="db")
    await server.api.create(PODS, "default", pod_manifest("pending", labels={"app": "web"}))
    out = await server.ok("get", "pods", "-o", "wide")
    header, *rows = out.strip().splitlines()
    assert header.split()[:3] == ["NAME", "READY", "STATUS"]
    assert "IP" in header.split() and "NODE" in header.split()
    alpha = next(r for r in rows if r.startswith("alpha"))
    assert "10.244.1.7" in alpha and "node-1" in alpha and "Running" in alpha
    names = (await server.ok("get", "pods", "-l", "app=web", "-o", "name")).split()
    assert names == ["pod/alpha", "pod/pending"]
    names = (await server.ok("get", "pods", "-l", "app in (web,db),app!=db",
                             "-o", "name")).split()
    assert names == ["pod/alpha", "pod/pending"]
    names = (await server.ok("get", "pods", "--field-selector",
                             "status.phase=Running,spec.nodeName=node-1", "-o", "name")).split()
    assert names == ["pod/alpha", "pod/beta"]
    r = await server.kubectl("get", "pods", "--field-selector", "spec.bogus=1")
    assert r.rc == 1 and "field label not supported" in r.err
    out = await server.ok("get", "pods", "-A", "--show-labels")
    assert "default" in out and "app=web" in out
    out = await server.ok("describe", "pod", "alpha")
    assert "node-1" in out and "10.244.1.7" in out and "Running" in out
    out = await server.ok("get", "nodes")
    assert "node-1" in out and "Ready" in out
    out = await server.ok("get", "pods", "--sort-by=.metadata.name", "-o", "name")
    assert out.split() == ["pod/alpha", "pod/beta", "pod/pending"]


async def test_get_watch_receives_changes(server: Server) -> None:
    await server.api.create(PODS, "default", pod_manifest("watched", labels={"v": "1"}))
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, f"--kubeconfig={server.kubeconfig}", "get", "pods", "-w",
        "--output-watch-events", env=server.env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        header = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"NAME" in header
        first = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"watched" in first
        await server.api.patch(PODS, "default", "watched", b'{"metadata":{"labels":{"v":"2"}}}',
                               "application/merge-patch+json")
        await server.api.create(PODS, "default", pod_manifest("newcomer"))
        changed = await asyncio.wait_for(proc.stdout.readline(), 30)
        added = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"MODIFIED" in changed and b"watched" in changed
        assert b"ADDED" in added and b"newcomer" in added
    finally:
        proc.kill()
        await proc.wait()
    # The server notices the client left and drops its watcher.
    for _ in range(50):
        if not server.api.store._subs.get("pods"):
            break
        await asyncio.sleep(0.1)
    assert not server.api.store._subs.get("pods")


async def test_label_annotate_and_patch_types(server: Server) -> None:
    await server.api.create(PODS, "default", pod_manifest("p", labels={"a": "1"}))
    assert "pod/p labeled" in await server.ok("label", "pod", "p", "b=2")
    assert "pod/p annotated" in await server.ok("annotate", "pod", "p", "note=hi")
    assert "pod/p unlabeled" in await server.ok("label", "pod", "p", "a-")
    await server.ok("patch", "pod", "p", "--type", "merge",
                    "-p", '{"metadata":{"labels":{"m":"x"}}}')
    await server.ok("patch", "pod", "p", "--type", "json",
                    "-p", '[{"op":"add","path":"/metadata/labels/j","value":"y"}]')
    await server.ok("patch", "pod", "p",
                    "-p", '{"spec":{"containers":[{"name":"main","image":"podnet/toolbox"}]}}')
    pod = server.api.get(PODS, "default", "p")
    assert pod["metadata"]["labels"] == {"b": "2", "m": "x", "j": "y"}
    assert pod["metadata"]["annotations"]["note"] == "hi"
    assert pod["spec"]["containers"] == [
        {**pod["spec"]["containers"][0], "name": "main", "image": "podnet/toolbox"}]
    r = await server.kubectl("patch", "pod", "p", "--type", "json",
                             "-p", '[{"op":"remove","path":"/metadata/nothere"}]')
    assert r.rc == 1
    r = await server.kubectl("patch", "pod", "p", "--type", "merge", "-p", '{"spec":')
    assert r.rc == 1
    # Status is only written through the status subresource.
    await server.ok("patch", "pod", "p", "--type", "merge",
                    "-p", '{"status":{"phase":"Failed"}}')
    assert server.api.get(PODS, "default", "p")["status"]["phase"] == "Pending"
    await server.ok("patch", "pod", "p", "--subresource", "status", "--type", "merge",
                    "-p", '{"status":{"phase":"Running"}}')
    assert server.api.get(PODS, "default", "p")["status"]["phase"] == "Running"


async def test_delete_graceful_and_immediate(server: Server) -> None:
    await ready_node(server.api)
    await run_pod(server.api, "graceful")
    await server.api.create(PODS, "default", pod_manifest("unbound"))
    # Unbound: removed at once.
    assert 'pod "unbound" deleted' in await server.ok("delete", "pod", "unbound")
    assert server.api.store.get(PODS, "default", "unbound") is None
    # Bound to a Ready node: Terminating until the agent deletes with grace 0.
    await server.ok("delete", "pod", "graceful", "--wait=false")
    pod = server.api.get(PODS, "default", "graceful")
    assert pod["metadata"]["deletionTimestamp"] and pod["metadata"][
        "deletionGracePeriodSeconds"] == 30
    assert "Terminating" in await server.ok("get", "pod", "graceful")
    # kubectl delete (waiting) returns once the agent's grace-0 delete removes the pod.
    waiting = asyncio.create_task(server.kubectl("delete", "pod", "graceful", "--timeout=30s"))
    await asyncio.sleep(1.0)
    assert not waiting.done()
    await server.api.delete(PODS, "default", "graceful", grace_period_seconds=0)
    r = await asyncio.wait_for(waiting, 30)
    assert r.rc == 0 and 'pod "graceful" deleted' in r.out
    r = await server.kubectl("delete", "pod", "graceful")
    assert r.rc == 1 and "NotFound" in r.err
    # --grace-period=0 --force removes a bound pod at once.
    await run_pod(server.api, "forced")
    await server.ok("delete", "pod", "forced", "--grace-period=0", "--force")
    assert server.api.store.get(PODS, "default", "forced") is None


async def test_namespaces_terminate_and_are_protected(server: Server) -> None:
    # `kubectl create namespace` sends protobuf, which podnet decodes (podnet/protobuf.py).
    await server.ok("create", "namespace", "team")
    await server.ok("apply", "-n", "team", "-f", "-", stdin=POD)
    await server.ok("apply", "-n", "team", "-f", "-", stdin=POD.replace("name: web", "name: db"))
    await ready_node(server.api)
    await server.api.bind("team", "web", "node-1")
    r = await server.kubectl("delete", "namespace", "default")
    assert r.rc == 1 and "Forbidden" in r.err and "may not be deleted" in r.err
    deleting = asyncio.create_task(server.kubectl("delete", "namespace", "team",
                                                  "--timeout=30s"))
    # The unbound pod goes at once; the running one terminates gracefully, as an agent would.
    for _ in range(100):
        web_pod = server.api.store.get(PODS, "team", "web")
        if web_pod and web_pod["metadata"].get("deletionTimestamp"):
            break
        await asyncio.sleep(0.05)
    assert server.api.get(BY_KIND["Namespace"], None, "team")["status"]["phase"] == "Terminating"
    r = await server.kubectl("apply", "-n", "team", "-f", "-",
                             stdin=POD.replace("name: web", "name: late"))
    assert r.rc == 1 and "being terminated" in r.err
    assert server.api.store.get(PODS, "team", "db") is None
    await server.api.delete(PODS, "team", "web", grace_period_seconds=0)
    r = await asyncio.wait_for(deleting, 30)
    assert r.rc == 0, r.err
    assert server.api.store.get(BY_KIND["Namespace"], None, "team") is None
    assert server.api.store.list(PODS, "team")[0] == []


async def test_unknown_resource_and_bad_bodies(server: Server) -> None:
    r = await server.kubectl("get", "widgets")
    assert r.rc == 1 and 'the server doesn\'t have a resource type "widgets"' in r.err
    pods = server.url + "/api/v1/namespaces/default/pods"
    async with server.http() as http:
        big = b'{"x":"' + b"a" * (65 * 1024) + b'"}'
        async with http.post(pods, data=big, headers={"Content-Type": "application/json"}) as rs:
            assert rs.status == 413 and (await rs.json())["kind"] == "Status"
        async with http.post(pods, data=b"{nope",
                             headers={"Content-Type": "application/json"}) as rs:
            body = await rs.json()
            assert rs.status == 400 and "not valid JSON" in body["message"]
        svc = json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "x"}})
        async with http.post(pods, data=svc, headers={"Content-Type": "application/json"}) as rs:
            assert rs.status == 400
        other = json.dumps(pod_manifest("x") | {"metadata": {"name": "x", "namespace": "kube"}})
        async with http.post(pods, data=other,
                             headers={"Content-Type": "application/json"}) as rs:
            assert rs.status == 400 and "does not match" in (await rs.json())["message"]
        yaml_body = POD.replace("name: web", "name: from-yaml").encode()
        async with http.post(pods, data=yaml_body,
                             headers={"Content-Type": "application/yaml"}) as rs:
            assert rs.status == 201
        async with http.get(server.url + "/api/v1/nope") as rs:
            assert rs.status == 404 and (await rs.json())["kind"] == "Status"
        async with http.put(pods) as rs:
            assert rs.status == 405 and (await rs.json())["reason"] == "MethodNotAllowed"
        async with http.get(pods + "?labelSelector=a%20in%20(") as rs:
            assert rs.status == 400
        async with http.patch(pods + "/from-yaml", data=b"{}",
                              headers={"Content-Type": "application/xml"}) as rs:
            assert rs.status == 415
        # Still serving.
        async with http.get(pods) as rs:
            assert rs.status == 200 and len((await rs.json())["items"]) == 1


async def test_watch_http_replay_selectors_and_timeout(server: Server) -> None:
    api = server.api
    await api.create(PODS, "default", pod_manifest("a", labels={"app": "x"}))
    listed = api.list(PODS, "default")
    rv = listed["metadata"]["resourceVersion"]
    await api.patch(PODS, "default", "a", b'{"metadata":{"labels":{"app":"y"}}}',
                    "application/merge-patch+json")
    url = (f"{server.url}/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"
           f"&labelSelector=app%3Dx&timeoutSeconds=1")
    async with server.http() as http, http.get(url) as resp:
        lines = [json.loads(line) async for line in resp.content if line.strip()]
    # The pod stopped matching app=x: a DELETED event, then the stream ends at the timeout.
    assert [e["type"] for e in lines] == ["DELETED"]
    table_accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    url = f"{server.url}/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=1"
    async with server.http() as http, http.get(
            url, headers={"Accept": table_accept}) as resp:
        lines = [json.loads(line) async for line in resp.content if line.strip()]
    assert lines[0]["type"] == "ADDED" and lines[0]["object"]["kind"] == "Table"


async def test_logs_and_exec_relay(server: Server) -> None:
    await ready_node(server.api)
    await run_pod(server.api, "runner")
    out = await server.ok("logs", "runner")
    assert out == "hello from runner/main\n"
    out = await server.ok("logs", "runner", "-f")
    assert out.endswith("tick 2\n")
    out = await server.ok("exec", "runner", "--", "echo", "hi", "there")
    assert out == "echo hi there\n"
    out = await server.ok("exec", "-i", "runner", "--", "cat", stdin="piped input\n")
    assert out == "piped input\n"
    r = await server.kubectl("exec", "runner", "--", "false")
    assert r.rc == 3 and "exit code 3" in r.err
    r = await server.kubectl("exec", "runner", "-c", "nope", "--", "true")
    assert r.rc == 1 and 'container "nope" not found in pod "runner"' in r.err
    await server.api.create(PODS, "default", pod_manifest("waiting"))
    r = await server.kubectl("logs", "waiting")
    assert r.rc == 1 and "is not running on any node yet" in r.err
    r = await server.kubectl("exec", "waiting", "--", "true")
    assert r.rc == 1 and "is not running on any node yet" in r.err
    # An agent that cannot be reached gives a clear error, not a hang.
    await ready_node(server.api, "dead-node")
    await run_pod(server.api, "orphan", node="dead-node")
    r = await server.kubectl("logs", "orphan")
    assert r.rc == 1 and "cannot reach the agent" in r.err
    r = await server.kubectl("exec", "orphan", "--", "true")
    assert r.rc == 1 and "cannot reach the agent" in r.err
    # The refusal reaches kubectl whole, not as "closed all streams".
    assert "closed all streams" not in r.err and "Unknown stream id" not in r.err


async def _raw_exec(server: Server, pod: str, *command: str) -> tuple[list[bytes], int | None]:
    """An exec session through the relay as the wire shows it: every message, the close code."""
    params = [("command", c) for c in command] + [("stdout", "true")]
    messages: list[bytes] = []
    async with server.http() as http, http.ws_connect(
            f"{server.url}/api/v1/namespaces/default/pods/{pod}/exec", params=params,
            protocols=("v5.channel.k8s.io",)) as ws:
        assert ws.protocol == "v5.channel.k8s.io"
        async for msg in ws:
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            messages.append(msg.data)
        return messages, ws.close_code


async def test_exec_relay_forwards_every_frame_in_order_then_the_close(server: Server) -> None:
    """The agent sends its output, its Status and its close back to back: the client gets all
    of them, in that order, the Status last, then a normal close, for many sessions at once."""
    await ready_node(server.api)
    await run_pod(server.api, "runner")
    sessions = await asyncio.gather(*(_raw_exec(server, "runner", "burst", str(50 + i))
                                      for i in range(20)))
    for i, (messages, code) in enumerate(sessions):
        assert messages[:-1] == [b"\x01" + f"line {n}\n".encode() for n in range(50 + i)]
        assert messages[-1][:1] == b"\x03"
        assert json.loads(messages[-1][1:]) == {"metadata": {}, "status": "Success"}
        assert code == 1000
    # An agent that cannot be reached: one Failure Status, then the close.
    await ready_node(server.api, "dead-node")
    await run_pod(server.api, "orphan", node="dead-node")
    messages, code = await _raw_exec(server, "orphan", "true")
    assert len(messages) == 1 and messages[0][:1] == b"\x03"
    failure = json.loads(messages[0][1:])
    assert failure["status"] == "Failure" and "cannot reach the agent" in failure["message"]
    assert code == 1000


async def test_kubectl_exec_of_quick_commands_many_at_once(server: Server) -> None:
    """Commands that answer at once, as the fake agent does: kubectl 1.30-1.33 drops frames
    that come before it has made its streams (kubernetes#131189); the relay's settle time
    keeps them back until it has."""
    await ready_node(server.api)
    await run_pod(server.api, "runner")
    results = await asyncio.gather(*(server.kubectl("exec", "runner", "--", "echo", str(i))
                                     for i in range(12)))
    for i, r in enumerate(results):
        assert (r.rc, r.out, r.err) == (0, f"echo {i}\n", ""), r
