"""Hostile and malformed input against a real cluster: raw HTTPS to the API server, kubectl
with unknown fields, and the agents' own HTTP port. Every bad request must get the right 4xx
with a `Status` body, and the processes must keep serving afterwards."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import textwrap
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from harness import RunningCluster, wait_for

from podnet.auth import agent_token, load_secret

POD: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "placeholder"},
       "spec": {"containers": [{"name": "c", "image": "podnet/echo"}]}}


def _api_host_port(cluster: RunningCluster) -> tuple[str, int]:
    url = urllib.parse.urlsplit(cluster.info["api"])
    assert url.hostname == "127.0.0.1" and url.port
    return url.hostname, url.port


def raw(cluster: RunningCluster, method: str, path: str, body: bytes | None = None,
        content_type: str | None = "application/json", token: str | None = "api",
        timeout_s: float = 30) -> tuple[int, Any]:
    """One HTTPS request with exactly these bytes; (status, parsed JSON or text)."""
    host, port = _api_host_port(cluster)
    conn = http.client.HTTPSConnection(host, port, timeout=timeout_s, context=cluster.ssl)
    headers = {"Accept": "application/json"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if token == "api":
        headers["Authorization"] = f"Bearer {cluster.token}"
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(data)
    except ValueError:
        return resp.status, data.decode(errors="replace")


def assert_status(code: int, body: Any, expected: int, reason: str | None = None,
                  mentions: str | None = None) -> None:
    assert code == expected, (code, body)
    assert isinstance(body, dict) and body.get("kind") == "Status", body
    assert body.get("apiVersion") == "v1" and body.get("status") == "Failure", body
    assert body.get("code") == expected, body
    if reason is not None:
        assert body.get("reason") == reason, body
    if mentions is not None:
        assert mentions in body.get("message", ""), body


def assert_still_serving(cluster: RunningCluster) -> None:
    code, body = raw(cluster, "GET", "/healthz", token=None)
    assert (code, body) == (200, "ok")
    code, body = raw(cluster, "GET", "/api/v1/namespaces/default/pods")
    assert code == 200 and body["kind"] == "PodList", body


PODS = "/api/v1/namespaces/default/pods"

# (id, method, path, body, content type, expected code, expected reason, message fragment)
BAD_REQUESTS = [
    ("malformed-json", "POST", PODS, b'{"apiVersion": "v1", "kind": "Pod", "metadata": {',
     "application/json", 400, "BadRequest", "JSON"),
    ("malformed-yaml", "POST", PODS, b"apiVersion: v1\nkind: Pod\nmetadata: {name: [x\n",
     "application/yaml", 400, "BadRequest", "YAML"),
    ("json-list", "POST", PODS, b"[1, 2, 3]", "application/json", 400, "BadRequest", None),
    ("json-number", "POST", PODS, b"42", "application/json", 400, "BadRequest", None),
    ("json-string", "POST", PODS, b'"a pod"', "application/json", 400, "BadRequest", None),
    ("json-null", "POST", PODS, b"null", "application/json", 400, "BadRequest", None),
    ("not-utf8", "POST", PODS, b"\xff\xfe\xfa{", "application/json", 400, "BadRequest", None),
    ("yaml-scalar", "POST", PODS, b"just a string\n", "application/yaml", 400, "BadRequest",
     None),
    ("empty-body", "POST", PODS, b"", "application/json", 400, "BadRequest", None),
    ("wrong-kind", "POST", PODS, json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
        "spec": {"ports": [{"port": 80}]}}).encode(), "application/json", 400, "BadRequest",
     "Service"),
    ("wrong-api-version", "POST", PODS, json.dumps(
        {**POD, "apiVersion": "apps/v1"}).encode(), "application/json", 400, "BadRequest",
     "apps/v1"),
    ("unknown-resource", "GET", "/api/v1/namespaces/default/gizmos", None, None, 404,
     "NotFound", None),
    ("unknown-group", "GET", "/apis/example.com/v1/widgets", None, None, 404, "NotFound", None),
    ("unknown-subresource", "GET", "/api/v1/namespaces/default/pods/x/frobnicate", None, None,
     404, "NotFound", None),
    ("bad-label-selector", "GET", PODS + "?labelSelector=" + urllib.parse.quote("a in (b"),
     None, None, 400, "BadRequest", None),
    ("bad-field-selector", "GET", PODS + "?fieldSelector=" + urllib.parse.quote("spec.foo=1"),
     None, None, 400, "BadRequest", "spec.foo"),
    ("bad-watch-field-selector", "GET", PODS + "?watch=true&fieldSelector="
     + urllib.parse.quote("spec.foo=1"), None, None, 400, "BadRequest", "spec.foo"),
    ("bad-field-validation", "POST", PODS + "?fieldValidation=Loose", json.dumps(
        {**POD, "metadata": {"name": "fv"}}).encode(), "application/json", 400, "BadRequest",
     "fieldValidation"),
    ("bad-timeout-seconds", "GET", PODS + "?watch=true&timeoutSeconds=soon", None, None, 400,
     "BadRequest", "timeoutSeconds"),
    ("unsupported-post-type", "POST", PODS, json.dumps(POD).encode(), "application/xml", 415,
     "UnsupportedMediaType", "application/xml"),
    ("patch-type-on-post", "POST", PODS, json.dumps(POD).encode(),
     "application/merge-patch+json", 415, "UnsupportedMediaType", None),
    ("bad-method", "PUT", PODS, json.dumps(POD).encode(), "application/json", 405,
     "MethodNotAllowed", None),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_a_status_and_the_server_keeps_serving(
        cluster: RunningCluster, case: tuple[Any, ...]) -> None:
    _, method, path, body, ctype, expected, reason, mentions = case
    code, answer = raw(cluster, method, path, body, ctype)
    assert_status(code, answer, expected, reason, mentions)
    assert_still_serving(cluster)
    # Nothing half-written: no pod appeared from a rejected body.
    code, listed = raw(cluster, "GET", PODS)
    assert {"svc", "fv", "placeholder"}.isdisjoint(
        p["metadata"]["name"] for p in listed["items"])


def test_a_10_mib_body_is_refused_with_413(cluster: RunningCluster) -> None:
    big = dict(POD, metadata={"name": "huge", "annotations": {"blob": "x" * (10 * 1024 * 1024)}})
    code, answer = raw(cluster, "POST", PODS, json.dumps(big).encode(), timeout_s=60)
    assert_status(code, answer, 413, "RequestEntityTooLarge")
    assert_still_serving(cluster)
    assert raw(cluster, "GET", PODS + "/huge")[0] == 404


def test_a_10_mib_chunked_body_is_refused_with_413(cluster: RunningCluster) -> None:
    """No Content-Length to check up front: the limit must hold while reading."""
    host, port = _api_host_port(cluster)
    conn = http.client.HTTPSConnection(host, port, timeout=60, context=cluster.ssl)
    blob = json.dumps(dict(POD, metadata={"name": "huge-chunked", "annotations": {
        "blob": "x" * (10 * 1024 * 1024)}})).encode()
    try:
        conn.request("POST", PODS, body=iter([blob[i:i + 65536]
                                              for i in range(0, len(blob), 65536)]),
                     headers={"Authorization": f"Bearer {cluster.token}",
                              "Content-Type": "application/json"},
                     encode_chunked=True)
        resp = conn.getresponse()
        code, answer = resp.status, json.loads(resp.read())
    finally:
        conn.close()
    assert_status(code, answer, 413, "RequestEntityTooLarge")
    assert_still_serving(cluster)
    assert raw(cluster, "GET", PODS + "/huge-chunked")[0] == 404


def test_patch_with_an_unsupported_content_type_is_415(cluster: RunningCluster) -> None:
    code, created = raw(cluster, "POST", PODS, json.dumps(
        {**POD, "metadata": {"name": "patch-me"}}).encode())
    assert code == 201, created
    for ctype in ("text/plain", "application/xml", "application/json"):
        code, answer = raw(cluster, "PATCH", PODS + "/patch-me",
                           b'{"metadata": {"labels": {"x": "y"}}}', ctype)
        assert_status(code, answer, 415, "UnsupportedMediaType")
        assert_still_serving(cluster)
    code, answer = raw(cluster, "PATCH", PODS + "/patch-me", b'{"metadata": {',
                       "application/merge-patch+json")
    assert_status(code, answer, 400, "BadRequest")
    code, pod = raw(cluster, "GET", PODS + "/patch-me")
    assert code == 200 and "x" not in (pod["metadata"].get("labels") or {})


def test_put_with_a_stale_resource_version_is_a_409_conflict(cluster: RunningCluster) -> None:
    # A namespace: no controller writes to it, so "current" stays current during the test.
    nss = "/api/v1/namespaces"
    code, created = raw(cluster, "POST", nss, json.dumps({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "put-me"}}).encode())
    assert code == 201, created
    stale = json.loads(json.dumps(created))
    code, fresh = raw(cluster, "PATCH", nss + "/put-me",
                      b'{"metadata": {"labels": {"v": "2"}}}', "application/merge-patch+json")
    assert code == 200, fresh
    stale["metadata"].setdefault("labels", {})["v"] = "stale"
    code, answer = raw(cluster, "PUT", nss + "/put-me", json.dumps(stale).encode())
    assert_status(code, answer, 409, "Conflict")
    assert_still_serving(cluster)
    code, now = raw(cluster, "GET", nss + "/put-me")
    assert now["metadata"]["labels"]["v"] == "2"
    # The same update on the current version succeeds: the 409 was about staleness.
    now["metadata"]["labels"]["v"] = "3"
    code, updated = raw(cluster, "PUT", nss + "/put-me", json.dumps(now).encode())
    assert code == 200, updated
    assert int(updated["metadata"]["resourceVersion"]) > int(now["metadata"]["resourceVersion"])
    # A PUT whose body names another object is refused too.
    other = json.loads(json.dumps(updated))
    other["metadata"]["name"] = "someone-else"
    code, answer = raw(cluster, "PUT", nss + "/put-me", json.dumps(other).encode())
    assert 400 <= code < 500 and answer.get("kind") == "Status", answer
    # Pods too (their status changes meanwhile; a stale body is stale all the same).
    code, pod = raw(cluster, "POST", PODS, json.dumps(
        {**POD, "metadata": {"name": "put-pod"}}).encode())
    assert code == 201, pod
    code, _ = raw(cluster, "PATCH", PODS + "/put-pod", b'{"metadata": {"labels": {"v": "2"}}}',
                  "application/merge-patch+json")
    assert code == 200
    pod["metadata"]["labels"] = {"v": "stale"}
    code, answer = raw(cluster, "PUT", PODS + "/put-pod", json.dumps(pod).encode())
    assert_status(code, answer, 409, "Conflict")
    assert raw(cluster, "GET", PODS + "/put-pod")[1]["metadata"]["labels"]["v"] == "2"


def test_kubectl_rejects_an_unknown_field_naming_it_and_stores_nothing(
        cluster: RunningCluster, tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: typo}
        spec:
          containers:
            - name: c
              image: podnet/echo
              imagePullPolicee: Always
        """))
    for verb in (("apply", "-f"), ("create", "-f")):
        result = cluster.kubectl(*verb, str(path))
        assert result.returncode != 0, result.stdout
        assert "imagePullPolicee" in result.stderr, result.stderr
        assert "unknown field" in result.stderr, result.stderr
    assert "typo" not in cluster.kubectl("get", "pods", "-o", "name").stdout
    assert raw(cluster, "GET", PODS + "/typo")[0] == 404
    # Raw API, explicit Strict: a 400 naming the field; nothing stored either.
    body = json.dumps({**POD, "metadata": {"name": "typo"}, "spec": {
        "containers": [{"name": "c", "image": "podnet/echo", "imagePullPolicee": "x"}]}})
    code, answer = raw(cluster, "POST", PODS + "?fieldValidation=Strict", body.encode())
    # 400 (kube-apiserver's strict decoding error) or 422 (podnet lists it with the other
    # field errors): either way a Status naming the field's path.
    assert code in (400, 422), (code, answer)
    assert_status(code, answer, code, None, "spec.containers[0].imagePullPolicee")
    assert raw(cluster, "GET", PODS + "/typo")[0] == 404


