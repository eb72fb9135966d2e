"""NodePort and LoadBalancer Services from the host, with the real kubectl: every agent serves
a Service's node port on its own address and forwards into the emulated network.

One `podnet up --detach` cluster (node-1 and node-2, both agents on 127.0.0.1) plus a third
agent started by hand on 127.0.0.2, so one node has an address of its own (as separate hosts
would): 127.0.0.2:<nodePort> is node-3 and nobody else, which makes which node served a
connection, and so the translated source, certain. Echo pods run on every node.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import RunningCluster, start_cluster, stop_cluster, wait_for

NODE3_HOST = "127.0.0.2"

PODS = "---\n".join(textwrap.dedent(f"""\
    apiVersion: v1
    kind: Pod
    metadata: {{name: echo-{n}, labels: {{app: web{', only: one' if n == 1 else ''}}}}}
    spec:
      nodeName: node-{n}
      containers: [{{name: echo, image: podnet/echo, ports: [{{containerPort: 8080}}]}}]
    """) for n in (1, 2, 3))


def service(name: str, *, type_: str = "NodePort", node_port: int | None = None,
            policy: str | None = None, selector: str = "app: web") -> str:
    port = f"{{port: 80, targetPort: 8080{f', nodePort: {node_port}' if node_port else ''}}}"
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: Service
        metadata: {{name: {name}}}
        spec:
          type: {type_}
          selector: {{{selector}}}
          ports: [{port}]
        """) + (f"  externalTrafficPolicy: {policy}\n" if policy else "")


