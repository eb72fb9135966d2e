"""The link chart's model (podnet/observe/links.py): rates from cumulative counters, one
point per second over the window, restarts never negative, bad reports ignored."""

from __future__ import annotations

from typing import Any

import pytest

from podnet.observe.links import LinkHistory

T = 1_796_000_000.0


def c(bytes_out: int, errors: int = 0, bytes_in: int = 0) -> dict[str, int]:
    return {"bytes_out": bytes_out, "bytes_in": bytes_in, "records_out": bytes_out // 100,
            "records_in": bytes_in // 100, "errors": errors}


def test_rates_are_differences_per_second() -> None:
    h = LinkHistory()
    h.observe("node-1", T, {"node-2": c(1000)})
    assert h.series() == []                     # one report is only a baseline
    h.observe("node-1", T + 1, {"node-2": c(5000, errors=1)})
    h.observe("node-1", T + 2, {"node-2": c(5000, errors=1)})
    h.observe("node-1", T + 4, {"node-2": c(9000, errors=3)})   # a report went missing
    assert h.series() == [{"from": "node-1", "to": "node-2", "points": [
        [T + 1, 4000.0, 1.0], [T + 2, 0.0, 0.0], [T + 4, 2000.0, 1.0]]}]


def test_links_are_directed_by_the_sender() -> None:
    h = LinkHistory()
    for n, ts in enumerate((T, T + 1)):
        h.observe("node-1", ts, {"node-2": c(100 * n, bytes_in=900 * n),
                                 "@controlplane": c(10 * n)})
        h.observe("node-2", ts + 0.3, {"node-1": c(900 * n, bytes_in=100 * n)})
    assert [(s["from"], s["to"], s["points"][0][1]) for s in h.series()] == [
        ("node-1", "@controlplane", 10.0), ("node-1", "node-2", 100.0),
        ("node-2", "node-1", 900.0)]


def test_two_reports_in_one_second_make_one_point() -> None:
    h = LinkHistory()
    h.observe("node-1", T + 0.1, {"node-2": c(0)})
    h.observe("node-1", T + 1.2, {"node-2": c(1100)})
    h.observe("node-1", T + 1.7, {"node-2": c(2100)})
    assert h.series()[0]["points"] == [[T + 1, 1312.5, 0.0]]   # 2100 bytes over 1.6 s


def test_restart_gives_a_new_baseline_not_a_negative_rate() -> None:
    h = LinkHistory()
    h.observe("node-1", T, {"node-2": c(50_000, errors=4)})
    h.observe("node-1", T + 1, {"node-2": c(60_000, errors=4)})
    h.observe("node-1", T + 2, {"node-2": c(300)})              # the agent restarted
    h.observe("node-1", T + 3, {"node-2": c(1300, errors=1)})
    points = h.series()[0]["points"]
    assert points == [[T + 1, 10_000.0, 0.0], [T + 3, 1000.0, 1.0]]
    assert all(p[1] >= 0 and p[2] >= 0 for p in points)


def test_a_counter_going_back_alone_is_a_restart_too() -> None:
    h = LinkHistory()
    h.observe("node-1", T, {"node-2": c(500, errors=9)})
    h.observe("node-1", T + 1, {"node-2": c(900, errors=0)})
    assert h.series() == []


def test_window_keeps_the_last_minute() -> None:
    h = LinkHistory(window_s=60)
    for s in range(0, 100):
        h.observe("node-1", T + s, {"node-2": c(1000 * s)})
    points = h.series()[0]["points"]
    assert len(points) == 60 and points[0][0] == T + 40 and points[-1][0] == T + 99
    assert all(p[1] == 1000.0 for p in points)
    assert len(h.series(now=T + 130)[0]["points"]) == 29     # aging out without reports
    assert h.series(now=T + 500) == []


def test_stale_and_repeated_reports_are_ignored() -> None:
    h = LinkHistory()
    h.observe("node-1", T, {"node-2": c(0)})
    h.observe("node-1", T + 2, {"node-2": c(2000)})
    h.observe("node-1", T + 2, {"node-2": c(2000)})     # the same report again
    h.observe("node-1", T + 1, {"node-2": c(1000)})     # an older one, late
    assert h.series()[0]["points"] == [[T + 2, 1000.0, 0.0]]


@pytest.mark.parametrize("node, ts, peers", [
    ("", T, {"node-2": c(1)}),
    (7, T, {"node-2": c(1)}),
    ("node-1", "soon", {"node-2": c(1)}),
    ("node-1", float("nan"), {"node-2": c(1)}),
    ("node-1", True, {"node-2": c(1)}),
    ("node-1", T, ["node-2"]),
    ("n" * 300, T, {"node-2": c(1)}),
])
def test_bad_reports_are_rejected(node: Any, ts: Any, peers: Any) -> None:
    h = LinkHistory()
    h.observe(node, ts, peers)
    assert h.rejected == 1 and h.series() == []


@pytest.mark.parametrize("value", [
    {"bytes_out": 1}, {**c(1), "errors": -1}, {**c(1), "bytes_out": "9"},
    {**c(1), "bytes_in": 1.5}, {**c(1), "records_in": True}, "lots", None,
])
def test_bad_peer_counters_are_rejected_and_others_kept(value: Any) -> None:
    h = LinkHistory()
    h.observe("node-1", T, {"node-2": c(0), "node-3": value, "node-1": c(0)})
    h.observe("node-1", T + 1, {"node-2": c(10), "node-3": value})
    assert [s["to"] for s in h.series()] == ["node-2"]
    assert h.rejected == 3      # node-3 twice, and a link to itself


def test_forget_drops_a_nodes_links() -> None:
    h = LinkHistory()
    for ts in (T, T + 1):
        h.observe("node-1", ts, {"node-2": c(int(ts - T) * 10), "node-3": c(0)})
        h.observe("node-3", ts, {"node-1": c(int(ts - T) * 10)})
    h.forget("node-3")
    assert [(s["from"], s["to"]) for s in h.series()] == [("node-1", "node-2")]
