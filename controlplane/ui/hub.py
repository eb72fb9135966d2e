"""The topology page's hub: one live picture of the cluster, fanned out to every open page.

While at least one page (or a recent `/podnet/ui/api/view` caller) holds it, the hub
- follows the store in process (Nodes, Pods, Services, EndpointSlices, NetworkPolicies,
  NetworkFaults) and rebuilds the pure view (podnet/observe/topology.py) when one changed,
- reads each node agent's `/observe` stream (routes, flow events, link counters), and
- reads this process's own flow ring (the ClusterIP proxy's and DNS's events) and the proxy's
  link counters,
and sends every client the same encoded messages: a `snapshot` first, then `patch` (only the
entities that changed), `flows` (only new or changed rows) and `links` (every second).
Changes are coalesced: at most one patch and one flows message per 200 ms, each sent within
250 ms of the change. A message is encoded once for all clients. A client that stops reading
is not allowed to pile up messages: past a bound its queue is replaced by a fresh snapshot.

With nothing open, none of that runs: no store feeds, no agent connections, no timers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp
import structlog

from controlplane.store import Store, Subscription
from podnet.observe.topology import (
    DEPENDS,
    View,
    as_lists,
    diff,
    empty_view,
    patch_empty,
    rebuild,
)
from podnet.resources import BY_KIND, Resource

log = structlog.get_logger(component="ui")  # lazy: bound once logging is configured

# The stored kinds the page shows, and the view input each one is (topology.DEPENDS).
WATCHED = {"Node": "nodes", "Pod": "pods", "Service": "services", "EndpointSlice": "slices",
           "NetworkPolicy": "policies", "NetworkFault": "faults"}
MIN_INTERVAL_S = 0.2        # at most one patch (and one flows message) per 200 ms
SETTLE_S = 0.03             # let a burst of writes land before the first rebuild
LINKS_EVERY_S = 1.0
PING_EVERY_S = 15.0
LINGER_S = 10.0             # keep feeds up this long after the last page closed (reloads)
MAX_QUEUE_MESSAGES = 200    # a client further behind than this gets a snapshot instead
MAX_QUEUE_BYTES = 8 << 20
MAX_LINE_BYTES = 8 << 20    # one NDJSON line from an agent (500 flow events fit easily)
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
LOCAL_PROCESS = "controlplane"     # as `podnet logs` names it
LOCAL_NODE = "@controlplane"       # the proxy's name as a tunnel peer


class Flows(Protocol):
    """What the hub needs of podnet/observe/flows.py's FlowTable."""

    def add(self, event: Mapping[str, Any], process: str | None = None) -> bool: ...
    def note_missed(self, process: str, count: int) -> None: ...
    def take_changed(self) -> list[dict[str, Any]]: ...
    def rows(self, limit: int | None = None, flt: Any = None) -> list[dict[str, Any]]: ...
    def detail(self, flow_id: str) -> dict[str, Any] | None: ...
    def stats(self) -> dict[str, Any]: ...


class Links(Protocol):
    """What the hub needs of podnet/observe/links.py's LinkHistory."""

    def observe(self, node: str, ts: float, peers: Mapping[str, Any]) -> None: ...
    def forget(self, node: str) -> None: ...
    def series(self) -> list[dict[str, Any]]: ...


class Ring(Protocol):
    """This process's flow ring (podnet/observe/ring.py)."""

    @property
    def last_seq(self) -> int: ...
    @property
    def oldest_seq(self) -> int: ...
    def read(self, after_seq: int) -> tuple[list[tuple[int, dict[str, Any]]], int]: ...
    async def wait(self, after_seq: int) -> None: ...


def sse(event: str, payload: Any) -> bytes:
    """One server-sent event, encoded once: JSON on a single `data:` line."""
    text = json.dumps(payload, separators=(",", ":"), default=str)
    return f"event: {event}\ndata: {text}\n\n".encode()


