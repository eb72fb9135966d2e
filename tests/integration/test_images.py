"""Tutorial images on a real cluster, driven with the real kubectl: an nginx Deployment
reached from a busybox pod, a busybox command's exit code, agnhost netexec across nodes, and
an image podnet does not emulate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from harness import RunningCluster, wait_for

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports: [{containerPort: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: bb}
spec:
  nodeName: node-1
  containers:
  - name: bb
    image: busybox:1.36
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: exits}
spec:
  restartPolicy: Never
  containers:
  - name: sh
    image: busybox
    command: [sh, -c, "echo hi; exit 3"]
---
apiVersion: v1
kind: Pod
metadata: {name: agn-1}
spec:
  nodeName: node-1
  containers:
  - name: agnhost
    image: registry.k8s.io/e2e-test-images/agnhost:2.52
    args: ["netexec", "--http-port=8080", "--udp-port=8081"]
---
apiVersion: v1
kind: Pod
metadata: {name: agn-2}
spec:
  nodeName: node-2
  containers:
  - name: agnhost
    image: registry.k8s.io/e2e-test-images/agnhost:2.52
    command: ["/agnhost", "netexec"]
---
apiVersion: v1
kind: Pod
metadata: {name: noshell}
spec:
  restartPolicy: Never
  containers:
  - name: whoami
    image: traefik/whoami
    command: [sh, -c, "echo hi"]
---
apiVersion: v1
kind: Pod
metadata: {name: redis}
spec:
  containers:
  - name: redis
    image: redis:7.2
"""


@pytest.fixture(scope="module")
def pods(cluster: RunningCluster, tmp_path_factory: pytest.TempPathFactory,
         ) -> Iterator[dict[str, dict[str, Any]]]:
    manifest = tmp_path_factory.mktemp("images") / "images.yaml"
    manifest.write_text(MANIFEST)
    applied = cluster.kubectl("apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    yield {name: cluster.running_pod(name) for name in ("bb", "agn-1", "agn-2")}


def _web_pod(cluster: RunningCluster) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        code, body = cluster.api("GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")
        items = body["items"] if code == 200 else []
        return next((p for p in items if p.get("status", {}).get("podIP") and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", []))), None)
    return wait_for(ready, 30, what="the nginx Deployment's pod Ready")


def test_nginx_deployment_reached_from_busybox(cluster: RunningCluster,
                                               pods: dict[str, dict[str, Any]]) -> None:
    web = _web_pod(cluster)
    ip = web["status"]["podIP"]
    page = cluster.kubectl("exec", "bb", "--", "wget", "-qO-", f"http://{ip}/")
    assert page.returncode == 0, page.stderr
    assert "<title>Welcome to nginx!</title>" in page.stdout
    missing = cluster.kubectl("exec", "bb", "--", "wget", "-O-", f"http://{ip}/nope")
    assert missing.returncode != 0 and "404 Not Found" in missing.stderr
    bb_ip = pods["bb"]["status"]["podIP"]
    logs = wait_for(lambda: (out := cluster.kubectl("logs", web["metadata"]["name"]).stdout)
                    and '"GET /nope HTTP/1.1" 404' in out and out, what="nginx access log")
    assert f'{bb_ip} - - [' in logs and '"GET / HTTP/1.1" 200 615' in logs


def test_nginx_serves_what_exec_wrote_into_its_html_dir(
        cluster: RunningCluster, pods: dict[str, dict[str, Any]]) -> None:
    # The StatefulSet tutorial's step: write the hostname into index.html, then fetch it.
    web = _web_pod(cluster)
    name = web["metadata"]["name"]
    wrote = cluster.kubectl("exec", name, "--", "sh", "-c",
                            'echo "$(hostname)" > /usr/share/nginx/html/index.html')
    assert wrote.returncode == 0, wrote.stderr
    page = cluster.kubectl("exec", "bb", "--", "wget", "-qO-",
                           f"http://{web['status']['podIP']}/")
    assert page.stdout == f"{name}\n"


def test_busybox_command_exit_code_is_the_containers(cluster: RunningCluster,
                                                     pods: dict[str, dict[str, Any]]) -> None:
    def terminated() -> dict[str, Any] | None:
        pod = cluster.pod("exits") or {}
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        state = statuses[0].get("state", {}).get("terminated")
        return state if state and pod["status"].get("phase") == "Failed" else None

    state = wait_for(terminated, 20, what="busybox `exit 3` Failed")
    assert state["exitCode"] == 3 and state["reason"] == "Error"
    assert cluster.kubectl("logs", "exits").stdout == "hi\n"
    listed = cluster.kubectl("get", "pod", "exits").stdout
    assert "Error" in listed and "0/1" in listed


def test_a_command_the_image_lacks_is_a_start_error(cluster: RunningCluster,
                                                    pods: dict[str, dict[str, Any]]) -> None:
    def terminated() -> dict[str, Any] | None:
        statuses = ((cluster.pod("noshell") or {}).get("status") or {}).get(
            "containerStatuses") or [{}]
        state: dict[str, Any] | None = statuses[0].get("state", {}).get("terminated")
        return state

    state = wait_for(terminated, 20, what="the shell-less pod terminated")
    assert (state["exitCode"], state["reason"]) == (128, "StartError")
    assert 'exec: "sh": executable file not found in $PATH' in state["message"]
    assert "StartError" in cluster.kubectl("get", "pod", "noshell").stdout


def test_agnhost_netexec_hostname_clientip_and_dial(cluster: RunningCluster,
                                                    pods: dict[str, dict[str, Any]]) -> None:
    agn1, agn2 = pods["agn-1"]["status"]["podIP"], pods["agn-2"]["status"]["podIP"]
    bb_ip = pods["bb"]["status"]["podIP"]

    def get(url: str) -> str:
        result = cluster.kubectl("exec", "bb", "--", "wget", "-qO-", url)
        assert result.returncode == 0, (url, result.stderr)
        return result.stdout

    assert get(f"http://{agn1}:8080/hostname") == "agn-1"
    assert get(f"http://{agn2}:8080/hostname") == "agn-2"    # across nodes
    # The caller's own pod IP: no NAT between pods.
    assert get(f"http://{agn2}:8080/clientip").split(":")[0] == bb_ip
    dial = get(f"http://{agn1}:8080/dial?request=hostname&protocol=http&host={agn2}"
               "&port=8080&tries=2")
    assert json.loads(dial) == {"responses": ["agn-2", "agn-2"]}
    udp = get(f"http://{agn1}:8080/dial?request=clientip&protocol=udp&host={agn2}&port=8081")
    assert json.loads(udp)["responses"][0].split(":")[0] == agn1


def test_unknown_image_is_err_image_pull_with_the_list(cluster: RunningCluster,
                                                       pods: dict[str, dict[str, Any]]) -> None:
    def waiting() -> dict[str, Any] | None:
        statuses = ((cluster.pod("redis") or {}).get("status") or {}).get(
            "containerStatuses") or [{}]
        state = statuses[0].get("state", {}).get("waiting")
        return state if state and "message" in state else None

    state = wait_for(waiting, 20, what="redis waiting with an image error")
    assert state["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert "'redis:7.2' is not emulated by podnet" in state["message"]
    assert "agnhost" in state["message"] and "py:package.module:function" in state["message"]
    described = cluster.kubectl("describe", "pod", "redis").stdout
    assert "is not emulated by podnet" in described
