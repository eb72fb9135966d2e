"""Three hosts on one bridge, in network namespaces (LAB.md's recipe): the control plane on
host 1, agents on hosts 2 and 3 that find it with mDNS on their own address. Pods on both,
cross-node traffic, ClusterIP and DNS between real separate addresses; then host 3's link
goes down (its route dies at node-2, connections fail fast) and comes back (all heals, with
nothing restarted).

Safety (LAB.md): every address is in 198.18.0.0/15; the root namespace gets
`unreachable 198.18.0.0/15` first, so nothing here can leave the machine; every client runs
inside a namespace; everything is torn down in `finally`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness import wait_for

from podnet.auth import api_token, generate_secret
from podnet.cluster import write_json_atomic

pytestmark = pytest.mark.root

PY = sys.executable
CLI = [PY, "-c", "import sys; from podnet.cli import main; sys.exit(main())"]
LAB_NET = "198.18.0.0/15"
CP_IP = "198.18.0.11"
API_PORT, TUNNEL_PORT, DNS_PORT, AGENT_PORT = 6443, 6444, 53, 7946


def host_ip(i: int) -> str:
    return f"198.18.0.1{i}"


def run(*argv: str, check: bool = True, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout_s)


def lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces); CI runs it as root via .ci/run"
    if shutil.which("ip") is None:
        return "needs `ip` (iproute2) for network namespaces"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable here: {probe.stderr.strip()}"
    return None


@dataclass
class Lab:
    prefix: str
    tmp: Path
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    route_added: bool = False

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def spawn(self, host: str, name: str, *argv: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.stderr").open("ab")
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(host), PY, *argv],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                cwd=self.tmp)
        log.close()
        self.procs.append(proc)
        return proc

    def inside(self, host: str, *argv: str, timeout_s: float = 60,
               ) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.ns(host), *argv, check=False,
                   timeout_s=timeout_s)

    def podnet(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        """The podnet CLI as a user on host 1 runs it."""
        return self.inside("h1", *CLI, args[0], "--state-dir", str(self.tmp / "client"),
                           *args[1:], timeout_s=timeout_s)

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The API from host 1, with the real curl (never from the root namespace)."""
        argv = ["curl", "-sS", "--max-time", "10", "--cacert", str(self.tmp / "h1/pki/ca.crt"),
                "-H", f"Authorization: Bearer {self.token}", "-X", method,
                "-w", "\n%{http_code}", f"https://{CP_IP}:{API_PORT}{path}"]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        result = self.inside("h1", *argv)
        text, _, code = result.stdout.rpartition("\n")
        try:
            return int(code or 0), json.loads(text) if text else None
        except ValueError:
            return int(code or 0), text

    @property
    def token(self) -> str:
        return api_token((self.tmp / "secret").read_bytes().strip())

    def logs(self) -> str:
        return "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                       for p in sorted(self.tmp.glob("*.stderr")))


def build(lab: Lab) -> None:
    """LAB.md's recipe: a bridge in its own namespace, hosts 1..3 on veth pairs."""
    added = run("ip", "route", "add", "unreachable", LAB_NET, check=False)
    if added.returncode == 0:
        lab.route_added = True
    elif "File exists" not in added.stderr:  # already there (another lab run): keep it theirs
        raise AssertionError(f"cannot add the safety route: {added.stderr}")
    sw = lab.ns("sw")
    run("ip", "netns", "add", sw)
    lab.namespaces.append(sw)
    run("ip", "-n", sw, "link", "set", "lo", "up")
    run("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
    run("ip", "-n", sw, "link", "set", "br0", "up")
    for i in (1, 2, 3):
        h = lab.ns(f"h{i}")
        run("ip", "netns", "add", h)
        lab.namespaces.append(h)
        run("ip", "-n", sw, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0",
            "netns", h)
        run("ip", "-n", sw, "link", "set", f"v{i}", "master", "br0", "up")
        run("ip", "-n", h, "link", "set", "lo", "up")
        run("ip", "-n", h, "addr", "add", f"{host_ip(i)}/24", "dev", "eth0")
        run("ip", "-n", h, "link", "set", "eth0", "up")


def teardown(lab: Lab) -> None:
    for proc in lab.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in lab.procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for ns in reversed(lab.namespaces):
        run("ip", "netns", "del", ns, check=False)
    if lab.route_added:
        run("ip", "route", "del", "unreachable", LAB_NET, check=False)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    if (why := lab_unavailable()) is not None:
        pytest.skip(why)
    lab = Lab(prefix=f"pn{uuid.uuid4().hex[:8]}", tmp=tmp_path)
    try:
        build(lab)
        yield lab
    finally:
        teardown(lab)


def start_agent(lab: Lab, i: int, *extra: str) -> subprocess.Popen[bytes]:
    # No --controlplane: mDNS on the host's own address (the default: its listen host).
    return lab.spawn(f"h{i}", f"agent-node-{i}", "-m", "agents", "--name", f"node-{i}",
                     "--listen-host", host_ip(i), "--listen-port", str(AGENT_PORT),
                     "--state-dir", str(lab.tmp / f"h{i}"),
                     "--secret-file", str(lab.tmp / "secret"),
                     "--ready-file", str(lab.tmp / f"h{i}" / "ready.json"), *extra)


def ready(path: Path, procs: list[subprocess.Popen[bytes]], lab: Lab) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        for p in procs:
            assert p.poll() is None, f"a lab process exited with {p.returncode}{lab.logs()}"
        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads(path.read_text()))
        return None
    return wait_for(check, 30, what=f"{path.parent.name} ready")