def test_requests_with_a_wrong_token_get_401(cluster: RunningCluster) -> None:
    for token in (None, "not-the-token", cluster.token + "x"):
        code, answer = raw(cluster, "GET", PODS, token=token)
        assert_status(code, answer, 401, "Unauthorized")
    assert_still_serving(cluster)


def test_api_port_survives_garbage_and_plaintext(cluster: RunningCluster) -> None:
    host, port = _api_host_port(cluster)
    for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # plaintext HTTP on the TLS port
                 b"\x16\x03\x01\x00\xff" + b"\x00" * 64,  # a broken TLS ClientHello
                 bytes(range(256)) * 16):
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(10)
            try:
                while s.recv(4096):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
        assert_still_serving(cluster)
    # TLS done right, then garbage instead of HTTP.
    ctx = cluster.ssl
    with socket.create_connection((host, port), timeout=10) as s, \
            ctx.wrap_socket(s, server_hostname=host) as tls:
        tls.sendall(b"\x00\x01garbage that is not HTTP\r\n\r\n")
        tls.settimeout(10)
        try:
            data = tls.recv(4096)
        except (ssl.SSLError, ConnectionError, TimeoutError):
            data = b""
        assert data == b"" or data.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), data
    assert_still_serving(cluster)


def test_an_oversized_request_line_or_header_is_one_log_event_not_a_traceback(
        cluster: RunningCluster) -> None:
    logs = cluster.state_dir / "logs"
    tracebacks = (logs / "controlplane.stderr").read_text().count("Traceback")
    code, _ = raw(cluster, "GET", PODS + "?labelSelector=" + "a" * 9000)
    assert code == 400
    host, port = _api_host_port(cluster)
    conn = http.client.HTTPSConnection(host, port, timeout=30, context=cluster.ssl)
    try:
        conn.request("GET", PODS, headers={"X-Big": "b" * 9000})
        assert conn.getresponse().status == 400
    finally:
        conn.close()
    assert_still_serving(cluster)

    def logged() -> list[dict[str, Any]] | None:
        events = [json.loads(line) for line in
                  (logs / "controlplane.jsonl").read_text().splitlines()
                  if '"http.bad_request"' in line]
        return events if len(events) >= 2 else None
    events = wait_for(logged, 10, what="two http.bad_request events")
    assert {(e["status"], e["error"], e["level"]) for e in events} == {
        (400, "LineTooLong", "warning")}
    assert (logs / "controlplane.stderr").read_text().count("Traceback") == tracebacks


