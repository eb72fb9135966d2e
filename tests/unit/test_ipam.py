import ipaddress

import pytest

from agents.hostlocal import HostLocalIpam, PoolExhausted
from controlplane.nodeipam import NodeIpam
from podnet.apierrors import ApiError
from podnet.resources import BY_KIND

NODES = BY_KIND["Node"]


def test_node_ipam_gives_distinct_24s_and_keeps_them_across_restarts() -> None:
    ipam = NodeIpam("10.244.0.0/16", 24, [])
    nodes = []
    for i in range(3):
        obj = {"metadata": {"name": f"node-{i}"}, "spec": {}}
        ipam.admit("CREATE", NODES, obj, None)
        nodes.append(obj)
    cidrs = [n["spec"]["podCIDR"] for n in nodes]
    assert cidrs == ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]  # node-0 -> first free
    assert nodes[0]["spec"]["podCIDRs"] == ["10.244.1.0/24"]
    # A restarted control plane rebuilds its table from the stored nodes.
    again = NodeIpam("10.244.0.0/16", 24, nodes)
    fresh = {"metadata": {"name": "extra"}, "spec": {}}
    again.admit("CREATE", NODES, fresh, None)
    assert fresh["spec"]["podCIDR"] == "10.244.4.0/24"


def test_node_ipam_update_keeps_cidr_and_delete_frees_it() -> None:
    ipam = NodeIpam("10.244.0.0/16", 24, [])
    obj = {"metadata": {"name": "a"}, "spec": {}}
    ipam.admit("CREATE", NODES, obj, None)
    updated = {"metadata": {"name": "a"}, "spec": {}}
    ipam.admit("UPDATE", NODES, updated, obj)
    assert updated["spec"]["podCIDR"] == "10.244.1.0/24"
    ipam.admit("DELETE", NODES, obj, obj)
    other = {"metadata": {"name": "b"}, "spec": {}}
    ipam.admit("CREATE", NODES, other, None)
    assert other["spec"]["podCIDR"] == "10.244.1.0/24"


def test_node_ipam_rejects_a_taken_cidr_and_exhaustion() -> None:
    ipam = NodeIpam("10.244.0.0/23", 24, [])
    ipam.admit("CREATE", NODES, {"metadata": {"name": "a"}, "spec": {}}, None)
    with pytest.raises(ApiError) as taken:
        ipam.admit("CREATE", NODES, {"metadata": {"name": "b"},
                                     "spec": {"podCIDR": "10.244.1.0/24"}}, None)
    assert taken.value.code == 409
    with pytest.raises(ApiError) as full:
        ipam.admit("CREATE", NODES, {"metadata": {"name": "c"}, "spec": {}}, None)
    assert full.value.code == 422


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


def test_node_n_gets_subnet_n_whatever_the_registration_order() -> None:
    ipam = NodeIpam("10.244.0.0/16", 24, [])
    got = {}
    for name in ("node-3", "node-1", "node-2", "worker"):
        obj = {"metadata": {"name": name}, "spec": {}}
        ipam.admit("CREATE", NODES, obj, None)
        got[name] = obj["spec"]["podCIDR"]
    assert got["node-1"] == "10.244.1.0/24" and got["node-3"] == "10.244.3.0/24"
    assert got["node-2"] == "10.244.2.0/24"
    assert got["worker"] not in (got["node-1"], got["node-2"], got["node-3"])