class Client:
    """One open page: a queue of encoded messages its HTTP handler writes out."""

    def __init__(self, max_messages: int = MAX_QUEUE_MESSAGES,
                 max_bytes: int = MAX_QUEUE_BYTES) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.ready = asyncio.Event()
        self.closed = False

    def put(self, data: bytes) -> None:
        self.queue.append(data)
        self.queued_bytes += len(data)
        self.ready.set()

    def reset(self, snapshot: bytes) -> None:
        self.queue.clear()
        self.queued_bytes = 0
        self.put(snapshot)

    @property
    def overloaded(self) -> bool:
        return len(self.queue) > self.max_messages or self.queued_bytes > self.max_bytes

    async def next(self, timeout_s: float) -> list[bytes] | None:
        """Everything queued (empty list: closed), or None when `timeout_s` passed idle."""
        if not self.queue and not self.closed:
            self.ready.clear()
            try:
                await asyncio.wait_for(self.ready.wait(), timeout_s)
            except TimeoutError:
                return None
        if self.closed:
            return []
        out = list(self.queue)
        self.queue.clear()
        self.queued_bytes = 0
        return out

    def close(self) -> None:
        self.closed = True
        self.ready.set()


class LineSplitter:
    """NDJSON framing with a bound on a line's length (aiohttp's readline has a small one)."""

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        if b"\n" not in chunk:
            if len(self._buf) > self.limit:
                raise ValueError(f"a line longer than {self.limit} bytes")
            return []
        *lines, rest = self._buf.split(b"\n")
        self._buf = bytearray(rest)
        if len(self._buf) > self.limit:
            raise ValueError(f"a line longer than {self.limit} bytes")
        return [bytes(line) for line in lines if line.strip()]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _counters(peers: Any) -> dict[str, dict[str, int]] | None:
    """A links message's `peers`, validated: peer name -> counter name -> int >= 0."""
    if not isinstance(peers, dict):
        return None
    out: dict[str, dict[str, int]] = {}
    for peer, counters in peers.items():
        if not isinstance(peer, str) or not isinstance(counters, dict):
            return None
        row = {}
        for name, value in counters.items():
            v = _int(value)
            if not isinstance(name, str) or v is None or v < 0:
                return None
            row[name] = v
        out[peer] = row
    return out


class LinkReports:
    """One reporter's link counters, as LinkHistory should see them. A report's first sight
    of a peer is only a baseline there; but a peer that appears in a later report of the same
    process had no tunnel (zero counters) at the report before, so it is given that zero
    baseline: the bytes of a link's first connection are counted, not lost."""

    def __init__(self) -> None:
        self.last_ts: float | None = None
        self.peers: set[str] = set()

    def reports(self, ts: float, peers: Mapping[str, Mapping[str, int]]
                ) -> list[tuple[float, Mapping[str, Mapping[str, int]]]]:
        out: list[tuple[float, Mapping[str, Mapping[str, int]]]] = []
        new = [p for p in peers if p not in self.peers]
        if self.last_ts is not None and new and ts > self.last_ts:
            out.append((self.last_ts, {p: dict.fromkeys(peers[p], 0) for p in new}))
        out.append((ts, peers))
        self.last_ts = ts
        self.peers.update(peers)
        return out


