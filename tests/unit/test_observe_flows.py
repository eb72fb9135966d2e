"""The flow panel's model (podnet/observe/flows.py): rows, details told by flowstory,
`podnet logs`-style filters, and the bounds that are counted, never hidden."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from podnet.observe.flows import FlowFilter, FlowTable, at_of, matches, process_of

T0 = datetime.datetime(2026, 12, 7, 17, 48, 15, tzinfo=datetime.UTC).timestamp()


def ev(ms: float, node: str, event: str, flow: str = "ab12-2", **fields: Any) -> dict[str, Any]:
    ts = datetime.datetime.fromtimestamp(T0 + ms / 1000, datetime.UTC)
    return {"ts": ts.isoformat().replace("+00:00", "Z"), "level": "info", "event": event,
            "node": node, "flow": flow, **fields}


SRC, DST, CIP = "10.244.1.2:33883", "10.244.2.2:8080", "10.103.9.159:80"


def direct(flow: str = "ab12-2") -> list[dict[str, Any]]:
    """A curl from node-1's client to node-2's echo-2, as the agents log it."""
    common = {"src": SRC, "dst": DST, "flow": flow}
    return [
        ev(0.0, "node-1", "policy.verdict", component="policy", pod="client",
           namespace="default", proto="tcp", direction="egress", verdict="allowed",
           policy=None, rule=None, reason="no policy selects this pod: allowed by default",
           **common),
        ev(0.2, "node-1", "flow.route", component="tunnel", proto="tcp",
           route="10.244.2.0/24", to_node="node-2", address="127.0.0.1:35337", state="alive",
           verdict="tunnel", namespace="default", pod="client", **common),
        ev(0.9, "node-2", "policy.verdict", component="policy", pod="echo-2",
           namespace="default", proto="tcp", direction="ingress", verdict="allowed",
           policy=None, rule=None, reason="no policy selects this pod: allowed by default",
           **common),
        ev(1.0, "node-2", "flow.delivered", pod="echo-2", namespace="default", proto="tcp",
           verdict="accepted", component="agent", **common),
        ev(1.1, "node-2", "tunnel.stream_in", component="tunnel", peer="node-1",
           verdict="accepted", **common),
        ev(1.4, "node-1", "tunnel.stream_out", component="tunnel", peer="node-2",
           verdict="connected", namespace="default", pod="client", **common),
        ev(3.2, "node-1", "flow.closed", pod="client", namespace="default", proto="tcp",
           verdict="closed", bytes_sent=79, bytes_received=492, component="agent", **common),
    ]


def via_service(flow: str = "ab12-4") -> list[dict[str, Any]]:
    """The client curls the echo Service: node-1 -> the control plane's proxy -> node-2."""
    common = {"src": SRC, "flow": flow}
    return [
        ev(0.0, "node-1", "flow.route", component="tunnel", dst=CIP, proto="tcp",
           route="10.96.0.0/12", to_node="@controlplane", address="127.0.0.1:36019",
           state="alive", verdict="tunnel", namespace="default", pod="client", **common),
        ev(3.7, "node-2", "flow.delivered", dst="10.244.2.3:8080", pod="echo-3",
           namespace="default", proto="tcp", verdict="accepted", component="agent", **common),
        ev(3.8, "@controlplane", "proxy.connection", component="proxy", dst=CIP,
           from_node="node-1", service="default/echo", port=80, endpoint="10.244.2.3:8080",
           pod="echo-3", endpoint_node="node-2", reason="round-robin", ready=1,
           verdict="connected", **common),
        ev(6.4, "node-1", "flow.closed", dst=CIP, pod="client", namespace="default",
           proto="tcp", verdict="closed", component="agent", **common),
    ]


def denied(flow: str = "ab12-9") -> list[dict[str, Any]]:
    common = {"src": SRC, "dst": DST, "flow": flow}
    return [
        ev(0.0, "node-1", "flow.route", component="tunnel", proto="tcp", route="10.244.2.0/24",
           to_node="node-2", verdict="tunnel", namespace="default", pod="client", **common),
        ev(0.8, "node-2", "policy.verdict", component="policy", pod="echo-2",
           namespace="default", proto="tcp", direction="ingress", verdict="denied",
           policy=None, rule=None, reason="denied: default/deny-echo selects this pod and no "
                                          "rule allows it", **common),
        ev(1.5, "node-1", "flow.refused", pod="client", namespace="default", proto="tcp",
           verdict="ECONNREFUSED", component="agent", **common),
    ]


def table_with(*flows: list[dict[str, Any]], **kw: int) -> FlowTable:
    table = FlowTable(**kw)
    for events in flows:
        for e in events:
            assert table.add(e)
    return table


def test_row_of_a_cross_node_flow() -> None:
    row = table_with(direct()).row("ab12-2")
    assert row is not None
    assert row == {
        "id": "ab12-2", "ts": pytest.approx(T0), "last": pytest.approx(T0 + 0.0032),
        "src": SRC, "dst": DST, "proto": "tcp", "srcPod": "default/client",
        "dstPod": "default/echo-2", "service": "", "nodes": ["node-1", "node-2"],
        "verdict": "closed", "verdicts": ["allowed", "tunnel", "accepted", "connected",
                                          "closed"],
        "outcome": "ALLOWED", "events": 7}


