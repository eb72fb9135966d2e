"""The agent's `GET /observe` feed: hello, routes, flows from the flow ring, link counters.

Part one serves `ObserveEndpoint` from a real aiohttp server on 127.0.0.1 with a real route
table and its own flow ring, read by a real HTTP client, to drive each rule precisely
(batching, rotation counted, route changes, shutdown). Part two is a real 2-node cluster: a
curl across nodes shows up in node-1's and node-2's feeds with its flow id, the tunnels'
counters grow, and bad requests get 401/400.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from harness import CROSS_NODE_PODS, RunningCluster, start_cluster, stop_cluster, wait_for

from agents.cni.routes import DEAD, Route, RouteTable
from agents.observe import ObserveEndpoint
from podnet.auth import agent_token, load_secret
from podnet.observe.ring import FlowRing
from podnet.tunnelnet import TunnelPeer

# -- part one: the endpoint in-process


class FakeLinks:
    """Counters as a TunnelPeer reports them (the real ones are checked on the cluster)."""

    def __init__(self) -> None:
        self.bytes_out = 0

    def link_stats(self) -> dict[str, dict[str, int]]:
        return {"node-2": {"bytes_out": self.bytes_out, "bytes_in": 7, "records_out": 1,
                           "records_in": 1, "errors": 0}}


class Feed:
    """A served endpoint and a way to read its lines."""

    def __init__(self, endpoint: ObserveEndpoint, url: str, http: aiohttp.ClientSession,
                 runner: web.AppRunner) -> None:
        self.endpoint, self.url, self.http, self.runner = endpoint, url, http, runner

    async def open(self, query: str = "") -> aiohttp.ClientResponse:
        resp = await self.http.get(self.url + query)
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == "application/x-ndjson"
        return resp


async def next_line(resp: aiohttp.ClientResponse, kind: str | None = None,
                    timeout_s: float = 5.0) -> dict[str, Any]:
    """The next line (of `kind`, skipping others)."""
    async with asyncio.timeout(timeout_s):
        while True:
            raw = await resp.content.readline()
            assert raw, f"stream ended while waiting for a {kind or 'line'}"
            obj: dict[str, Any] = json.loads(raw)
            if kind is None or obj["type"] == kind:
                return obj


@pytest.fixture
async def feed() -> AsyncIterator[Feed]:
    routes = RouteTable("node-1")
    routes.update(Route("10.244.1.0/24", "node-1", "127.0.0.1:1"))
    routes.update(Route("10.244.2.0/24", "node-2", "127.0.0.1:2"))
    endpoint = ObserveEndpoint("node-1", routes, FakeLinks(), ring=FlowRing(capacity=8),
                               links_interval_s=0.2, max_batch=3)
    app = web.Application()
    endpoint.add_routes(app)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as http:
        f = Feed(endpoint, f"http://127.0.0.1:{port}/observe", http, runner)
        try:
            yield f
        finally:
            await runner.cleanup()


async def test_hello_then_routes_then_links(feed: Feed) -> None:
    feed.endpoint.ring.append({"flow": "a-1", "event": "flow.route"})
    resp = await feed.open()
    hello = await next_line(resp)
    assert hello["type"] == "hello" and hello["node"] == "node-1" and hello["seq"] == 1
    assert re.fullmatch(r"[0-9a-f]{12}", hello["boot"])
    routes = await next_line(resp)
    assert routes["type"] == "routes"
    assert [(r["podCIDR"], r["node"], r["state"]) for r in routes["routes"]] == [
        ("10.244.1.0/24", "node-1", "alive"), ("10.244.2.0/24", "node-2", "alive")]
    assert set(routes["routes"][0]) == {"podCIDR", "podCIDRs", "node", "address", "state",
                                        "version", "age_s"}
    assert routes["routes"][0]["podCIDRs"] == ["10.244.1.0/24"]
    first = await next_line(resp, "links")
    assert first["peers"]["node-2"]["bytes_out"] == 0 and first["ts"] > 1.7e9
    feed.endpoint.links.bytes_out = 5000  # type: ignore[union-attr]
    later = await next_line(resp, "links")
    assert later["peers"]["node-2"]["bytes_out"] == 5000 and later["ts"] >= first["ts"]
    resp.close()


async def test_flows_are_batched_with_seq_and_missed_counted(feed: Feed) -> None:
    ring = feed.endpoint.ring
    for n in range(1, 11):      # capacity 8: seq 1 and 2 are rotated away
        ring.append({"flow": f"f-{n}", "event": "flow.route"})
    resp = await feed.open()
    lines = []
    while sum(len(x["events"]) for x in lines) < 8:
        lines.append(await next_line(resp, "flows"))
    assert [len(x["events"]) for x in lines] == [3, 3, 2]       # max_batch 3 per line
    assert [x["missed"] for x in lines] == [2, 0, 0]
    seqs = [e["seq"] for x in lines for e in x["events"]]
    assert seqs == list(range(3, 11))
    assert [e["flow"] for x in lines for e in x["events"]] == [f"f-{n}" for n in range(3, 11)]
    # Live events: appended after the reader caught up, delivered without polling.
    ring.append({"flow": "live-1", "event": "flow.closed", "odd": {1, 2}})
    live = await next_line(resp, "flows")
    assert live["events"][0]["flow"] == "live-1" and live["events"][0]["seq"] == 11
    assert live["missed"] == 0 and isinstance(live["events"][0]["odd"], str)
    # As the logging hook appends them: with the line the log file got.
    ring.append({"flow": "live-2", "event": "flow.route"},
                '{"flow":"live-2","event":"flow.route","ts":"2026-12-07T17:48:15Z"}')
    live = await next_line(resp, "flows")
    assert live["events"] == [{"flow": "live-2", "event": "flow.route",
                               "ts": "2026-12-07T17:48:15Z", "seq": 12}]
    resp.close()


async def test_since_resumes_and_a_stale_since_restarts(feed: Feed) -> None:
    ring = feed.endpoint.ring
    for n in range(1, 5):
        ring.append({"flow": f"f-{n}"})
    resp = await feed.open("?since=2")
    line = await next_line(resp, "flows")
    assert [e["seq"] for e in line["events"]] == [3, 4] and line["missed"] == 0
    resp.close()
    # A seq this agent never gave out (an earlier run's): everything held is new.
    resp = await feed.open("?since=999")
    hello = await next_line(resp)
    assert hello["since"] == 0
    line = await next_line(resp, "flows")
    assert [e["seq"] for e in line["events"]] == [1, 2, 3]
    resp.close()


@pytest.mark.parametrize("since", ["-1", "abc", "1.5", "99999999999999999999",
                                   "\u0661"])
async def test_bad_since_is_a_400(feed: Feed, since: str) -> None:
    async with feed.http.get(feed.url, params={"since": since}) as resp:
        assert resp.status == 400
        body = await resp.json()
        assert body["reason"] == "BadRequest" and "since" in body["message"]


async def test_route_change_is_sent_at_once(feed: Feed) -> None:
    resp = await feed.open()
    await next_line(resp, "routes")
    assert feed.endpoint.routes is not None
    feed.endpoint.routes.update(Route("10.244.2.0/24", "node-2", "127.0.0.1:2", state=DEAD,
                                      incarnation=1))
    # Routes are sent on a change only (no timer), so this line came from the change.
    changed = await next_line(resp, "routes", timeout_s=10.0)
    assert {r["node"]: r["state"] for r in changed["routes"]} == {"node-1": "alive",
                                                                   "node-2": "dead"}
    resp.close()


async def test_disconnect_and_shutdown_end_readers(feed: Feed) -> None:
    first = await feed.open()
    await next_line(first, "routes")
    assert len(feed.endpoint._readers) == 1
    first.close()               # the reader goes away: its stream ends at the next write
    await _until(lambda: not feed.endpoint._readers, "the reader to be gone")
    second = await feed.open()
    await next_line(second, "links")
    await feed.runner.shutdown()        # the app's on_shutdown, as the agent's cleanup runs it
    async with asyncio.timeout(5):
        rest = await second.content.read()      # the stream ends cleanly (chunked EOF)
    assert all(json.loads(x)["type"] in {"links", "routes", "flows"}
               for x in rest.splitlines())
    assert not feed.endpoint._readers


async def _until(check: Any, what: str = "condition") -> None:
    """Poll `check` on the loop (the server runs on this loop too)."""
    for _ in range(250):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Unused:
    """A local stream end for opens the peer refuses (never called)."""

    def ready(self) -> bool:
        return True

    def deliver(self, data: bytes) -> None:
        raise AssertionError("no data expected")

    def deliver_eof(self) -> None:
        raise AssertionError("no EOF expected")

    def hang_up(self, exc: Exception | None) -> None:
        raise AssertionError("no hang-up expected")

    def wake(self) -> None:
        return None


async def test_link_counters_add_up_across_tunnels_to_one_peer() -> None:
    """Two real TunnelPeers over a WebSocket on 127.0.0.1: the counters a tunnel gathered
    stay in the peer's totals after it ends, and a re-dialed tunnel adds to them."""
    secret = b"k" * 32
    two = TunnelPeer("node-2", secret)      # refuses every stream (nobody listens)
    app = web.Application()
    two.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    address = f"127.0.0.1:{runner.addresses[0][1]}"
    one = TunnelPeer("node-1", secret)
    src, dst = ("10.244.1.2", 40000), ("10.244.2.2", 80)
    try:
        assert one.link_stats() == {}
        tunnel = await one.tunnel_to("node-2", address)
        with pytest.raises(ConnectionRefusedError):
            await one.open_via(tunnel, src, dst, Unused(), "t-1")
        first = one.link_stats()["node-2"]
        assert first["records_out"] >= 1 and first["records_in"] >= 1
        assert first["bytes_out"] > first["records_out"] and first["bytes_in"] > 0
        assert first["errors"] == 1                         # the refused open
        # The other end counted the same records, the other way round.
        await _until(lambda: two.link_stats().get("node-1", {}).get("records_in") ==
                     first["records_out"], "node-2 to count node-1's records")
        seen = two.link_stats()["node-1"]
        assert (seen["bytes_in"], seen["records_out"], seen["bytes_out"]) == (
            first["bytes_out"], first["records_in"], first["bytes_in"])

        one.fail_peer("node-2", "test")                     # the tunnel ends ...
        assert one.link_stats()["node-2"] == first          # ... and its counts stay
        tunnel = await one.tunnel_to("node-2", address)     # a new tunnel to the same peer
        with pytest.raises(ConnectionRefusedError):
            await one.open_via(tunnel, src, dst, Unused(), "t-2")
        total = one.link_stats()["node-2"]
        assert total["records_out"] >= 2 * first["records_out"]
        assert total["bytes_out"] > first["bytes_out"] and total["errors"] == 2
    finally:
        await one.close()
        await two.close()
        await runner.cleanup()


