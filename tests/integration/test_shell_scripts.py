"""Tutorial-shaped shell scripts in busybox pods on a real cluster, through the real kubectl:
`kubectl exec ... -- sh -c '...'` with pipes, loops, substitutions, tests and files, and a pod
whose main process is a `while true; do wget ...; sleep 1; done` loop that runs until the pod is
deleted."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from harness import RunningCluster, wait_for

MANIFEST = """\
apiVersion: v1
kind: Pod
metadata: {name: echo, labels: {app: echo}}
spec:
  nodeName: node-2
  containers:
  - name: echo
    image: podnet/echo
    ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 8080}]
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
metadata: {name: poller}
spec:
  nodeName: node-1
  containers:
  - name: poller
    image: busybox:1.36
    command:
    - sh
    - -c
    - |
      i=0
      while true; do
        i=$((i+1))
        echo "$i $(wget -qO- http://echo:8080/ | grep -o '"pod": "[a-z]*"')"
        sleep 1
      done
"""


@pytest.fixture(scope="module")
def pods(cluster: RunningCluster, tmp_path_factory: pytest.TempPathFactory,
         ) -> Iterator[dict[str, dict[str, Any]]]:
    manifest = tmp_path_factory.mktemp("shell") / "shell.yaml"
    manifest.write_text(MANIFEST)
    applied = cluster.kubectl("apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    yield {name: cluster.running_pod(name) for name in ("echo", "bb", "poller")}


def test_exec_runs_a_script_with_pipes_loops_and_files(
        cluster: RunningCluster, pods: dict[str, dict[str, Any]]) -> None:
    script = ('for i in 1 2 3; do echo $i $(hostname); done | wc -l; x=$(echo hi); '
              '[ "$x" = hi ] && echo ok > /tmp/f; cat /tmp/f')
    result = cluster.kubectl("exec", "bb", "--", "sh", "-c", script)
    assert (result.returncode, result.stdout, result.stderr) == (0, "3\nok\n", "")
    # The file stays in the container for the next exec, as on a real node.
    again = cluster.kubectl("exec", "bb", "--", "cat", "/tmp/f")
    assert again.stdout == "ok\n"


def test_exec_exit_status_and_errors_are_the_shells(
        cluster: RunningCluster, pods: dict[str, dict[str, Any]]) -> None:
    failed = cluster.kubectl("exec", "bb", "--", "sh", "-c", "echo before; exit 7")
    assert failed.returncode == 7 and failed.stdout == "before\n"
    missing = cluster.kubectl("exec", "bb", "--", "sh", "-c", "kubectl get pods")
    assert missing.returncode == 127
    assert "sh: 1: kubectl: not found" in missing.stderr
    syntax = cluster.kubectl("exec", "bb", "--", "sh", "-c", "if true; then echo")
    assert syntax.returncode == 2
    assert 'sh: 1: Syntax error: end of file unexpected (expecting "fi")' in syntax.stderr


def test_exec_reads_a_script_from_stdin(cluster: RunningCluster,
                                        pods: dict[str, dict[str, Any]]) -> None:
    script = ("n=0\nfor name in echo nope; do\n"
              "  if wget -qO- -T 5 http://$name:8080/ >/dev/null 2>&1; then n=$((n+1)); fi\n"
              "done\necho reachable: $n\n")
    result = cluster.kubectl("exec", "-i", "bb", "--", "sh", input=script)
    assert (result.returncode, result.stdout) == (0, "reachable: 1\n"), result.stderr


def test_a_polling_loop_runs_until_its_pod_is_deleted(
        cluster: RunningCluster, pods: dict[str, dict[str, Any]]) -> None:
    def polled() -> str | None:
        logs = cluster.kubectl("logs", "poller").stdout
        return logs if logs.count("\n") >= 2 else None

    logs = wait_for(polled, 30, what="two iterations of the poller's loop")
    assert re.match(r'1 "pod": "echo"\n2 "pod": "echo"\n', logs), logs
    # The loop is the pod's main process: deleting the pod has to stop it within the grace
    # period (30 s), which a shell that never yields or ignores cancellation would not.
    deleted = cluster.kubectl("delete", "pod", "poller", "--timeout=25s")
    assert deleted.returncode == 0, deleted.stderr
    assert cluster.pod("poller") is None