class AgentFeed:
    """One node agent's `/observe` stream, reconnected with back-off while the hub runs."""

    def __init__(self, hub: UiHub, node: str, address: str) -> None:
        self.hub = hub
        self.node = node
        self.address = address
        self.process = f"agent-{node}"
        self.since = 0          # the last flow seq received (resumes after a reconnect)
        self.boot: str | None = None   # the agent process's id, from its hello
        self.link_reports = LinkReports()
        self.history = True
        self.task = asyncio.create_task(self.run(), name=f"ui-observe-{node}")

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                got_data = await self.stream()
                failures = 0 if got_data else failures + 1
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                failures += 1
                if failures == 1:  # once per outage, not once per retry
                    log.info("ui.feed_lost", agent=self.node, address=self.address,
                             error=str(e) or type(e).__name__)
            finally:
                self.hub.forget_routes(self.node)
            await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])

    async def stream(self) -> bool:
        """Read the stream until it ends; True if it delivered anything."""
        session = self.hub.session()
        url = f"http://{self.address}/observe"
        timeout = aiohttp.ClientTimeout(total=None, connect=3, sock_read=30)
        got = False
        self.link_reports = LinkReports()   # a new connection starts from a baseline
        self.history = self.since == 0
        async with session.get(url, params={"since": str(self.since)}, timeout=timeout,
                               headers=self.hub.agent_headers) as resp:
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status} from {url}")
            splitter = LineSplitter()
            bad = 0
            async for chunk in resp.content.iter_any():
                for line in splitter.feed(chunk):
                    try:
                        msg = json.loads(line)
                        if not isinstance(msg, dict):
                            raise ValueError("not an object")
                        restart = self.handle(msg)
                    except (ValueError, RecursionError) as e:
                        bad += 1
                        if bad == 1:  # one event per connection, not one per line
                            log.warning("ui.feed_bad_line", agent=self.node, error=str(e),
                                        line=line[:200].decode(errors="replace"))
                        continue
                    got = True
                    if restart:
                        return True
        return got

    def handle(self, msg: dict[str, Any]) -> bool:
        """Apply one message; True when the stream must be reopened (the agent restarted)."""
        kind = msg.get("type")
        hub = self.hub
        if kind == "hello":
            since = _int(msg.get("since"))
            boot = msg.get("boot")
            if since is None or since < 0 or not isinstance(boot, str):
                raise ValueError("hello without a valid since and boot")
            if self.boot is not None and boot != self.boot and since != 0:
                # A new agent process whose ring already passed our seq: its events 1..since
                # are new to us too. Read it again from the start.
                log.info("ui.feed_restarted", agent=self.node, since=self.since)
                self.since, self.boot = 0, None
                return True
            self.boot = boot
            self.since = since  # the agent restarts from 0 when ours is from an earlier run
        elif kind == "routes":
            routes = msg.get("routes")
            if not isinstance(routes, list) or not all(isinstance(r, dict) for r in routes):
                raise ValueError("routes must be a list of objects")
            hub.set_routes(self.node, routes)
        elif kind == "flows":
            events = msg.get("events")
            missed = _int(msg.get("missed"))
            if not isinstance(events, list) or missed is None or missed < 0:
                raise ValueError("flows needs a list of events and a missed count >= 0")
            if missed and not self.history:
                hub.flows_missed(self.process, missed)
            # The first batch read from 0 is history: events rotated away before the page
            # opened were not missed by it. After that every gap counts.
            self.history = False
            for event in events:
                seq = _int(event.get("seq")) if isinstance(event, dict) else None
                if seq is None or not isinstance(event.get("flow"), str):
                    raise ValueError("a flow event without an int seq and a flow id")
                if seq > self.since:
                    self.since = seq
                    hub.add_flow_event(event, self.process)
        elif kind == "links":
            ts = msg.get("ts")
            peers = _counters(msg.get("peers"))
            if isinstance(ts, bool) or not isinstance(ts, (int, float)) or peers is None:
                raise ValueError("links needs a numeric ts and integer counters")
            for at, counters in self.link_reports.reports(float(ts), peers):
                hub.observe_links(self.node, at, counters)
        return False