# -- part two: a real cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    c = start_cluster(tmp_path_factory.mktemp("observe"), 2)
    try:
        manifest = c.state_dir / "pods.yaml"
        manifest.write_text(CROSS_NODE_PODS)
        assert c.kubectl("apply", "-f", str(manifest)).returncode == 0
        for name in ("client", "echo-2"):
            c.running_pod(name)
        url = f"http://{_ip(c, 'echo-2')}:8080/"
        wait_for(lambda: c.podnet("exec", "client", "--", "curl", "-s", "-m", "2",
                                  url).returncode == 0, 20, what="node-1 routing to node-2")
        yield c
    finally:
        stop_cluster(c)


def _ip(c: RunningCluster, pod: str) -> str:
    found = c.pod(pod)
    assert found is not None
    return str(found["status"]["podIP"])


class Stream:
    """A blocking NDJSON reader of one agent's /observe (http.client, real socket)."""

    def __init__(self, address: str, token: str | None, query: str = "") -> None:
        host, port = address.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.conn.request("GET", "/observe" + query, headers=headers)
        self.resp = self.conn.getresponse()

    def line(self) -> dict[str, Any]:
        raw = self.resp.readline()
        assert raw, "stream ended"
        obj: dict[str, Any] = json.loads(raw)
        return obj

    def until(self, check: Any, what: str, limit: int = 200) -> dict[str, Any]:
        for _ in range(limit):
            obj = self.line()
            if check(obj):
                return obj
        raise AssertionError(f"no {what} in {limit} lines")

    def close(self) -> None:
        self.conn.close()


