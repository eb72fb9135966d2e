"""Services, Deployments and endpoints on a real cluster, driven with the real kubectl: the
tutorial manifest (examples/services.yaml), scaling, pod replacement, ClusterIP allocation and
its errors, headless / ExternalName / selector-less Services, the system Services, and pods
evicted from a lost node."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest
from harness import RunningCluster, cluster_at, wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "services.yaml"
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")


def get_json(cluster: RunningCluster, *args: str) -> Any:
    result = cluster.kubectl("get", *args, "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def apply(cluster: RunningCluster, manifest: str) -> Any:
    return cluster.kubectl("apply", "-f", "-", input=textwrap.dedent(manifest))


def ready_web_pods(cluster: RunningCluster) -> list[dict[str, Any]]:
    pods = get_json(cluster, "pods", "-l", "app=web")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp") and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in p.get("status", {}).get("conditions", []))]


def endpoint_ips(cluster: RunningCluster, name: str = "web") -> list[str]:
    ep = get_json(cluster, "endpoints", name)
    return sorted(f"{a['ip']}:{p['port']}" for s in ep.get("subsets") or []
                  for a in s.get("addresses") or [] for p in s.get("ports") or [])


def endpoints_match_ready_pods(cluster: RunningCluster, count: int) -> list[str] | None:
    """The endpoints once they are exactly the `count` ready web pods' IPs, port 8080."""
    pods = ready_web_pods(cluster)
    wanted = sorted(f"{p['status']['podIP']}:8080" for p in pods)
    got = endpoint_ips(cluster)
    return got if len(pods) == count and got == wanted else None