def free_node_port() -> int:
    """A port of the default range free on both loopback addresses (other clusters may run
    on this machine: a fixed 30080 could be taken)."""
    for port in range(30500, 32767):
        with contextlib.ExitStack() as stack:
            try:
                for host in ("127.0.0.1", NODE3_HOST):
                    s = stack.enter_context(socket.socket())
                    s.bind((host, port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 30500-32767")


def start_node3(cluster: RunningCluster) -> subprocess.Popen[bytes]:
    ready = cluster.state_dir / "run" / "node-3.json"
    log = (cluster.state_dir / "logs" / "agent-node-3.stderr").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "agents", "--name", "node-3", "--controlplane", cluster.info["api"],
         "--state-dir", str(cluster.state_dir.resolve()),
         "--secret-file", str(cluster.state_dir.resolve() / "secret"),
         "--listen-host", NODE3_HOST, "--listen-port", "0", "--ready-file", str(ready)],
        stdout=log, stderr=log, start_new_session=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    running = start_cluster(tmp_path_factory.mktemp("nodeport"), 2)
    node3 = start_node3(running)
    try:
        wait_for(lambda: "True" in running.kubectl(
            "get", "node", "node-3", "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}").stdout,
            30, what="node-3 Ready")
        assert running.kubectl("apply", "-f", "-", input=PODS).returncode == 0
        for n in (1, 2, 3):
            running.running_pod(f"echo-{n}")
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node3.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            node3.wait(10)
        if node3.poll() is None:
            os.killpg(node3.pid, signal.SIGKILL)
        stop_cluster(running)


def apply(cluster: RunningCluster, text: str) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", "-f", "-", input=text)


def svc(cluster: RunningCluster, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "svc", name, "-o", "json")
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def node_port_of(cluster: RunningCluster, name: str) -> int:
    return int(svc(cluster, name)["spec"]["ports"][0]["nodePort"])


def gateway(cluster: RunningCluster, node: str) -> str:
    cidr = cluster.kubectl("get", "node", node, "-o", "jsonpath={.spec.podCIDR}").stdout
    return cidr.rsplit(".", 1)[0] + ".1"


def fetch(host: str, port: int) -> tuple[dict[str, Any], str]:
    """One GET through a socket whose address we know: (the echo reply, our ip:port)."""
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.connect()
        assert conn.sock is not None
        host_ip, host_port = conn.sock.getsockname()[:2]
        me = f"{host_ip}:{host_port}"
        conn.request("GET", "/")
        reply: dict[str, Any] = json.loads(conn.getresponse().read())
        return reply, me
    finally:
        conn.close()


def served(host: str, port: int) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
        return fetch(host, port)[0]
    return None


def test_node_ports_are_kept_across_a_restart(tmp_path: Path) -> None:
    """First in this module, before the shared cluster holds ports on 127.0.0.1."""
    state = tmp_path / "restart"
    first = start_cluster(state, 1)
    try:
        assert apply(first, service("keep")).returncode == 0
        port = node_port_of(first, "keep")
    finally:
        stop_cluster(first)

    def listening() -> int:     # the log file is the same across both runs: count events
        # No endpoints: the port is held and refuses (kube-proxy's REJECT).
        return sum(1 for e in agent_log(first, "node-1") if e.get("event") ==
                   "nodeport.refusing" and e.get("address") == f"127.0.0.1:{port}")

    before = listening()
    second = start_cluster(state, 1)
    try:
        assert node_port_of(second, "keep") == port      # read back from the store
        out = apply(second, service("thief", node_port=port))
        assert "provided port is already allocated" in out.stderr
        # And held again by the new agent.
        wait_for(lambda: listening() > before, 15,
                 what="node-1 listening on the kept port after the restart")
    finally:
        stop_cluster(second)


def test_nodeport_is_allocated_and_listed(cluster: RunningCluster) -> None:
    assert apply(cluster, service("auto")).returncode == 0
    port = node_port_of(cluster, "auto")
    assert 30000 <= port <= 32767
    row = cluster.kubectl("get", "svc", "auto", "--no-headers").stdout.split()
    assert row[1] == "NodePort" and row[3] == "<none>" and row[4] == f"80:{port}/TCP", row
    assert svc(cluster, "auto")["spec"]["externalTrafficPolicy"] == "Cluster"


def test_every_node_serves_it_and_cluster_policy_translates_the_source(
        cluster: RunningCluster) -> None:
    given = free_node_port()
    assert apply(cluster, service("web", node_port=given)).returncode == 0
    assert node_port_of(cluster, "web") == given        # the given port is honoured
    # node-3's own address: node-3 serves it, any endpoint on any node, source = its gateway.
    wait_for(lambda: served(NODE3_HOST, given), 15, what="node-3 serving the node port")
    replies = [fetch(NODE3_HOST, given)[0] for _ in range(9)]
    assert {r["pod"] for r in replies} == {"echo-1", "echo-2", "echo-3"}
    node3_gw = gateway(cluster, "node-3")
    assert {r["client"].rsplit(":", 1)[0] for r in replies} == {node3_gw}
    # 127.0.0.1 is node-1's and node-2's address: whichever of them holds the port serves it.
    with urllib.request.urlopen(f"http://127.0.0.1:{given}/", timeout=5) as resp:
        reply = json.loads(resp.read())
    assert reply["client"].rsplit(":", 1)[0] in {gateway(cluster, "node-1"),
                                                   gateway(cluster, "node-2")}


def test_local_policy_keeps_the_source_and_only_uses_local_endpoints(
        cluster: RunningCluster) -> None:
    assert apply(cluster, service("web-local", policy="Local")).returncode == 0
    port = node_port_of(cluster, "web-local")
    wait_for(lambda: served(NODE3_HOST, port), 15, what="node-3 serving web-local")
    for _ in range(4):
        reply, me = fetch(NODE3_HOST, port)
        assert reply["pod"] == "echo-3"     # node-3's own endpoint, never another node's
        assert reply["client"] == me        # the real client's address and port, kept
    # A Service whose only endpoint is on node-1: node-3 has none, so it refuses (it holds
    # the port without listening) and says why.
    assert apply(cluster, service("one-local", policy="Local",
                                  selector="only: one")).returncode == 0
    port = node_port_of(cluster, "one-local")
    wait_for(lambda: any(e.get("event") == "nodeport.refusing"
                         and e.get("address") == f"{NODE3_HOST}:{port}"
                         and e.get("reason") == "no local endpoints"
                         for e in agent_log(cluster, "node-3")), 15,
             what="node-3 refusing one-local")
    with pytest.raises(ConnectionRefusedError):
        fetch(NODE3_HOST, port)


def test_the_cluster_ip_is_not_on_the_host(cluster: RunningCluster) -> None:
    """Side by side: the NodePort is a real socket on a node's address; the ClusterIP is no
    address of this machine at all (binding to it fails; nothing ever connects to it)."""
    port = node_port_of(cluster, "web")
    assert served(NODE3_HOST, port) is not None
    cluster_ip = svc(cluster, "web")["spec"]["clusterIP"]
    with socket.socket() as s, pytest.raises(OSError) as exc:
        s.bind((cluster_ip, 0))
    assert exc.value.errno == errno.EADDRNOTAVAIL


def test_a_taken_node_port_is_refused_and_nothing_changes(cluster: RunningCluster) -> None:
    taken = node_port_of(cluster, "web")
    out = apply(cluster, service("thief", node_port=taken))
    assert out.returncode != 0
    assert (f'Service "thief" is invalid: spec.ports[0].nodePort: Invalid value: {taken}: '
            f"provided port is already allocated") in out.stderr
    assert cluster.kubectl("get", "svc", "thief").returncode != 0
    before = svc(cluster, "auto")
    out = cluster.kubectl("patch", "svc", "auto", "--type", "json", "-p", json.dumps(
        [{"op": "replace", "path": "/spec/ports/0/nodePort", "value": taken}]))
    assert out.returncode != 0 and "provided port is already allocated" in out.stderr
    after = svc(cluster, "auto")
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    out = apply(cluster, service("low", node_port=8080))
    assert ("spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid "
            "range. The range of valid ports is 30000-32767") in out.stderr


def test_back_to_cluster_ip_releases_the_port(cluster: RunningCluster) -> None:
    port = node_port_of(cluster, "auto")
    out = cluster.kubectl("patch", "svc", "auto", "-p", '{"spec":{"type":"ClusterIP"}}')
    assert out.returncode == 0, out.stderr
    assert "nodePort" not in svc(cluster, "auto")["spec"]["ports"][0]
    assert "externalTrafficPolicy" not in svc(cluster, "auto")["spec"]
    assert apply(cluster, service("reuse", node_port=port)).returncode == 0
    assert node_port_of(cluster, "reuse") == port


def test_refused_without_endpoints_and_closed_when_deleted(cluster: RunningCluster) -> None:
    # No endpoints yet: every node holds the port and refuses, like kube-proxy's REJECT.
    assert apply(cluster, service("brief", selector="app: nothing-yet")).returncode == 0
    port = node_port_of(cluster, "brief")
    wait_for(lambda: any(e.get("event") == "nodeport.refusing"
                         and e.get("address") == f"{NODE3_HOST}:{port}"
                         and e.get("reason") == "no ready endpoints"
                         for e in agent_log(cluster, "node-3")), 15,
             what="node-3 refusing brief")

    def refused() -> bool:
        with socket.socket() as s:
            s.settimeout(5)
            return s.connect_ex((NODE3_HOST, port)) == errno.ECONNREFUSED

    assert refused()
    assert apply(cluster, service("brief")).returncode == 0     # now it selects app: web
    wait_for(lambda: served(NODE3_HOST, port), 15, what="node-3 serving brief")
    assert cluster.kubectl("delete", "svc", "brief").returncode == 0
    wait_for(refused, 15, what="connection refused once the Service is gone")

    def released() -> bool:     # closed, not just refusing: anyone may bind it now
        with socket.socket() as s:
            try:
                s.bind((NODE3_HOST, port))
            except OSError:
                return False
            return True

    wait_for(released, 15, what="the port released")


def test_load_balancer_stays_pending_and_says_why(cluster: RunningCluster) -> None:
    assert apply(cluster, service("lb", type_="LoadBalancer", policy="Local")).returncode == 0
    row = cluster.kubectl("get", "svc", "lb", "--no-headers").stdout.split()
    port = node_port_of(cluster, "lb")
    assert row[1] == "LoadBalancer" and row[3] == "<pending>" and row[4] == f"80:{port}/TCP"
    spec = svc(cluster, "lb")["spec"]
    assert 30000 <= spec["healthCheckNodePort"] <= 32767 and spec["healthCheckNodePort"] != port
    wait_for(lambda: "LoadBalancerPending" in cluster.kubectl("describe", "svc", "lb").stdout,
             15, what="the LoadBalancerPending event in kubectl describe")
    text = cluster.kubectl("describe", "svc", "lb").stdout
    assert "no load-balancer controller" in text
    # Underneath it is a NodePort Service: node-3 serves it (Local: its own echo-3).
    reply = wait_for(lambda: served(NODE3_HOST, port), 15, what="node-3 serving lb")
    assert reply["pod"] == "echo-3"
    # What a cloud load balancer would probe: node-3 has a local endpoint, so 200.
    health = f"http://{NODE3_HOST}:{spec['healthCheckNodePort']}/healthz"
    with urllib.request.urlopen(health, timeout=5) as resp:
        assert resp.status == 200
        assert json.loads(resp.read()) == {"service": {"namespace": "default", "name": "lb"},
                                           "localEndpoints": 1, "serviceProxyHealthy": True}


UDP = "".join(textwrap.dedent(f"""\
    apiVersion: v1
    kind: Pod
    metadata: {{name: udp-{n}, labels: {{app: udp}}}}
    spec:
      nodeName: node-{n}
      containers: [{{name: u, image: "py:podapps:udp_echo"}}]
    ---
    """) for n in (1, 3)) + textwrap.dedent("""\
    apiVersion: v1
    kind: Service
    metadata: {name: udp}
    spec:
      type: NodePort
      selector: {app: udp}
      ports: [{port: 53, protocol: UDP, targetPort: 9000}]
    """)


def udp_ask(host: str, port: int, payload: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.sendto(payload, (host, port))
        try:
            return s.recv(2048)
        except TimeoutError:
            return None


def test_udp_node_port_is_served_and_answered(cluster: RunningCluster) -> None:
    assert apply(cluster, UDP).returncode == 0
    for n in (1, 3):
        cluster.running_pod(f"udp-{n}")
    port = node_port_of(cluster, "udp")
    assert cluster.kubectl("get", "svc", "udp", "--no-headers").stdout.split()[4] == \
        f"53:{port}/UDP"
    wait_for(lambda: udp_ask(NODE3_HOST, port, b"hi"), 15,
             what="an answer through the UDP node port")
    # Each client socket is a flow of its own, balanced over both nodes' endpoints; every
    # endpoint saw node-3's gateway (translated, so that the answer comes back through it).
    for i in range(4):
        reply = udp_ask(NODE3_HOST, port, b"q%d" % i)
        assert reply is not None
        assert reply.decode().startswith(f"echo:q{i} from {gateway(cluster, 'node-3')}:")
    nodes = {e.get("endpoint_node") for e in agent_log(cluster, "node-3")
             if e.get("event") == "proxy.udp_flow" and e.get("service") == "default/udp"}
    assert nodes == {"node-1", "node-3"}


def agent_log(cluster: RunningCluster, node: str) -> list[dict[str, Any]]:
    path = Path(cluster.info["logs_dir"], f"agent-{node}.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
