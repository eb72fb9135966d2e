"""Dual-stack pod traffic across real processes: `podnet up --dual-stack` with 2 nodes, pods
with an address of each family, IPv6 streams on one node and across the tunnel with the
sender's address kept, `ping -6`, the pod's IPv6 view (`ip -6`), AAAA through the pod's
resolver, and a PreferDualStack Service's IPv6 ClusterIP through the control plane's proxy.

podnet/echo answers with the client address it saw (`host:port`; an IPv6 host has colons,
so the port is split off the right)."""

from __future__ import annotations

import ipaddress
import json
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from harness import RunningCluster, start_cluster, stop_cluster, wait_for

OBJECTS = textwrap.dedent("""\
    apiVersion: v1
    kind: Pod
    metadata: {name: client}
    spec:
      nodeName: node-1
      containers: [{name: toolbox, image: podnet/toolbox}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: web-1, labels: {app: web}}
    spec:
      nodeName: node-1
      containers: [{name: echo, image: podnet/echo, ports: [{containerPort: 8080}]}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: web-2, labels: {app: web}}
    spec:
      nodeName: node-2
      containers: [{name: echo, image: podnet/echo, ports: [{containerPort: 8080}]}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: udp-2, labels: {app: udp}}
    spec:
      nodeName: node-2
      containers: [{name: udp, image: "py:podapps.dualstack:udp_echo6"}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec:
      ipFamilyPolicy: PreferDualStack
      selector: {app: web}
      ports: [{port: 80, targetPort: 8080}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: udp}
    spec:
      ipFamilyPolicy: PreferDualStack
      selector: {app: udp}
      ports: [{port: 9000, protocol: UDP}]
    """)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    running = start_cluster(tmp_path_factory.mktemp("dualstack"), 2, "--dual-stack")
    try:
        for obj in yaml.safe_load_all(OBJECTS):
            plural = "services" if obj["kind"] == "Service" else "pods"
            code, body = running.api("POST", f"/api/v1/namespaces/default/{plural}", obj)
            assert code == 201, body
        for name in ("client", "web-1", "web-2", "udp-2"):
            running.running_pod(name)
        wait_for(lambda: len(v6_endpoints(running)) == 2, 20,
                 what="2 ready IPv6 endpoints of web")
        yield running
    finally:
        stop_cluster(running)


def pod_ips(cluster: RunningCluster, pod: str) -> list[str]:
    found = cluster.pod(pod)
    assert found is not None
    return [entry["ip"] for entry in found["status"]["podIPs"]]


def v6_of(cluster: RunningCluster, pod: str) -> str:
    return next(ip for ip in pod_ips(cluster, pod) if ":" in ip)


def v6_endpoints(cluster: RunningCluster) -> list[str]:
    code, slices = cluster.api(
        "GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
               "?labelSelector=kubernetes.io/service-name=web")
    assert code == 200, slices
    return sorted(a for s in slices["items"] if s.get("addressType") == "IPv6"
                  for ep in s.get("endpoints") or []
                  if (ep.get("conditions") or {}).get("ready") is not False
                  for a in ep.get("addresses") or [])


def exec_(cluster: RunningCluster, *argv: str) -> tuple[int, str, str]:
    result = cluster.podnet("exec", "client", "--", *argv, timeout_s=30)
    return result.returncode, result.stdout, result.stderr


def echo(cluster: RunningCluster, url: str) -> dict[str, Any]:
    code, out, err = exec_(cluster, "curl", "-s", "-g", url)
    assert code == 0, (code, out, err)
    body: dict[str, Any] = json.loads(out)
    return body


def client_host(body: dict[str, Any]) -> str:
    return str(body["client"]).rsplit(":", 1)[0].strip("[]")


def test_pods_get_an_address_of_each_family_primary_first(cluster: RunningCluster) -> None:
    nodes = {n["metadata"]["name"]: n["spec"]
             for n in cluster.api("GET", "/api/v1/nodes")[1]["items"]}
    for pod, node in (("client", "node-1"), ("web-1", "node-1"), ("web-2", "node-2")):
        found = cluster.pod(pod)
        assert found is not None
        ips = pod_ips(cluster, pod)
        assert [ipaddress.ip_address(ip).version for ip in ips] == [4, 6]
        assert found["status"]["podIP"] == ips[0]
        v4_cidr, v6_cidr = nodes[node]["podCIDRs"]
        assert ipaddress.ip_address(ips[0]) in ipaddress.ip_network(v4_cidr)
        assert ipaddress.ip_address(ips[1]) in ipaddress.ip_network(v6_cidr)


