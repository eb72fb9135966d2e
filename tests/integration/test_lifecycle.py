"""Process lifecycle, end to end: killing and restarting the control plane, agents and whole
clusters; `podnet up`/`down` edge cases; the scheduler; pod termination; the process CLIs.

Tests that kill or restart processes start their own cluster (`cluster_at`) so the shared
module cluster is never disturbed. Nothing here asserts on durations: every wait is a
`wait_for` with a generous timeout, and each check can fail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import PODNET, TESTS, RunningCluster, cluster_at, start_cluster, stop_cluster, wait_for

from podnet.settings import AgentSettings, ControlPlaneSettings

# ---------------------------------------------------------------------- helpers


def _alive(pid: int) -> bool:
    """Whether `pid` is a live (non-zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        return state != "Z"
    return True


def _processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains `text` (never this test process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        if text in cmdline and _alive(int(entry.name)):
            found.append((int(entry.name), cmdline))
    return found


def _env() -> dict[str, str]:
    """This interpreter's environment with tests/ importable (for `py:podapps:...`)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p))


def _run(argv: list[str], cwd: Path, timeout_s: float = 60,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=cwd,
                          env=env or _env(), stdin=subprocess.DEVNULL)


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, (
        f"a traceback instead of a clear message:\n{result.stderr}")


def _ready(obj: dict[str, Any] | None) -> str | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status"))
    return None


def _node(cluster: RunningCluster, name: str) -> dict[str, Any] | None:
    code, body = cluster.api("GET", f"/api/v1/nodes/{name}")
    return body if code == 200 else None


def _heartbeat(node: dict[str, Any] | None) -> str:
    for cond in ((node or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("lastHeartbeatTime", ""))
    return ""


def _healthy(cluster: RunningCluster) -> bool:
    try:
        with urllib.request.urlopen(cluster.info["api"] + "/healthz", timeout=3,
                                    context=cluster.ssl) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _pod(name: str, *, node: str | None = None, image: str = "podnet/echo",
         labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": name, "labels": labels or {}},
                            "spec": {"containers": [{"name": "c", "image": image}], **spec}}
    if node:
        body["spec"]["nodeName"] = node
    return body


def _create_pod(cluster: RunningCluster, body: dict[str, Any],
                namespace: str = "default") -> dict[str, Any]:
    code, created = cluster.api("POST", f"/api/v1/namespaces/{namespace}/pods", body)
    assert code == 201, created
    return dict(created)


def _kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _alive(pid), timeout_s=15, what=f"pid {pid} to die")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _controlplane_alone(cluster: RunningCluster, out_dir: Path) -> Iterator[
        subprocess.Popen[bytes]]:
    """The control plane restarted by itself on the address in cluster.json."""
    host, port = cluster.info["controlplane"]["address"].rsplit(":", 1)
    assert host == "127.0.0.1"
    with (out_dir / "cp2.stdout").open("wb") as out, (out_dir / "cp2.stderr").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controlplane", "--state-dir", str(cluster.state_dir),
             "--listen-host", "127.0.0.1", "--listen-port", port],
            stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=_env(), cwd=out_dir)
    try:
        yield proc
    finally:
        _stop(proc)


# ---------------------------------------------------------------------- 1. control plane kill


def _acknowledged_writes(cluster: RunningCluster) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Namespaces and pods created (and one labelled) through the API, each answered 2xx."""
    acked: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kind, ns, name) -> object
    for i in range(4):
        code, ns = cluster.api("POST", "/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": f"team-{i}", "labels": {"team": str(i), "batch": "b1"}}})
        assert code == 201, ns
        acked[("Namespace", "", f"team-{i}")] = ns
        for j in range(3):
            pod = _create_pod(cluster, _pod(f"p{j}", labels={"app": f"a{i}", "j": str(j)}),
                              namespace=f"team-{i}")
            acked[("Pod", f"team-{i}", f"p{j}")] = pod
    # A label added after creation is an acknowledged write too.
    code, labelled = cluster.api(
        "PATCH", "/api/v1/namespaces/team-0/pods/p0",
        {"metadata": {"labels": {"patched": "yes"}}}, "application/merge-patch+json")
    assert code == 200, labelled
    acked[("Pod", "team-0", "p0")] = labelled
    return acked