def _address(c: RunningCluster, node: str) -> str:
    return next(str(n["address"]) for n in c.info["nodes"] if n["name"] == node)


def test_observe_needs_the_agent_token(cluster: RunningCluster) -> None:
    for token in (None, "wrong", cluster.token):        # the API's token is not the agent's
        s = Stream(_address(cluster, "node-1"), token)
        try:
            assert s.resp.status == 401
        finally:
            s.close()
    token = agent_token(load_secret(cluster.state_dir / "secret"))
    s = Stream(_address(cluster, "node-1"), token, "?since=x")
    try:
        assert s.resp.status == 400
    finally:
        s.close()
    wait_for(lambda: "observe.bad_request" in
             (cluster.state_dir / "logs" / "agent-node-1.jsonl").read_text(), 5,
             what="observe.bad_request in node-1's log")


def test_curl_across_nodes_shows_in_both_feeds(cluster: RunningCluster) -> None:
    token = agent_token(load_secret(cluster.state_dir / "secret"))
    one = Stream(_address(cluster, "node-1"), token)
    two = Stream(_address(cluster, "node-2"), token)
    try:
        assert one.resp.status == 200 and one.resp.getheader("Content-Type") == \
            "application/x-ndjson"
        hello = one.line()
        assert hello["type"] == "hello" and hello["node"] == "node-1"
        routes = one.line()
        assert routes["type"] == "routes"
        assert {r["node"]: r["state"] for r in routes["routes"]}.get("node-2") == "alive"
        hello_two = two.line()
        assert hello_two["node"] == "node-2"
        # The feed starts with what the ring holds: skip to the present.
        base = one.until(lambda o: o["type"] == "links", "links line")
        before = base["peers"].get("node-2", {}).get("bytes_out", 0)

        result = cluster.podnet("exec", "client", "--", "curl", "-sv", "-m", "5",
                                f"http://{_ip(cluster, 'echo-2')}:8080/")
        assert result.returncode == 0, result.stderr
        found = re.search(r"^\* flow: (\S+)$", result.stderr, re.M)
        assert found is not None, result.stderr
        flow = found.group(1)

        def has(events: list[dict[str, Any]], name: str) -> bool:
            return any(e.get("flow") == flow and e["event"] == name for e in events)

        seen: list[dict[str, Any]] = []
        one.until(lambda o: o["type"] == "flows" and (seen.extend(o["events"]) or True)
                  and has(seen, "flow.closed"), f"flow {flow} closed on node-1")
        mine = [e for e in seen if e.get("flow") == flow]
        names = [e["event"] for e in mine]
        assert names.index("flow.route") < names.index("tunnel.stream_out") \
            < names.index("flow.closed"), names
        assert all(e["node"] == "node-1" and e["seq"] > 0 for e in mine)
        route = mine[names.index("flow.route")]
        assert route["pod"] == "client" and route["verdict"] == "tunnel"
        assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)
        seen_two: list[dict[str, Any]] = []
        two.until(lambda o: o["type"] == "flows" and (seen_two.extend(o["events"]) or True)
                  and has(seen_two, "flow.delivered"), f"flow {flow} delivered on node-2")
        # The tunnel counters moved: node-1 sent the request to node-2.
        after = one.until(lambda o: o["type"] == "links"
                          and o["peers"].get("node-2", {}).get("bytes_out", 0) > before,
                          "node-2's link counters growing", limit=50)
        link = after["peers"]["node-2"]
        assert link["records_out"] > 0 and link["records_in"] > 0 and link["bytes_in"] > 0
        assert set(link) == {"bytes_out", "bytes_in", "records_out", "records_in", "errors"}
    finally:
        one.close()
        two.close()


