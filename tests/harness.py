"""Running real podnet clusters from tests: `podnet up --detach` in a temporary state dir,
driven through the CLI, the HTTP API and the real kubectl, and always torn down."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
# The CLI as a user runs it, from this interpreter's environment.
PODNET = [sys.executable, "-c", "import sys; from podnet.cli import main; sys.exit(main())"]
KUBECTL = shutil.which("kubectl")
TESTS = Path(__file__).resolve().parent


# A client on node-1 and an echo server on node-2: the smallest cross-node setup.
CROSS_NODE_PODS = """\
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: node-1
  containers: [{name: toolbox, image: podnet/toolbox}]
---
apiVersion: v1
kind: Pod
metadata: {name: echo-2}
spec:
  nodeName: node-2
  containers: [{name: echo, image: podnet/echo, ports: [{containerPort: 8080}]}]
"""


def wait_for(check: Callable[[], T | None], timeout_s: float = 15.0, interval_s: float = 0.1,
             what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail with `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


@dataclass
class RunningCluster:
    state_dir: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def token(self) -> str:
        from podnet.auth import api_token, load_secret

        return api_token(load_secret(self.state_dir / "secret"))

    def podnet(self, *args: str, timeout_s: float = 60, check: bool = False,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        # --state-dir goes right after the verb, where every podnet subcommand takes it.
        argv = [*PODNET, args[0], "--state-dir", str(self.state_dir), *args[1:]]
        # tests/ on the path makes the test images (`py:podapps:...`) importable by agents.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p))
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              check=check, input=input, env=env)

    def kubectl(self, *args: str, timeout_s: float = 60, check: bool = False,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        if KUBECTL is None:
            import pytest

            pytest.skip("kubectl is not installed on this machine (tests that drive the real "
                        "kubectl need it on PATH)")
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig),
                   KUBECACHEDIR=str(self.state_dir / "kcache"))
        return subprocess.run([KUBECTL, *args], capture_output=True, text=True, env=env,
                              timeout=timeout_s, check=check, input=input)

    def api(self, method: str, path: str, body: Any = None,
            content_type: str = "application/json") -> tuple[int, Any]:
        data = None if body is None else (body if isinstance(body, bytes)
                                          else json.dumps(body).encode())
        req = urllib.request.Request(self.info["api"] + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    @property
    def ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.info["ca_file"])

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        code, body = self.api("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
        return body if code == 200 else None

    def running_pod(self, name: str, namespace: str = "default",
                    timeout_s: float = 20) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            pod = self.pod(name, namespace)
            if pod and pod.get("status", {}).get("phase") == "Running" and any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in pod["status"].get("conditions", [])):
                return pod
            return None
        return wait_for(ready, timeout_s, what=f"pod {namespace}/{name} Running and Ready")

    def pids(self) -> list[int]:
        info = self.info or {}
        return [int(n["pid"]) for n in info.get("nodes", [])] + (
            [int(info["controlplane"]["pid"])] if info.get("controlplane") else [])


def start_cluster(state_dir: Path, nodes: int = 2, *extra: str) -> RunningCluster:
    cluster = RunningCluster(state_dir)
    result = cluster.podnet("up", "--detach", "--no-demo", "--nodes", str(nodes), *extra,
                            timeout_s=90)
    if result.returncode != 0:
        logs = ""
        for f in sorted((state_dir / "logs").glob("*.stderr")):
            logs += f"\n--- {f.name}\n{f.read_text()[-2000:]}"
        raise AssertionError(f"podnet up failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}{logs}")
    cluster.info = json.loads((state_dir / "cluster.json").read_text())
    return cluster


def stop_cluster(cluster: RunningCluster) -> None:
    pids = cluster.pids()
    with contextlib.suppress(Exception):
        cluster.podnet("down", timeout_s=30)
    for pid in pids:  # whatever `down` could not stop must not outlive the test
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def cluster_at(state_dir: Path, nodes: int = 2, *extra: str) -> Iterator[RunningCluster]:
    cluster = start_cluster(state_dir, nodes, *extra)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