# ---------------------------------------------------------------------- agent port


def _agent(cluster: RunningCluster, name: str = "node-1") -> tuple[str, int]:
    node = next(n for n in cluster.info["nodes"] if n["name"] == name)
    host, port = node["address"].rsplit(":", 1)
    assert host == "127.0.0.1"
    return host, int(port)


def agent_get(cluster: RunningCluster, path: str, token: str | None,
              node: str = "node-1") -> tuple[int, Any]:
    host, port = _agent(cluster, node)
    conn = http.client.HTTPConnection(host, port, timeout=15)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(data)
    except ValueError:
        return resp.status, data.decode(errors="replace")


AGENT_PATHS = ["/pods/default/nobody/log", "/pods/default/nobody/exec?command=hostname",
               "/pods/kube-system/x/log?follow=true", "/", "/metrics"]


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_agent_port_refuses_requests_without_the_agent_token(cluster: RunningCluster,
                                                             node: str) -> None:
    for path in AGENT_PATHS:
        for token in (None, "", cluster.token, cluster.token.upper(), "x" * 64):
            code, answer = agent_get(cluster, path, token, node)
            assert code == 401, (path, token, code, answer)
            assert isinstance(answer, dict) and answer.get("reason") == "Unauthorized"
    # Basic auth or a bare token are not a bearer token either.
    host, port = _agent(cluster, node)
    for header in (f"Basic {cluster.token}", cluster.token,
                   f"Bearer {agent_token(load_secret(cluster.state_dir / 'secret'))}x"):
        conn = http.client.HTTPConnection(host, port, timeout=15)
        try:
            conn.request("GET", AGENT_PATHS[0], headers={"Authorization": header})
            assert conn.getresponse().status == 401, header
        finally:
            conn.close()
    # Control: the agent token itself gets past authentication (to a 404 for no such pod).
    good = agent_token(load_secret(cluster.state_dir / "secret"))
    code, answer = agent_get(cluster, AGENT_PATHS[0], good, node)
    assert code == 404 and answer.get("reason") == "NotFound", answer
    assert agent_get(cluster, "/healthz", None, node) == (200, "ok")


