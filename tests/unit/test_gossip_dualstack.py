"""Dual-stack gossip: entries with a podCIDR per family, their validation, and the route
table's longest-prefix lookup for both families."""

from __future__ import annotations

import json

import pytest

from agents.cni.membership import GossipSettings, Membership
from agents.cni.routes import ALIVE, DEAD, Route, RouteTable
from podnet import gossipwire as gw
from podnet.auth import derive_key
from podnet.gossipwire import Entry, GossipError, Updates, Verifier, seal

KEY = derive_key(b"unit-test-secret-0123456789abcdef", "gossip")
NOW = 1_750_000_000.0
DUAL = Entry("node-1", "10.244.1.0/24", "127.0.0.1:7001", 5, 0, "alive",
             ("10.244.1.0/24", "fd00:10:244:1::/64"))
V6_ONLY = Entry("node-3", "fd00:10:244:3::/64", "127.0.0.1:7003", 5, 0, "alive")
V4 = Entry("node-2", "10.244.2.0/24", "127.0.0.1:7002", 5, 3, "suspect")


def open_(frame: bytes) -> gw.Envelope:
    return Verifier(KEY, "node-2", max_clock_skew_s=30.0).open(frame, now=NOW)


def frame_of(entry: dict[str, object]) -> bytes:
    raw = json.dumps({"v": 1, "type": "updates", "from": "node-1", "to": "node-2", "ts": NOW,
                      "nonce": "a" * 32, "re": None, "msg": {"entries": [entry]}}).encode()
    return gw.mac_of(KEY, raw).encode() + b"." + raw


def test_dual_stack_and_v6_only_entries_round_trip() -> None:
    msg = Updates((DUAL, V6_ONLY, V4))
    frame, _ = seal(msg, key=KEY, sender="node-1", receiver="node-2", now=NOW)
    assert open_(frame).message == msg


def test_a_single_stack_entry_is_encoded_as_before() -> None:
    frame, _ = seal(Updates((V4,)), key=KEY, sender="node-1", receiver="node-2", now=NOW)
    entry = json.loads(frame[65:])["msg"]["entries"][0]
    assert list(entry) == ["node", "pod_cidr", "address", "incarnation", "counter", "state"]


GOOD = {"node": "node-1", "pod_cidr": "10.244.1.0/24", "address": "127.0.0.1:1",
        "incarnation": 1, "counter": 0, "state": "alive"}


@pytest.mark.parametrize(("cidrs", "detail"), [
    ("10.244.1.0/24", "expected a list"),
    (["10.244.1.0/24"], "expected two podCIDRs"),
    (["10.244.1.0/24", "fd00::/64", "fd01::/64"], "at most 2"),
    (["fd00:10:244:1::/64", "10.244.1.0/24"], "the first must be pod_cidr"),
    (["10.244.1.0/24", "10.244.9.0/24"], "one IPv4 and one IPv6"),
    (["10.244.1.0/24", "fd00:10:244:1::1/64"], "not an IPv4 or IPv6 network"),
    (["10.244.1.0/24", "FD00:10:244:1::/64"], "write"),
    (["10.244.1.0/24", 7], "expected an IPv4 or IPv6 CIDR"),
])
def test_bad_pod_cidrs_are_malformed(cidrs: object, detail: str) -> None:
    with pytest.raises(GossipError) as e:
        open_(frame_of({**GOOD, "pod_cidrs": cidrs}))
    assert e.value.reason == gw.MALFORMED and detail in e.value.detail


def test_an_unknown_extra_key_is_still_refused() -> None:
    with pytest.raises(GossipError, match="unknown"):
        open_(frame_of({**GOOD, "pod_cidr6": "fd00::/64"}))


def route(node: str, *cidrs: str, state: str = ALIVE) -> Route:
    return Route(cidrs[0], node, f"127.0.0.1:{len(node)}", state,
                 pod_cidrs=cidrs if len(cidrs) > 1 else ())


def test_lookup_finds_both_families_longest_prefix_first() -> None:
    table = RouteTable("node-1")
    table.update(route("node-1", "10.244.1.0/24", "fd00:10:244:1::/64"))
    table.update(route("node-2", "10.244.2.0/24", "fd00:10:244:2::/64"))
    table.update(route("wide", "fd00:10:244::/56"))
    lookup = table.lookup
    assert lookup("10.244.2.7").node == "node-2"                     # type: ignore[union-attr]
    assert lookup("fd00:10:244:2::7").node == "node-2"               # type: ignore[union-attr]
    assert lookup("fd00:10:244:1:ffff::1").node == "node-1"          # type: ignore[union-attr]
    assert lookup("fd00:10:244:9::1").node == "wide"                 # type: ignore[union-attr]
    assert lookup("fd00:10:245::1") is None
    assert lookup("::ffff:10.244.2.7") is None      # a mapped address is not the v4 pod
    assert lookup("not-an-ip") is None


def test_a_dead_dual_stack_route_withdraws_both_families() -> None:
    table = RouteTable("node-1")
    table.update(route("node-2", "10.244.2.0/24", "fd00:10:244:2::/64"))
    table.update(route("node-2", "10.244.2.0/24", "fd00:10:244:2::/64", state=DEAD))
    assert table.lookup("10.244.2.7") is None and table.lookup("fd00:10:244:2::7") is None


def test_v6_only_routes_sort_after_v4() -> None:
    table = RouteTable("node-1")
    table.update(route("node-3", "fd00:10:244:3::/64"))
    table.update(route("node-2", "10.244.2.0/24"))
    assert [r.node for r in table.all()] == ["node-2", "node-3"]


def test_membership_publishes_a_dual_stack_peer_as_one_route_for_both_families() -> None:
    table = RouteTable("node-2")
    m = Membership("node-2", "10.244.2.0/24", "127.0.0.1:7002", table, GossipSettings(),
                   incarnation=1, pod_cidrs=("10.244.2.0/24", "fd00:10:244:2::/64"))
    assert m.self_entry.pod_cidrs == ("10.244.2.0/24", "fd00:10:244:2::/64")
    assert m.merge(DUAL)
    assert table.lookup("fd00:10:244:1::5").node == "node-1"         # type: ignore[union-attr]
    assert table.lookup("fd00:10:244:2::5").node == "node-2"         # type: ignore[union-attr]
    # A single-stack agent keeps its old entry shape.
    single = Membership("node-4", "10.244.4.0/24", "127.0.0.1:7004", RouteTable("node-4"),
                        GossipSettings(), incarnation=1, pod_cidrs=("10.244.4.0/24",))
    assert single.self_entry.pod_cidrs == ()