def test_row_of_a_flow_through_the_proxy_names_the_service() -> None:
    row = table_with(via_service()).row("ab12-4")
    assert row is not None
    assert (row["srcPod"], row["dstPod"], row["service"], row["dst"]) == (
        "default/client", "default/echo-3", "default/echo", CIP)
    assert row["nodes"] == ["node-1", "node-2", "@controlplane"]
    assert row["outcome"] == "ALLOWED"


def test_events_out_of_order_across_processes_are_put_in_time_order() -> None:
    events = direct()
    table = table_with(events[3:], events[:3])      # node-2's feed arrived first
    detail = table.detail("ab12-2")
    assert detail is not None
    assert [h["event"] for h in detail["hops"]] == [e["event"] for e in events]
    assert detail["hops"][0]["offset_ms"] == 0.0
    assert detail["hops"][-1]["offset_ms"] == pytest.approx(3.2, abs=0.01)


def test_detail_hops_say_where_each_happened() -> None:
    table = table_with(via_service())
    detail = table.detail("ab12-4")
    assert detail is not None and detail["outcome"] == "ALLOWED" and detail["why"] == ""
    hops = [(h["process"], h["event"], h["verdict"], h["at"]) for h in detail["hops"]]
    assert hops == [
        ("agent-node-1", "flow.route", "tunnel", {"kind": "pod", "key": "default/client"}),
        ("agent-node-2", "flow.delivered", "accepted", {"kind": "pod", "key": "default/echo-3"}),
        ("controlplane", "proxy.connection", "connected",
         {"kind": "proxy", "key": "@controlplane"}),
        ("agent-node-1", "flow.closed", "closed", {"kind": "pod", "key": "default/client"}),
    ]
    proxy = detail["hops"][2]
    # flowstory's words for the proxy's decision
    assert proxy["detail"] == "Service default/echo chose 10.244.2.3:8080 on node-2 " \
                              "(round-robin, 1 ready)"
    assert proxy["node"] == "@controlplane"
    assert detail["flow"] == table.row("ab12-4")
    assert detail["decisions"] == []


def test_tunnel_hops_are_at_the_node() -> None:
    detail = table_with(direct()).detail("ab12-2")
    assert detail is not None
    at = {h["event"]: h["at"] for h in detail["hops"]}
    assert at["tunnel.stream_in"] == {"kind": "node", "key": "node-2"}
    assert at["tunnel.stream_out"] == {"kind": "node", "key": "node-1"}
    assert len(detail["decisions"]) == 2
    assert detail["decisions"][1] == {
        "direction": "ingress", "allowed": True, "policy": None, "rule": None,
        "reason": "no policy selects this pod: allowed by default", "node": "node-2",
        "pod": "default/echo-2"}


def test_denied_flow() -> None:
    table = table_with(denied())
    row = table.row("ab12-9")
    assert row is not None
    assert (row["outcome"], row["verdict"], row["dstPod"]) == ("DENIED", "denied",
                                                               "default/echo-2")
    detail = table.detail("ab12-9")
    assert detail is not None
    assert detail["outcome"] == "DENIED" and "deny-echo" in detail["why"]
    assert [d["allowed"] for d in detail["decisions"]] == [False]


def test_unknown_flow_has_no_detail() -> None:
    assert FlowTable().detail("nope") is None and FlowTable().row("nope") is None


def test_detail_follows_new_events() -> None:
    events = direct()
    table = table_with(events[1:2])         # only the route so far: not known to get through
    first = table.detail("ab12-2")
    assert first is not None and first["outcome"] == "UNKNOWN" and len(first["hops"]) == 1
    for e in events[:1] + events[2:]:
        table.add(e)
    later = table.detail("ab12-2")
    assert later is not None and later["outcome"] == "ALLOWED" and len(later["hops"]) == 7


def test_least_recently_active_flows_are_evicted_and_counted() -> None:
    table = FlowTable(max_flows=2)
    for n in (1, 2, 3):
        table.add(ev(n, "node-1", "flow.route", flow=f"f-{n}"))
    table.add(ev(9, "node-1", "flow.closed", flow="f-2"))       # f-2 is active again
    table.add(ev(10, "node-1", "flow.route", flow="f-4"))
    assert [r["id"] for r in table.rows()] == ["f-4", "f-2"]
    assert table.stats() == {"flowsKept": 2, "flowsEvicted": 2, "eventsMissed": {},
                             "eventsDropped": 0}


def test_events_past_the_flow_limit_are_dropped_and_counted() -> None:
    table = FlowTable(max_events_per_flow=3)
    results = [table.add(e | {"seq": n}) for n, e in enumerate(direct())]
    assert results == [True, True, True, False, False, False, False]
    row = table.row("ab12-2")
    assert row is not None and row["events"] == 3
    assert table.stats()["eventsDropped"] == 4
    assert len(table._flows["ab12-2"].seen) == 3      # nothing kept for what was dropped


