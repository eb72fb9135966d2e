import ipaddress
from typing import Any

import pytest

from agents.hostlocal import HostLocalIpam, PoolExhausted
from controlplane.nodeipam import NodeIpam
from podnet.apierrors import ApiError
from podnet.resources import BY_KIND

NODES = BY_KIND["Node"]


class Nodes:
    """The stored Nodes, as the store would give them to the allocator."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def __call__(self) -> list[dict[str, Any]]:
        return list(self.items.values())

    def create(self, ipam: NodeIpam, name: str, **spec: str) -> dict[str, Any]:
        obj: dict[str, Any] = {"metadata": {"name": name}, "spec": dict(spec)}
        ipam.admit("CREATE", NODES, obj, None)
        self.items[name] = obj
        return obj


def test_node_ipam_gives_distinct_24s_from_what_is_stored() -> None:
    nodes = Nodes()
    ipam = NodeIpam("10.244.0.0/16", 24, nodes)
    cidrs = [nodes.create(ipam, f"n{i}")["spec"]["podCIDR"] for i in range(3)]
    assert cidrs == ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]
    assert nodes.items["n0"]["spec"]["podCIDRs"] == ["10.244.1.0/24"]
    # A restarted control plane has no table to rebuild: it reads the stored nodes.
    again = NodeIpam("10.244.0.0/16", 24, nodes)
    assert nodes.create(again, "extra")["spec"]["podCIDR"] == "10.244.4.0/24"


def test_a_rejected_create_leaks_nothing_and_delete_frees() -> None:
    nodes = Nodes()
    ipam = NodeIpam("10.244.0.0/16", 24, nodes)
    nodes.create(ipam, "a")
    # Admission ran but the create was then refused (dry run, name taken): nothing stored.
    ipam.admit("CREATE", NODES, {"metadata": {"name": "ghost"}, "spec": {}}, None)
    assert nodes.create(ipam, "b")["spec"]["podCIDR"] == "10.244.2.0/24"
    del nodes.items["a"]
    assert nodes.create(ipam, "c")["spec"]["podCIDR"] == "10.244.1.0/24"


def test_node_ipam_update_keeps_cidr() -> None:
    nodes = Nodes()
    ipam = NodeIpam("10.244.0.0/16", 24, nodes)
    obj = nodes.create(ipam, "a")
    updated: dict[str, Any] = {"metadata": {"name": "a"}, "spec": {}}
    ipam.admit("UPDATE", NODES, updated, obj)
    assert updated["spec"]["podCIDR"] == "10.244.1.0/24"


def test_node_ipam_rejects_a_taken_cidr_and_exhaustion() -> None:
    nodes = Nodes()
    ipam = NodeIpam("10.244.0.0/23", 24, nodes)
    nodes.create(ipam, "a")
    with pytest.raises(ApiError) as taken:
        nodes.create(ipam, "b", podCIDR="10.244.1.0/24")
    assert taken.value.code == 409
    with pytest.raises(ApiError) as full:
        nodes.create(ipam, "c")
    assert full.value.code == 422


def test_node_n_gets_subnet_n_whatever_the_registration_order() -> None:
    nodes = Nodes()
    ipam = NodeIpam("10.244.0.0/16", 24, nodes)
    got = {name: nodes.create(ipam, name)["spec"]["podCIDR"]
           for name in ("node-3", "node-1", "node-2", "worker")}
    assert got["node-1"] == "10.244.1.0/24" and got["node-3"] == "10.244.3.0/24"
    assert got["node-2"] == "10.244.2.0/24"
    assert got["worker"] == "10.244.4.0/24"


def test_host_local_skips_network_gateway_broadcast() -> None:
    ipam = HostLocalIpam("10.244.1.0/29")
    got = [ipam.allocate(f"uid-{i}") for i in range(5)]
    assert got == [f"10.244.1.{i}" for i in range(2, 7)]
    assert ipam.gateway == "10.244.1.1"
    with pytest.raises(PoolExhausted):
        ipam.allocate("uid-x")


def test_host_local_prefers_old_ip_and_is_idempotent_per_owner() -> None:
    ipam = HostLocalIpam("10.244.1.0/24")
    assert ipam.allocate("a", prefer="10.244.1.77") == "10.244.1.77"
    assert ipam.allocate("a") == "10.244.1.77"
    # A preferred IP that is taken, outside the CIDR or garbage is ignored.
    for bad in ("10.244.1.77", "10.244.2.5", "10.244.1.255", "not-an-ip"):
        ip = ipam.allocate(f"other-{bad}", prefer=bad)
        assert ip != "10.244.1.77"
        assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.244.1.0/24")


def test_host_local_does_not_hand_out_a_freed_ip_at_once() -> None:
    ipam = HostLocalIpam("10.244.1.0/24")
    first = ipam.allocate("a")
    ipam.release(first)
    assert ipam.allocate("b") != first

