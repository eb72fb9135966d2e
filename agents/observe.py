"""`GET /observe`: the agent's live feed for the control plane's topology page.

One NDJSON stream per reader (the UI hub connects only while a page is open), one JSON object
per line, written as produced:

- `hello` first: this node, the ring's newest seq, and `boot` (an id of this agent process, so
  a reader can tell a restarted agent whose seqs started again from 1);
- `routes`: the route table as `GET /routes` shows it, at start and within one loop turn of
  any change (the table's listener wakes every reader);
- `flows`: new flow events from this process's flow ring (podnet/observe/ring.py), each with
  its `seq`; at most one line per `flows_interval_s` and `max_batch` events a line, with
  `missed` counting events the ring rotated away before this reader got them;
- `links`: the tunnels' cumulative counters per peer node (`TunnelPeer.link_stats()`) every
  `links_interval_s`; the reader takes the rates.

With no reader nothing here runs: the ring is appended to by logging either way, and the
route listener only walks an empty set.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any, Protocol

import structlog
from aiohttp import web

from agents.cni.routes import Route, RouteTable
from podnet.observe.ring import FlowRing, flow_ring

FLOWS_INTERVAL_S = 0.1
FLOWS_PER_LINE = 500
LINKS_INTERVAL_S = 1.0
_MAX_SEQ = 2**63 - 1

log = structlog.get_logger()


class LinkSource(Protocol):
    def link_stats(self) -> dict[str, dict[str, int]]: ...


def route_rows(routes: list[Route], now: float) -> list[dict[str, Any]]:
    """Routes as `GET /routes` and the `routes` line show them."""
    return [{"podCIDR": r.pod_cidr, "podCIDRs": list(r.cidrs), "node": r.node,
             "address": r.address, "state": r.state, "version": r.version,
             "age_s": round(max(0.0, now - r.since), 1)}
            for r in routes]


def parse_since(text: str | None) -> int:
    """The `since` query parameter: a seq this reader already has (absent: 0, everything the
    ring holds). ValueError with a message for anything but a non-negative integer."""
    if text is None or text == "":
        return 0
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > _MAX_SEQ:
        raise ValueError(f"since must be a non-negative integer (a flow event seq), "
                         f"not {text[:40]!r}")
    return int(text)


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, default=str, separators=(",", ":")) + "\n").encode()


def _flows_line(batch: list[tuple[int, str]], missed: int) -> bytes:
    """The `flows` line, from the events' JSON as the log wrote it, each given its `seq`
    (spliced in as the last member: no parse and re-encode per event)."""
    events = ",".join(f'{text[:-1]},"seq":{seq}}}' if text != "{}" else f'{{"seq":{seq}}}'
                      for seq, text in batch)
    return f'{{"type":"flows","missed":{missed},"events":[{events}]}}\n'.encode()


class _Reader:
    """One open stream's wake-up: set by route changes, the ring and shutdown."""

    __slots__ = ("routes_dirty", "wake")

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.routes_dirty = False


class ObserveEndpoint:
    """The handler and the readers it must end when the agent stops."""

    def __init__(self, node: str, routes: RouteTable | None, links: LinkSource | None, *,
                 ring: FlowRing | None = None, flows_interval_s: float = FLOWS_INTERVAL_S,
                 links_interval_s: float = LINKS_INTERVAL_S,
                 max_batch: int = FLOWS_PER_LINE) -> None:
        self.node = node
        self.routes = routes
        self.links = links
        self.ring = ring if ring is not None else flow_ring()
        self.flows_interval_s = flows_interval_s
        self.links_interval_s = links_interval_s
        self.max_batch = max_batch
        self.boot = os.urandom(6).hex()
        self._readers: set[_Reader] = set()
        self._closing = False
        if routes is not None:
            routes.on_change(self._routes_changed)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/observe", self.handler)
        app.on_shutdown.append(self.on_shutdown)

    def _routes_changed(self, _old: Route | None, _new: Route | None) -> None:
        for reader in self._readers:
            reader.routes_dirty = True
            reader.wake.set()

    async def on_shutdown(self, _: web.Application) -> None:
        self._closing = True
        for reader in self._readers:
            reader.wake.set()

    def _routes_line(self) -> bytes:
        table = self.routes.all() if self.routes is not None else []
        return _line({"type": "routes", "routes": route_rows(table, time.time())})

    def _links_line(self) -> bytes:
        peers = self.links.link_stats() if self.links is not None else {}
        return _line({"type": "links", "ts": round(time.time(), 3), "peers": peers})

    async def handler(self, request: web.Request) -> web.StreamResponse:
        try:
            since = parse_since(request.query.get("since"))
        except ValueError as exc:
            log.warning("observe.bad_request", remote=request.remote, error=str(exc))
            return web.json_response(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                 "message": str(exc), "reason": "BadRequest", "code": 400}, status=400)
        if self._closing:
            return web.json_response(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                 "message": "agent shutting down", "reason": "ServiceUnavailable",
                 "code": 503}, status=503)
        ring = self.ring
        if since > ring.last_seq:
            # A seq from an earlier run of this agent (ours start again from 1): all of this
            # run's events are new to the reader.
            since = 0
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        reader = _Reader()
        self._readers.add(reader)
        log.info("observe.connected", remote=request.remote, since=since)
        sent = since
        stats = {"flow_lines": 0, "events": 0, "missed": 0}
        reason = "cancelled"
        ring_watch: asyncio.Task[None] | None = None
        try:
            await resp.write(_line({"type": "hello", "node": self.node, "seq": ring.last_seq,
                                    "since": since, "boot": self.boot}))
            await resp.write(self._routes_line())
            links_due = 0.0
            flows_due = 0.0
            while not self._closing:
                reader.wake.clear()
                now = time.monotonic()
                if reader.routes_dirty:
                    reader.routes_dirty = False
                    await resp.write(self._routes_line())
                if ring.last_seq > sent and now >= flows_due:
                    batch, missed = ring.read_json(sent, self.max_batch)
                    sent = batch[-1][0] if batch else ring.last_seq
                    await resp.write(_flows_line(batch, missed))
                    stats["flow_lines"] += 1
                    stats["events"] += len(batch)
                    stats["missed"] += missed
                    flows_due = now + self.flows_interval_s
                if now >= links_due:
                    await resp.write(self._links_line())
                    links_due = now + self.links_interval_s
                now = time.monotonic()
                timeout = links_due - now
                if ring.last_seq > sent:
                    timeout = min(timeout, flows_due - now)     # held back by the batching
                elif ring_watch is None or ring_watch.done():
                    ring_watch = asyncio.create_task(
                        self._watch_ring(sent, reader), name=f"observe-ring {request.remote}")
                if timeout > 0 and not reader.wake.is_set():
                    try:
                        async with asyncio.timeout(timeout):
                            await reader.wake.wait()
                    except TimeoutError:
                        pass
            reason = "agent shutting down"
            await resp.write_eof()
        except (ConnectionError, OSError) as exc:
            reason = f"reader gone: {type(exc).__name__}"
        finally:
            self._readers.discard(reader)
            if ring_watch is not None:
                ring_watch.cancel()
            log.info("observe.closed", remote=request.remote, reason=reason, **stats)
        return resp

    async def _watch_ring(self, after: int, reader: _Reader) -> None:
        await self.ring.wait(after)
        reader.wake.set()
