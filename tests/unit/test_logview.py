"""`podnet logs`: merging processes' JSON logs, filtering, traces, rotation accounting."""

from __future__ import annotations

import io
import json
from pathlib import Path

from podnet import logs, logview


def _ev(ts: str, event: str, **fields: object) -> str:
    return json.dumps({"ts": f"2026-01-01T00:00:{ts}Z", "level": "info", "event": event,
                       **fields})


def _write(directory: Path) -> None:
    (directory / "agent-node-1.jsonl").write_text("\n".join([
        _ev("01.000", "flow.route", flow="f1", node="node-1", pod="client",
            namespace="default", src="10.244.1.5:40000", dst="10.244.2.5:8080", proto="tcp",
            route="10.244.2.0/24", verdict="tunnel"),
        "not json at all",
        _ev("03.000", "flow.closed", flow="f1", node="node-1", pod="client",
            namespace="default", verdict="closed", bytes_sent=10),
        _ev("04.000", "flow.refused", flow="f2", node="node-1", pod="client",
            namespace="default", verdict="ECONNREFUSED", reason="Connection refused"),
    ]) + "\n")
    (directory / "agent-node-2.jsonl").write_text("\n".join([
        _ev("02.000", "tunnel.stream_in", flow="f1", node="node-2", verdict="accepted"),
        '{"no": "ts"}',
    ]) + "\n")
    # An older, rotated file of node-2: its events come first.
    (directory / "agent-node-2.jsonl.1").write_text(
        _ev("00.500", "tunnel.up", node="node-2", peer="node-1") + "\n")


def _run(directory: Path, **kw: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    output = str(kw.pop("output", "text"))
    code = logview.show(directory, logview.Filter(**kw), output=output,  # type: ignore[arg-type]
                        out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_merges_in_time_order_across_files_and_counts_garbage(tmp_path: Path) -> None:
    _write(tmp_path)
    code, out, err = _run(tmp_path, output="json")
    assert code == 0
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert events == ["tunnel.up", "flow.route", "tunnel.stream_in", "flow.closed",
                      "flow.refused"]
    assert "2 malformed line(s) skipped" in err


def test_flow_trace_spans_processes(tmp_path: Path) -> None:
    _write(tmp_path)
    _, out, _ = _run(tmp_path, flow="f1")
    lines = out.splitlines()
    assert lines[0].startswith("flow f1  from default/client  10.244.1.5:40000 -> ")
    assert [line.split()[1:3] for line in lines[1:]] == [
        ["agent-node-1", "flow.route"], ["agent-node-2", "tunnel.stream_in"],
        ["agent-node-1", "flow.closed"]]
    assert "+1000.0ms" in lines[2] and "route=10.244.2.0/24" in lines[1]


def test_filters(tmp_path: Path) -> None:
    _write(tmp_path)
    _, out, _ = _run(tmp_path, verdict="refused")
    assert len(out.splitlines()) == 1 and "flow.refused" in out
    _, out, _ = _run(tmp_path, node="node-2", output="json")
    assert len(out.splitlines()) == 2
    _, out, _ = _run(tmp_path, event="flow.*", pod="default/client", output="json")
    assert len(out.splitlines()) == 3
    _, out, _ = _run(tmp_path, pod="other/client", output="json")
    assert out == ""
    _, out, _ = _run(tmp_path, since_ts=logview.parse_ts("2026-01-01T00:00:03Z"),
                     output="json")
    assert len(out.splitlines()) == 2


def test_durations() -> None:
    assert logview.parse_duration("30s") == 30
    assert logview.parse_duration("5m") == 300
    assert logview.parse_duration("2h") == 7200


def test_rotation_keeps_n_files_and_reports_what_it_deleted(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    f = logs.RotatingFile(path, {"component": "t", "node": "n"}, max_bytes=1000, keep=2)
    for i in range(100):
        f.write(_ev("01.000", "x", i=i, pad="y" * 60))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["p.jsonl", "p.jsonl.1", "p.jsonl.2"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    stats = logview.Stats()
    kept = [e for e in logview.read_events(tmp_path, stats) if e.data["event"] == "x"]
    # every event is still on disk or counted as deleted (deleted files' headers count too)
    assert 100 <= len(kept) + stats.events_deleted <= 100 + stats.files_deleted
    assert stats.files_deleted > 0
    _, _, err = _run(tmp_path)
    assert "rotated file(s) were deleted" in err