def route_state(lab: Lab, at: str, of: str) -> str | None:
    result = lab.podnet("routes", "-o", "json", "--node", at, timeout_s=30)
    if result.returncode != 0:
        return None
    states = {r["node"]: r["state"] for r in json.loads(result.stdout).get(at, [])}
    return states.get(of)


def curl(lab: Lab, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return lab.podnet("exec", "client", "--", "curl", "-sS", *extra, url, timeout_s=40)


POD = {"apiVersion": "v1", "kind": "Pod"}


def test_three_hosts_discover_route_partition_and_heal(lab: Lab) -> None:
    for d in ("h1", "h2", "h3", "client"):
        (lab.tmp / d).mkdir()
    generate_secret(lab.tmp / "secret")  # the one file copied to every machine

    # Before any control plane exists, discovery gives up with one clear line.
    lonely = start_agent(lab, 2, "--discovery-timeout-s", "1")
    assert lonely.wait(30) == 2
    last = (lab.tmp / "agent-node-2.stderr").read_text().strip().splitlines()[-1]
    assert last == (f"podnet agent: no podnet control plane found on {host_ip(2)} within "
                    "1 s; pass --controlplane URL"), last
    lab.procs.remove(lonely)

    cp = lab.spawn("h1", "controlplane", "-m", "controlplane",
                   "--listen-host", CP_IP, "--listen-port", str(API_PORT),
                   "--tunnel-port", str(TUNNEL_PORT),
                   "--dns-host", CP_IP, "--dns-port", str(DNS_PORT),
                   "--state-dir", str(lab.tmp / "h1"), "--secret-file", str(lab.tmp / "secret"),
                   "--ready-file", str(lab.tmp / "h1" / "ready.json"),
                   # The partition below lasts longer than the default 10 s: keep its pods.
                   "--pod-eviction-timeout-s", "600")
    ready(lab.tmp / "h1" / "ready.json", [cp], lab)
    agents = {i: start_agent(lab, i) for i in (2, 3)}
    nodes = [ready(lab.tmp / f"h{i}" / "ready.json", [cp, *agents.values()], lab)
             for i in (2, 3)]
    assert [n["address"] for n in nodes] == [f"{host_ip(i)}:{AGENT_PORT}" for i in (2, 3)]

    # What `podnet up` would write, for the CLI on host 1.
    write_json_atomic(lab.tmp / "client" / "cluster.json", {
        "api": f"https://{CP_IP}:{API_PORT}", "ca_file": str(lab.tmp / "h1/pki/ca.crt"),
        "secret_file": str(lab.tmp / "secret"), "logs_dir": str(lab.tmp / "h1/logs"),
        "nodes": [{"name": n["name"], "address": n["address"], "podCIDR": n["podCIDR"],
                   "pid": 0} for n in nodes]})

    def all_ready() -> bool:
        code, body = lab.api("GET", "/api/v1/nodes")
        return code == 200 and {n["metadata"]["name"] for n in body["items"]
                                if any(c["type"] == "Ready" and c["status"] == "True"
                                       for c in n["status"]["conditions"])} == {"node-2",
                                                                                  "node-3"}
    wait_for(all_ready, 20, what="node-2 and node-3 Ready")

    objects: list[tuple[str, dict[str, Any]]] = [
        ("pods", {**POD, "metadata": {"name": "client"}, "spec": {
            "nodeName": "node-2", "containers": [{"name": "c", "image": "podnet/toolbox"}]}}),
        *[("pods", {**POD, "metadata": {"name": f"echo-{i}", "labels": {"app": "web"}},
                    "spec": {"nodeName": f"node-{i}", "containers": [{
                        "name": "echo", "image": "podnet/echo",
                        "ports": [{"containerPort": 8080}]}]}}) for i in (2, 3)],
        ("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                      "spec": {"selector": {"app": "web"},
                               "ports": [{"port": 80, "targetPort": 8080}]}}),
    ]
    for plural, obj in objects:
        code, body = lab.api("POST", f"/api/v1/namespaces/default/{plural}", obj)
        assert code == 201, body

    def pod_ip(name: str) -> str | None:
        code, pod = lab.api("GET", f"/api/v1/namespaces/default/pods/{name}")
        if code == 200 and pod.get("status", {}).get("phase") == "Running":
            return str(pod["status"].get("podIP") or "") or None
        return None
    ips = {n: wait_for(lambda n=n: pod_ip(n), 30, what=f"{n} Running")  # type: ignore[misc]
           for n in ("client", "echo-2", "echo-3")}
    _, svc = lab.api("GET", "/api/v1/namespaces/default/services/web")
    cluster_ip = svc["spec"]["clusterIP"]

    def served(url: str) -> dict[str, Any] | None:
        result = curl(lab, url, "--max-time", "5")
        return dict(json.loads(result.stdout)) if result.returncode == 0 else None

    # Cross-node: client on host 2 -> echo-3 on host 3, over the real bridge.
    answer = wait_for(lambda: served(f"http://{ips['echo-3']}:8080/"), 30, interval_s=0.5,
                      what="cross-node curl to echo-3")
    assert answer["pod"] == "echo-3", answer
    # ClusterIP: through the control plane's proxy on host 1, to either backend.
    backends = {wait_for(lambda: served(f"http://{cluster_ip}/"), 20, interval_s=0.5,
                         what="ClusterIP curl")["pod"] for _ in range(6)}
    assert backends <= {"echo-2", "echo-3"} and backends, backends
    # DNS: the control plane's DNS server, asked from the pod.
    dns = lab.podnet("exec", "client", "--", "nslookup", "web.default.svc.cluster.local")
    assert dns.returncode == 0 and cluster_ip in dns.stdout, dns.stdout + dns.stderr
    wait_for(lambda: route_state(lab, "node-2", "node-3") == "alive", 20,
             what="node-3 alive at node-2")

    pids = [p.pid for p in lab.procs]
    run("ip", "-n", lab.ns("sw"), "link", "set", "v3", "down")   # partition host 3
    wait_for(lambda: route_state(lab, "node-2", "node-3") == "dead", 40, interval_s=0.5,
             what="node-3's route withdrawn (dead) at node-2")
    result = curl(lab, f"http://{ips['echo-3']}:8080/", "--max-time", "20")
    # Fails fast with EHOSTUNREACH (curl's 7), not by running out its 20 s (curl's 28).
    assert result.returncode == 7 and "No route to host" in result.stderr, result

    run("ip", "-n", lab.ns("sw"), "link", "set", "v3", "up")     # heal
    wait_for(lambda: route_state(lab, "node-2", "node-3") == "alive", 40, interval_s=0.5,
             what="node-3's route alive again at node-2")
    answer = wait_for(lambda: served(f"http://{ips['echo-3']}:8080/"), 30, interval_s=0.5,
                      what="traffic to echo-3 after the heal")
    assert answer["pod"] == "echo-3"
    wait_for(all_ready, 30, what="both nodes Ready again")
    assert [p.pid for p in lab.procs] == pids and all(p.poll() is None for p in lab.procs), \
        "something was restarted" + lab.logs()
