"""The NetworkFault model: parsing, matching with direction/protocol/port, seeded loss and
jitter (statistics and determinism), retransmit delay, the token bucket."""

from __future__ import annotations

import math
from typing import Any

import pytest

from podnet.faults.model import (
    MAX_RETRANSMITS,
    RTO_S,
    Endpoint,
    Fault,
    FaultError,
    FaultSet,
    TokenBucket,
    parse_fault,
    parse_faults,
    selector_from_text,
)


def obj(name: str = "f", /, **spec: Any) -> dict[str, Any]:
    spec.setdefault("from", {"node": "node-1"})
    spec.setdefault("to", {"node": "node-2"})
    return {"apiVersion": "podnet.dev/v1alpha1", "kind": "NetworkFault",
            "metadata": {"name": name}, "spec": spec}


def pod(name: str, ns: str = "default", node: str = "node-1", **labels: str) -> Endpoint:
    return Endpoint(ip="10.244.1.9", node=node, namespace=ns, pod=name, labels=labels)


A1 = pod("a", node="node-1", app="web")
B2 = pod("b", node="node-2", app="db")
C1 = pod("c", ns="other", node="node-1", app="web")


# --- parsing ------------------------------------------------------------------------------


def test_parse_full_spec() -> None:
    f = parse_fault(obj(**{"from": {"selector": "app=web", "namespace": "default"},
                           "to": {"service": "default/db"}, "direction": "to",
                           "protocol": "UDP", "port": 53, "delayMs": 100, "jitterMs": 10,
                           "lossPct": 5.0, "rateKbit": 1000, "partition": False, "seed": 42}))
    assert (f.src.kind, f.src.value, f.src.namespace) == ("selector", "app=web", "default")
    assert (f.dst.kind, f.dst.value) == ("service", "default/db")
    assert (f.direction, f.protocol, f.port, f.seed) == ("to", "udp", 53, 42)
    assert (f.delay_ms, f.jitter_ms, f.loss_pct, f.rate_kbit) == (100, 10, 5.0, 1000)


def test_defaults_and_derived_seed() -> None:
    f = parse_fault(obj())
    assert (f.direction, f.protocol, f.port, f.partition) == ("both", "all", None, False)
    assert f.idle
    # no spec.seed: derived from the cluster seed and the name, stable and distinct
    assert parse_fault(obj(), cluster_seed=7).seed == parse_fault(obj(), cluster_seed=7).seed
    assert parse_fault(obj(), cluster_seed=7).seed != parse_fault(obj(), cluster_seed=8).seed
    assert parse_fault(obj("g"), cluster_seed=7).seed != parse_fault(obj(), cluster_seed=7).seed


@pytest.mark.parametrize(("spec", "path"), [
    ({"from": None}, "spec.from"),
    ({"from": {"node": "a", "pod": "x/y"}}, "spec.from"),
    ({"from": {}}, "spec.from"),
    ({"from": {"nod": "a"}}, "spec.from.nod"),
    ({"to": {"pod": "nonamespace"}}, "spec.to.pod"),
    ({"to": {"service": "a/b/c"}}, "spec.to.service"),
    ({"to": {"node": "Bad_Name"}}, "spec.to.node"),
    ({"to": {"node": "n", "namespace": "x"}}, "spec.to.namespace"),
    ({"to": {"selector": "app in (a"}}, "spec.to.selector"),
    ({"to": {"selector": ""}}, "spec.to.selector"),
    ({"direction": "sideways"}, "spec.direction"),
    ({"protocol": "sctp"}, "spec.protocol"),
    ({"port": 0}, "spec.port"),
    ({"port": "80"}, "spec.port"),
    ({"port": True}, "spec.port"),
    ({"delayMs": -1}, "spec.delayMs"),
    ({"delayMs": "10"}, "spec.delayMs"),
    ({"jitterMs": float("nan")}, "spec.jitterMs"),
    ({"lossPct": 100.5}, "spec.lossPct"),
    ({"rateKbit": True}, "spec.rateKbit"),
    ({"partition": "yes"}, "spec.partition"),
    ({"seed": -3}, "spec.seed"),
    ({"seed": 1.5}, "spec.seed"),
])
def test_parse_errors_name_the_field(spec: dict[str, Any], path: str) -> None:
    with pytest.raises(FaultError) as err:
        parse_fault(obj(**spec))
    assert str(err.value).startswith(path), str(err.value)


