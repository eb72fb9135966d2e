"""The ClusterIP proxy's Service map with dual-stack Services: a ClusterIP of each family is
served by that family's EndpointSlice; IPv4-only Services are unchanged."""

from __future__ import annotations

from typing import Any

from podnet.services.servicemap import Endpoint, ServiceMap, UdpFlows, parse_service

V4, V6 = "10.96.5.5", "fd00:10:96::5:5"


def service(ips: list[str]) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": ips[0], "clusterIPs": ips, "type": "ClusterIP",
                     "ipFamilyPolicy": "PreferDualStack" if len(ips) > 1 else "SingleStack",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def slice_(name: str, address_type: str, ips: list[str]) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": name,
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": address_type,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "nodeName": "node-1",
                           "conditions": {"ready": True}} for ip in ips]}


SLICES = [slice_("web-v4", "IPv4", ["10.244.1.2", "10.244.2.2"]),
          slice_("web-v6", "IPv6", ["fd00:10:244:1::2", "fd00:10:244:2::2"])]


def test_both_cluster_ips_are_indexed_in_canonical_form() -> None:
    svc = parse_service(service([V4, "fd00:0010:0096::5:5"]))
    assert svc is not None and svc.cluster_ips == (V4, V6)


def test_each_family_gets_its_own_endpoints() -> None:
    m = ServiceMap()
    m.rebuild([service([V4, V6])], SLICES)
    v6 = {m.choose(V6, 80, "TCP", "fd00:10:244:3::9").endpoint for _ in range(4)}
    v4 = {m.choose(V4, 80, "TCP", "10.244.3.9").endpoint for _ in range(4)}
    assert {e.ip for e in v6 if e} == {"fd00:10:244:1::2", "fd00:10:244:2::2"}
    assert {e.ip for e in v4 if e} == {"10.244.1.2", "10.244.2.2"}


def test_a_v6_cluster_ip_without_v6_endpoints_is_refused() -> None:
    m = ServiceMap()
    m.rebuild([service([V4, V6])], SLICES[:1])
    choice = m.choose(V6, 80, "TCP", "fd00:10:244:3::9")
    assert (choice.endpoint, choice.reason) == (None, "no ready endpoints")


def test_a_slice_of_the_wrong_family_content_is_ignored() -> None:
    m = ServiceMap()
    m.rebuild([service([V6])], [slice_("odd", "IPv6", ["10.244.1.2", "garbage"]),
                                slice_("fqdn", "FQDN", ["example.com"])])
    assert m.choose(V6, 80, "TCP", "fd00::1").endpoint is None


def test_v6_endpoint_node_by_pod_cidr() -> None:
    m = ServiceMap()
    m.rebuild([], [], [{"metadata": {"name": "node-2", "annotations": {
        "podnet.io/agent-address": "127.0.0.1:4002"}},
        "spec": {"podCIDR": "10.244.2.0/24",
                 "podCIDRs": ["10.244.2.0/24", "fd00:10:244:2::/64"]}}])
    node = m.node_of(Endpoint("fd00:10:244:2::7", 8080, None))
    assert node is not None and node.name == "node-2"


def test_v6_udp_flows_map_replies_back() -> None:
    flows = UdpFlows()
    client, svc = ("fd00:10:244:1::5", 40000), (V6, 53)
    endpoint = Endpoint("fd00:10:244:2::2", 5353, "node-2")
    flow = flows.add(client, svc, endpoint, via=None)
    assert flow is not None and flow.proxy[0] == V6
    assert flows.reply(endpoint.address, flow.proxy) is flow