def test_agent_port_survives_garbage(cluster: RunningCluster) -> None:
    host, port = _agent(cluster)
    junk_inputs = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 500,  # TLS to a plain port
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n" + b"X-Big: " + b"y" * 200_000 + b"\r\n\r\n",
        bytes(range(256)) * 64,
    ]
    for junk in junk_inputs:
        with socket.create_connection((host, port), timeout=10) as s:
            try:
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(10)
                while s.recv(4096):
                    pass
            except (ConnectionResetError, BrokenPipeError, TimeoutError):
                pass
        assert agent_get(cluster, "/healthz", None) == (200, "ok")
    # A half-sent request that stalls must not block others.
    with socket.create_connection((host, port), timeout=10) as stalled:
        stalled.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert agent_get(cluster, "/healthz", None) == (200, "ok")
    # The agent still does its job: its node stays Ready and exec through the API works.
    code, node = raw(cluster, "GET", "/api/v1/nodes/node-1")
    assert any(c["type"] == "Ready" and c["status"] == "True"
               for c in node["status"]["conditions"])
    code, _ = raw(cluster, "POST", PODS, json.dumps({**POD, "metadata": {"name": "after-junk"},
                                                      "spec": {"nodeName": "node-1",
                                                               "containers": POD["spec"][
                                                                   "containers"]}}).encode())
    assert code == 201
    cluster.running_pod("after-junk", timeout_s=30)
    result = wait_for(lambda: (r := cluster.podnet("exec", "after-junk", "--", "hostname"))
                      .returncode == 0 and r, timeout_s=30, what="exec after the junk")
    assert result.stdout.strip() == "after-junk"


