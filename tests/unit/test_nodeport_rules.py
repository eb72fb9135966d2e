"""NodePort rules without sockets: the port range flag, allocation and its admission, the
validation of type-dependent fields, and the endpoint choice for a node port (Cluster and
Local) in the service map the ClusterIP proxy shares."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from controlplane.nodeportipam import NodePortIpam
from podnet.apierrors import ApiError
from podnet.resources import BY_KIND
from podnet.services.nodeports import (
    Allocator,
    PortRange,
    RangeError,
    parse_range,
    used_ports,
)
from podnet.services.servicemap import Endpoint, ServiceMap
from podnet.validation import validate

SERVICES = BY_KIND["Service"]
RANGE = PortRange(30000, 32767)


def spec(type_: str = "NodePort", *ports: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": type_, "clusterIP": "10.96.7.7",
            "ports": list(ports) or [{"port": 80, "protocol": "TCP", "targetPort": 8080}],
            **extra}


def svc(name: str, body: dict[str, Any], ns: str = "default") -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"namespace": ns, "name": name}, "spec": body}


# --- the range flag and the allocator


@pytest.mark.parametrize(("text", "expected"), [
    ("30000-32767", PortRange(30000, 32767)), ("30000+10", PortRange(30000, 30010)),
    ("31000", PortRange(31000, 31000)), (" 1-65535 ", PortRange(1, 65535))])
def test_range_forms(text: str, expected: PortRange) -> None:
    assert parse_range(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "32767-30000", "0-10", "30000-70000", "1-2-3"])
def test_bad_ranges_are_refused(text: str) -> None:
    with pytest.raises(RangeError):
        parse_range(text)


def test_check_uses_kubernetes_words() -> None:
    alloc = Allocator(RANGE)
    used = {30080: ("default", "web")}
    assert alloc.check(30080, ("default", "other"), used) == "provided port is already allocated"
    assert alloc.check(30080, ("default", "web"), used) is None        # its own port
    assert alloc.check(80, ("default", "web"), used) == (
        "provided port is not in the valid range. The range of valid ports is 30000-32767")


def test_allocation_avoids_used_and_claimed_ports_and_prefers_the_upper_band() -> None:
    alloc = Allocator(RANGE, random.Random(7))
    ports = [alloc.allocate({}, ()) for _ in range(200)]
    assert all(p is not None and 30086 <= p <= 32767 for p in ports)     # band: 2768 // 32
    small = Allocator(PortRange(30000, 30002), random.Random(1))
    assert small.allocate({30000: ("a", "b")}, [30001]) == 30002
    assert small.allocate({30000: ("a", "b"), 30002: ("a", "c")}, [30001]) is None


def test_used_ports_read_every_node_port_and_health_check_port() -> None:
    stored = [svc("a", spec("NodePort", {"port": 80, "nodePort": 30001},
                            {"port": 53, "protocol": "UDP", "nodePort": 30001})),
              svc("b", spec("LoadBalancer", {"port": 80, "nodePort": 30002},
                            healthCheckNodePort=30003)),
              svc("c", spec("ClusterIP")), {"garbage": True}]
    assert used_ports(stored) == {30001: ("default", "a"), 30002: ("default", "b"),
                                  30003: ("default", "b")}


# --- admission


class Stored:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def __call__(self) -> list[dict[str, Any]]:
        return self.items


def admit(ipam: NodePortIpam, obj: dict[str, Any], old: dict[str, Any] | None = None,
          stored: Stored | None = None) -> dict[str, Any]:
    ipam.admit("UPDATE" if old else "CREATE", SERVICES, obj, old)
    if stored is not None:
        stored.items = [s for s in stored.items if s["metadata"]["name"] !=
                        obj["metadata"]["name"]] + [obj]
    return obj


def test_admission_allocates_honours_and_refuses() -> None:
    stored = Stored()
    ipam = NodePortIpam(RANGE, stored, random.Random(3))
    first = admit(ipam, svc("web", spec("NodePort", {"port": 80, "nodePort": 30080,
                                                     "protocol": "TCP"})), stored=stored)
    assert first["spec"]["ports"][0]["nodePort"] == 30080
    auto = admit(ipam, svc("auto", spec()), stored=stored)
    assert auto["spec"]["ports"][0]["nodePort"] in RANGE
    with pytest.raises(ApiError) as exc:
        admit(ipam, svc("thief", spec("NodePort", {"port": 80, "nodePort": 30080,
                                                   "protocol": "TCP"})))
    assert exc.value.code == 422
    assert str(exc.value) == ('Service "thief" is invalid: spec.ports[0].nodePort: Invalid '
                              'value: 30080: provided port is already allocated')
    # Another namespace's Service of the same name is another owner.
    with pytest.raises(ApiError):
        admit(ipam, svc("web", spec("NodePort", {"port": 80, "nodePort": 30080}), ns="other"))


def test_an_update_keeps_the_ports_it_does_not_name() -> None:
    stored = Stored()
    ipam = NodePortIpam(RANGE, stored, random.Random(5))
    old = admit(ipam, svc("web", spec("NodePort", {"name": "a", "port": 80, "protocol": "TCP"},
                                      {"name": "b", "port": 81, "protocol": "TCP"})),
                stored=stored)
    before = [p["nodePort"] for p in old["spec"]["ports"]]
    new = admit(ipam, svc("web", spec("NodePort", {"name": "a", "port": 80, "protocol": "TCP"},
                                      {"name": "b", "port": 81, "protocol": "TCP"})), old=old)
    assert [p["nodePort"] for p in new["spec"]["ports"]] == before
    assert len(set(before)) == 2


def test_load_balancer_ports_health_check_and_opt_out() -> None:
    ipam = NodePortIpam(RANGE, Stored(), random.Random(9))
    local = admit(ipam, svc("lb", spec("LoadBalancer", externalTrafficPolicy="Local",
                                       allocateLoadBalancerNodePorts=True)))
    node_port = local["spec"]["ports"][0]["nodePort"]
    assert node_port in RANGE and local["spec"]["healthCheckNodePort"] in RANGE
    assert local["spec"]["healthCheckNodePort"] != node_port
    none = admit(ipam, svc("lb2", spec("LoadBalancer", allocateLoadBalancerNodePorts=False)))
    assert "nodePort" not in none["spec"]["ports"][0]
    plain = admit(ipam, svc("c", spec("ClusterIP")))
    assert "nodePort" not in plain["spec"]["ports"][0]


# --- validation of the type-dependent fields


def errors(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    return [e.message() for e in validate("Service", obj, old=old).errors]


def test_validation_of_external_fields() -> None:
    assert errors(svc("a", spec("ClusterIP", externalTrafficPolicy="Local"))) == [
        'spec.externalTrafficPolicy: Invalid value: "Local": may only be set for '
        "externally-accessible services"]
    assert errors(svc("a", spec("NodePort", externalTrafficPolicy="Nearest"))) == [
        'spec.externalTrafficPolicy: Unsupported value: "Nearest": supported values: '
        '"Cluster", "Local"']
    assert errors(svc("a", spec("NodePort", healthCheckNodePort=30001))) == [
        "spec.healthCheckNodePort: Invalid value: 30001: may only be set when `type` is "
        "'LoadBalancer' and `externalTrafficPolicy` is 'Local'"]
    assert errors(svc("a", spec("ClusterIP", {"port": 80, "nodePort": 30001}))) == [
        "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
    assert errors(svc("a", spec("NodePort", {"name": "a", "port": 80, "nodePort": 30001},
                                {"name": "b", "port": 81, "nodePort": 30001}))) == [
        "spec.ports[1].nodePort: Duplicate value: 30001"]
    assert errors(svc("a", spec("NodePort", {"name": "a", "port": 53, "nodePort": 30001},
                                {"name": "b", "port": 53, "protocol": "UDP",
                                 "nodePort": 30001}))) == []
    defaulted = validate("Service", svc("a", spec("LoadBalancer"))).obj["spec"]
    assert defaulted["externalTrafficPolicy"] == "Cluster"
    assert defaulted["allocateLoadBalancerNodePorts"] is True


def test_a_type_change_to_cluster_ip_drops_what_only_node_ports_use() -> None:
    old = validate("Service", svc("a", spec("LoadBalancer", {"port": 80, "nodePort": 30001},
                                            externalTrafficPolicy="Local",
                                            healthCheckNodePort=30002))).obj
    new = {**old, "spec": {**old["spec"], "type": "ClusterIP",
                           "ports": [dict(p) for p in old["spec"]["ports"]]}}
    result = validate("Service", new, old=old)
    assert result.errors == []
    for key in ("externalTrafficPolicy", "healthCheckNodePort",
                "allocateLoadBalancerNodePorts"):
        assert key not in result.obj["spec"]
    assert "nodePort" not in result.obj["spec"]["ports"][0]
    # A nodePort the update itself changes is the user's: still refused for ClusterIP.
    new["spec"]["ports"][0]["nodePort"] = 30005
    assert any("nodePort: Forbidden" in m for m in errors(new, old))


# --- choosing an endpoint for a node port


def slice_of(service: str, endpoints: list[tuple[str, str]]) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": f"{service}-x",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "nodeName": node} for ip, node in endpoints]}


EPS = [("10.244.1.2", "node-1"), ("10.244.2.2", "node-2"), ("10.244.2.3", "node-2")]


def node_map(policy: str = "Cluster", affinity: bool = False) -> ServiceMap:
    extra: dict[str, Any] = {"externalTrafficPolicy": policy}
    if affinity:
        extra["sessionAffinity"] = "ClientIP"
    m = ServiceMap()
    m.rebuild([svc("web", spec("NodePort", {"port": 80, "nodePort": 30080,
                                            "protocol": "TCP", "targetPort": 8080}, **extra)),
               svc("plain", {**spec("ClusterIP"), "clusterIP": "10.96.8.8"})],
              [slice_of("web", EPS)])
    return m


def on(node: str) -> Any:
    return lambda e: e.node == node


def test_cluster_policy_balances_over_every_node() -> None:
    m = node_map()
    assert set(m.node_ports()) == {(30080, "TCP")}      # the ClusterIP Service has none
    picks = [m.choose_node_port(30080, "TCP", "127.0.0.1", (), on("node-1")) for _ in range(9)]
    assert Counter(c.endpoint.ip for c in picks if c.endpoint) == {
        "10.244.1.2": 3, "10.244.2.2": 3, "10.244.2.3": 3}
    assert m.choose_node_port(30081, "TCP", "127.0.0.1").reason == "no service"
    assert m.choose_node_port(30080, "UDP", "127.0.0.1").reason == "no service"


def test_local_policy_keeps_to_this_node() -> None:
    m = node_map("Local")
    picks = {m.choose_node_port(30080, "TCP", "127.0.0.1", (), on("node-2")).endpoint
             for _ in range(6)}
    assert {e.ip for e in picks if e} == {"10.244.2.2", "10.244.2.3"}
    none = m.choose_node_port(30080, "TCP", "127.0.0.1", (), on("node-3"))
    assert none.endpoint is None and none.reason == "no local endpoints" and none.ready == 3
    one = m.choose_node_port(30080, "TCP", "127.0.0.1", [("10.244.1.2", 8080)], on("node-1"))
    assert one.endpoint is None     # its only local endpoint already failed


def test_affinity_follows_the_real_client() -> None:
    m = node_map(affinity=True)
    first = m.choose_node_port(30080, "TCP", "192.0.2.7")
    again = {m.choose_node_port(30080, "TCP", "192.0.2.7").endpoint for _ in range(5)}
    assert again == {first.endpoint} and isinstance(first.endpoint, Endpoint)
