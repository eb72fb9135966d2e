"""Tutorial-shaped shell scripts in busybox pods on a real cluster, through the real kubectl:
`kubectl exec ... -- sh -c '...'` with pipes, loops, substitutions, tests and files, and a pod
whose main process is a `while true; do wget ...; sleep 1; done` loop that runs until the pod is
deleted."""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from harness import KUBECTL, RunningCluster, wait_for

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
    def polled() -> list[str] | None:
        # The first iterations may run before the Service answers (its endpoints follow the
        # echo pod's readiness); wait for two answered ones.
        lines = cluster.kubectl("logs", "poller").stdout.splitlines()
        answered = [line for line in lines if re.fullmatch(r'\d+ "pod": "echo"', line)]
        return lines if len(answered) >= 2 else None

    lines = wait_for(polled, 30, what="two answered iterations of the poller's loop")
    # One line per iteration, numbered by the loop's own arithmetic.
    assert [int(line.split()[0]) for line in lines] == list(range(1, len(lines) + 1))
    # The loop is the pod's main process: deleting the pod has to stop it within the grace
    # period (30 s), which a shell that never yields or ignores cancellation would not.
    deleted = cluster.kubectl("delete", "pod", "poller", "--timeout=25s")
    assert deleted.returncode == 0, deleted.stderr
    assert cluster.pod("poller") is None


def test_an_interactive_shell_in_a_terminal(cluster: RunningCluster,
                                            pods: dict[str, dict[str, Any]]) -> None:
    """`kubectl exec -it bb -- sh` as a user types it: kubectl only asks for a tty when its
    stdin is a terminal, so it runs on a pseudo-terminal here and sends raw keystrokes."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    master, slave = os.openpty()
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig),
               KUBECACHEDIR=str(cluster.state_dir / "kcache"))
    kubectl = subprocess.Popen([KUBECTL, "exec", "-it", "bb", "--", "sh"], stdin=slave,
                               stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    seen = bytearray()

    def read_until(marker: bytes) -> bytes:
        deadline = time.monotonic() + 20
        while marker not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    seen.extend(os.read(master, 4096))
                except OSError:  # the other side closed
                    break
        assert marker in seen, bytes(seen)
        return bytes(seen)

    try:
        read_until(b"# ")
        os.write(master, b"for i in 1 2; do echo n$((i*21)); done\r")
        screen = read_until(b"n42\r\n")
        assert b"n21\r\nn42\r\n" in screen  # output lines end in CRLF, as a pty makes them
        os.write(master, b"sleep 3600\r")
        read_until(b"sleep 3600\r\n")
        os.write(master, b"\x03")  # Ctrl-C interrupts the foreground command
        os.write(master, b"echo status $?\r")
        read_until(b"status 130\r\n")
        os.write(master, b"exit 3\r")
        assert kubectl.wait(timeout=20) == 3
    finally:
        if kubectl.poll() is None:
            kubectl.kill()
            kubectl.wait()
        os.close(master)