def test_parse_garbage_objects() -> None:
    for bad in ({}, {"metadata": {"name": "x"}}, {"metadata": "x", "spec": {}},
                {"metadata": {"name": "x"}, "spec": []}):
        with pytest.raises(FaultError):
            parse_fault(bad)
    faults, problems = parse_faults([obj("ok", delayMs=5), obj("bad", port=-1), "junk"])  # type: ignore[list-item]
    assert [f.name for f in faults.faults] == ["ok"]
    assert len(problems) == 2 and problems[0].startswith("bad: spec.port")


def test_cli_selector_spelling() -> None:
    assert selector_from_text("node/node-1").kind == "node"
    assert selector_from_text("pod/ns1/web-0").value == "ns1/web-0"
    assert selector_from_text("ns/kube-system").kind == "namespace"
    assert selector_from_text("svc/web").value == "default/web"
    assert selector_from_text("svc/x/web").value == "x/web"
    assert selector_from_text("app=web").kind == "selector"
    with pytest.raises(FaultError):
        selector_from_text("pod/onlyname")


# --- matching -----------------------------------------------------------------------------


def fault(**spec: Any) -> Fault:
    spec.setdefault("delayMs", 10)
    return parse_fault(obj(**spec))


def test_selectors_match_what_they_name() -> None:
    node = fault(**{"from": {"node": "node-1"}, "to": {"node": "node-2"}})
    assert node.src.matches(A1) and node.src.matches(C1) and not node.src.matches(B2)
    assert node.src.matches(Endpoint(node="node-1"))      # the agent itself
    p = selector_from_text("pod/default/a")
    assert p.matches(A1) and not p.matches(C1)
    ns = selector_from_text("ns/other")
    assert ns.matches(C1) and not ns.matches(A1) and not ns.matches(Endpoint(node="node-1"))
    sel = parse_fault(obj(**{"from": {"selector": "app=web", "namespace": "default"},
                             "delayMs": 1})).src
    assert sel.matches(A1) and not sel.matches(C1) and not sel.matches(B2)
    anyns = selector_from_text("app=web")
    assert anyns.matches(A1) and anyns.matches(C1)
    svc = selector_from_text("svc/default/db")
    assert svc.matches(Endpoint(ip="10.96.0.20", services=frozenset({"default/db"})))
    assert not svc.matches(B2)


@pytest.mark.parametrize(("direction", "forward", "backward"), [
    ("to", True, False), ("from", False, True), ("both", True, True)])
def test_direction(direction: str, forward: bool, backward: bool) -> None:
    fs = FaultSet([fault(direction=direction)])
    assert bool(fs.matching(A1, B2, 80, "tcp")) is forward
    assert bool(fs.matching(B2, A1, 80, "tcp")) is backward
    # traffic inside one side is untouched (the chaos-mesh#1450 mistake)
    assert not fs.matching(A1, C1, 80, "tcp")


def test_protocol_and_port() -> None:
    fs = FaultSet([fault(protocol="udp", port=53)])
    assert fs.matching(A1, B2, 53, "udp")
    assert not fs.matching(A1, B2, 53, "tcp")
    assert not fs.matching(A1, B2, 54, "udp")
    assert FaultSet([fault(protocol="all")]).matching(A1, B2, 1, "tcp")


def test_zero_means_zero() -> None:
    idle = parse_fault(obj(delayMs=0, jitterMs=0, lossPct=0, rateKbit=0, partition=False))
    fs = FaultSet([idle])
    assert not fs and fs.matching(A1, B2, 80, "tcp") == [] and fs.all == (idle,)
    assert not idle.drops("flow", 1) and idle.delay_s("flow", 1) == 0
    assert idle.retransmit_s("flow", 1) == 0


