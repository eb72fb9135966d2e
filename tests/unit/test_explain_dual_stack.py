"""`podnet explain` on a dual-stack cluster: a pod is found at each of its podIPs, the source
speaks the destination's family, routes match the podCIDR of that family, and an IPv6
ClusterIP is served by its IPv6 endpoints (podnet/cli/explain.py)."""

from __future__ import annotations

from typing import Any

import pytest

from podnet.cli.explain import ExplainError, Snapshot, explain, render


def pod(name: str, ips: list[str], node: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"nodeName": node, "containers": [
                {"name": "c", "ports": [{"containerPort": 8080, "name": "http"}]}]},
            "status": {"phase": "Running", "podIP": ips[0],
                       "podIPs": [{"ip": ip} for ip in ips]}}


def node(name: str, cidrs: list[str], address: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": {"podnet.io/agent-address": address}},
            "spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs}}


def route(node_name: str, cidrs: list[str], address: str) -> dict[str, Any]:
    return {"podCIDR": cidrs[0], "podCIDRs": cidrs, "node": node_name, "address": address,
            "state": "alive"}


N1 = ["10.244.1.0/24", "fd00:10:244:1::/64"]
N2 = ["10.244.2.0/24", "fd00:10:244:2::/64"]
ROUTES = [route("node-1", N1, "127.0.0.1:1001"), route("node-2", N2, "127.0.0.1:1002")]


def endpoint_slice(family: str, addresses: list[tuple[str, str]]) -> dict[str, Any]:
    return {"metadata": {"name": f"web-{family}", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": family, "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "nodeName": n, "conditions": {"ready": True}}
                          for ip, n in addresses]}


def snapshot(*, v4_only_client: bool = False) -> Snapshot:
    client_ips = ["10.244.1.5"] if v4_only_client else ["10.244.1.5", "fd00:10:244:1::5"]
    return Snapshot(
        pods=[pod("client", client_ips, "node-1", {"app": "client"}),
              pod("web-a", ["10.244.2.7", "fd00:10:244:2::7"], "node-2", {"app": "web"})],
        services=[{"metadata": {"name": "web", "namespace": "default"},
                   "spec": {"clusterIP": "10.96.3.4",
                            "clusterIPs": ["10.96.3.4", "fd00:10:96::34"],
                            "ipFamilies": ["IPv4", "IPv6"],
                            "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]}}],
        slices=[endpoint_slice("IPv4", [("10.244.2.7", "node-2")]),
                endpoint_slice("IPv6", [("fd00:10:244:2::7", "node-2")])],
        nodes=[node("node-1", N1, "127.0.0.1:1001"), node("node-2", N2, "127.0.0.1:1002")],
        namespaces=[{"metadata": {"name": "default"}}],
        routes={"node-1": ROUTES, "node-2": ROUTES},
        service_cidr="10.96.0.0/12", service_cidrs=["10.96.0.0/12", "fd00:10:96::/112"],
        proxy_address="127.0.0.1:2000")


def test_an_ipv6_pod_address_crosses_nodes_from_the_clients_ipv6_address() -> None:
    ex = explain(snapshot(), "client", "fd00:10:244:2::7")
    assert (ex.destination, ex.port, ex.outcome) == ("default/web-a", 8080, "ALLOWED")
    text = render(ex)
    assert "default/client fd00:10:244:1::5 on node-1" in text
    assert "[fd00:10:244:2::7]:8080/TCP on node-2" in text
    assert "fd00:10:244:2::/64 -> node-2 at 127.0.0.1:1002" in text
    assert "sees fd00:10:244:1::5 as the source (no NAT)" in text


def test_a_pod_named_by_name_is_reached_at_its_primary_address() -> None:
    text = render(explain(snapshot(), "client", "web-a"))
    assert "default/client 10.244.1.5 on node-1" in text
    assert "10.244.2.0/24 -> node-2" in text


def test_an_ipv6_cluster_ip_goes_to_the_ipv6_endpoints() -> None:
    ex = explain(snapshot(), "client", "fd00:10:96::34")
    assert [leg.ip for leg in ex.legs] == ["fd00:10:244:2::7"]
    text = render(ex)
    assert "[fd00:10:96::34]:80/TCP is Service default/web" in text
    assert "node-1: fd00:10:96::/112 -> the control plane's tunnel" in text
    assert "with fd00:10:244:1::5 as the source" in text
    v4 = explain(snapshot(), "client", "svc/web")
    assert [leg.ip for leg in v4.legs] == ["10.244.2.7"]
    assert "node-1: 10.96.0.0/12 ->" in render(v4)


def test_a_source_without_the_destinations_family_is_told_so() -> None:
    with pytest.raises(ExplainError, match="default/client has no IPv6 address"):
        explain(snapshot(v4_only_client=True), "client", "fd00:10:244:2::7")


def test_an_ipv6_address_no_pod_has_is_inside_a_podcidr() -> None:
    ex = explain(snapshot(), "client", "fd00:10:244:2::99", port="80")
    assert ex.legs[0].unreachable == "no pod has fd00:10:244:2::99"