def test_reader_gone_is_logged_and_agent_keeps_serving(cluster: RunningCluster) -> None:
    token = agent_token(load_secret(cluster.state_dir / "secret"))
    address = _address(cluster, "node-2")
    s = Stream(address, token)
    assert s.line()["type"] == "hello"
    s.conn.sock.shutdown(socket.SHUT_RDWR)      # type: ignore[union-attr]
    s.close()
    log = cluster.state_dir / "logs" / "agent-node-2.jsonl"

    def closed() -> bool:
        return any(json.loads(line).get("event") == "observe.closed" and
                   str(json.loads(line).get("reason", "")).startswith("reader gone")
                   for line in log.read_text().splitlines())

    wait_for(closed, 10, what="observe.closed for the reader that hung up")
    again = Stream(address, token)
    try:
        assert again.line()["type"] == "hello"
    finally:
        again.close()


def test_a_refused_stream_counts_as_a_link_error(cluster: RunningCluster) -> None:
    token = agent_token(load_secret(cluster.state_dir / "secret"))
    one = Stream(_address(cluster, "node-1"), token)
    try:
        base = one.until(lambda o: o["type"] == "links", "links line")
        errors = base["peers"].get("node-2", {}).get("errors", 0)
        # Nobody listens on 9999 in echo-2: node-2 answers the OPEN with OPEN_FAIL.
        result = cluster.podnet("exec", "client", "--", "curl", "-s", "-m", "5",
                                f"http://{_ip(cluster, 'echo-2')}:9999/")
        assert result.returncode == 7, result.stderr
        one.until(lambda o: o["type"] == "links"
                  and o["peers"].get("node-2", {}).get("errors", 0) > errors,
                  "node-1's errors with node-2 growing", limit=50)
    finally:
        one.close()
