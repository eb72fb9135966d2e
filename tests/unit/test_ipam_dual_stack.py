"""Node IPAM on dual-stack and IPv6 clusters: one podCIDR per family, primary first."""

from typing import Any

import pytest

from controlplane.nodeipam import NodeIpam
from podnet.apierrors import ApiError
from podnet.resources import BY_KIND

NODES = BY_KIND["Node"]
DUAL = ["10.244.0.0/16", "fd00:10:244::/56"]


class Nodes:
    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def __call__(self) -> list[dict[str, Any]]:
        return list(self.items.values())

    def create(self, ipam: NodeIpam, name: str, **spec: Any) -> dict[str, Any]:
        obj: dict[str, Any] = {"metadata": {"name": name}, "spec": dict(spec)}
        ipam.admit("CREATE", NODES, obj, None)
        self.items[name] = obj
        return obj


def test_a_node_gets_one_pod_cidr_per_family_primary_first() -> None:
    nodes = Nodes()
    ipam = NodeIpam(DUAL, 24, nodes)
    spec = nodes.create(ipam, "node-1")["spec"]
    assert spec["podCIDR"] == "10.244.1.0/24"
    assert spec["podCIDRs"] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert nodes.create(ipam, "worker")["spec"]["podCIDRs"] == [
        "10.244.2.0/24", "fd00:10:244:2::/64"]
    assert nodes.create(ipam, "node-3")["spec"]["podCIDRs"][1] == "fd00:10:244:3::/64"


def test_ipv6_primary_and_ipv6_only() -> None:
    nodes = Nodes()
    ipam = NodeIpam(list(reversed(DUAL)), 24, nodes)
    spec = nodes.create(ipam, "node-2")["spec"]
    assert spec["podCIDR"] == "fd00:10:244:2::/64"
    assert spec["podCIDRs"] == ["fd00:10:244:2::/64", "10.244.2.0/24"]
    v6 = NodeIpam("fd00:10:244::/56", 24, Nodes(), node_mask_v6=60)
    assert v6.allocate("a", {}) == "fd00:10:244:10::/60"  # the 2nd /60 (1st skipped)


def test_restart_reads_what_is_stored_in_every_family() -> None:
    nodes = Nodes()
    ipam = NodeIpam(DUAL, 24, nodes)
    for name in ("a", "b"):
        nodes.create(ipam, name)
    again = NodeIpam(DUAL, 24, nodes)
    assert nodes.create(again, "c")["spec"]["podCIDRs"] == ["10.244.3.0/24",
                                                            "fd00:10:244:3::/64"]


def test_update_keeps_both_and_adds_the_family_a_node_lacks() -> None:
    nodes = Nodes()
    ipam = NodeIpam(DUAL, 24, nodes)
    obj = nodes.create(ipam, "a")
    updated: dict[str, Any] = {"metadata": {"name": "a"}, "spec": {}}
    ipam.admit("UPDATE", NODES, updated, obj)
    assert updated["spec"]["podCIDRs"] == obj["spec"]["podCIDRs"]
    # A Node stored by an IPv4-only control plane, which restarted dual-stack: its next
    # write (the agent registering again) adds an IPv6 podCIDR and keeps the IPv4 one.
    nodes.items["old"] = {"metadata": {"name": "old"},
                          "spec": {"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.9.0/24"]}}
    patched: dict[str, Any] = {"metadata": {"name": "old"},
                               "spec": dict(nodes.items["old"]["spec"])}
    ipam.admit("UPDATE", NODES, patched, nodes.items["old"])
    assert patched["spec"]["podCIDR"] == "10.244.9.0/24"
    assert patched["spec"]["podCIDRs"] == ["10.244.9.0/24", "fd00:10:244:2::/64"]


def test_given_cidrs_are_kept_and_checked_in_every_family() -> None:
    nodes = Nodes()
    ipam = NodeIpam(DUAL, 24, nodes)
    spec = nodes.create(ipam, "a", podCIDR="10.244.7.0/24")["spec"]
    assert spec["podCIDRs"] == ["10.244.7.0/24", "fd00:10:244:1::/64"]
    with pytest.raises(ApiError) as taken:
        nodes.create(ipam, "b", podCIDRs=["10.244.8.0/24", "fd00:10:244:1:0::/64"])
    assert taken.value.code == 409
    assert "fd00:10:244:1:0::/64 is already used by node a" in taken.value.message


def test_ipv6_exhaustion_is_a_422() -> None:
    nodes = Nodes()
    ipam = NodeIpam(["10.244.0.0/16", "fd00:10:244::/63"], 24, nodes)
    nodes.create(ipam, "a")
    with pytest.raises(ApiError) as full:
        nodes.create(ipam, "b")
    assert full.value.code == 422 and "fd00:10:244::/63" in full.value.message


def test_ipv4_only_is_unchanged() -> None:
    nodes = Nodes()
    ipam = NodeIpam(["10.244.0.0/16"], 24, nodes)
    spec = nodes.create(ipam, "node-1")["spec"]
    assert (spec["podCIDR"], spec["podCIDRs"]) == ("10.244.1.0/24", ["10.244.1.0/24"])
