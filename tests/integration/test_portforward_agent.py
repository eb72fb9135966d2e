"""The agent's port-forward endpoint on a real socket: one WebSocket per forwarded connection,
into the pod's own 127.0.0.1 (agents/portforward_server.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from agents.netstack import NodeNetwork, PodNet
from agents.portforward_server import PortForwardEndpoint

POD_IP = "10.244.1.5"


Agent = tuple[str, PodNet, list[bytes], web.AppRunner]


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    node = NodeNetwork("node-1", "10.244.1.0/24")
    net = node.attach(POD_IP, pod="web", namespace="default", hostname="web")
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answers after the client's EOF: proves half-close reaches the pod.
        data = await reader.read()
        seen.append(writer.get_extra_info("peername")[0].encode())
        writer.write(b"got " + data)
        await writer.drain()
        writer.close()

    server = await net.start_server(handle, "127.0.0.1", 8080)   # localhost only, on purpose
    app = web.Application()
    endpoint = PortForwardEndpoint(
        lambda ns, name: net if (ns, name) == ("default", "web") else None)
    app.router.add_get("/pods/{namespace}/{name}/portforward", endpoint.handler)
    app.on_shutdown.append(endpoint.on_shutdown)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/pods/default/web/portforward", net, seen, runner
    finally:
        server.close()
        # aiohttp waits up to 60 s for open handlers; ours hang up at once.
        await asyncio.wait_for(runner.cleanup(), 10)
        node.detach(POD_IP)
        for _ in range(50):
            await asyncio.sleep(0)
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_bytes_reach_the_pods_localhost_with_half_close(
        agent: Agent) -> None:
    url, _, seen, _ = agent
    async with aiohttp.ClientSession() as http, http.ws_connect(url + "?port=8080") as ws:
        hello = json.loads((await ws.receive()).data)
        assert hello["connected"] is True and hello["flow"]
        await ws.send_bytes(b"ping")
        await ws.send_bytes(b"")                      # our side is done
        assert (await ws.receive()).data == b"got ping"
        assert (await ws.receive()).data == b""       # the pod closed its side
        assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE
    assert seen == [b"127.0.0.1"]


async def test_refused_port_in_kubelets_words(agent: Agent) -> None:
    url, _, _, _ = agent
    async with aiohttp.ClientSession() as http, http.ws_connect(url + "?port=81") as ws:
        hello = json.loads((await ws.receive()).data)
        assert hello == {"error": "failed to connect to localhost:81 inside the pod's network "
                                  "namespace: dial tcp4 127.0.0.1:81: connect: connection "
                                  "refused"}


async def test_hanging_up_ends_the_pod_connection(
        agent: Agent) -> None:
    url, net, _, _ = agent
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url + "?port=8080") as ws:
            assert json.loads((await ws.receive()).data)["connected"]
            await ws.send_bytes(b"half a request")
        # The fixture checks that no task is left behind; the pod's connection is gone too.
        for _ in range(100):
            if not net.connections():
                break
            await asyncio.sleep(0.01)
        assert net.connections() == []


@pytest.mark.parametrize("query, status, message", [
    ("?port=0", 400, "invalid port '0'"),
    ("?port=http", 400, "invalid port 'http'"),
    ("", 400, "invalid port ''"),
])
async def test_bad_requests(agent: Agent, query: str, status: int,
                            message: str) -> None:
    url, _, _, _ = agent
    async with aiohttp.ClientSession() as http, http.get(url + query) as resp:
        assert resp.status == status
        assert message in (await resp.json())["message"]
    async with aiohttp.ClientSession() as http, http.get(
            url.replace("/web/", "/other/") + "?port=80") as resp:
        assert resp.status == 404


async def test_an_open_connection_is_hung_up_when_the_agent_stops(agent: Agent) -> None:
    url, _, _, runner = agent
    async with aiohttp.ClientSession() as http, http.ws_connect(url + "?port=8080") as ws:
        assert json.loads((await ws.receive()).data)["connected"]
        # aiohttp would wait up to 60 s for this handler; the endpoint hangs up at once.
        await asyncio.wait_for(runner.cleanup(), 10)
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == aiohttp.WSCloseCode.GOING_AWAY
