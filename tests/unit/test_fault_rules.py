"""NetworkFault validation (podnet/api/fault_rules.py), its Table row, and Go durations."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from controlplane.tables import table
from podnet.api.fault_rules import (
    DurationError,
    describe_effect,
    describe_endpoint,
    parse_go_duration,
)
from podnet.validation import validate

GOOD: dict[str, Any] = {
    "apiVersion": "podnet.dev/v1alpha1", "kind": "NetworkFault",
    "metadata": {"name": "slow-node-2"},
    "spec": {"from": {"node": "node-1"}, "to": {"selector": "app=web", "namespace": "default"},
             "delayMs": 100, "jitterMs": 10, "lossPct": 5.5, "rateKbit": 1000,
             "port": 8080, "seed": 42, "duration": "30s"},
}


def errors(spec_changes: dict[str, Any], drop: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    obj = copy.deepcopy(GOOD)
    obj["spec"].update(spec_changes)
    for key in drop:
        obj["spec"].pop(key)
    return [(e.path, e.type) for e in validate("NetworkFault", obj,
                                               field_validation="Strict").errors]


def test_good_fault_is_defaulted_and_cluster_scoped() -> None:
    obj = copy.deepcopy(GOOD)
    obj["metadata"]["namespace"] = "default"
    result = validate("NetworkFault", obj, field_validation="Strict")
    assert result.errors == []
    assert result.obj["spec"]["direction"] == "both"
    assert result.obj["spec"]["protocol"] == "all"
    assert "namespace" not in result.obj["metadata"]


def test_all_zero_fault_is_valid_zero_means_zero() -> None:
    obj = {"metadata": {"name": "reset"},
           "spec": {"from": {"namespace": "a"}, "to": {"service": "b/web"}, "delayMs": 0,
                    "lossPct": 0, "duration": "0s"}}
    assert validate("NetworkFault", obj).errors == []


@pytest.mark.parametrize(("changes", "expected"), [
    ({"from": {"node": "node-1", "pod": "default/a"}}, ("spec.from", "Invalid value")),
    ({"from": {}}, ("spec.from", "Required value")),
    ({"to": {"namespace": "default", "node": "n"}}, ("spec.to", "Invalid value")),
    ({"to": {"pod": "web-0"}}, ("spec.to.pod", "Invalid value")),
    ({"to": {"service": "a/b/c"}}, ("spec.to.service", "Invalid value")),
    ({"to": {"selector": "app in (a"}}, ("spec.to.selector", "Invalid value")),
    ({"to": {"selector": "  "}}, ("spec.to.selector", "Required value")),
    ({"to": {"selector": "a=b", "namespace": "Bad_NS"}}, ("spec.to.namespace", "Invalid value")),
    ({"to": {"node": "Node_1"}}, ("spec.to.node", "Invalid value")),
    ({"direction": "up"}, ("spec.direction", "Unsupported value")),
    ({"protocol": "TCP"}, ("spec.protocol", "Unsupported value")),
    ({"port": 0}, ("spec.port", "Invalid value")),
    ({"port": 70000}, ("spec.port", "Invalid value")),
    ({"delayMs": -1}, ("spec.delayMs", "Invalid value")),
    ({"delayMs": 1.5}, ("spec.delayMs", "Invalid value")),
    ({"jitterMs": "10"}, ("spec.jitterMs", "Invalid value")),
    ({"rateKbit": -5}, ("spec.rateKbit", "Invalid value")),
    ({"lossPct": 100.5}, ("spec.lossPct", "Invalid value")),
    ({"lossPct": -0.1}, ("spec.lossPct", "Invalid value")),
    ({"lossPct": "5%"}, ("spec.lossPct", "Invalid value")),
    ({"seed": -1}, ("spec.seed", "Invalid value")),
    ({"duration": "30"}, ("spec.duration", "Invalid value")),
    ({"duration": "-5s"}, ("spec.duration", "Invalid value")),
    ({"duration": "soon"}, ("spec.duration", "Invalid value")),
    ({"partition": True}, ("spec.partition", "Forbidden")),
    ({"delayMS": 5}, ("spec.delayMS", "Invalid value")),   # unknown field, Strict
])
def test_bad_fields_are_named(changes: dict[str, Any], expected: tuple[str, str]) -> None:
    assert expected in errors(changes)


def test_missing_endpoint_and_spec() -> None:
    assert ("spec.to", "Required value") in errors({}, drop=("to",))
    bare = {"metadata": {"name": "x"}}
    assert [(e.path, e.type) for e in validate("NetworkFault", bare).errors] == \
        [("spec", "Required value")]


def test_partition_alone_and_jitter_without_delay_are_allowed() -> None:
    spec = {"from": {"node": "a"}, "to": {"node": "b"}}
    assert validate("NetworkFault", {"metadata": {"name": "p"},
                                     "spec": {**spec, "partition": True}}).errors == []
    assert validate("NetworkFault", {"metadata": {"name": "j"},
                                     "spec": {**spec, "jitterMs": 20}}).errors == []


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0), ("30s", 30.0), ("2m", 120.0), ("1h30m", 5400.0), ("1.5h", 5400.0),
    ("300ms", 0.3), ("1m0.5s", 60.5), ("-2s", -2.0), ("10us", 1e-5), ("7µs", 7e-6),
])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "s", "1d", "1h 2m", ".s", "3x", "--1s", "1e3s"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(DurationError):
        parse_go_duration(text)


def test_descriptions() -> None:
    assert describe_endpoint({"node": "n1"}) == "node/n1"
    assert describe_endpoint({"pod": "a/b"}) == "pod/a/b"
    assert describe_endpoint({"service": "a/web"}) == "svc/a/web"
    assert describe_endpoint({"namespace": "a"}) == "ns/a"
    assert describe_endpoint({"selector": "app=web"}) == "app=web"
    assert describe_endpoint({"selector": "app=web", "namespace": "a"}) == "a:app=web"
    assert describe_endpoint(None) == "<none>"
    assert describe_effect({"delayMs": 100, "jitterMs": 10, "lossPct": 5.0}) == \
        "delay=100ms±10ms loss=5%"
    assert describe_effect({"jitterMs": 10, "rateKbit": 1000, "lossPct": 0.5}) == \
        "delay=0ms±10ms loss=0.5% rate=1000kbit"
    assert describe_effect({"partition": True}) == "partition"
    assert describe_effect({"delayMs": 0}) == "none"


def test_table_row() -> None:
    now = datetime(2026, 1, 1, 0, 1, 0, tzinfo=UTC)
    fault = validate("NetworkFault", copy.deepcopy(GOOD)).obj
    fault["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    fault["status"] = {"expiresAt": "2026-01-01T00:01:25Z", "observedGeneration": 1}
    never = {"metadata": {"name": "cut", "creationTimestamp": "2026-01-01T00:00:30Z"},
             "spec": {"from": {"pod": "a/b"}, "to": {"namespace": "c"}, "partition": True,
                      "direction": "to", "protocol": "udp"}}
    gone = {**never, "metadata": {"name": "gone"},
            "status": {"expiresAt": "2026-01-01T00:00:59Z"}}
    t = table("networkfaults", [fault, never, gone], now=now, resource_version="7")
    names = [c["name"] for c in t["columnDefinitions"]]
    assert names[:6] == ["Name", "From", "To", "Effect", "Expires", "Age"]
    cells = [r["cells"] for r in t["rows"]]
    assert cells[0] == ["slow-node-2", "node/node-1", "default:app=web",
                        "delay=100ms±10ms loss=5.5% rate=1000kbit", "25s", "60s", "both",
                        "all:8080", "42"]
    assert cells[1] == ["cut", "pod/a/b", "ns/c", "partition", "<none>", "30s", "to", "udp",
                        "<cluster>"]
    assert cells[2][4] == "expired"


def test_limits_agree_with_the_fault_model() -> None:
    from podnet.api import fault_rules
    from podnet.faults import model

    assert fault_rules.MAX_DELAY_MS == model.MAX_DELAY_MS
    assert fault_rules.MAX_RATE_KBIT == model.MAX_RATE_KBIT
    assert fault_rules.DIRECTIONS == model.DIRECTIONS
    assert fault_rules.PROTOCOLS == model.PROTOCOLS
    assert ("spec.delayMs", "Invalid value") in errors({"delayMs": model.MAX_DELAY_MS + 1})
    assert errors({"delayMs": model.MAX_DELAY_MS}) == []


@pytest.mark.parametrize("spec", [
    {"from": {"node": "node-1"}, "to": {"node": "node-2"}, "partition": True},
    {"from": {"pod": "a/web-0"}, "to": {"service": "kube-system/kube-dns"}, "lossPct": 30,
     "protocol": "udp", "port": 53, "direction": "to", "seed": 7},
    {"from": {"selector": "app=client", "namespace": "x"}, "to": {"namespace": "y"},
     "jitterMs": 5, "rateKbit": 800, "duration": "1m"},
    {"from": {"selector": "tier in (a,b)"}, "to": {"node": "n"}},
])
def test_what_the_api_accepts_the_fault_model_reads(spec: dict[str, Any]) -> None:
    from podnet.faults.model import parse_fault

    result = validate("NetworkFault", {"metadata": {"name": "f"}, "spec": spec},
                      field_validation="Strict")
    assert result.errors == []
    parsed = parse_fault(result.obj, cluster_seed=1)
    assert parsed.name == "f" and parsed.direction == result.obj["spec"]["direction"]