@pytest.fixture(scope="module")
def web(cluster: RunningCluster) -> RunningCluster:
    result = cluster.kubectl("apply", "-f", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/web created" in result.stdout
    wait_for(lambda: endpoints_match_ready_pods(cluster, 3), 30, what="3 web endpoints")
    return cluster


def test_service_gets_a_cluster_ip_from_the_service_cidr(web: RunningCluster) -> None:
    out = web.kubectl("get", "svc", "web").stdout.split("\n")
    assert out[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    name, svc_type, cluster_ip, external, ports, _ = out[1].split()
    assert (name, svc_type, external, ports) == ("web", "ClusterIP", "<none>", "80/TCP")
    assert ipaddress.ip_address(cluster_ip) in SERVICE_CIDR
    svc = get_json(web, "svc", "web")
    assert svc["spec"]["clusterIPs"] == [cluster_ip]
    assert svc["spec"]["ports"][0]["targetPort"] == 8080


def test_deployment_pods_are_named_labelled_and_spread(web: RunningCluster) -> None:
    (rs,) = get_json(web, "rs", "-l", "app=web")["items"]
    pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{pod_hash}"
    pods = ready_web_pods(web)
    assert len(pods) == 3
    for p in pods:
        assert p["metadata"]["name"].startswith(f"web-{pod_hash}-")
        assert p["metadata"]["labels"] == {"app": "web", "pod-template-hash": pod_hash}
        assert p["metadata"]["ownerReferences"][0]["name"] == rs["metadata"]["name"]
    assert {p["spec"]["nodeName"] for p in pods} == {"node-1", "node-2"}
    table = web.kubectl("get", "deployment", "web").stdout
    assert table.split("\n")[1].split()[:4] == ["web", "3/3", "3", "3"]


def test_endpoints_and_slices_list_the_ready_pods(web: RunningCluster) -> None:
    ips = endpoint_ips(web)
    assert len(ips) == 3 and all(ip.endswith(":8080") for ip in ips)
    table = web.kubectl("get", "endpointslices", "-l",
                        "kubernetes.io/service-name=web").stdout.split("\n")
    assert table[0].split() == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    name, address_type, ports, endpoints, _ = table[1].split()
    assert name.startswith("web-") and address_type == "IPv4" and ports == "8080"
    assert sorted(endpoints.split(",")) == sorted(ip.split(":")[0] for ip in ips)
    (es,) = get_json(web, "endpointslices", "-l", "kubernetes.io/service-name=web")["items"]
    assert es["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == \
        "endpointslice-controller.k8s.io"
    for ep in es["endpoints"]:
        assert ep["conditions"] == {"ready": True, "serving": True, "terminating": False}
        assert ep["targetRef"]["kind"] == "Pod" and ep["nodeName"] in ("node-1", "node-2")
    describe = web.kubectl("describe", "svc", "web").stdout
    endpoints_line = next(line for line in describe.split("\n")
                          if line.startswith("Endpoints:"))
    assert sorted(endpoints_line.split()[1].split(",")) == ips


def test_scaling_the_deployment_moves_the_endpoints(web: RunningCluster) -> None:
    result = web.kubectl("scale", "deployment", "web", "--replicas=5")
    assert result.returncode == 0 and "deployment.apps/web scaled" in result.stdout
    wait_for(lambda: endpoints_match_ready_pods(web, 5), 30, what="5 web endpoints")
    assert web.kubectl("scale", "deployment", "web", "--replicas=2").returncode == 0
    wait_for(lambda: endpoints_match_ready_pods(web, 2), 30, what="2 web endpoints")
    scale = json.loads(web.kubectl("get", "--raw", "/apis/apps/v1/namespaces/default/"
                                                   "deployments/web/scale").stdout)
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2


def test_a_deleted_pod_is_replaced_and_leaves_the_endpoints(web: RunningCluster) -> None:
    before = {p["metadata"]["name"]: p["status"]["podIP"] for p in ready_web_pods(web)}
    victim = sorted(before)[0]
    assert web.kubectl("delete", "pod", victim).returncode == 0

    def replaced() -> list[str] | None:
        names = {p["metadata"]["name"] for p in ready_web_pods(web)}
        if victim in names or len(names) != len(before):
            return None
        return endpoints_match_ready_pods(web, len(before))

    wait_for(replaced, 30, what="a replacement pod (new name) in the endpoints")


def test_cluster_ip_given_is_honoured_and_errors_name_the_field(web: RunningCluster) -> None:
    def service(name: str, **spec: Any) -> str:
        return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                           "spec": {"selector": {"app": "web"}, **spec}})

    ok = apply(web, service("fixed", clusterIP="10.96.100.100", ports=[{"port": 80}]))
    assert ok.returncode == 0, ok.stderr
    assert get_json(web, "svc", "fixed")["spec"]["clusterIP"] == "10.96.100.100"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"clusterIP": "10.0.0.5", "ports": [{"port": 80}]},
         'spec.clusterIP: Invalid value: "10.0.0.5": provided IP is not in the valid range. '
         "The range of valid IPs is 10.96.0.0/12"),
        ({"clusterIP": "10.96.100.100", "ports": [{"port": 80}]},
         'spec.clusterIP: Invalid value: "10.96.100.100": provided IP is already allocated'),
        ({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
         'spec.clusterIP: Invalid value: "10.96.0.10": provided IP is already allocated'),
        ({"ports": [{"port": 80, "name": "http"}, {"port": 81, "name": "http"}]},
         'spec.ports[1].name: Duplicate value: "http"'),
        ({"ports": [{"port": 70000}]},
         "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535"),
        ({"ports": [{"port": 80, "targetPort": "not_a_name"}]},
         'spec.ports[0].targetPort: Invalid value: "not_a_name"'),
    ]
    for spec, message in cases:
        result = apply(web, service("bad", **spec))
        assert result.returncode != 0, spec
        assert 'The Service "bad" is invalid' in result.stderr, result.stderr
        assert message in result.stderr, result.stderr
    code, body = web.api("POST", "/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"},
        "spec": {"ports": [{"port": 0}]}})
    assert code == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "spec.ports[0].port"