@pytest.mark.parametrize("bad", [
    {"event": "flow.route", "ts": "2026-12-07T17:48:15Z"},              # no flow
    {"flow": "", "event": "x", "ts": "2026-12-07T17:48:15Z"},
    {"flow": 7, "event": "x", "ts": "2026-12-07T17:48:15Z"},
    {"flow": "a" * 500, "event": "x", "ts": "2026-12-07T17:48:15Z"},
    {"flow": "a-1", "event": "x", "ts": "yesterday"},
    {"flow": "a-1", "event": "x"},
    {"flow": "a-1", "event": ["x"], "ts": "2026-12-07T17:48:15Z"},
    ["not", "a", "dict"],
])
def test_malformed_events_are_dropped_and_counted(bad: Any) -> None:
    table = FlowTable()
    assert table.add(bad) is False
    assert len(table) == 0 and table.stats()["eventsDropped"] == 1


def test_a_replayed_event_is_kept_once() -> None:
    table = FlowTable()
    e = {**direct()[1], "seq": 41}
    assert table.add(e) and not table.add(dict(e))
    assert table.add(dict(e), process="agent-node-9")   # another process's seq 41
    row = table.row("ab12-2")
    assert row is not None and row["events"] == 2


def test_missed_events_are_counted_per_process() -> None:
    table = FlowTable()
    table.note_missed("agent-node-1", 5)
    table.note_missed("agent-node-1", 2)
    table.note_missed("controlplane", 1)
    table.note_missed("agent-node-2", 0)
    assert table.stats()["eventsMissed"] == {"agent-node-1": 7, "controlplane": 1}


def test_take_changed_gives_each_changed_row_once() -> None:
    table = table_with(direct())
    assert [r["id"] for r in table.take_changed()] == ["ab12-2"]
    assert table.take_changed() == []
    table.add(via_service()[0])
    table.add(direct()[0] | {"seq": 3})
    changed = table.take_changed()
    assert [r["id"] for r in changed] == ["ab12-4", "ab12-2"]
    assert changed[1]["events"] == 8


def test_process_names() -> None:
    assert process_of({"node": "node-1"}) == "agent-node-1"
    assert process_of({"node": "@controlplane"}) == "controlplane"
    assert process_of({"node": ""}) == "controlplane"
    assert at_of({"event": "nodeport.accepted", "node": "node-3", "pod": "x"},
                 "agent-node-3") == {"kind": "node", "key": "node-3"}


# -- filters


@pytest.fixture
def rows() -> dict[str, dict[str, Any]]:
    table = table_with(direct(), via_service(), denied())
    return {r["id"]: r for r in table.rows()}


def passing(rows: dict[str, dict[str, Any]], **flt: str) -> list[str]:
    return sorted(i for i, r in rows.items() if matches(r, FlowFilter(**flt)))


def test_filter_by_pod(rows: dict[str, dict[str, Any]]) -> None:
    assert passing(rows, pod="default/client") == ["ab12-2", "ab12-4", "ab12-9"]
    assert passing(rows, pod="echo-3") == ["ab12-4"]
    assert passing(rows, pod="echo-*") == ["ab12-2", "ab12-4", "ab12-9"]
    assert passing(rows, pod="kube-system/client") == []


def test_filter_by_node_verdict_proto_flow(rows: dict[str, dict[str, Any]]) -> None:
    assert passing(rows, node="@controlplane") == ["ab12-4"]
    assert passing(rows, node="node-2") == ["ab12-2", "ab12-4", "ab12-9"]
    assert passing(rows, verdict="deny") == ["ab12-9"]              # podnet logs' alias
    assert passing(rows, verdict="refused") == ["ab12-9"]           # ECONNREFUSED
    assert passing(rows, verdict="allowed") == ["ab12-2", "ab12-4"]
    assert passing(rows, proto="TCP") == ["ab12-2", "ab12-4", "ab12-9"]
    assert passing(rows, proto="udp") == []
    assert passing(rows, flow="ab12-4") == ["ab12-4"]
    assert passing(rows, flow="ab12") == ["ab12-2", "ab12-4", "ab12-9"]
    assert passing(rows, pod="client", verdict="denied", node="node-1") == ["ab12-9"]


def test_rows_filtered_and_limited() -> None:
    table = table_with(direct(), via_service(), denied())
    assert [r["id"] for r in table.rows(limit=2)] == ["ab12-9", "ab12-4"]
    assert [r["id"] for r in table.rows(flt={"verdict": "denied"})] == ["ab12-9"]


def test_filter_from_query_validates() -> None:
    flt = FlowFilter.from_query({"pod": " default/web ", "verdict": "denied"})
    assert flt == FlowFilter(pod="default/web", verdict="denied") and not flt.empty
    assert FlowFilter.from_query({}).empty
    for bad in ({"pod": "a/b/c"}, {"node": "node 1"}, {"flow": "x\x00"},
                {"proto": "t" * 301}):
        with pytest.raises(ValueError):
            FlowFilter.from_query(bad)
