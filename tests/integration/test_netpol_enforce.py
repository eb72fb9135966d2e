"""NetworkPolicy enforced in the data path, on real clusters driven with the real kubectl.

Namespace x holds `server` (node-1); namespace "y" holds `near` (node-1, same node as the
server) and `far` (node-2). Every pod runs the netpol probe (TCP and UDP 80/81, and a loopback
probe server that tries targets from inside the pod). One cluster drops denied traffic (the
default: `curl -m 2` exits 28), a second one runs with `podnet up --policy-reject` (exits 7 at
once). Each test removes its policies when it ends; the control plane is killed last.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import RunningCluster, start_cluster, stop_cluster, wait_for
from netpol_probing import probe_all

PODS = textwrap.dedent("""\
    apiVersion: v1
    kind: Namespace
    metadata: {name: x}
    ---
    apiVersion: v1
    kind: Namespace
    metadata: {name: "y"}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: server, namespace: x, labels: {app: server}}
    spec:
      nodeName: node-1
      containers:
      - name: probe
        image: "py:podapps.netpol_probe:serve"
        ports: [{name: web, containerPort: 80}, {name: alt, containerPort: 81}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: near, namespace: "y", labels: {app: near}}
    spec:
      nodeName: node-1
      containers: [{name: probe, image: "py:podapps.netpol_probe:serve"}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: far, namespace: "y", labels: {app: far}}
    spec:
      nodeName: node-2
      containers: [{name: probe, image: "py:podapps.netpol_probe:serve"}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: server, namespace: x}
    spec:
      selector: {app: server}
      ports: [{name: web, port: 80, targetPort: 80}, {name: web-udp, port: 80, protocol: UDP}]
    """)

DENY_INGRESS_X = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"""


class Setup:
    def __init__(self, cluster: RunningCluster) -> None:
        self.cluster = cluster
        self.ips: dict[str, str] = {}

    def apply(self, manifest: str) -> None:
        result = self.cluster.kubectl("apply", "-f", "-", input=manifest)
        assert result.returncode == 0, result.stderr

    def clear_policies(self) -> None:
        for ns in ("x", "y"):
            self.cluster.kubectl("delete", "networkpolicy", "--all", "-n", ns, check=True)

    def probe(self, source: str, target: str, ports: tuple[int, ...] = (80,),
              protocols: tuple[str, ...] = ("tcp", "udp")) -> dict[tuple[int, str], str]:
        """From y/<source> (or x/server) to the IP of `target` (a pod name or an IP)."""
        ns = "x" if source == "server" else "y"
        ip = self.ips.get(target, target)
        found = probe_all(self.cluster, [(ns, source)], [ip], ports, protocols)[0]
        return {(port, proto): outcome for (_, port, proto), outcome in found.items()}

    def until(self, source: str, target: str, expected: dict[tuple[int, str], str],
              **kw: Any) -> None:
        """Poll until the policy change has reached the agents (it takes well under 1 s)."""
        ports = tuple(sorted({p for p, _ in expected}))
        protocols = tuple(sorted({proto for _, proto in expected}))

        def settled() -> bool | None:
            got = self.probe(source, target, ports, protocols)
            return True if got == expected else None
        wait_for(settled, 30, what=f"{source} -> {target}: {expected}")

    def curl(self, source: str, url: str) -> int:
        ns = "x" if source == "server" else "y"
        return int(self.cluster.kubectl("exec", "-n", ns, source, "--", "curl", "-s", "-m",
                                        "2", url, timeout_s=30).returncode)

    def verdicts(self) -> list[dict[str, Any]]:
        events = []
        for path in (self.cluster.state_dir / "logs").glob("*.jsonl"):
            for line in path.read_text().splitlines():
                if '"policy.verdict"' in line:
                    events.append(json.loads(line))
        return events


def bring_up(cluster: RunningCluster) -> Setup:
    setup = Setup(cluster)
    setup.apply(PODS)
    for ns, name in (("x", "server"), ("y", "near"), ("y", "far")):
        setup.ips[name] = cluster.running_pod(name, ns, timeout_s=60)["status"]["podIP"]
    svc = json.loads(cluster.kubectl("get", "svc", "server", "-n", "x", "-o", "json",
                                     check=True).stdout)
    setup.ips["service"] = svc["spec"]["clusterIP"]
    return setup


@pytest.fixture(scope="module")
def dropping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    cluster = start_cluster(tmp_path_factory.mktemp("netpol-drop"), 2)
    try:
        yield bring_up(cluster)
    finally:
        stop_cluster(cluster)


@pytest.fixture
def drop(dropping: Setup) -> Iterator[Setup]:
    yield dropping
    if dropping.cluster.info.get("controlplane_killed"):
        return
    dropping.clear_policies()