def test_node_partition_between_agents() -> None:
    cut = fault(partition=True, direction="to")
    fs = FaultSet([cut, fault(**{"from": {"pod": "default/a"}}, partition=True)])
    assert fs.node_partitioned("node-1", "node-2") == [cut]
    assert fs.node_partitioned("node-2", "node-1") == []       # one way only
    assert FaultSet([fault(delayMs=5)]).node_partitioned("node-1", "node-2") == []


# --- seeded randomness -------------------------------------------------------------------


def test_loss_rate_within_binomial_bound() -> None:
    for pct in (1.0, 5.0, 30.0, 50.0):
        f = fault(lossPct=pct, seed=1234)
        n = 2000
        dropped = sum(f.drops("udp 10.0.0.1->10.0.0.2:53", seq) for seq in range(n))
        p = pct / 100
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(dropped - n * p) <= 4 * sigma, (pct, dropped)


def test_loss_extremes() -> None:
    assert all(fault(lossPct=100).drops("x", s) for s in range(100))
    assert all(fault(partition=True).drops("x", s) for s in range(100))
    assert not any(fault(lossPct=0).drops("x", s) for s in range(100))


def test_same_seed_same_drops_other_seed_other_drops() -> None:
    def dropped(seed: int, flow: str = "a->b") -> list[int]:
        f = fault(lossPct=10, seed=seed)
        return [s for s in range(2000) if f.drops(flow, s)]
    assert dropped(42) == dropped(42)
    assert dropped(42) != dropped(43)
    assert dropped(42, "a->b") != dropped(42, "a->c")       # flows are independent
    # the order of asking does not matter (no shared RNG state)
    f = fault(lossPct=10, seed=42)
    assert [s for s in reversed(range(2000)) if f.drops("a->b", s)][::-1] == dropped(42)


def test_jitter_bounds_and_spread() -> None:
    f = fault(delayMs=100, jitterMs=10, seed=5)
    delays = [f.delay_s("flow", s) for s in range(2000)]
    assert all(0.090 <= d <= 0.110 for d in delays)
    assert min(delays) < 0.091 and max(delays) > 0.109     # the whole range is used
    mean = sum(delays) / len(delays)
    assert abs(mean - 0.100) < 0.001
    assert delays == [f.delay_s("flow", s) for s in range(2000)]
    # clamped at 0 when jitter exceeds the delay
    g = fault(delayMs=1, jitterMs=10, seed=5)
    assert min(g.delay_s("flow", s) for s in range(500)) == 0.0
    assert fault(delayMs=100).delay_s("x", 3) == pytest.approx(0.1)


def test_tcp_retransmit_model() -> None:
    f = fault(lossPct=20, seed=9)
    extras = [f.retransmit_s("stream", s) for s in range(2000)]
    late = [e for e in extras if e > 0]
    assert abs(len(late) - 400) <= 4 * math.sqrt(2000 * 0.2 * 0.8)
    assert min(late) == pytest.approx(RTO_S)
    assert any(e == pytest.approx(RTO_S * 3) for e in late)   # two losses in a row: 1 + 2 RTO
    assert max(fault(lossPct=100).retransmit_s("s", 1) for _ in range(1)) == pytest.approx(
        RTO_S * (2 ** MAX_RETRANSMITS - 1))


# --- token bucket ----------------------------------------------------------------------------


def test_token_bucket_paces_at_the_rate() -> None:
    bucket = TokenBucket(800, now=0.0)          # 100 kB/s, burst 2000 bytes
    assert bucket.burst == 2000
    now, sent = 0.0, 0
    while now < 10.0:
        now += bucket.reserve(1000, now)
        sent += 1000
    assert sent / now == pytest.approx(100_000, rel=0.01)


def test_token_bucket_burst_is_bounded() -> None:
    bucket = TokenBucket(8, now=0.0)            # 1000 B/s, burst floor 1500
    assert bucket.burst == 1500
    assert bucket.reserve(1000, 0.0) == 0
    assert bucket.reserve(1000, 0.0) == pytest.approx(0.5)
    # a long idle time refills only up to the burst
    assert bucket.reserve(1500, 1000.0) == 0
    assert bucket.reserve(100, 1000.0) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        TokenBucket(0, now=0.0)