# ---------------------------------------------------------------------- found by these tests


@pytest.mark.parametrize("ctype,body", [
    ("application/json", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    ("application/json", b"[" * 50_000 + b"]" * 50_000),
    ("application/yaml", b"a: " + b"[" * 50_000 + b"]" * 50_000),
    ("application/merge-patch+json", b"[" * 50_000 + b"]" * 50_000),
], ids=["json-object", "json-list", "yaml", "merge-patch"])
def test_deeply_nested_bodies_are_a_400(cluster: RunningCluster, ctype: str,
                                        body: bytes) -> None:
    method, path = ("PATCH", PODS + "/deep-target") if "patch" in ctype else ("POST", PODS)
    if method == "PATCH":
        raw(cluster, "POST", PODS, json.dumps({**POD, "metadata": {"name": "deep-target"}})
            .encode())
    code, answer = raw(cluster, method, path, body, ctype)
    assert_still_serving(cluster)
    assert_status(code, answer, 400, "BadRequest")


def test_binding_with_malformed_metadata_is_a_400(cluster: RunningCluster) -> None:
    code, _ = raw(cluster, "POST", PODS, json.dumps(
        {**POD, "metadata": {"name": "bind-me"}, "spec": {**POD["spec"],
                                                          "nodeSelector": {"no": "where"}}})
        .encode())
    assert code == 201
    for meta in ('"a string"', "[1]", "5"):
        code, answer = raw(cluster, "POST", PODS + "/bind-me/binding",
                           f'{{"metadata": {meta}, "target": {{"name": "node-1"}}}}'.encode())
        assert_still_serving(cluster)
        assert_status(code, answer, 400, "BadRequest")
    assert not raw(cluster, "GET", PODS + "/bind-me")[1]["spec"].get("nodeName")


def test_delete_with_malformed_preconditions_is_a_400_and_deletes_nothing(
        cluster: RunningCluster) -> None:
    code, _ = raw(cluster, "POST", PODS, json.dumps(
        {**POD, "metadata": {"name": "keep-me"}, "spec": {**POD["spec"],
                                                          "nodeSelector": {"no": "where"}}})
        .encode())
    assert code == 201
    code, answer = raw(cluster, "DELETE", PODS + "/keep-me",
                       b'{"kind": "DeleteOptions", "apiVersion": "v1", '
                       b'"preconditions": "uid-that-is-not-an-object"}')
    assert_still_serving(cluster)
    still_there = raw(cluster, "GET", PODS + "/keep-me")[0] == 200
    assert_status(code, answer, 400, "BadRequest")
    assert still_there


def test_malformed_node_status_is_rejected_and_the_controlplane_keeps_running(
        tmp_path: Path) -> None:
    from harness import cluster_at

    with cluster_at(tmp_path / "state", 1) as own:
        code, answer = raw(own, "PATCH", "/api/v1/nodes/node-1/status",
                           b'{"status": {"conditions": [5, "x"]}}',
                           "application/merge-patch+json")
        accepted = code == 200
        # Whatever the answer, the control plane must keep serving and scheduling.
        code2, _ = raw(own, "POST", PODS, json.dumps({**POD, "metadata": {"name": "later"}})
                       .encode())
        assert code2 == 201
        own.running_pod("later", timeout_s=30)
        assert_still_serving(own)
        assert not accepted, answer
        assert 400 <= code < 500 and answer.get("kind") == "Status", answer