class UiHub:
    """See the module docstring. `acquire()`/`release()` bracket every use (a page's event
    stream, an api/view request); the feeds run while anything holds the hub."""

    def __init__(self, store: Store, *, agent_token: str, version: str,
                 new_flows: Callable[[], Flows], new_links: Callable[[], Links],
                 ring: Ring | None = None,
                 local_links: Callable[[], Mapping[str, Mapping[str, int]]] | None = None,
                 linger_s: float = LINGER_S, max_queue_messages: int = MAX_QUEUE_MESSAGES,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.agent_headers = {"Authorization": f"Bearer {agent_token}"}
        self.version = version
        self.new_flows = new_flows
        self.new_links = new_links
        self.ring = ring
        self.local_links = local_links
        self.linger_s = linger_s
        self.max_queue_messages = max_queue_messages
        self.clock = clock
        self.clients: set[Client] = set()
        self.client_resets = 0
        self.holders = 0
        self.active = False
        self.closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._subs: list[Subscription] = []
        self._feeds: dict[str, AgentFeed] = {}
        self._session: aiohttp.ClientSession | None = None
        self._stop_timer: asyncio.TimerHandle | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self.view: View = empty_view()
        self.routes: dict[str, list[Any]] = {}
        self.flows: Flows = self.new_flows()
        self.links: Links = self.new_links()
        self._dirty: set[str] = set()   # view inputs changed since the last rebuild
        self._flows_dirty = False       # rows or counts changed since the last flows message
        self._kick = asyncio.Event()
        self._snapshot: bytes | None = None

    # ------------------------------------------------------------------ holders

    def acquire(self) -> None:
        """Someone is looking: start the feeds (and build the view now) if they are off."""
        if self.closed:
            raise RuntimeError("the UI hub is closed")
        self.holders += 1
        if self._stop_timer is not None:
            self._stop_timer.cancel()
            self._stop_timer = None
        if not self.active:
            self._start()

    def release(self) -> None:
        self.holders -= 1
        if self.holders <= 0 and self.active and not self.closed:
            self.holders = 0
            loop = asyncio.get_running_loop()
            self._stop_timer = loop.call_later(self.linger_s, self._linger_over)

    def _linger_over(self) -> None:
        self._stop_timer = None
        if self.holders == 0 and self.active:
            self._stopping = asyncio.create_task(self._stop(), name="ui-hub-stop")

    def attach(self) -> Client:
        """A new page: it gets the current snapshot first, then every later message."""
        self.acquire()
        client = Client(self.max_queue_messages)
        client.put(self.snapshot_bytes())
        self.clients.add(client)
        return client

    def detach(self, client: Client) -> None:
        client.close()
        if client in self.clients:
            self.clients.discard(client)
            self.release()

    def _start(self) -> None:
        if self._stopping is not None and not self._stopping.done():
            self._stopping.cancel()
        self._reset_state()
        self.active = True
        # Subscribed before the first build, in the same turn: no write falls in between.
        for kind, source in WATCHED.items():
            res = BY_KIND[kind]
            sub = self.store.subscribe(res)
            self._subs.append(sub)
            self._tasks.append(asyncio.create_task(self._follow(res, source, sub),
                                                   name=f"ui-feed-{res.plural}"))
        self._dirty = set(DEPENDS)
        self._rebuild()  # the first snapshot is complete at once (agents' data follows)
        self._tasks.append(asyncio.create_task(self._publisher(), name="ui-publish"))
        self._tasks.append(asyncio.create_task(self._links_ticker(), name="ui-links"))
        if self.ring is not None:
            self._tasks.append(asyncio.create_task(self._read_ring(self.ring),
                                                   name="ui-local-flows"))
        self._sync_feeds()
        log.info("ui.hub_started", nodes=len(self.view["nodes"]))

    async def _stop(self) -> None:
        self.active = False
        tasks = self._tasks + [f.task for f in self._feeds.values()]
        self._tasks, self._feeds = [], {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sub in self._subs:  # also those of a task cancelled before it first ran
            sub.close()
        self._subs = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._reset_state()  # drop what the feeds gathered: memory back to nothing
        log.info("ui.hub_stopped")

    async def close(self) -> None:
        """Shutdown: end every page's stream and every feed."""
        self.closed = True
        if self._stop_timer is not None:
            self._stop_timer.cancel()
            self._stop_timer = None
        for client in list(self.clients):
            client.close()
        self.clients.clear()
        if self._stopping is not None:
            self._stopping.cancel()
            await asyncio.gather(self._stopping, return_exceptions=True)
        if self.active:
            await self._stop()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    # ------------------------------------------------------------------ inputs

    async def _follow(self, res: Resource, source: str, sub: Subscription) -> None:
        while True:
            try:
                while await sub.get() is not None:
                    self._mark(source)
            finally:
                sub.close()
            # Closed after falling behind: rebuilding reads the store whole, nothing is lost.
            sub = self.store.subscribe(res)
            self._subs = [*(x for x in self._subs if not x.closed), sub]
            self._mark(source)

    def _mark(self, source: str) -> None:
        self._dirty.add(source)
        self._kick.set()

    def set_routes(self, node: str, routes: list[Any]) -> None:
        if self.routes.get(node) != routes:
            self.routes[node] = routes
            self._mark("routes")

    def forget_routes(self, node: str) -> None:
        """A feed ended: that agent's opinion of the others no longer counts."""
        if self.routes.pop(node, None) is not None:
            self._mark("routes")

    def add_flow_event(self, event: Mapping[str, Any], process: str) -> None:
        self.flows.add(event, process)  # a dropped one still changes the counts shown
        self._flows_dirty = True
        self._kick.set()

    def flows_missed(self, process: str, count: int) -> None:
        self.flows.note_missed(process, count)
        self._flows_dirty = True
        self._kick.set()

    def observe_links(self, node: str, ts: float, peers: Mapping[str, Mapping[str, int]]
                      ) -> None:
        self.links.observe(node, ts, peers)

    async def _read_ring(self, ring: Ring) -> None:
        # What the ring still holds is recent history worth showing; what it rotated away
        # before the page opened is not "missed" by anyone.
        since = max(0, ring.oldest_seq - 1)
        while True:
            await ring.wait(since)
            events, missed = ring.read(since)
            if missed:
                self.flows_missed(LOCAL_PROCESS, missed)
            for seq, event in events:
                since = seq
                self.add_flow_event(event, LOCAL_PROCESS)
            # Read in batches: a busy proxy logs many events; one pass per tick is plenty.
            await asyncio.sleep(MIN_INTERVAL_S / 2)

    # ------------------------------------------------------------------ agent feeds

    def _sync_feeds(self) -> None:
        """One feed per node with a known agent address; follow address changes."""
        wanted = {k: n["address"] for k, n in self.view["nodes"].items() if n["address"]}
        for node, feed in list(self._feeds.items()):
            if wanted.get(node) != feed.address:
                feed.task.cancel()
                del self._feeds[node]
                self.forget_routes(node)
                if node not in self.view["nodes"]:
                    self.links.forget(node)     # it left the cluster
        for node, address in wanted.items():
            if node not in self._feeds and ":" in address:
                self._feeds[node] = AgentFeed(self, node, address)

    # ------------------------------------------------------------------ outputs

    def _rebuild(self) -> dict[str, dict[str, list[Any]]] | None:
        """Rebuild the kinds whose inputs changed; the patch, or None when nothing did."""
        kinds = {k for source in self._dirty for k in DEPENDS[source]}
        self._dirty = set()
        s = self.store

        def scan(kind: str, *needed_by: str) -> list[Mapping[str, Any]]:
            return s.scan(BY_KIND[kind]) if kinds.intersection(needed_by) else []

        new = rebuild(self.view, kinds, nodes=scan("Node", "nodes"),
                      pods=scan("Pod", "pods"),
                      services=scan("Service", "services"),
                      slices=scan("EndpointSlice", "services"),
                      policies=scan("NetworkPolicy", "policies"),
                      faults=scan("NetworkFault", "faults"),
                      routes_by_node=self.routes, now=self.clock())
        patch = diff(self.view, new)
        if patch_empty(patch):
            return None
        self.view = new
        return patch

    def flow_stats(self) -> dict[str, Any]:
        stats = dict(self.flows.stats())
        stats["clientResets"] = self.client_resets
        return stats

    def snapshot(self) -> dict[str, Any]:
        return {"view": as_lists(self.view), "flows": self.flows.rows(),
                "flowStats": self.flow_stats(), "links": self.links.series(),
                "server": {"ts": self.clock(), "version": self.version}}

    def snapshot_bytes(self) -> bytes:
        """The snapshot, encoded once per state (every joining or reset client shares it)."""
        if self._snapshot is None:
            self._snapshot = sse("snapshot", self.snapshot())
        return self._snapshot

    def _broadcast(self, data: bytes) -> None:
        self._snapshot = None  # the state moved on
        for client in list(self.clients):
            if client.overloaded:
                self.client_resets += 1
                log.info("ui.client_reset", queued=len(client.queue),
                         queued_bytes=client.queued_bytes)
                client.reset(self.snapshot_bytes())  # already includes this message
            else:
                client.put(data)

    def publish(self) -> None:
        """Send what changed since the last call (one patch, one flows message at most)."""
        if self._dirty:
            patch = self._rebuild()
            self._sync_feeds()
            if patch is not None:
                self._broadcast(sse("patch", {**patch, "ts": self.clock()}))
        if self._flows_dirty:
            self._flows_dirty = False
            rows = self.flows.take_changed()
            rows.reverse()  # newest change first, as the panel lists them
            self._broadcast(sse("flows", {"rows": rows, "stats": self.flow_stats(),
                                          "ts": self.clock()}))

    async def _publisher(self) -> None:
        last = 0.0
        while True:
            await self._kick.wait()
            self._kick.clear()
            now = time.monotonic()
            # An idle hub waits a moment for the rest of a burst; a busy one waits out the
            # 200 ms since its last message. Either way the change goes out within 250 ms.
            await asyncio.sleep(max(SETTLE_S, last + MIN_INTERVAL_S - now))
            self._kick.clear()
            try:
                self.publish()
            except Exception:  # one bad object must not end the page for everyone
                log.exception("ui.publish_failed")
            last = time.monotonic()

    async def _links_ticker(self) -> None:
        local = LinkReports()
        while True:
            await asyncio.sleep(LINKS_EVERY_S)
            if self.local_links is not None:
                try:
                    for at, counters in local.reports(self.clock(), self.local_links()):
                        self.links.observe(LOCAL_NODE, at, counters)
                except Exception:
                    log.exception("ui.local_links_failed")
            if self.clients:
                self._broadcast(sse("links", self.links.series()))

    # ------------------------------------------------------------------ queries

    def detail(self, flow_id: str) -> dict[str, Any] | None:
        return self.flows.detail(flow_id)

    def rows(self, limit: int, flt: Any) -> list[dict[str, Any]]:
        return self.flows.rows(limit, flt)


