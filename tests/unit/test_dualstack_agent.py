"""The agent's dual-stack pieces without processes: host-local IPAM for an IPv6 podCIDR,
the checked CIDR lists from the Node and cluster-info."""

from __future__ import annotations

import pytest

from agents.hostlocal import HostLocalIpam, PoolExhausted
from agents.node import max_pods, pod_cidrs
from podnet.addresses import cidr_families


def test_v6_pool_skips_network_and_gateway_and_round_robins() -> None:
    ipam = HostLocalIpam("fd00:10:244:1::/64")
    assert (ipam.family, ipam.gateway) == (6, "fd00:10:244:1::1")
    assert ipam.allocate("a") == "fd00:10:244:1::2"
    assert ipam.allocate("b") == "fd00:10:244:1::3"
    ipam.release("fd00:10:244:1::2")
    assert ipam.allocate("c") == "fd00:10:244:1::4"     # a freed address is not reused at once
    assert ipam.allocate("a2", prefer="fd00:10:244:1::2") == "fd00:10:244:1::2"


def test_v6_prefer_must_be_in_the_pool_and_canonical() -> None:
    ipam = HostLocalIpam("fd00:10:244:1::/64")
    assert ipam.allocate("a", prefer="fd00:10:244:2::9") == "fd00:10:244:1::2"
    assert ipam.allocate("b", prefer="fd00:10:244:1:0::9") == "fd00:10:244:1::3"
    assert ipam.allocate("c", prefer="10.244.1.9") == "fd00:10:244:1::4"
    assert ipam.allocate("d", prefer="fd00:10:244:1::1") == "fd00:10:244:1::5"   # gateway


def test_release_owner_frees_what_a_pod_held() -> None:
    ipam = HostLocalIpam("fd00:10:244:1::/126")     # ::2 only (::0 net, ::1 gw, ::3 last)
    assert ipam.allocate("a") == "fd00:10:244:1::2"
    with pytest.raises(PoolExhausted):
        ipam.allocate("b")
    ipam.release_owner("a")
    assert ipam.allocate("b") == "fd00:10:244:1::2"


def test_v4_pool_unchanged() -> None:
    ipam = HostLocalIpam("10.244.1.0/24")
    assert (ipam.family, ipam.gateway, ipam.allocate("a")) == (4, "10.244.1.1", "10.244.1.2")
    assert max_pods("10.244.1.0/24") == 253 and max_pods("fd00:10:244:1::/64") == 110


@pytest.mark.parametrize(("listed", "want"), [
    (None, ["10.244.0.0/16"]),
    (["10.244.0.0/16", "fd00:10:244::/56"], ["10.244.0.0/16", "fd00:10:244::/56"]),
    (["fd00:10:244::/56", "10.244.0.0/16"], ["10.244.0.0/16"]),      # primary not first
    (["10.244.0.0/16", "10.245.0.0/16"], ["10.244.0.0/16"]),         # one family twice
    (["10.244.0.0/16", "fd00::zz/56"], ["10.244.0.0/16"]),
    (["10.244.0.0/16", "fd00:10:244::/56", "fd01::/56"], ["10.244.0.0/16"]),
    ("10.244.0.0/16,fd00:10:244::/56", ["10.244.0.0/16"]),
    (["10.244.0.0/16", 6], ["10.244.0.0/16"]),
])
def test_cidr_lists_are_checked(listed: object, want: list[str]) -> None:
    assert cidr_families("10.244.0.0/16", listed) == want


def test_pod_cidrs_of_a_node() -> None:
    node = {"spec": {"podCIDR": "10.244.1.0/24",
                     "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]}}
    assert pod_cidrs(node) == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert pod_cidrs({"spec": {"podCIDR": "10.244.1.0/24"}}) == ["10.244.1.0/24"]