def test_same_node_ipv6_keeps_the_source(cluster: RunningCluster) -> None:
    body = echo(cluster, f"http://[{v6_of(cluster, 'web-1')}]:8080/same")
    assert (body["pod"], body["path"]) == ("web-1", "/same")
    assert client_host(body) == v6_of(cluster, "client")


def test_cross_node_ipv6_keeps_the_source(cluster: RunningCluster) -> None:
    body = echo(cluster, f"http://[{v6_of(cluster, 'web-2')}]:8080/across")
    assert (body["pod"], body["node"]) == ("web-2", "node-2")
    assert client_host(body) == v6_of(cluster, "client")


def test_flow_logs_write_ipv6_addresses_in_brackets(cluster: RunningCluster) -> None:
    client, web2 = v6_of(cluster, "client"), v6_of(cluster, "web-2")
    body = echo(cluster, f"http://[{web2}]:8080/logged")
    seen = body["client"]                   # [client]:port, as the far pod saw it

    def logged() -> list[dict[str, Any]] | None:
        out = cluster.podnet("logs", "--pod", "default/client", "-o", "json").stdout
        events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        mine = [e for e in events if e.get("src") == seen]
        return mine or None
    events = wait_for(logged, 10, what=f"flow events from {seen}")
    assert seen.startswith(f"[{client}]:")
    assert {e.get("dst") for e in events} == {f"[{web2}]:8080"}
    flow = events[0]["flow"]
    trace = cluster.podnet("logs", "--flow", flow).stdout
    assert f"{seen} -> [{web2}]:8080" in trace, trace


def test_etc_hosts_names_the_pod_at_each_address(cluster: RunningCluster) -> None:
    code, out, err = exec_(cluster, "cat", "/etc/hosts")
    assert code == 0, err
    v4, v6 = pod_ips(cluster, "client")
    assert out.splitlines()[-2:] == [f"{v4}\tclient", f"{v6}\tclient"]


def test_podnet_routes_lists_every_podcidr(cluster: RunningCluster) -> None:
    table = cluster.podnet("routes", "--node", "node-1").stdout
    assert "POD CIDRS" in table, table
    assert any(line.split()[:2] == ["10.244.2.0/24,fd00:10:244:2::/64", "node-2"]
               for line in table.splitlines()), table
    views = json.loads(cluster.podnet("routes", "--node", "node-1", "-o", "json").stdout)
    assert {r["node"]: r["podCIDRs"] for r in views["node-1"]} == {
        "node-1": ["10.244.1.0/24", "fd00:10:244:1::/64"],
        "node-2": ["10.244.2.0/24", "fd00:10:244:2::/64"]}


def test_explain_follows_an_ipv6_address_across_nodes(cluster: RunningCluster) -> None:
    client, web2 = v6_of(cluster, "client"), v6_of(cluster, "web-2")
    result = cluster.podnet("explain", "client", web2)
    assert result.returncode == 0, result.stderr
    assert f"default/client {client} on node-1" in result.stdout
    assert f"[{web2}]:8080/TCP on node-2" in result.stdout
    assert "fd00:10:244:2::/64 -> node-2" in result.stdout, result.stdout
    code, svc = cluster.api("GET", "/api/v1/namespaces/default/services/web")
    assert code == 200, svc
    v6_cluster_ip = svc["spec"]["clusterIPs"][1]
    result = cluster.podnet("explain", "client", v6_cluster_ip)
    assert result.returncode == 0, result.stderr
    assert "fd00:10:96::/112 -> the control plane's tunnel" in result.stdout, result.stdout
    assert sorted(v6_endpoints(cluster)) == sorted(
        ip for ip in (v6_of(cluster, "web-1"), web2) if f"[{ip}]:8080" in result.stdout)


def test_ipv4_still_reaches_the_same_pods(cluster: RunningCluster) -> None:
    web2_v4 = pod_ips(cluster, "web-2")[0]
    body = echo(cluster, f"http://{web2_v4}:8080/")
    assert client_host(body) == pod_ips(cluster, "client")[0]


def test_ping_6_across_nodes(cluster: RunningCluster) -> None:
    target = v6_of(cluster, "web-2")
    code, out, err = exec_(cluster, "ping", "-6", "-c", "2", "-i", "0.2", target)
    assert code == 0, (out, err)
    assert f"PING {target}({target}) 56 data bytes" in out
    assert f"64 bytes from {target}: icmp_seq=1 ttl=63" in out
    assert "2 packets transmitted, 2 received, 0% packet loss" in out


