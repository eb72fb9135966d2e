"""A NodePort's real socket joined to a pod's virtual stream, in one process: a real TCP
client on 127.0.0.1, the agent's NodePort listener, and a pod server in a `NodeNetwork`.
Bytes both ways, backpressure on a large transfer, half-close, the source each policy gives
the backend, and a reset when no endpoint can take the connection."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from agents.netstack import NodeNetwork, StreamPeer, unreachable
from agents.nodeports import NodePorts

POD_IP = "10.244.1.2"


class NoTunnels:
    """Nothing is on another node here."""

    async def open_stream(self, src: Any, dst: Any, local: StreamPeer, flow: str) -> StreamPeer:
        raise unreachable()

    def send_datagram(self, src: Any, dst: Any, data: bytes, flow: str) -> None:
        raise unreachable()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service(name: str, node_port: int, policy: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": name},
            "spec": {"type": "NodePort", "clusterIP": "10.96.1.1",
                     "externalTrafficPolicy": policy,
                     "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080,
                                "nodePort": node_port}]}}


def endpoints(name: str, node: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": f"{name}-1",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [POD_IP], "nodeName": node}]}


async def serve_pod(network: NodeNetwork) -> list[tuple[str, int]]:
    """A pod that records each client's address, then echoes the SHA-256 of everything it
    reads until EOF, slowly at first (so the sender must be held back)."""
    pod = network.attach(POD_IP, pod="p", namespace="default", hostname="p")
    peers: list[tuple[str, int]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername"))
        await asyncio.sleep(0.05)       # not reading yet: the NodePort's socket must wait
        digest = hashlib.sha256()
        while chunk := await reader.read(65536):
            digest.update(chunk)
        writer.write(digest.hexdigest().encode())
        await writer.drain()
        writer.close()

    await pod.start_server(handle, "0.0.0.0", 8080)
    return peers


@pytest.fixture
async def ports() -> AsyncIterator[tuple[NodePorts, NodeNetwork]]:
    network = NodeNetwork("node-1", "10.244.1.0/24")
    node_ports = NodePorts(cast(Any, None), "node-1", "127.0.0.1", "10.244.1.0/24", network,
                           cast(Any, NoTunnels()))
    yield node_ports, network
    await node_ports.close()
    for pod in network.pods():
        network.detach(pod.ip)


async def start(node_ports: NodePorts, services: list[dict[str, Any]],
                slices: list[dict[str, Any]]) -> None:
    """What the informers would hold, then one reconcile (opens the listeners)."""
    node_ports.services.items = {("default", s["metadata"]["name"]): s for s in services}
    node_ports.slices.items = {("default", s["metadata"]["name"]): s for s in slices}
    await node_ports.reconcile()


async def send_all(port: int, payload: bytes) -> tuple[bytes, tuple[str, int]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    me = writer.get_extra_info("sockname")
    writer.write(payload)
    await writer.drain()
    writer.write_eof()          # half-close: the pod answers after our EOF
    answer = await reader.read()
    writer.close()
    return answer, (me[0], me[1])


async def test_cluster_policy_carries_bytes_and_translates_the_source(
        ports: tuple[NodePorts, NodeNetwork]) -> None:
    node_ports, network = ports
    peers = await serve_pod(network)
    port = free_port()
    await start(node_ports, [service("web", port, "Cluster")], [endpoints("web", "node-2")])
    payload = bytes(range(256)) * 32768     # 8 MiB: far more than any buffer on the way
    answer, _ = await send_all(port, payload)
    assert answer.decode() == hashlib.sha256(payload).hexdigest()
    assert peers[0][0] == "10.244.1.1"      # the node's gateway, not the client


async def test_local_policy_keeps_the_client_address(
        ports: tuple[NodePorts, NodeNetwork]) -> None:
    node_ports, network = ports
    peers = await serve_pod(network)
    port = free_port()
    await start(node_ports, [service("web", port, "Local")], [endpoints("web", "node-1")])
    answer, me = await send_all(port, b"hello")
    assert answer.decode() == hashlib.sha256(b"hello").hexdigest()
    assert peers == [me]


async def test_refused_without_a_usable_endpoint_then_served(
        ports: tuple[NodePorts, NodeNetwork]) -> None:
    """kube-proxy REJECTs a NodePort without endpoints: the port is held but not listening."""
    node_ports, network = ports
    await serve_pod(network)
    port = free_port()
    # Local, and the only endpoint is on node-2: this node has none to give.
    await start(node_ports, [service("web", port, "Local")], [endpoints("web", "node-2")])
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    with socket.socket() as other, pytest.raises(OSError):
        other.bind(("127.0.0.1", port))     # still ours: nobody else can take it
    await start(node_ports, [service("web", port, "Local")], [endpoints("web", "node-1")])
    answer, _ = await send_all(port, b"now")
    assert answer.decode() == hashlib.sha256(b"now").hexdigest()
    await start(node_ports, [], [])
    assert node_ports.listeners == {}
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_an_endpoint_that_cannot_be_reached_resets(
        ports: tuple[NodePorts, NodeNetwork]) -> None:
    node_ports, _ = ports
    port = free_port()
    # Ready in its slice, but no pod has that address here (it just went away).
    await start(node_ports, [service("web", port, "Cluster")], [endpoints("web", "node-1")])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    with pytest.raises(ConnectionResetError):     # a reset, not an orderly EOF (b"")
        await reader.read()
    writer.close()
