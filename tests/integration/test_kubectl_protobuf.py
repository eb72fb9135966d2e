"""kubectl commands whose request bodies are Kubernetes protobuf, against a real cluster.

On the wire (kubectl 1.32.4 with -v=9): `create namespace|configmap|secret|serviceaccount|
deployment|service` send `application/vnd.kubernetes.protobuf` bodies; `run`, `delete`
(DeleteOptions), `label`, `annotate` and `cordon` send JSON. The API answers JSON either way,
which kubectl accepts. `run` is covered too, as users try it right after `create namespace`.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
from typing import Any

import aiohttp
from harness import RunningCluster, wait_for

from podnet import protobuf

PROTOBUF = "application/vnd.kubernetes.protobuf"


def _ld(number: int, payload: bytes | str) -> bytes:
    """One length-delimited protobuf field (all these payloads are under 128 bytes)."""
    data = payload.encode() if isinstance(payload, str) else payload
    assert len(data) < 128
    return bytes([number << 3 | 2, len(data)]) + data


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return protobuf.MAGIC + _ld(1, _ld(1, api_version) + _ld(2, kind)) + _ld(2, raw)


def test_create_namespace_then_get_it(cluster: RunningCluster) -> None:
    created = cluster.kubectl("create", "namespace", "team-a")
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "namespace/team-a created"
    got = cluster.kubectl("get", "ns", "team-a")
    assert got.returncode == 0, got.stderr
    assert got.stdout.split("\n")[1].split()[:2] == ["team-a", "Active"]
    again = cluster.kubectl("create", "namespace", "team-a")
    assert again.returncode == 1
    assert 'Error from server (AlreadyExists): namespaces "team-a" already exists' in again.stderr
    dry = cluster.kubectl("create", "namespace", "dry", "--dry-run=server", "-o", "name")
    assert (dry.returncode, dry.stdout.strip()) == (0, "namespace/dry")
    assert cluster.kubectl("get", "ns", "dry").returncode == 1  # not persisted


def test_run_web_is_running_and_shows_wide(cluster: RunningCluster) -> None:
    run = cluster.kubectl("run", "web", "--image=podnet/echo", "--port", "8080")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "pod/web created"
    pod = cluster.running_pod("web")
    assert pod["spec"]["containers"][0]["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    wide = cluster.kubectl("get", "pod", "web", "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    header, line = wide.stdout.splitlines()[:2]
    assert header.split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    fields = line.split()
    assert fields[:3] == ["web", "1/1", "Running"]
    assert pod["status"]["podIP"] in fields and pod["spec"]["nodeName"] in fields


def test_run_with_env_labels_and_args(cluster: RunningCluster) -> None:
    run = cluster.kubectl("run", "envy", "--image=podnet/echo", "--env", "A=1", "--env",
                          "B=two words", "--labels", "app=envy,tier=web", "--",
                          "--port", "9000")
    assert run.returncode == 0, run.stderr
    pod = cluster.running_pod("envy")
    container = pod["spec"]["containers"][0]
    assert pod["metadata"]["labels"] == {"app": "envy", "tier": "web"}
    assert container["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "two words"}]
    assert container["args"] == ["--port", "9000"] and "command" not in container
    env = cluster.kubectl("exec", "envy", "--", "env")
    assert env.returncode == 0, env.stderr
    assert "A=1" in env.stdout.splitlines() and "B=two words" in env.stdout.splitlines()
    selected = cluster.kubectl("get", "pods", "-l", "app=envy,tier=web", "-o", "name")
    assert selected.stdout.split() == ["pod/envy"]


def test_delete_namespace_team_a_takes_its_pods(cluster: RunningCluster) -> None:
    if cluster.kubectl("get", "ns", "team-a").returncode != 0:  # when run on its own
        assert cluster.kubectl("create", "namespace", "team-a").returncode == 0
    run = cluster.kubectl("-n", "team-a", "run", "inside", "--image=podnet/echo")
    assert run.returncode == 0, run.stderr
    cluster.running_pod("inside", "team-a")
    deleted = cluster.kubectl("delete", "namespace", "team-a", "--timeout=60s", timeout_s=90)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == 'namespace "team-a" deleted'
    gone = cluster.kubectl("get", "ns", "team-a")
    assert gone.returncode == 1 and "NotFound" in gone.stderr
    assert cluster.pod("inside", "team-a") is None


def test_create_configmap_from_protobuf(cluster: RunningCluster) -> None:
    # kubectl sends the ConfigMap as protobuf; the data arrives decoded and stored.
    result = cluster.kubectl("create", "configmap", "cm1", "--from-literal=a=b")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "configmap/cm1 created"
    code, body = cluster.api("GET", "/api/v1/namespaces/default/configmaps/cm1")
    assert code == 200 and body["data"] == {"a": "b"}
    # The same protobuf body sent directly gets a proper Status (it exists now).
    raw = _ld(1, _ld(1, "cm1")) + _ld(2, _ld(1, "a") + _ld(2, "b"))
    code, body = cluster.api("POST", "/api/v1/namespaces/default/configmaps",
                             _envelope("v1", "ConfigMap", raw), content_type=PROTOBUF)
    assert code == 409 and body["kind"] == "Status" and body["reason"] == "AlreadyExists"


GARBAGE = [
    b"not protobuf at all",
    b"k8s",
    protobuf.MAGIC,
    protobuf.MAGIC + b"\x0a\xff\xff\xff\xff\x0f",          # length far past the end
    protobuf.MAGIC + b"\x08" + b"\xff" * 11,               # over-long varint
    protobuf.MAGIC + b"\x0b\x0c",                          # group wire types
    protobuf.MAGIC + b"\x0a" * 4000,                       # a tower of truncated fields
    _envelope("v1", "Widget", b""),                        # a kind nobody can read
    _envelope("v1", "Namespace", _ld(1, _ld(1, b"\xff\xfe"))),  # name not UTF-8
    _envelope("v1", "Namespace", _ld(1, b"\x12\x7f")),     # inner length past the end
]


def _noise(seed: int) -> bytes:
    rng = random.Random(seed)
    return protobuf.MAGIC + bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))


def _check_bad_request(code: int, body: Any) -> None:
    assert code == 400, (code, body)
    assert body["kind"] == "Status" and body["reason"] == "BadRequest"
    assert "the request body is not a valid Kubernetes protobuf object" in body["message"]


def test_garbage_protobuf_over_urllib_gets_400_and_the_server_keeps_serving(
        cluster: RunningCluster) -> None:
    for body in GARBAGE:
        _check_bad_request(*cluster.api("POST", "/api/v1/namespaces", body,
                                        content_type=PROTOBUF))
        _check_bad_request(*cluster.api("POST", "/api/v1/namespaces/default/pods", body,
                                        content_type=PROTOBUF + "; charset=binary"))
    for seed in range(40):
        code, body = cluster.api("POST", "/api/v1/namespaces", _noise(seed),
                                 content_type=PROTOBUF)
        assert code in (400, 409, 422), (seed, code, body)  # never a 500
        assert body["kind"] == "Status"
    # A well-formed protobuf body still works, as do DeleteOptions sent as protobuf.
    ns = _envelope("v1", "Namespace", _ld(1, _ld(1, "from-urllib")))
    code, created = cluster.api("POST", "/api/v1/namespaces", ns, content_type=PROTOBUF)
    assert code == 201 and created["metadata"]["name"] == "from-urllib", created
    opts = _envelope("v1", "DeleteOptions", _ld(4, "Background"))
    code, _ = cluster.api("DELETE", "/api/v1/namespaces/from-urllib", opts,
                          content_type=PROTOBUF)
    assert code == 200
    wait_for(lambda: cluster.api("GET", "/api/v1/namespaces/from-urllib")[0] == 404,
             30, what="namespace from-urllib gone")
    listed = cluster.kubectl("get", "ns", "-o", "name")
    assert listed.returncode == 0 and "namespace/default" in listed.stdout.split()


async def test_garbage_protobuf_over_aiohttp_concurrently(cluster: RunningCluster) -> None:
    context = ssl.create_default_context(cafile=cluster.info["ca_file"])
    headers = {"Authorization": f"Bearer {cluster.token}", "Content-Type": PROTOBUF}
    url = cluster.info["api"] + "/api/v1/namespaces/default/pods"
    async with aiohttp.ClientSession(headers=headers,
                                     connector=aiohttp.TCPConnector(ssl=context)) as http:
        async def post(body: bytes) -> tuple[int, Any]:
            async with http.post(url, data=body) as rs:
                return rs.status, json.loads(await rs.read())

        answers = await asyncio.gather(*(post(b) for b in GARBAGE * 3))
        for code, body in answers:
            _check_bad_request(code, body)
        async with http.get(url) as rs:
            assert rs.status == 200 and (await rs.json())["kind"] == "PodList"