OK = "ok x/server"
BOTH_OK = {(80, "tcp"): OK, (80, "udp"): OK}
BOTH_TIMEOUT = {(80, "tcp"): "timeout", (80, "udp"): "timeout"}


def test_default_deny_ingress_drops_tcp_and_udp_on_one_node_and_across(drop: Setup) -> None:
    assert drop.probe("near", "server") == BOTH_OK
    assert drop.probe("far", "server") == BOTH_OK
    drop.apply(DENY_INGRESS_X)
    drop.until("far", "server", BOTH_TIMEOUT)
    assert drop.probe("near", "server") == BOTH_TIMEOUT
    server = drop.ips["server"]
    assert drop.curl("near", f"http://{server}/") == 28    # same node: the connect hangs
    assert drop.curl("far", f"http://{server}/") == 28     # across the tunnel, too
    # x's pods may still reach out: only their ingress is isolated.
    assert drop.probe("server", "far")[(80, "tcp")] == "ok y/far"
    # Each decision is one policy.verdict event, naming why.
    denied = [e for e in drop.verdicts() if e["verdict"] == "denied"]
    assert denied, "no policy.verdict denied events"
    sample = next(e for e in denied if e["src"].startswith(drop.ips["far"] + ":")
                  and e["protocol"] == "tcp")
    assert sample["direction"] == "ingress" and sample["node"] == "node-1"
    assert sample["namespace"] == "x" and sample["pod"] == "server"
    assert sample["dst"] == f"{server}:80" and sample["port"] == 80
    assert sample["reason"] == ("denied: x/default-deny-ingress selects this pod for ingress "
                                "and no rule allows it")
    assert sample["flow"] and sample["policy"] is None
    allowed = [e for e in drop.verdicts() if e["verdict"] == "allowed"
               and e["reason"] == "no policy selects this pod: allowed by default"]
    assert allowed


def test_allow_from_one_app_on_a_named_port(drop: Setup) -> None:
    drop.apply(DENY_INGRESS_X + "---\n" + textwrap.dedent("""\
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: allow-near-web, namespace: x}
        spec:
          podSelector: {matchLabels: {app: server}}
          ingress:
          - from:
            - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}
              podSelector: {matchLabels: {app: near}}
            ports: [{port: web}]
        """))
    drop.until("far", "server", {(80, "tcp"): "timeout"})
    assert drop.probe("near", "server", (80, 81), ("tcp",)) == {
        (80, "tcp"): OK, (81, "tcp"): "timeout"}
    allowed = [e for e in drop.verdicts() if e.get("policy") == "x/allow-near-web"]
    assert allowed and allowed[-1]["rule"] == "spec.ingress[0].from[0]"


def test_replies_of_allowed_flows_pass_an_egress_deny(drop: Setup) -> None:
    drop.apply(textwrap.dedent("""\
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny-egress, namespace: x}
        spec:
          podSelector: {}
          policyTypes: [Egress]
        """))
    drop.until("server", "far", {(80, "tcp"): "timeout", (80, "udp"): "timeout"})
    # The server may not open anything, but it answers what comes in, TCP and UDP.
    assert drop.probe("far", "server") == BOTH_OK
    assert drop.probe("near", "server") == BOTH_OK


def test_cluster_ip_traffic_is_judged_against_the_endpoint(drop: Setup) -> None:
    # y may only send to x's server on port 80: a Service IP is not in that rule, the
    # endpoint behind it is, so the connection passes; judged against the ClusterIP it
    # could not.
    drop.apply(textwrap.dedent("""\
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: to-server-only, namespace: "y"}
        spec:
          podSelector: {matchLabels: {app: far}}
          policyTypes: [Egress]
          egress:
          - to: [{namespaceSelector: {}, podSelector: {matchLabels: {app: server}}}]
            ports: [{port: 80}, {port: 80, protocol: UDP}]
        """))
    drop.until("far", "near", {(80, "tcp"): "timeout"})
    assert drop.probe("far", "service", (80,), ("tcp", "udp")) == BOTH_OK
    assert drop.probe("far", "near", (80,), ("udp",)) == {(80, "udp"): "timeout"}
    # The endpoint's ingress decides too: only `near` may come in now.
    drop.apply(DENY_INGRESS_X + "---\n" + textwrap.dedent("""\
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: allow-near, namespace: x}
        spec:
          podSelector: {}
          ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: near}}}]}]
        """))
    drop.until("far", "service", {(80, "tcp"): "timeout"})
    assert drop.probe("near", "service", (80,), ("tcp", "udp")) == BOTH_OK
    # UDP through the Service: judged by the proxy, which alone sees client and endpoint.
    assert drop.probe("far", "service", (80,), ("udp",)) == {(80, "udp"): "timeout"}
    assert drop.curl("far", f"http://{drop.ips['service']}/") == 28
    judged = [e for e in drop.verdicts() if e["dst"] == f"{drop.ips['server']}:80"
              and e["src"].startswith(drop.ips["far"] + ":") and e["direction"] == "egress"]
    assert judged and judged[-1]["node"] == "node-1"   # by the endpoint's agent
    by_proxy = [e for e in drop.verdicts() if e["component"] == "proxy"
                and e["src"].startswith(drop.ips["far"] + ":") and e["verdict"] == "denied"]
    assert by_proxy and by_proxy[-1]["direction"] == "ingress"
    assert by_proxy[-1]["dst"] == f"{drop.ips['server']}:80"


