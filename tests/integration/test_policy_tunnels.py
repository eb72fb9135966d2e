"""NetworkPolicy across a real tunnel (two in-process nodes on 127.0.0.1 WebSockets): a dropped
connect holds nothing once its caller gives up, an unanswered OPEN ends in ETIMEDOUT, and
--policy-reject answers at once."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

import agents.tunnels
from agents.cni.routes import Route, RouteTable
from agents.netstack import NodeNetwork
from agents.policy import Enforcer, PolicyState
from agents.tunnels import TunnelManager

SECRET = b"policy-tunnel-test-secret"
SERVER_IP, CLIENT_IP = "10.244.1.5", "10.244.2.5"


@dataclass
class Node:
    network: NodeNetwork
    routes: RouteTable
    tunnels: TunnelManager
    runner: web.AppRunner
    address: str
    enforcer: Enforcer


def shared_state() -> PolicyState:
    state = PolicyState()
    state.replace("Node", [
        {"metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.244.1.0/24"}},
        {"metadata": {"name": "node-2"}, "spec": {"podCIDR": "10.244.2.0/24"}}])
    state.replace("Pod", [
        {"metadata": {"namespace": "x", "name": "server", "labels": {"app": "server"}},
         "spec": {"nodeName": "node-1"}, "status": {"podIP": SERVER_IP, "phase": "Running"}},
        {"metadata": {"namespace": "x", "name": "client", "labels": {"app": "client"}},
         "spec": {"nodeName": "node-2"}, "status": {"podIP": CLIENT_IP, "phase": "Running"}}])
    state.replace("NetworkPolicy", [{"metadata": {"namespace": "x", "name": "deny"},
                                     "spec": {"podSelector": {"matchLabels": {"app": "server"}},
                                              "policyTypes": ["Ingress"]}}])
    return state


async def start(name: str, cidr: str, state: PolicyState) -> Node:
    network = NodeNetwork(name, cidr)
    enforcer = Enforcer(state, name)
    network.policy = enforcer
    routes = RouteTable(name)
    tunnels = TunnelManager(name, SECRET, routes, network)
    app = web.Application()
    tunnels.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return Node(network, routes, tunnels, runner, f"{host}:{port}", enforcer)


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[Node, Node]]:
    state = shared_state()
    server = await start("node-1", "10.244.1.0/24", state)
    client = await start("node-2", "10.244.2.0/24", state)
    server.routes.update(Route("10.244.2.0/24", "node-2", client.address))
    client.routes.update(Route("10.244.1.0/24", "node-1", server.address))
    server_net = server.network.attach(SERVER_IP, pod="server", namespace="x",
                                       hostname="server")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        writer.close()

    await server_net.start_server(answer, None, 80)
    client.network.attach(CLIENT_IP, pod="client", namespace="x", hostname="client")
    yield server, client
    for node in (server, client):
        for pod in node.network.pods():
            node.network.detach(pod.ip)
        await node.tunnels.close()
        await node.runner.cleanup()
    for _ in range(20):
        await asyncio.sleep(0)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


def open_streams(node: Node) -> int:
    return sum(len(t.session) for t in node.tunnels._live())


async def test_an_abandoned_dropped_connect_leaves_nothing_behind(
        nodes: tuple[Node, Node]) -> None:
    server, client = nodes
    net = client.network.pod(CLIENT_IP)
    assert net is not None
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(net.open_connection(SERVER_IP, 80), 0.3)
    # The caller gave up: its agent reset the half-open stream, the server's agent forgot it.
    await until(lambda: open_streams(client) == 0 and open_streams(server) == 0,
                "no stream left on either side")
    assert net.connections() == [] and client.tunnels.streams() == []
    assert len(server.tunnels._dropped) == 1     # only a timer, which ends by itself


async def test_an_unanswered_open_ends_in_etimedout(nodes: tuple[Node, Node],
                                                    monkeypatch: Any) -> None:
    monkeypatch.setattr(agents.tunnels, "DROP_TIMEOUT_S", 0.05)
    server, client = nodes
    net = client.network.pod(CLIENT_IP)
    assert net is not None
    with pytest.raises(OSError) as info:
        await asyncio.wait_for(net.open_connection(SERVER_IP, 80), 10)
    assert info.value.errno == errno.ETIMEDOUT
    await until(lambda: not server.tunnels._dropped, "the drop timer is gone")
    assert open_streams(server) == 0


async def test_reject_refuses_across_the_tunnel_and_allowed_traffic_flows(
        nodes: tuple[Node, Node]) -> None:
    server, client = nodes
    server.enforcer.reject = True
    net = client.network.pod(CLIENT_IP)
    assert net is not None
    with pytest.raises(ConnectionRefusedError):
        await net.open_connection(SERVER_IP, 80)
    server.enforcer.state.replace("NetworkPolicy", [])
    reader, writer = await net.open_connection(SERVER_IP, 80)
    assert await reader.readline() == b"hello\n"
    writer.close()