def test_the_pods_ipv6_interface_and_routes(cluster: RunningCluster) -> None:
    mine = v6_of(cluster, "client")
    code, out, _ = exec_(cluster, "ip", "-6", "addr")
    assert code == 0 and f"inet6 {mine}/64 scope global" in out and "inet6 ::1/128" in out
    code, out, _ = exec_(cluster, "ip", "-6", "route")
    net = ipaddress.ip_network(f"{mine}/64", strict=False)
    assert code == 0
    assert out.splitlines()[0] == f"{net} dev eth0 proto kernel metric 256 pref medium "
    assert f"default via {net.network_address + 1} dev eth0" in out


def test_prefer_dual_stack_service_through_its_ipv6_cluster_ip(cluster: RunningCluster) -> None:
    code, svc = cluster.api("GET", "/api/v1/namespaces/default/services/web")
    assert code == 200, svc
    v4, v6 = svc["spec"]["clusterIPs"]
    assert ":" in v6 and ":" not in v4
    seen = set()
    for _ in range(6):
        body = echo(cluster, f"http://[{v6}]/svc")
        assert client_host(body) == v6_of(cluster, "client")    # no SNAT, as over IPv4
        seen.add(body["pod"])
    assert seen == {"web-1", "web-2"}
    code, out, err = exec_(cluster, "nc", "-6", "-zv", "web", "80")
    assert code == 0 and f"([{v6}]:80) open" in err, (out, err)


def test_aaaa_through_the_pods_resolver(cluster: RunningCluster) -> None:
    code, svc = cluster.api("GET", "/api/v1/namespaces/default/services/web")
    v6 = svc["spec"]["clusterIPs"][1]
    code, out, err = exec_(cluster, "dig", "+short", "AAAA", "web.default.svc.cluster.local")
    assert (code, out.split()) == (0, [v6]), err
    body = echo(cluster, "http://web/")     # getaddrinfo: A first on a v4-primary cluster
    assert client_host(body) == pod_ips(cluster, "client")[0]
    body = json.loads(exec_(cluster, "curl", "-s", "-6", "http://web/")[1])
    assert client_host(body) == v6_of(cluster, "client")


def test_cross_node_ipv6_udp_keeps_the_source(cluster: RunningCluster) -> None:
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "udp-probe"},
             "spec": {"nodeName": "node-1", "containers": [
                 {"name": "p", "image": "py:podapps:udp_probe",
                  "args": [v6_of(cluster, "udp-2")]}]}}
    code, body = cluster.api("POST", "/api/v1/namespaces/default/pods", probe)
    assert code == 201, body
    cluster.running_pod("udp-probe")
    logs = wait_for(lambda: (out := cluster.kubectl("logs", "udp-probe").stdout)
                    and "echo:hello" in out and out, 20, what="IPv6 UDP replies across nodes")
    line = next(ln for ln in logs.splitlines() if ln.startswith("echo:hello"))
    assert f" from [{v6_of(cluster, 'udp-probe')}]:" in line


def test_ipv6_udp_through_a_cluster_ip(cluster: RunningCluster) -> None:
    """UDP through the proxy is translated (kube-proxy's reply path): the endpoint sees the
    ClusterIP, and the client hears back from it."""
    code, svc = cluster.api("GET", "/api/v1/namespaces/default/services/udp")
    assert code == 200, svc
    v6 = svc["spec"]["clusterIPs"][1]
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "udp-probe-svc"},
             "spec": {"nodeName": "node-1", "containers": [
                 {"name": "p", "image": "py:podapps:udp_probe", "args": [v6]}]}}
    code, body = cluster.api("POST", "/api/v1/namespaces/default/pods", probe)
    assert code == 201, body
    cluster.running_pod("udp-probe-svc")
    logs = wait_for(lambda: (out := cluster.kubectl("logs", "udp-probe-svc").stdout)
                    and "echo:hello" in out and out, 20, what="IPv6 UDP replies via the proxy")
    line = next(ln for ln in logs.splitlines() if ln.startswith("echo:hello"))
    assert f" from [{v6}]:" in line


def test_network_policy_holds_over_ipv6_too(cluster: RunningCluster) -> None:
    """Last in the module: it isolates the web pods."""
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "web-deny"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                     "policyTypes": ["Ingress"]}}
    code, body = cluster.api(
        "POST", "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies", deny)
    assert code == 201, body
    v4 = pod_ips(cluster, "web-2")[0]
    wait_for(lambda: exec_(cluster, "curl", "-s", "-m", "1", f"http://{v4}:8080/")[0] == 28,
             20, what="the policy denying IPv4")
    code, _, _ = exec_(cluster, "curl", "-s", "-m", "1", "-g",
                       f"http://[{v6_of(cluster, 'web-2')}]:8080/")
    assert code == 28       # timed out: dropped, as over IPv4