def test_enforcement_goes_on_while_the_control_plane_is_down(drop: Setup) -> None:
    """Last in the module: the control plane is SIGKILLed. The NodePort (Local: the client's
    address is kept) shows what the server's agent decides for 127.0.0.1."""
    drop.apply(textwrap.dedent("""\
        apiVersion: v1
        kind: Service
        metadata: {name: server-np, namespace: x}
        spec:
          type: NodePort
          externalTrafficPolicy: Local
          selector: {app: server}
          ports: [{name: a, port: 80, targetPort: 80}, {name: b, port: 81, targetPort: 81}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: host-on-80, namespace: x}
        spec:
          podSelector: {}
          ingress:
          - from: [{ipBlock: {cidr: 127.0.0.1/32}}]
            ports: [{port: 80}]
        """))
    svc = json.loads(drop.cluster.kubectl("get", "svc", "server-np", "-n", "x", "-o", "json",
                                          check=True).stdout)
    ports = {p["name"]: int(p["nodePort"]) for p in svc["spec"]["ports"]}
    wait_for(lambda: read_nodeport(ports["a"]) == b"x/server\n" or None, 30,
             what="NodePort a answered")
    drop.until("far", "server", {(80, "tcp"): "timeout"})
    cp = int(drop.cluster.info["controlplane"]["pid"])
    os.kill(cp, signal.SIGKILL)
    drop.cluster.info["controlplane_killed"] = True
    wait_for(lambda: not Path(f"/proc/{cp}").exists() or None, 10, what="control plane gone")
    assert read_nodeport(ports["a"]) == b"x/server\n"     # allowed: port 80 from 127.0.0.1
    assert read_nodeport(ports["b"]) == b""               # denied: port 81, dropped


def read_nodeport(port: int) -> bytes:
    """What the server says through the NodePort within 2 s (b"" when a policy dropped it)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(100)
                if not chunk:
                    break
                data += chunk
            return data
    except (TimeoutError, ConnectionError):
        return b""


# --- --policy-reject -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rejecting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    cluster = start_cluster(tmp_path_factory.mktemp("netpol-reject"), 2, "--policy-reject")
    try:
        yield bring_up(cluster)
    finally:
        stop_cluster(cluster)


def test_policy_reject_refuses_at_once(rejecting: Setup) -> None:
    rejecting.apply(DENY_INGRESS_X)
    rejecting.until("far", "server", {(80, "tcp"): "refused"})
    server = rejecting.ips["server"]
    assert rejecting.curl("near", f"http://{server}/") == 7
    assert rejecting.curl("far", f"http://{server}/") == 7
    # Same node, UDP: the sender's connected socket hears it, like ICMP port unreachable.
    assert rejecting.probe("near", "server", (80,), ("udp",)) == {(80, "udp"): "refused"}
    rejecting.clear_policies()


def test_egress_policy_breaks_dns_and_the_kube_dns_rule_heals_it(rejecting: Setup) -> None:
    def nslookup() -> int:
        return int(rejecting.cluster.kubectl("exec", "-n", "y", "far", "--", "nslookup",
                                             "server.x", timeout_s=60).returncode)

    assert nslookup() == 0
    rejecting.apply(textwrap.dedent("""\
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: only-to-x, namespace: "y"}
        spec:
          podSelector: {}
          policyTypes: [Egress]
          egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}}]}]
        """))
    wait_for(lambda: nslookup() == 1 or None, 30, what="nslookup failing")
    rejecting.apply(textwrap.dedent("""\
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: allow-dns, namespace: "y"}
        spec:
          podSelector: {}
          policyTypes: [Egress]
          egress:
          - to:
            - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
              podSelector: {matchLabels: {k8s-app: kube-dns}}
            ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
        """))
    wait_for(lambda: nslookup() == 0 or None, 30, what="nslookup healed")
    healed = [e for e in rejecting.verdicts() if e.get("policy") == "y/allow-dns"]
    assert healed and healed[-1]["dst"] == "10.96.0.10:53"
    rejecting.clear_policies()
