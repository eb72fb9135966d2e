"""The link chart's model: per node pair, traffic and error rates over the last minute. Pure.

Each agent's `/observe` feed reports its tunnels' cumulative counters per peer about once a
second (`TunnelPeer.link_stats()`); the control plane's proxy is a peer too (`@controlplane`).
A link is directed, from the node that sent: `node-1 -> node-2` is the bytes node-1 wrote into
its tunnels to node-2 (so each byte is counted once, by its sender), and the errors node-1 saw
with node-2. Rates are differences between consecutive reports, one point per second.

A counter that goes down means the reporting process restarted (its counters start again
from 0): that report only sets a new baseline, so a restart never shows as a negative or
huge rate.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

__all__ = ["LinkHistory"]

_FIELDS = ("bytes_out", "bytes_in", "records_out", "records_in", "errors")
_MAX_NAME = 253


def _counters(value: Any) -> tuple[int, ...] | None:
    """The five counters of one peer, or None when any is missing or not a count."""
    if not isinstance(value, Mapping):
        return None
    out = []
    for key in _FIELDS:
        n = value.get(key)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            return None
        out.append(n)
    return tuple(out)


class LinkHistory:
    """Rates per directed node pair over the last `window_s` seconds."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._last: dict[tuple[str, str], tuple[float, tuple[int, ...]]] = {}
        # Per pair: [second, bytes, errors, seconds covered], oldest first.
        self._points: dict[tuple[str, str], deque[list[float]]] = {}
        self._latest = 0.0
        self.rejected = 0           # reports or peers that were not counters (ignored)

    def observe(self, node: str, ts: float, peers: Mapping[str, Any]) -> None:
        """One report from `node` at epoch `ts`: cumulative counters per peer."""
        if not isinstance(node, str) or not node or len(node) > _MAX_NAME \
                or not isinstance(ts, int | float) or isinstance(ts, bool) \
                or not math.isfinite(ts) or not isinstance(peers, Mapping):
            self.rejected += 1
            return
        ts = float(ts)
        self._latest = max(self._latest, ts)
        for peer, value in peers.items():
            now = _counters(value)
            if now is None or not isinstance(peer, str) or not peer or len(peer) > _MAX_NAME \
                    or peer == node:
                self.rejected += 1
                continue
            pair = (node, peer)
            before = self._last.get(pair)
            if before is not None and ts <= before[0]:
                continue        # a stale or repeated report: nothing new to say
            self._last[pair] = (ts, now)
            if before is None:
                continue        # the first report is only a baseline
            then, old = before
            if any(n < o for n, o in zip(now, old, strict=True)):
                continue        # counters went back: the process restarted; new baseline
            self._add(pair, ts, now[0] - old[0], now[4] - old[4], ts - then)

    def _add(self, pair: tuple[str, str], ts: float, sent: int, errors: int,
             span: float) -> None:
        second = float(math.floor(ts))
        points = self._points.get(pair)
        if points is None:
            points = self._points[pair] = deque()
        if points and points[-1][0] == second:
            last = points[-1]       # two reports in one second: one point for both
            last[1] += sent
            last[2] += errors
            last[3] += span
        else:
            points.append([second, float(sent), float(errors), span])
        self._trim(points, self._latest)

    def _trim(self, points: deque[list[float]], now: float) -> None:
        cutoff = now - self.window_s
        while points and points[0][0] <= cutoff:
            points.popleft()

    def forget(self, node: str) -> None:
        """Drop every link from or to `node` (it left the cluster)."""
        for pair in [p for p in self._points if node in p]:
            del self._points[pair]
        for pair in [p for p in self._last if node in p]:
            del self._last[pair]

    def series(self, now: float | None = None) -> list[dict[str, Any]]:
        """`[{"from", "to", "points": [[second, bytes_per_s, errors_per_s], ...]}]` for the
        last `window_s` seconds before `now` (default: the newest report), by pair."""
        at = self._latest if now is None else now
        out = []
        for (src, dst), points in sorted(self._points.items()):
            self._trim(points, at)
            if not points:
                del self._points[(src, dst)]    # idle for a whole window
                continue
            out.append({"from": src, "to": dst, "points": [
                [p[0], round(p[1] / p[3], 1) if p[3] > 0 else 0.0,
                 round(p[2] / p[3], 3) if p[3] > 0 else 0.0] for p in points]})
        return out
