"""The flow ring: sequence numbers, rotation counted for each reader, wake-ups, and the
logging hook that feeds it."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from pathlib import Path

import pytest
import structlog

from podnet import logs
from podnet.observe.ring import FlowRing, flow_ring


def test_append_numbers_events_from_one() -> None:
    ring = FlowRing(capacity=4)
    assert ring.last_seq == 0 and ring.read(0) == ([], 0)
    ring.append({"flow": "a-1", "event": "flow.route"})
    ring.append({"flow": "a-1", "event": "flow.closed"})
    events, missed = ring.read(0)
    assert [seq for seq, _ in events] == [1, 2]
    assert [e["event"] for _, e in events] == ["flow.route", "flow.closed"]
    assert missed == 0 and ring.last_seq == 2
    assert ring.read(1) == ([(2, {"flow": "a-1", "event": "flow.closed"})], 0)
    assert ring.read(2) == ([], 0)


def test_rotated_away_events_are_counted_per_reader() -> None:
    ring = FlowRing(capacity=3)
    for n in range(1, 9):
        ring.append({"flow": f"f-{n}"})
    assert ring.last_seq == 8 and ring.total_evicted == 5 and len(ring) == 3
    events, missed = ring.read(0)
    assert [seq for seq, _ in events] == [6, 7, 8] and missed == 5
    events, missed = ring.read(4)           # saw 1..4, missed 5
    assert [seq for seq, _ in events] == [6, 7, 8] and missed == 1
    events, missed = ring.read(6)
    assert [seq for seq, _ in events] == [7, 8] and missed == 0


def test_reader_ahead_of_the_ring_gets_nothing() -> None:
    # A reader holding a seq from an earlier process (the agent restarted) is not answered
    # with negative counts.
    ring = FlowRing(capacity=3)
    ring.append({"flow": "x"})
    assert ring.read(50) == ([], 0)
    assert ring.read(-7) == ([(1, {"flow": "x"})], 0)


def test_events_given_with_their_line_are_kept_as_the_line() -> None:
    ring = FlowRing(capacity=4)
    ring.append({"flow": "d-1", "n": 1})
    ring.append({"flow": "s-2", "n": 2}, '{"flow":"s-2","n":2}')
    assert isinstance(ring._events[1], str)          # no dict held for it
    assert ring.read(0) == ([(1, {"flow": "d-1", "n": 1}), (2, {"flow": "s-2", "n": 2})], 0)
    ring.append({"flow": "o-3", "odd": {1}})         # not JSON as is: encoded like the log
    assert ring.read_json(0) == ([(1, '{"flow":"d-1","n":1}'), (2, '{"flow":"s-2","n":2}'),
                                  (3, '{"flow":"o-3","odd":"{1}"}')], 0)
    assert ring.read_json(0, limit=2) == ([(1, '{"flow":"d-1","n":1}'),
                                           (2, '{"flow":"s-2","n":2}')], 0)
    for n in range(4, 8):
        ring.append({"flow": f"f-{n}"}, f'{{"flow":"f-{n}"}}')
    assert ring.read_json(1, limit=1) == ([(4, '{"flow":"f-4"}')], 2)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FlowRing(capacity=0)


async def test_wait_returns_at_once_when_newer_events_exist() -> None:
    ring = FlowRing()
    ring.append({"flow": "a"})
    await asyncio.wait_for(ring.wait(0), 5)


async def test_wait_wakes_on_append() -> None:
    ring = FlowRing()
    waiter = asyncio.create_task(ring.wait(0), name="ring-waiter")
    await asyncio.sleep(0)
    assert not waiter.done()
    ring.append({"flow": "a"})
    await asyncio.wait_for(waiter, 5)
    assert not ring._waiters


async def test_cancelled_wait_leaves_no_waiter() -> None:
    ring = FlowRing()
    waiter = asyncio.create_task(ring.wait(0), name="ring-waiter")
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not ring._waiters
    ring.append({"flow": "a"})          # nothing left to wake; must not raise


async def test_append_from_another_thread_wakes_the_loop() -> None:
    ring = FlowRing()
    waiter = asyncio.create_task(ring.wait(0), name="ring-waiter")
    await asyncio.sleep(0)
    thread = threading.Thread(target=ring.append, args=({"flow": "t"},))
    thread.start()
    thread.join()
    await asyncio.wait_for(waiter, 5)


def test_logging_feeds_flow_events_to_the_ring(tmp_path: Path) -> None:
    ring = flow_ring()
    before = ring.last_seq
    logs.configure("unit", component="unit", node="node-9", logs_dir=tmp_path,
                   stderr=io.StringIO())
    try:
        log = structlog.get_logger()
        log.info("flow.route", flow="ab12-1", pod="client", src="10.244.1.2:4000",
                 verdict="tunnel")
        log.info("agent.ready")                 # no flow: not in the ring
        with structlog.contextvars.bound_contextvars(flow="ab12-2"):
            log.info("dns.step", rcode="NOERROR")
        log.debug("flow.debug", flow="ab12-3")  # below the level: never written, not kept
        events, missed = ring.read(before)
        assert missed == 0
        assert [e["flow"] for _, e in events] == ["ab12-1", "ab12-2"]
        # The ring holds exactly what the JSON log says.
        written = [json.loads(line) for line in (tmp_path / "unit.jsonl").read_text()
                   .splitlines()]
        flows = [d for d in written if d.get("flow")]
        assert [json.loads(json.dumps(e)) for _, e in events] == flows
        assert events[0][1]["node"] == "node-9" and events[0][1]["ts"]
        # Held as the JSON line the file got (small, and nothing for the GC to walk).
        lines, _ = ring.read_json(before)
        assert [text for _, text in lines] == [line for line in (tmp_path / "unit.jsonl")
                                               .read_text().splitlines() if '"flow"' in line]
    finally:
        structlog.reset_defaults()