def test_sigkilled_controlplane_restarts_with_every_acknowledged_write(tmp_path: Path) -> None:
    with cluster_at(tmp_path / "state", 2) as cluster:
        acked = _acknowledged_writes(cluster)
        code, before = cluster.api("GET", "/api/v1/pods")
        assert code == 200
        rv_before = int(before["metadata"]["resourceVersion"])
        last_rv = {("Pod", o["metadata"]["namespace"], o["metadata"]["name"]):
                   int(o["metadata"]["resourceVersion"]) for o in before["items"]}

        _kill9(int(cluster.info["controlplane"]["pid"]))
        assert not _healthy(cluster)
        assert cluster.kubectl("get", "pods", timeout_s=60).returncode != 0

        with _controlplane_alone(cluster, tmp_path) as cp:
            wait_for(lambda: _healthy(cluster) or cp.poll() is not None, timeout_s=30,
                     what="the restarted control plane to serve /healthz")
            assert cp.poll() is None, (tmp_path / "cp2.stderr").read_text()[-3000:]

            for (kind, ns, name), obj in acked.items():
                path = (f"/api/v1/namespaces/{name}" if kind == "Namespace"
                        else f"/api/v1/namespaces/{ns}/pods/{name}")
                code, now = cluster.api("GET", path)
                assert code == 200, f"{kind} {ns}/{name} lost after SIGKILL: {now}"
                assert now["metadata"]["uid"] == obj["metadata"]["uid"]
                for key, value in obj["metadata"]["labels"].items():
                    assert now["metadata"]["labels"].get(key) == value, (kind, ns, name, key)
                rv = int(now["metadata"]["resourceVersion"])
                assert rv >= int(obj["metadata"]["resourceVersion"]), (kind, ns, name)
                assert rv >= last_rv.get((kind, ns, name), 0), (kind, ns, name)
            code, listed = cluster.api("GET", "/api/v1/namespaces?labelSelector=batch%3Db1")
            assert code == 200
            assert sorted(o["metadata"]["name"] for o in listed["items"]) == [
                f"team-{i}" for i in range(4)]
            code, listed = cluster.api("GET", "/api/v1/pods?labelSelector=patched%3Dyes")
            assert [o["metadata"]["name"] for o in listed["items"]] == ["p0"]
            code, after = cluster.api("GET", "/api/v1/pods")
            assert int(after["metadata"]["resourceVersion"]) >= rv_before
            # A new write gets a newer resourceVersion than anything before the kill.
            created = _create_pod(cluster, _pod("after-restart"))
            assert int(created["metadata"]["resourceVersion"]) > rv_before

            # The unchanged kubeconfig (same CA, same token) still works.
            result = cluster.kubectl("get", "pods", "-A", "-o", "name")
            assert result.returncode == 0, result.stderr
            assert result.stdout.count("pod/p0") == 4, result.stdout
            assert "pod/after-restart" in result.stdout
            assert cp.poll() is None


