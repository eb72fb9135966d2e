"""The ClusterIP proxy's decisions without sockets: Service lookup, endpoint choice, affinity,
UDP flows; and the proxy's stream handling over fake tunnels."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from podnet.services.servicemap import (
    EPHEMERAL,
    Endpoint,
    ServiceMap,
    UdpFlows,
    agent_address,
    parse_service,
)

IP = "10.96.5.5"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def service(name: str = "web", ip: str = IP, *, target: Any = 8080, port_name: str = "http",
            affinity: bool = False, timeout_s: int | None = None,
            protocol: str = "TCP") -> dict[str, Any]:
    spec: dict[str, Any] = {"clusterIP": ip, "clusterIPs": [ip], "type": "ClusterIP",
                            "ports": [{"name": port_name, "port": 80, "targetPort": target,
                                       "protocol": protocol}]}
    if affinity:
        spec["sessionAffinity"] = "ClientIP"
        if timeout_s is not None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": timeout_s}}
    return {"metadata": {"namespace": "default", "name": name}, "spec": spec}


def endpoint_slice(name: str, service_name: str, endpoints: Sequence[tuple[str, str, bool | None]],
                   ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    eps = []
    for ip, node, ready in endpoints:
        ep: dict[str, Any] = {"addresses": [ip], "nodeName": node,
                              "targetRef": {"kind": "Pod", "name": f"pod-{ip.rsplit('.', 1)[1]}"}}
        if ready is not None:
            ep["conditions"] = {"ready": ready}
        eps.append(ep)
    obj: dict[str, Any] = {
        "metadata": {"namespace": "default", "name": name,
                     "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4", "endpoints": eps}
    if ports is not None:
        obj["ports"] = ports
    return obj


HTTP = [{"name": "http", "port": 8080, "protocol": "TCP"}]
THREE = [("10.244.1.2", "node-1", True), ("10.244.2.2", "node-2", True),
         ("10.244.2.3", "node-2", None)]        # ready nil counts as ready


def make(services: list[dict[str, Any]], slices: list[dict[str, Any]],
         clock: Clock | None = None) -> ServiceMap:
    m = ServiceMap(clock=clock or Clock())
    m.rebuild(services, slices)
    return m


def test_round_robin_spreads_over_every_ready_endpoint() -> None:
    m = make([service()], [endpoint_slice("web-a", "web", THREE, HTTP)])
    choices = [m.choose(IP, 80, "TCP", "10.244.1.9") for _ in range(30)]
    assert {c.reason for c in choices} == {"round-robin"}
    assert Counter(c.endpoint.ip for c in choices if c.endpoint) == \
        {"10.244.1.2": 10, "10.244.2.2": 10, "10.244.2.3": 10}
    assert {c.endpoint.port for c in choices if c.endpoint} == {8080}
    assert choices[0].service is not None and choices[0].service.key == "default/web"


def test_not_ready_endpoints_get_no_connections() -> None:
    eps = [("10.244.1.2", "node-1", True), ("10.244.2.2", "node-2", False)]
    m = make([service()], [endpoint_slice("web-a", "web", eps, HTTP)])
    assert {m.choose(IP, 80, "TCP", "c").endpoint.ip  # type: ignore[union-attr]
            for _ in range(6)} == {"10.244.1.2"}


def test_endpoints_across_slices_and_duplicates() -> None:
    m = make([service()], [
        endpoint_slice("web-a", "web", THREE[:2], HTTP),
        endpoint_slice("web-b", "web", THREE[1:], HTTP),      # 10.244.2.2 in both
        endpoint_slice("other", "other", [("10.244.9.9", "node-9", True)], HTTP)])
    svc = m.service(IP)
    assert svc is not None
    assert [e.ip for e in m.ready_endpoints(svc, svc.ports[0])] == \
        ["10.244.1.2", "10.244.2.2", "10.244.2.3"]


def test_named_target_port_comes_from_the_slice_ports() -> None:
    m = make([service(target="web-port")], [endpoint_slice(
        "web-a", "web", THREE[:1], [{"name": "http", "port": 9376, "protocol": "TCP"}])])
    choice = m.choose(IP, 80, "TCP", "c")
    assert choice.endpoint == Endpoint("10.244.1.2", 9376, "node-1", "pod-2")
    # A slice with other ports only does not serve this Service port.
    m = make([service(target="web-port")], [endpoint_slice(
        "web-a", "web", THREE[:1], [{"name": "metrics", "port": 9100, "protocol": "TCP"}])])
    assert m.choose(IP, 80, "TCP", "c").reason == "no ready endpoints"


def test_slice_without_ports_serves_a_numeric_target_port() -> None:
    m = make([service(target=8081)], [endpoint_slice("web-a", "web", THREE[:1])])
    assert m.choose(IP, 80, "TCP", "c").endpoint == Endpoint("10.244.1.2", 8081, "node-1",
                                                              "pod-2")
    m = make([service(target="named")], [endpoint_slice("web-a", "web", THREE[:1])])
    assert m.choose(IP, 80, "TCP", "c").endpoint is None    # nothing to resolve it with


def test_refusals_name_their_reason() -> None:
    m = make([service(), service("empty", "10.96.5.6")],
             [endpoint_slice("web-a", "web", THREE, HTTP)])
    assert m.choose("10.96.9.9", 80, "TCP", "c").reason == "no service"
    assert m.choose(IP, 81, "TCP", "c").reason == "no such port"
    assert m.choose(IP, 80, "UDP", "c").reason == "no such port"
    empty = m.choose("10.96.5.6", 80, "TCP", "c")
    assert (empty.endpoint, empty.reason, empty.ready) == (None, "no ready endpoints", 0)


def test_excluded_endpoints_are_skipped_then_refused() -> None:
    m = make([service()], [endpoint_slice("web-a", "web", THREE, HTTP)])
    failed = [("10.244.1.2", 8080), ("10.244.2.2", 8080)]
    assert {m.choose(IP, 80, "TCP", "c", failed).endpoint.ip  # type: ignore[union-attr]
            for _ in range(4)} == {"10.244.2.3"}
    none_left = m.choose(IP, 80, "TCP", "c", [*failed, ("10.244.2.3", 8080)])
    assert none_left.endpoint is None and none_left.ready == 3


def test_client_ip_affinity_pins_until_the_timeout() -> None:
    clock = Clock()
    m = make([service(affinity=True, timeout_s=60)],
             [endpoint_slice("web-a", "web", THREE, HTTP)], clock)
    first = m.choose(IP, 80, "TCP", "10.244.1.9")
    assert first.reason == "round-robin" and first.endpoint is not None
    for _ in range(10):
        clock.now += 59         # every use renews the pin
        again = m.choose(IP, 80, "TCP", "10.244.1.9")
        assert (again.endpoint, again.reason) == (first.endpoint, "affinity")
    other = m.choose(IP, 80, "TCP", "10.244.1.10")       # another client: round-robin
    assert other.reason == "round-robin" and other.endpoint != first.endpoint
    clock.now += 61
    expired = m.choose(IP, 80, "TCP", "10.244.1.9")
    assert expired.reason == "round-robin"


def test_affinity_moves_when_its_endpoint_stops_being_ready() -> None:
    clock = Clock()
    slices = [endpoint_slice("web-a", "web", THREE, HTTP)]
    m = make([service(affinity=True)], slices, clock)
    pinned = m.choose(IP, 80, "TCP", "c").endpoint
    assert pinned is not None
    remaining = [e for e in THREE if e[0] != pinned.ip]
    m.rebuild([service(affinity=True)], [endpoint_slice("web-a", "web", remaining, HTTP)])
    moved = m.choose(IP, 80, "TCP", "c")
    assert moved.endpoint is not None and moved.endpoint != pinned
    assert m.choose(IP, 80, "TCP", "c").reason == "affinity"     # pinned to the new one


def test_affinity_default_timeout_and_bounded_table() -> None:
    svc = parse_service(service(affinity=True))
    assert svc is not None and svc.affinity_s == 10800.0
    m = ServiceMap(clock=Clock(), max_pins=100)
    m.rebuild([service(affinity=True)], [endpoint_slice("web-a", "web", THREE, HTTP)])
    for i in range(1000):
        m.choose(IP, 80, "TCP", f"10.244.{i // 250}.{i % 250}")
    assert m.pins() == 100


@pytest.mark.parametrize("garbage", [
    {}, {"metadata": "x"}, {"metadata": {"namespace": "d", "name": "n"}, "spec": []},
    {"metadata": {"namespace": "d", "name": "n"}, "spec": {"clusterIP": "None"}},
    {"metadata": {"namespace": "d", "name": "n"}, "spec": {"clusterIP": "nonsense",
                                                           "ports": "x"}},
    {"metadata": {"namespace": "d", "name": "n"},
     "spec": {"clusterIP": IP, "ports": [{"port": "80"}, {"port": 0}, None, {"port": True}],
              "sessionAffinity": "ClientIP",
              "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": "x"}}}},
])
def test_garbage_objects_are_skipped(garbage: dict[str, Any]) -> None:
    m = make([garbage, service()], [
        garbage, {"metadata": {"namespace": "default", "name": "s",
                               "labels": {"kubernetes.io/service-name": "web"}},
                  "endpoints": [None, {"addresses": ["bad", 7]}, {"addresses": "x"}],
                  "ports": [None, {"port": -1}]},
        endpoint_slice("web-a", "web", THREE[:1], HTTP)])
    assert m.choose(IP, 80, "TCP", "c").endpoint is not None


def test_endpoint_node_by_name_or_pod_cidr() -> None:
    nodes = [{"metadata": {"name": "node-1", "annotations": {
                  "podnet.io/agent-address": "127.0.0.1:4001"}},
              "spec": {"podCIDR": "10.244.1.0/24"}},
             {"metadata": {"name": "node-2"}, "spec": {"podCIDR": "10.244.2.0/24"},
              "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.2"}],
                         "daemonEndpoints": {"kubeletEndpoint": {"Port": 4002}}}}]
    m = ServiceMap()
    m.rebuild([], [], nodes)
    by_name = m.node_of(Endpoint("10.244.9.9", 80, "node-2"))
    assert by_name is not None and by_name.address == "127.0.0.2:4002"
    by_cidr = m.node_of(Endpoint("10.244.1.7", 80, None))
    assert by_cidr is not None and (by_cidr.name, by_cidr.address) == ("node-1", "127.0.0.1:4001")
    assert m.node_of(Endpoint("10.244.7.7", 80, None)) is None
    assert agent_address({"metadata": {}, "status": {}}) is None


# -- UDP flows


def test_udp_flow_lives_while_used_and_maps_replies_back() -> None:
    clock = Clock()
    flows = UdpFlows(timeout_s=30, clock=clock)
    client, svc = ("10.244.1.5", 40000), (IP, 53)
    ep = Endpoint("10.244.2.2", 5353, "node-2")
    flow = flows.add(client, svc, ep)
    assert flow is not None and flow.proxy[0] == IP and EPHEMERAL[0] <= flow.proxy[1]
    assert flows.reply(ep.address, flow.proxy) is flow
    assert flows.reply(("10.244.9.9", 5353), flow.proxy) is None    # not its endpoint
    clock.now += 29
    assert flows.outbound(client, svc) is flow
    clock.now += 29
    assert flows.reply(ep.address, flow.proxy) is flow              # replies renew it too
    clock.now += 31
    assert flows.outbound(client, svc) is None and len(flows) == 0


def test_udp_flows_get_distinct_proxy_ports_and_stay_bounded() -> None:
    flows = UdpFlows(max_flows=50, clock=Clock())
    ep = Endpoint("10.244.2.2", 53, "node-2")
    made = [flows.add(("10.244.1.5", 1000 + i), (IP, 53), ep) for i in range(200)]
    assert len({f.proxy for f in made if f is not None}) == 200
    assert len(flows) == 50
    assert flows.outbound(("10.244.1.5", 1000), (IP, 53)) is None   # evicted, oldest first
    assert flows.outbound(("10.244.1.5", 1199), (IP, 53)) is made[-1]