def test_headless_external_name_and_selectorless_services(web: RunningCluster) -> None:
    result = apply(web, """\
        apiVersion: v1
        kind: Service
        metadata: {name: web-headless}
        spec:
          clusterIP: None
          selector: {app: web}
          ports: [{port: 8080, name: http}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: search}
        spec:
          type: ExternalName
          externalName: search.example.com
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: legacy}
        spec:
          ports: [{port: 80, targetPort: 9376}]
        ---
        apiVersion: v1
        kind: Endpoints
        metadata: {name: legacy}
        subsets:
          - addresses: [{ip: 10.244.1.250}]
            ports: [{port: 9376}]
        """)
    assert result.returncode == 0, result.stderr
    headless = get_json(web, "svc", "web-headless")
    assert headless["spec"]["clusterIP"] == "None"
    external = web.kubectl("get", "svc", "search").stdout.split("\n")[1].split()
    assert external[1:4] == ["ExternalName", "<none>", "search.example.com"]
    # The headless Service's endpoints are the same pods; the slice says it is headless.
    wait_for(lambda: len(endpoint_ips(web, "web-headless")) == len(ready_web_pods(web)), 20,
             what="headless endpoints")
    (es,) = get_json(web, "endpointslices", "-l",
                     "kubernetes.io/service-name=web-headless")["items"]
    assert "service.kubernetes.io/headless" in es["metadata"]["labels"]
    # Hand-made Endpoints of a selector-less Service are kept as written.
    assert endpoint_ips(web, "legacy") == ["10.244.1.250:9376"]
    # Mirrored into a slice by the endpointslice-mirroring logic, as in Kubernetes.
    mirrors = wait_for(lambda: get_json(web, "endpointslices", "-l",
                                        "kubernetes.io/service-name=legacy")["items"], 10,
                       what="the mirrored slice")
    assert mirrors[0]["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == (
        "endpointslicemirroring-controller.k8s.io")
    assert mirrors[0]["endpoints"][0]["addresses"] == ["10.244.1.250"]


def test_system_services(web: RunningCluster) -> None:
    kubernetes = get_json(web, "svc", "kubernetes")
    assert kubernetes["spec"]["clusterIP"] == "10.96.0.1"
    assert kubernetes["spec"]["ports"][0]["name"] == "https"
    assert kubernetes["spec"]["ports"][0]["port"] == 443
    dns = get_json(web, "svc", "kube-dns", "-n", "kube-system")
    assert dns["spec"]["clusterIP"] == "10.96.0.10"
    assert dns["metadata"]["labels"]["k8s-app"] == "kube-dns"
    assert [(p["name"], p["port"], p["protocol"]) for p in dns["spec"]["ports"]] == [
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]


def test_deleting_the_deployment_removes_its_replica_sets_and_pods(web: RunningCluster) -> None:
    assert web.kubectl("delete", "deployment", "web").returncode == 0
    wait_for(lambda: not get_json(web, "rs", "-l", "app=web")["items"]
             and not get_json(web, "pods", "-l", "app=web")["items"], 30,
             what="replica sets and pods of web to be collected")
    wait_for(lambda: endpoint_ips(web) == [], 10, what="empty web endpoints")


def test_pods_of_a_lost_node_are_replaced_elsewhere(tmp_path: Path) -> None:
    # Its own cluster with short timeouts: losing a node would disturb the shared one.
    # Heartbeats well inside the grace period, as kubelet's 10 s are inside 40 s: with both
    # at 2 s a healthy node-1 was sometimes declared lost too (its pods then marked NotReady).
    env = {"PODNET_NODE_MONITOR_GRACE_S": "2", "PODNET_POD_EVICTION_TIMEOUT_S": "2",
           "PODNET_HEARTBEAT_INTERVAL_S": "0.5"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with cluster_at(tmp_path / "lost", 2) as c:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
            assert c.kubectl("apply", "-f", str(EXAMPLE)).returncode == 0
            wait_for(lambda: len(ready_web_pods(c)) == 3, 30, what="3 ready web pods")
            node2 = next(n for n in c.info["nodes"] if n["name"] == "node-2")
            os.kill(int(node2["pid"]), signal.SIGKILL)

            def all_on_node1() -> list[dict[str, Any]] | None:
                pods = ready_web_pods(c)
                on1 = [p for p in pods if p["spec"]["nodeName"] == "node-1"]
                return on1 if len(pods) == 3 and len(on1) == 3 else None

            wait_for(all_on_node1, 60, what="all 3 web pods Ready on node-1")
            events = c.kubectl("get", "events", "--field-selector",
                               "reason=TaintManagerEviction").stdout
            assert "TaintManagerEviction" in events
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