def _open_login(cluster: RunningCluster, url: str) -> int:
    """The status of GET `url` (a `podnet ui` link), without following its redirect."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=15,
                                       context=cluster.ssl)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}")
        return conn.getresponse().status
    finally:
        conn.close()


def test_a_used_ui_login_link_stays_used_across_a_controlplane_restart(tmp_path: Path) -> None:
    with cluster_at(tmp_path / "state", 1) as cluster:
        used, unused = (cluster.podnet("ui").stdout.strip() for _ in range(2))
        assert _open_login(cluster, used) == 303
        _kill9(int(cluster.info["controlplane"]["pid"]))
        with _controlplane_alone(cluster, tmp_path) as cp:
            wait_for(lambda: _healthy(cluster) or cp.poll() is not None, timeout_s=30,
                     what="the restarted control plane to serve /healthz")
            assert _open_login(cluster, used) == 401      # still used after the restart
            assert _open_login(cluster, unused) == 303    # a fresh link still works once
            assert _open_login(cluster, unused) == 401
            assert cp.poll() is None


def test_agents_survive_a_controlplane_sigkill_and_reconnect(tmp_path: Path) -> None:
    with cluster_at(tmp_path / "state", 2) as cluster:
        _create_pod(cluster, _pod("before-1", node="node-1"))
        _create_pod(cluster, _pod("before-2", node="node-2"))
        cluster.running_pod("before-1", timeout_s=30)
        cluster.running_pod("before-2", timeout_s=30)
        heartbeats = {n: _heartbeat(_node(cluster, n)) for n in ("node-1", "node-2")}
        agents = {n["name"]: int(n["pid"]) for n in cluster.info["nodes"]}

        _kill9(int(cluster.info["controlplane"]["pid"]))
        with _controlplane_alone(cluster, tmp_path) as cp:
            wait_for(lambda: _healthy(cluster) or cp.poll() is not None, timeout_s=30,
                     what="the restarted control plane to serve /healthz")
            assert cp.poll() is None, (tmp_path / "cp2.stderr").read_text()[-3000:]
            for name, pid in agents.items():
                assert _alive(pid), f"agent {name} exited when the control plane died"
            # Agents reconnect: each posts a new heartbeat to the new process.
            for name, stamp in heartbeats.items():
                wait_for(lambda n=name, s=stamp: (node := _node(cluster, n))
                         and _heartbeat(node) != s and _ready(node) == "True",
                         timeout_s=30, what=f"a fresh heartbeat from {name}")
            # Their pod watches resumed: new pods, pinned and scheduled, start Running.
            _create_pod(cluster, _pod("after-1", node="node-1"))
            _create_pod(cluster, _pod("after-2", node="node-2"))
            _create_pod(cluster, _pod("after-any"))
            for name in ("after-1", "after-2", "after-any"):
                cluster.running_pod(name, timeout_s=40)
            # The pods from before the kill kept running through it.
            ok = cluster.podnet("exec", "before-2", "--", "hostname")
            assert (ok.returncode, ok.stdout.strip()) == (0, "before-2"), ok.stderr
            for name, pid in agents.items():
                assert _alive(pid), f"agent {name} died"


# ---------------------------------------------------------------------- 2. podnet down


def test_down_stops_every_process_and_a_second_down_says_so(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cluster = start_cluster(state, 2)
    try:
        pids = cluster.pids()
        assert len(pids) == 3 and all(_alive(p) for p in pids)
        assert _processes_mentioning(str(state))
        result = cluster.podnet("down", timeout_s=60)
        assert result.returncode == 0, result.stderr
        assert "Stopped 3 process" in result.stdout
        for pid in pids:
            assert not _alive(pid), f"pid {pid} survived `podnet down`"
        leftovers = _processes_mentioning(str(state))
        assert not leftovers, f"processes left behind: {leftovers}"
        assert not (state / "cluster.json").exists()
        again = cluster.podnet("down", timeout_s=60)
        assert again.returncode != 0
        _no_traceback(again)
        assert "no cluster" in again.stderr and "podnet up" in again.stderr, again.stderr
        assert len(again.stderr.strip().splitlines()) == 1, again.stderr
    finally:
        if (state / "cluster.json").exists():
            stop_cluster(cluster)


# ---------------------------------------------------------------------- 3. whole restart

RESTART_PODS = textwrap.dedent("""\
    apiVersion: v1
    kind: Pod
    metadata: {name: one-a}
    spec:
      nodeName: node-1
      containers: [{name: e, image: podnet/echo}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: one-b}
    spec:
      nodeName: node-1
      containers: [{name: e, image: podnet/echo}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: two-a}
    spec:
      nodeName: node-2
      containers: [{name: e, image: podnet/echo}]
    """)


def test_whole_cluster_restart_keeps_pod_ips_and_pod_cidrs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    manifest = tmp_path / "pods.yaml"
    manifest.write_text(RESTART_PODS)
    names = ("one-a", "one-b", "two-a")
    first = start_cluster(state, 2)
    try:
        result = first.kubectl("apply", "-f", str(manifest))
        assert result.returncode == 0, result.stderr
        before = {n: first.running_pod(n, timeout_s=30) for n in names}
        ips = {n: p["status"]["podIP"] for n, p in before.items()}
        assert len(set(ips.values())) == 3
        cidrs = {n["name"]: n["podCIDR"] for n in first.info["nodes"]}
        starts = {n: p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
                  for n, p in before.items()}
        down = first.podnet("down", timeout_s=60)
        assert down.returncode == 0, down.stderr
    finally:
        if (state / "cluster.json").exists():
            stop_cluster(first)
    assert not (state / "cluster.json").exists()
    time.sleep(1.1)  # so a restarted container's startedAt (whole seconds) can differ

    second = start_cluster(state, 2)
    try:
        assert {n["name"]: n["podCIDR"] for n in second.info["nodes"]} == cidrs
        for name in ("node-1", "node-2"):
            node = _node(second, name)
            assert node is not None and node["spec"]["podCIDR"] == cidrs[name]
        for name in names:
            # The pod really runs again (a new container start), not a stale status...
            pod = wait_for(lambda n=name: (p := second.pod(n)) and p["status"].get(
                "containerStatuses") and "running" in p["status"]["containerStatuses"][0][
                "state"] and p["status"]["containerStatuses"][0]["state"]["running"][
                "startedAt"] != starts[n] and p, timeout_s=40,
                what=f"{name} restarted by its agent")
            pod = second.running_pod(name, timeout_s=30)
            assert pod["spec"]["nodeName"] == before[name]["spec"]["nodeName"]
            assert pod["status"]["podIP"] == ips[name], f"{name} changed its pod IP"
            # ...and its network stack answers with the same address.
            shown = second.podnet("exec", name, "--", "ip", "addr")
            assert shown.returncode == 0, shown.stderr
            assert f"inet {ips[name]}/" in shown.stdout, shown.stdout
    finally:
        stop_cluster(second)


# ---------------------------------------------------------------------- 4. agent kill


def test_sigkilled_agent_goes_notready_and_is_skipped_by_the_scheduler(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODNET_NODE_MONITOR_GRACE_S", "5")  # inherited by `podnet up`'s children
    with cluster_at(tmp_path / "state", 2) as cluster:
        _create_pod(cluster, _pod("victim", node="node-2"))
        _create_pod(cluster, _pod("survivor", node="node-1"))
        cluster.running_pod("victim", timeout_s=30)
        cluster.running_pod("survivor", timeout_s=30)
        agent = next(n for n in cluster.info["nodes"] if n["name"] == "node-2")
        _kill9(int(agent["pid"]))

        def listed_not_ready() -> str | None:
            out = cluster.kubectl("get", "nodes").stdout
            row: list[str] = next(
                (ln.split() for ln in out.splitlines() if ln.startswith("node-2 ")), [])
            return out if row[1:2] == ["NotReady"] else None

        out = wait_for(listed_not_ready, timeout_s=40, interval_s=0.5,
                       what="kubectl get nodes to show node-2 NotReady")
        assert any(ln.split()[:2] == ["node-1", "Ready"] for ln in out.splitlines()), out
        wait_for(lambda: _ready(cluster.pod("victim")) == "False", timeout_s=30,
                 what="victim (on the dead node) to lose Ready")
        assert _ready(cluster.pod("survivor")) == "True"

        for i in range(4):
            _create_pod(cluster, _pod(f"fresh-{i}"))
        for i in range(4):
            pod = cluster.running_pod(f"fresh-{i}", timeout_s=30)
            assert pod["spec"]["nodeName"] == "node-1"
        # No agent is left to finish the dead node's pod: deleting it must not hang.
        result = cluster.kubectl("delete", "pod", "victim", timeout_s=60)
        assert result.returncode == 0, result.stderr
        assert cluster.pod("victim") is None


# ---------------------------------------------------------------------- 5. scheduler

SPREAD = "\n---\n".join(
    f"apiVersion: v1\nkind: Pod\nmetadata: {{name: spread-{i}, labels: {{set: spread}}}}\n"
    "spec:\n  containers: [{name: e, image: podnet/echo}]\n" for i in range(6))


def test_scheduler_spreads_and_honours_node_selectors(cluster: RunningCluster,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "spread.yaml"
    path.write_text(SPREAD)
    assert cluster.kubectl("apply", "-f", str(path)).returncode == 0
    placed = Counter(cluster.running_pod(f"spread-{i}", timeout_s=30)["spec"]["nodeName"]
                     for i in range(6))
    assert placed == {"node-1": 3, "node-2": 3}

    result = cluster.kubectl("label", "node", "node-2", "disk=ssd")
    assert result.returncode == 0, result.stderr
    _create_pod(cluster, _pod("wants-ssd", nodeSelector={"disk": "ssd"}))
    assert cluster.running_pod("wants-ssd", timeout_s=30)["spec"]["nodeName"] == "node-2"

    _create_pod(cluster, _pod("wants-nvme", nodeSelector={"disk": "nvme"}))
    described = wait_for(
        lambda: (d := cluster.kubectl("describe", "pod", "wants-nvme").stdout)
        and "FailedScheduling" in d and d, timeout_s=30,
        what="a FailedScheduling event in kubectl describe")
    assert "didn't match Pod's node affinity/selector" in described, described
    pod = cluster.pod("wants-nvme")
    assert pod is not None and not pod["spec"].get("nodeName")
    assert pod["status"]["phase"] == "Pending"
    assert "Pending" in cluster.kubectl("get", "pod", "wants-nvme").stdout

    # Once a node matches, the pending pod is scheduled there.
    assert cluster.kubectl("label", "node", "node-1", "disk=nvme").returncode == 0
    assert cluster.running_pod("wants-nvme", timeout_s=30)["spec"]["nodeName"] == "node-1"


# ---------------------------------------------------------------------- 6. termination


def _agent_events(cluster: RunningCluster, node: str, pod: str) -> list[dict[str, Any]]:
    path = Path(cluster.info["logs_dir"]) / f"agent-{node}.jsonl"
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("pod") == pod:
                out.append(event)
    return out


def test_pod_ignoring_cancellation_is_removed_at_its_grace_deadline(
        cluster: RunningCluster) -> None:
    # It would hold on for 120 s after its cancellation; the grace period is 2 s.
    body = _pod("slowstop2", node="node-1", image="py:podapps:stubborn",
                terminationGracePeriodSeconds=2)
    body["spec"]["containers"][0]["args"] = ["120"]
    _create_pod(cluster, body)
    cluster.running_pod("slowstop2", timeout_s=30)
    ok = cluster.podnet("exec", "slowstop2", "--", "hostname")
    assert (ok.returncode, ok.stdout.strip()) == (0, "slowstop2"), ok.stderr

    # kubectl waits for the object to be gone; far less than the 120 s the app holds on.
    result = cluster.kubectl("delete", "pod", "slowstop2", timeout_s=60)
    assert result.returncode == 0, result.stderr
    assert 'pod "slowstop2" deleted' in result.stdout
    assert cluster.pod("slowstop2") is None
    events = [e["event"] for e in _agent_events(cluster, "node-1", "slowstop2")]
    assert "stubborn.ignoring_cancel" in events
    assert "pod.container_ignored_cancel" in events
    assert "pod.stopped" in events

    gone = cluster.podnet("exec", "slowstop2", "--", "hostname")
    assert gone.returncode != 0
    _no_traceback(gone)
    assert 'pods "slowstop2" not found' in gone.stderr, gone.stderr
    gone = cluster.kubectl("exec", "slowstop2", "--", "hostname")
    assert gone.returncode != 0 and "not found" in gone.stderr


def test_container_swallowing_cancel_is_not_restarted_after_its_pod_is_gone(
        cluster: RunningCluster) -> None:
    body = _pod("swallower", node="node-2", image="py:podapps:stubborn",
                terminationGracePeriodSeconds=1)
    body["spec"]["containers"][0]["args"] = ["3"]  # holds on 3 s, then returns normally
    created = _create_pod(cluster, body)
    cluster.running_pod("swallower", timeout_s=30)
    result = cluster.kubectl("delete", "pod", "swallower", timeout_s=60)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: "stubborn.returned" in [
        e["event"] for e in _agent_events(cluster, "node-2", "swallower")], timeout_s=30,
        what="the stubborn container to return")
    time.sleep(4)  # longer than the first restart back-off (1 s)
    events = _agent_events(cluster, "node-2", "swallower")
    stopped_at = next(i for i, e in enumerate(events) if e["event"] == "pod.stopped")
    restarted = [e for e in events[stopped_at:] if e["event"] == "container.started"]
    assert not restarted, f"container restarted after its pod was removed: {restarted}"
    code, listed = cluster.api("GET", "/api/v1/namespaces/default/events")
    assert code == 200
    started = [e for e in listed["items"]
               if e["involvedObject"].get("uid") == created["metadata"]["uid"]
               and e["reason"] == "Started"]
    assert len(started) == 1, started


# ---------------------------------------------------------------------- 7. up/down misuse


def test_up_refuses_a_state_dir_with_a_running_cluster(cluster: RunningCluster) -> None:
    info_before = (cluster.state_dir / "cluster.json").read_text()
    result = cluster.podnet("up", "--detach", "--no-demo", "--nodes", "1", timeout_s=60)
    assert result.returncode != 0
    _no_traceback(result)
    assert "already running" in result.stderr and "podnet down" in result.stderr, result.stderr
    assert (cluster.state_dir / "cluster.json").read_text() == info_before
    for pid in cluster.pids():
        assert _alive(pid)
    ours = {pid for pid, _ in _processes_mentioning(str(cluster.state_dir))}
    assert ours == set(cluster.pids()), "up started or left extra processes"
    assert "node-1   Ready" in cluster.kubectl("get", "nodes").stdout


def test_up_with_zero_nodes_fails_and_starts_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = _run([*PODNET, "up", "--state-dir", str(state), "--detach", "--no-demo",
                   "--nodes", "0"], cwd=tmp_path)
    assert result.returncode != 0
    _no_traceback(result)
    assert "--nodes" in result.stderr and "at least 1" in result.stderr, result.stderr
    assert not (state / "cluster.json").exists()
    assert not (state / "store.db").exists()
    assert not _processes_mentioning(str(state))


def test_up_with_a_missing_manifest_fails_clearly_before_starting(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = _run([*PODNET, "up", "--state-dir", str(state), "--detach", "--no-demo",
                   "-f", str(tmp_path / "missing.yaml")], cwd=tmp_path)
    assert result.returncode != 0
    assert not (state / "cluster.json").exists()
    assert not _processes_mentioning(str(state))
    _no_traceback(result)
    assert "missing.yaml" in result.stderr and "No such file" in result.stderr, result.stderr
    assert result.stderr.startswith("podnet up: "), result.stderr


def test_exec_without_a_cluster_points_at_podnet_up(tmp_path: Path) -> None:
    result = _run([*PODNET, "exec", "--state-dir", str(tmp_path / "nothing"), "some-pod", "--",
                   "hostname"], cwd=tmp_path)
    assert result.returncode != 0
    _no_traceback(result)
    assert "no cluster" in result.stderr and "podnet up" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------- 8. process CLIs


def _flags(cls: type[Any]) -> list[str]:
    # Fields with init=False are derived from other flags (cluster_cidrs), not flags themselves.
    return [str(f.metadata.get("flag") or "--" + f.name.replace("_", "-"))
            for f in dataclasses.fields(cls) if f.init] + ["--log-level"]


@pytest.mark.parametrize("argv,cls", [
    ([*PODNET, "controlplane", "--help"], ControlPlaneSettings),
    ([*PODNET, "agent", "--help"], AgentSettings),
    ([sys.executable, "-m", "controlplane", "--help"], ControlPlaneSettings),
    ([sys.executable, "-m", "agents", "--help"], AgentSettings),
], ids=["podnet-controlplane", "podnet-agent", "python-m-controlplane", "python-m-agents"])
def test_process_help_lists_every_flag(argv: list[str], cls: type[Any], tmp_path: Path) -> None:
    result = _run(argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for flag in _flags(cls):
        assert flag in result.stdout, f"{flag} missing from --help"
    assert not (tmp_path / ".podnet").exists(), "--help must not create a state dir"


def test_agent_with_a_bad_name_exits_2_with_one_line(tmp_path: Path) -> None:
    result = _run([*PODNET, "agent", "--name", "Bad_Name", "--controlplane",
                   "https://127.0.0.1:1", "--state-dir", str(tmp_path / "s")], cwd=tmp_path,
                  timeout_s=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("podnet agent: --name:") and "Bad_Name" in lines[0]


def test_agent_with_the_wrong_secret_is_refused_clearly(cluster: RunningCluster,
                                                        tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("f" * 64 + "\n")
    wrong.chmod(0o600)
    result = _run([*PODNET, "agent", "--name", "intruder", "--controlplane", cluster.info["api"],
                   "--secret-file", str(wrong), "--state-dir", str(tmp_path / "s")],
                  cwd=tmp_path, timeout_s=60)
    assert result.returncode != 0
    _no_traceback(result)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("podnet agent: ") and "secret" in last, result.stderr
    assert _node(cluster, "intruder") is None
