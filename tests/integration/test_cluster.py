"""The foundation, end to end: `podnet up --detach`, real agents and control plane processes,
driven with the CLI, the HTTP API and the real kubectl."""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path
from typing import Any

import pytest
from harness import RunningCluster, wait_for

MANIFEST = textwrap.dedent("""\
    apiVersion: v1
    kind: Pod
    metadata: {name: echo, labels: {app: echo}}
    spec:
      nodeName: node-1
      containers:
        - {name: echo, image: podnet/echo, ports: [{containerPort: 8080}]}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: client}
    spec:
      nodeName: node-1
      containers:
        - {name: toolbox, image: podnet/toolbox}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: far-echo}
    spec:
      nodeName: node-2
      containers:
        - {name: echo, image: podnet/echo}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: duo}
    spec:
      containers:
        - {name: web, image: podnet/echo, ports: [{containerPort: 9000}]}
        - {name: side, image: podnet/toolbox}
    """)


@pytest.fixture(scope="module")
def pods(cluster: RunningCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("m") / "pods.yaml"
    path.write_text(MANIFEST)
    result = cluster.kubectl("apply", "-f", str(path))
    assert result.returncode == 0, result.stderr
    return {name: cluster.running_pod(name) for name in ("echo", "client", "far-echo", "duo")}


def test_cluster_json_describes_the_running_cluster(cluster: RunningCluster) -> None:
    info = cluster.info
    assert info["api"].startswith("https://127.0.0.1:")
    assert [n["name"] for n in info["nodes"]] == ["node-1", "node-2"]
    cidrs = [n["podCIDR"] for n in info["nodes"]]
    assert len(set(cidrs)) == 2 and all(c.startswith("10.244.") and c.endswith("/24")
                                        for c in cidrs)
    for pid in cluster.pids():
        os.kill(pid, 0)  # alive
    assert stat.S_IMODE(Path(info["secret_file"]).stat().st_mode) == 0o600
    assert Path(info["logs_dir"], "controlplane.jsonl").exists()


def test_kubectl_sees_ready_nodes_and_namespaces(cluster: RunningCluster) -> None:
    out = cluster.kubectl("get", "nodes").stdout
    assert out.split("\n")[0].split()[:2] == ["NAME", "STATUS"]
    assert "node-1   Ready" in out and "node-2   Ready" in out
    ns = cluster.kubectl("get", "ns", "-o", "name").stdout.split()
    assert "namespace/default" in ns and "namespace/kube-system" in ns


def test_requests_without_token_get_401(cluster: RunningCluster) -> None:
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(cluster.info["api"] + "/api/v1/pods", timeout=5,
                               context=cluster.ssl)
    assert err.value.code == 401
    assert json.loads(err.value.read())["reason"] == "Unauthorized"


def test_every_pod_gets_an_ip_from_its_nodes_cidr(cluster: RunningCluster,
                                                  pods: dict[str, Any]) -> None:
    cidr = {n["name"]: n["podCIDR"].rsplit(".", 1)[0] for n in cluster.info["nodes"]}
    ips = set()
    for pod in pods.values():
        node, ip = pod["spec"]["nodeName"], pod["status"]["podIP"]
        assert ip.startswith(cidr[node] + ".")
        assert pod["status"]["hostIP"] == "127.0.0.1"
        ips.add(ip)
    assert len(ips) == len(pods)
    wide = cluster.kubectl("get", "pods", "-o", "wide").stdout
    header = wide.splitlines()[0].split()
    assert header[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert "IP" in header and "NODE" in header
    line = next(ln for ln in wide.splitlines() if ln.startswith("echo "))
    assert pods["echo"]["status"]["podIP"] in line and "node-1" in line and "Running" in line


def test_pod_to_pod_same_node_no_nat(cluster: RunningCluster, pods: dict[str, Any]) -> None:
    ip = pods["echo"]["status"]["podIP"]
    result = cluster.podnet("exec", "client", "--", "curl", "-s", f"http://{ip}:8080/hello")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["pod"] == "echo" and answer["podIP"] == ip and answer["path"] == "/hello"
    client_ip, _, port = answer["client"].rpartition(":")
    assert client_ip == pods["client"]["status"]["podIP"]  # the sender's own pod IP
    assert int(port) > 1024


def test_kubectl_exec_with_real_exit_codes(cluster: RunningCluster,
                                           pods: dict[str, Any]) -> None:
    ip = pods["echo"]["status"]["podIP"]
    ok = cluster.kubectl("exec", "client", "--", "curl", "-s", "-o", "/dev/null", "-w",
                         "%{http_code}", f"http://{ip}:8080/")
    assert (ok.returncode, ok.stdout) == (0, "200")
    refused = cluster.kubectl("exec", "client", "--", "curl", "-sS", f"http://{ip}:9999/")
    assert refused.returncode == 7
    assert "Connection refused" in refused.stderr
    missing = cluster.kubectl("exec", "client", "--", "frobnicate")
    assert missing.returncode == 127
    assert "frobnicate: not found" in missing.stderr
    assert cluster.kubectl("exec", "client", "--", "hostname").stdout.strip() == "client"
    resolv = cluster.kubectl("exec", "client", "--", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 10.96.0.10" in resolv and "options ndots:5" in resolv


def test_containers_in_a_pod_share_localhost(cluster: RunningCluster,
                                             pods: dict[str, Any]) -> None:
    result = cluster.podnet("exec", "duo", "-c", "side", "--", "curl", "-s",
                            "http://localhost:9000/")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["pod"] == "duo"
    assert answer["client"].startswith("127.0.0.1:")


def test_kubectl_logs_shows_what_the_container_printed(cluster: RunningCluster,
                                                       pods: dict[str, Any]) -> None:
    ip = pods["echo"]["status"]["podIP"]
    cluster.podnet("exec", "client", "--", "curl", "-s", f"http://{ip}:8080/logged-path")
    logs = wait_for(lambda: (r := cluster.kubectl("logs", "echo").stdout)
                    and "/logged-path" in r and r, what="echo access log line")
    assert pods["client"]["status"]["podIP"] in logs


def test_user_image_args_env_and_logs(cluster: RunningCluster, tmp_path: Path) -> None:
    path = tmp_path / "hello.yaml"
    path.write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: hello}
        spec:
          containers:
            - name: main
              image: py:podapps:hello
              args: [big, world]
              env:
                - {name: GREETING, value: hi}
                - name: MY_POD_IP
                  valueFrom: {fieldRef: {fieldPath: status.podIP}}
        """))
    assert cluster.kubectl("apply", "-f", str(path)).returncode == 0
    pod = cluster.running_pod("hello")
    ip = pod["status"]["podIP"]
    logs = wait_for(lambda: cluster.kubectl("logs", "hello").stdout, what="hello's output")
    assert logs == f"hello big world from {ip} GREETING=hi POD_IP={ip}\n"


def test_crashing_container_is_restarted(cluster: RunningCluster) -> None:
    code, _ = cluster.api("POST", "/api/v1/namespaces/default/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crasher"},
        "spec": {"containers": [{"name": "c", "image": "py:podapps:crash"}]}})
    assert code == 201

    def restarted() -> int:
        pod = cluster.pod("crasher") or {}
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        return int(statuses[0].get("restartCount", 0))

    assert wait_for(lambda: restarted() >= 2, timeout_s=20, what="two restarts")
    pod = cluster.pod("crasher")
    assert pod is not None
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 1 and "boom" in last["message"]


def test_restart_policy_never_succeeds_once(cluster: RunningCluster) -> None:
    code, _ = cluster.api("POST", "/api/v1/namespaces/default/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "oneshot"},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "py:podapps:finish"}]}})
    assert code == 201
    wait_for(lambda: (cluster.pod("oneshot") or {}).get("status", {}).get("phase")
             == "Succeeded", what="oneshot Succeeded")
    assert "Completed" in cluster.kubectl("get", "pod", "oneshot").stdout


def test_unimportable_image_fails_the_container_not_the_agent(
        cluster: RunningCluster, pods: dict[str, Any]) -> None:
    code, _ = cluster.api("POST", "/api/v1/namespaces/default/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "broken"},
        "spec": {"nodeName": "node-1",
                 "containers": [{"name": "c", "image": "py:no_such_module:main"}]}})
    assert code == 201

    def waiting() -> dict[str, Any] | None:
        statuses = ((cluster.pod("broken") or {}).get("status") or {}).get(
            "containerStatuses") or [{}]
        return statuses[0].get("state", {}).get("waiting")

    state = wait_for(lambda: (w := waiting()) and "message" in w and w,
                     what="an image error in the container status")
    assert state["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert "no_such_module" in state["message"]
    described = cluster.kubectl("describe", "pod", "broken").stdout
    assert "no_such_module" in described
    # The agent still serves its other pods.
    ip = pods["echo"]["status"]["podIP"]
    assert cluster.podnet("exec", "client", "--", "curl", "-s",
                          f"http://{ip}:8080/").returncode == 0


def test_invalid_manifests_are_rejected_with_field_paths(cluster: RunningCluster,
                                                         tmp_path: Path) -> None:
    cases = {
        "spec.containers[0].image": "containers: [{name: c}]",
        "metadata.name": "containers: [{name: c, image: podnet/echo}]",
        "spec.containers[1].ports[0].containerPort": (
            "containers: [{name: a, image: podnet/echo, ports: [{containerPort: 80}]},"
            " {name: b, image: podnet/echo, ports: [{containerPort: 80}]}]"),
    }
    for i, (field, spec) in enumerate(cases.items()):
        name = "" if field == "metadata.name" else f"bad-{i}"
        path = tmp_path / f"bad{i}.yaml"
        meta = "{name: Bad_Name}" if not name else f"{{name: {name}}}"
        path.write_text(f"apiVersion: v1\nkind: Pod\nmetadata: {meta}\nspec:\n  {spec}\n")
        result = cluster.kubectl("apply", "-f", str(path))
        assert result.returncode != 0
        assert field in result.stderr, result.stderr
    listed = cluster.kubectl("get", "pods", "-o", "name").stdout
    assert "bad-" not in listed
    result = cluster.kubectl("apply", "-f", str(tmp_path / "bad0.yaml"), "--validate=false")
    assert result.returncode != 0


def test_delete_stops_the_pod(cluster: RunningCluster) -> None:
    code, _ = cluster.api("POST", "/api/v1/namespaces/default/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "short-lived"},
        "spec": {"terminationGracePeriodSeconds": 5,
                 "containers": [{"name": "e", "image": "podnet/echo"}]}})
    assert code == 201
    cluster.running_pod("short-lived")
    result = cluster.kubectl("delete", "pod", "short-lived", timeout_s=30)
    assert result.returncode == 0, result.stderr
    assert 'pod "short-lived" deleted' in result.stdout
    assert cluster.pod("short-lived") is None
