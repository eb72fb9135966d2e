"""Gossip between real aiohttp servers on 127.0.0.1: several GossipServices in one process.

Waits poll the services' own state with generous timeouts; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from agents.cni.gossip import GossipService, GossipSettings
from agents.cni.routes import ALIVE, DEAD, SUSPECT, Route, RouteTable
from podnet.auth import derive_key
from podnet.gossipwire import Entry, Ping, Updates, seal

SECRET = b"integration-test-cluster-secret-0123456789"
KEY = derive_key(SECRET, "gossip")
SETTINGS = GossipSettings()
WAIT_S = 30.0


@dataclass
class Agent:
    name: str
    port: int
    routes: RouteTable
    svc: GossipService
    runner: web.AppRunner

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def states(self) -> dict[str, str]:
        return {r.node: r.state for r in self.routes.all()}

    async def stop(self) -> None:
        await self.svc.close()
        await self.runner.cleanup()


async def start_agent(i: int, seeds: list[str], tmp: Path, port: int = 0) -> Agent:
    name = f"node-{i}"
    # Bind first: the service must know its address before its routes join the app.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    routes = RouteTable(name)
    svc = GossipService(name, f"10.244.{i}.0/24", f"127.0.0.1:{port}", SECRET, routes,
                        SETTINGS, seeds=seeds, peers_file=tmp / f"{name}.peers.json")
    app = web.Application()
    svc.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    await svc.start()
    return Agent(name, port, routes, svc, runner)


async def wait_until(check: Callable[[], object], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def table(agent: Agent) -> list[tuple[str, str, str, str, int]]:
    return [(r.pod_cidr, r.node, r.address, r.state, r.incarnation) for r in agent.routes.all()]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[list[Agent]]:
    """Four agents; each knows only the first one (a seed), as after registration."""
    first = await start_agent(1, [], tmp_path)
    agents = [first] + [await start_agent(i, [first.address], tmp_path) for i in range(2, 5)]
    try:
        await wait_until(lambda: all(len(a.routes.all()) == 4 and
                                     set(a.states().values()) == {ALIVE} for a in agents),
                         "4 agents to know each other alive")
        yield agents
    finally:
        for a in agents:
            await a.stop()


async def test_converges_to_identical_route_tables(cluster: list[Agent]) -> None:
    await wait_until(lambda: all(table(a) == table(cluster[0]) for a in cluster),
                     "identical route tables")
    ref = cluster[0].routes
    for a in cluster:
        assert a.routes.lookup("10.244.3.9").node == "node-3"  # type: ignore[union-attr]
    assert [r.node for r in ref.all()] == ["node-1", "node-2", "node-3", "node-4"]
    snap = cluster[1].svc.snapshot()
    assert snap[0].node == "node-2" and snap[0].is_self


async def test_peers_file_lets_a_node_rejoin_without_seeds(cluster: list[Agent],
                                                           tmp_path: Path) -> None:
    path = tmp_path / "node-4.peers.json"
    await wait_until(lambda: path.exists() and len(json.loads(path.read_text())["peers"]) == 3,
                     "node-4's peers file")
    victim = cluster.pop()
    await victim.stop()
    # No seeds at all: only what the previous life wrote down.
    cluster.append(await start_agent(4, [], tmp_path, port=victim.port))
    back = cluster[-1]
    assert back.svc.membership.incarnation > victim.svc.membership.incarnation
    await wait_until(lambda: len(back.routes.all()) == 4, "node-4 to relearn the cluster")
    await wait_until(lambda: all(a.routes.get("node-4") is not None and
                                 a.routes.get("node-4").incarnation  # type: ignore[union-attr]
                                 == back.svc.membership.incarnation for a in cluster),
                     "everyone to see node-4's new life")


async def test_stopped_node_goes_suspect_then_dead_and_comes_back(cluster: list[Agent],
                                                                 tmp_path: Path) -> None:
    victim = cluster.pop(2)  # node-3
    seen: list[str] = []

    def record(old: Route | None, new: Route | None) -> None:
        if new is not None and new.node == "node-3":
            seen.append(new.state)
    cluster[0].routes.on_change(record)
    old_incarnation = victim.svc.membership.incarnation
    await victim.stop()
    await wait_until(lambda: all(a.states().get("node-3") == DEAD for a in cluster),
                     "node-3 dead everywhere")
    assert all(a.routes.lookup("10.244.3.1") is None for a in cluster)
    assert SUSPECT in seen and seen.index(SUSPECT) < seen.index(DEAD)

    # Back on the same address with a new incarnation; nobody else restarts.
    cluster.insert(2, await start_agent(3, [cluster[0].address], tmp_path, port=victim.port))
    back = cluster[2]
    assert back.svc.membership.incarnation > old_incarnation
    await wait_until(lambda: all(a.states().get("node-3") == ALIVE for a in cluster),
                     "node-3 alive again everywhere")
    assert all(a.routes.lookup("10.244.3.1").node == "node-3"  # type: ignore[union-attr]
               for a in cluster)


async def post(agent: Agent, kind: str, body: bytes) -> int:
    async with aiohttp.ClientSession() as s, \
            s.post(f"http://{agent.address}/gossip/v1/{kind}", data=io.BytesIO(body)) as resp:
        await resp.read()
        return resp.status


async def test_bad_messages_are_rejected_logged_and_change_nothing(
        cluster: list[Agent]) -> None:
    target = cluster[0]
    await wait_until(lambda: all(table(a) == table(target) for a in cluster), "convergence")
    before = table(target)
    # A route for a node that does not exist, signed with the wrong key: must not land.
    evil = Updates((Entry("evil", "10.244.99.0/24", "127.0.0.1:1", 2**40, 0, "alive"),))
    forged, _ = seal(evil, key=derive_key(b"another-cluster-secret-xxxxxxxx", "gossip"),
                     sender="node-2", receiver="node-1", now=time.time())
    good, _ = seal(Ping("node-1"), key=KEY, sender="node-2", receiver="node-1", now=time.time())
    stale, _ = seal(evil, key=KEY, sender="node-2", receiver="node-1",
                    now=time.time() - SETTINGS.max_clock_skew_s - 60)
    other, _ = seal(evil, key=KEY, sender="node-2", receiver="node-3", now=time.time())
    with capture_logs() as logs:
        assert await post(target, "updates", forged) == 401
        assert await post(target, "ping", good) == 200
        assert await post(target, "ping", good) == 401          # replayed
        assert await post(target, "updates", stale) == 401
        assert await post(target, "updates", other) == 401      # meant for node-3
        assert await post(target, "updates", forged[:-7]) == 401  # truncated
        assert await post(target, "updates", b"\x00garbage" * 20) in (400, 401)
        assert await post(target, "updates", b"") == 400
        assert await post(target, "updates", b"x" * (2 << 20)) == 413
        assert await post(target, "nonsense", b"{}") == 404
    reasons = {e["reason"] for e in logs if e["event"] == "gossip.rejected"}
    assert {"bad-mac", "replayed", "stale", "wrong-receiver", "truncated",
            "too-large"} <= reasons
    assert all(e["log_level"] == "warning" for e in logs if e["event"] == "gossip.rejected")
    assert table(target) == before
    assert target.routes.get("evil") is None
    # ...and the service keeps working: a fresh, valid ping is answered.
    fresh, _ = seal(Ping("node-1"), key=KEY, sender="node-2", receiver="node-1",
                    now=time.time())
    assert await post(target, "ping", fresh) == 200


async def test_rejections_are_rate_limited(cluster: list[Agent]) -> None:
    with capture_logs() as logs:
        for _ in range(50):
            assert await post(cluster[1], "updates", b"0" * 64 + b".{}") == 401
    assert len([e for e in logs if e["event"] == "gossip.rejected"]) == 1
