"""Network readiness: which nodes a node must be connected to, both ways, before it is Ready."""

from __future__ import annotations

from typing import Any

from agents import netready
from agents.netready import ROUTES_ANNOTATION, decide


def node(name: str, cidr: str, *, ready: str = "True", network_reason: str = "RouteCreated",
         routes: str = "") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": {ROUTES_ANNOTATION: routes}},
        "spec": {"podCIDR": cidr},
        "status": {"conditions": [
            {"type": "NetworkUnavailable", "status": "False" if ready == "True" else "True",
             "reason": network_reason},
            {"type": "Ready", "status": ready}]},
    }


A, B, C = "10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"


def test_alone_is_ready() -> None:
    assert decide("node-1", [node("node-1", A)], {}, [], was_ready=False).ready


def test_ready_only_when_both_directions_hold() -> None:
    other = node("node-2", B, routes="")
    verdict = decide("node-1", [other], {}, [], was_ready=False)
    assert not verdict.ready and "no route here yet to node-2" in verdict.message
    verdict = decide("node-1", [other], {"node-2": B}, [], was_ready=False)
    assert not verdict.ready and "node-2 has not learned this node's route" in verdict.message
    other = node("node-2", B, routes="node-1,node-3")
    assert decide("node-1", [other], {"node-2": B}, [], was_ready=False).ready


def test_a_route_to_an_old_podcidr_does_not_count() -> None:
    other = node("node-2", B, routes="node-1")
    assert not decide("node-1", [other], {"node-2": C}, [], was_ready=False).ready


def test_a_starting_node_is_waited_for_until_we_are_ready() -> None:
    starting = node("node-2", B, ready="False", network_reason=netready.ROUTES_WAITING)
    assert not decide("node-1", [starting], {}, [], was_ready=False).ready
    # Once Ready, a newcomer does not flip us: it is the one that waits for us.
    assert decide("node-1", [starting], {}, [], was_ready=True).ready


def test_lost_stopped_and_dead_nodes_are_not_waited_for() -> None:
    lost = node("node-2", B, ready="Unknown", network_reason=netready.ROUTES_WAITING)
    stopped = node("node-3", C, ready="False", network_reason=netready.NODE_SHUTDOWN)
    assert decide("node-1", [lost, stopped], {}, [], was_ready=False).ready
    dead_but_ready = node("node-2", B)
    assert decide("node-1", [dead_but_ready], {}, ["node-2"], was_ready=False).ready
    assert not decide("node-1", [dead_but_ready], {}, [], was_ready=False).ready


def test_nodes_without_a_podcidr_are_skipped_and_garbage_is_harmless() -> None:
    nocidr = node("node-2", "", ready="False", network_reason=netready.ROUTES_WAITING)
    garbage: dict[str, Any] = {"metadata": {"name": "node-3", "annotations": {
        ROUTES_ANNOTATION: 7}}, "status": {"conditions": ["nope", {"type": "Ready"}]}}
    assert decide("node-1", [nocidr, garbage, {}], {}, [], was_ready=False).ready


def test_published_routes_round_trip() -> None:
    text = netready.format_routes(["node-3", "node-2", "node-2"])
    assert text == "node-2,node-3"
    assert netready.published_routes(node("x", A, routes=text)) == {"node-2", "node-3"}
