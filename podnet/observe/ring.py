"""The flow ring: this process's most recent flow events, in memory, for live readers.

`podnet.logs` appends every event that carries a `flow` to the process-global ring, together
with the JSON line it just wrote for it; readers (an agent's `/observe` stream, the control
plane's UI hub) poll it by sequence number. Appending is the only cost on the logging path: an
int bump and a deque append, no I/O, and a wake-up only when a reader is actually waiting.

Given the line, the ring keeps only the line: a string is a quarter of the dict's size (a full
ring of 4096 events is about 2 MB instead of 9) and, unlike 4096 dicts, nothing for the garbage
collector to walk on every full collection. Readers pay for parsing, and only when they read.
A reader that falls behind by more than the capacity is told how many events it missed, never
silently short.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_CAPACITY", "FlowRing", "flow_ring"]

DEFAULT_CAPACITY = 4096


class FlowRing:
    """A bounded sequence of events numbered 1, 2, 3, ... in append order."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.last_seq = 0               # seq of the newest event (0: none yet)
        # Each event's JSON line (or the event itself when no line was given); seqs are
        # implied by position, the newest being last_seq, so an append allocates nothing.
        self._events: deque[str | Mapping[str, Any]] = deque(maxlen=capacity)
        self._waiters: list[asyncio.Future[None]] = []

    def __len__(self) -> int:
        return len(self._events)

    @property
    def total_evicted(self) -> int:
        """Events pushed out by newer ones since the start."""
        return self.last_seq - len(self._events)

    @property
    def oldest_seq(self) -> int:
        """seq of the oldest event still held (last_seq + 1 when empty)."""
        return self.last_seq - len(self._events) + 1

    def append(self, event: Mapping[str, Any], line: str | None = None) -> None:
        """Add one event; `line`, when given, is its JSON encoding (what the log file got),
        kept instead of the dict. O(1), no I/O; wakes waiting readers only if there are
        any."""
        self.last_seq += 1
        self._events.append(event if line is None else line)
        if self._waiters:
            self._wake()

    def read(self, after_seq: int) -> tuple[list[tuple[int, dict[str, Any]]], int]:
        """The held events with seq > `after_seq` (oldest first, as dicts) and how many
        events after `after_seq` were rotated away before this read."""
        raw, missed = self._newer(after_seq)
        return [(seq, json.loads(item) if isinstance(item, str) else dict(item))
                for seq, item in raw], missed

    def read_json(self, after_seq: int, limit: int | None = None,
                  ) -> tuple[list[tuple[int, str]], int]:
        """Like `read()` (at most `limit` events), each event as its JSON object text: a
        reader that forwards events as JSON need not parse and re-encode them."""
        raw, missed = self._newer(after_seq, limit)
        return [(seq, item if isinstance(item, str) else
                 json.dumps(item, default=str, separators=(",", ":")))
                for seq, item in raw], missed

    def _newer(self, after_seq: int, limit: int | None = None,
               ) -> tuple[list[tuple[int, str | Mapping[str, Any]]], int]:
        after_seq = max(0, after_seq)
        count = self.last_seq - after_seq
        if count <= 0:
            return [], 0
        held = len(self._events)
        missed = max(0, count - held)
        wanted = min(count, held)
        # Walk from the new end: a reader that keeps up touches only what is new to it.
        newest = list(itertools.islice(reversed(self._events), wanted))
        newest.reverse()
        if limit is not None:
            del newest[limit:]
        first = self.last_seq - wanted + 1
        return list(enumerate(newest, first)), missed

    async def wait(self, after_seq: int) -> None:
        """Return once an event with seq > `after_seq` exists (at once if one does)."""
        loop = asyncio.get_running_loop()
        while self.last_seq <= after_seq:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for waiter in waiters:
            if waiter.done():
                continue
            loop = waiter.get_loop()
            if loop is running:
                waiter.set_result(None)
            elif not loop.is_closed():
                # Logged from another thread (an executor): hand the wake-up to its loop.
                loop.call_soon_threadsafe(_settle, waiter)


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


_RING = FlowRing()


def flow_ring() -> FlowRing:
    """This process's ring (the one `podnet.logs` feeds)."""
    return _RING
