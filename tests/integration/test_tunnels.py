"""Pod traffic between nodes through the tunnels: real WebSockets on real 127.0.0.1 sockets.

Each node is a NodeNetwork with its own TunnelManager and aiohttp server, in this one process
(the multi-process cluster tests live elsewhere). Routes are put in each node's RouteTable by
hand, as gossip would.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import random
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

from agents.cni.routes import DEAD, SUSPECT, Route, RouteTable
from agents.images import ContainerContext, PodInfo
from agents.images import echo as echo_image
from agents.netstack import HIGH_WATER, NodeNetwork, PodNet
from agents.toolbox import ExecTarget, run_command
from agents.tunnels import TunnelManager
from podnet import tunnel as proto
from podnet.auth import derive_key

SECRET = b"integration-test-cluster-secret"
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class Node:
    name: str
    cidr: str
    network: NodeNetwork
    routes: RouteTable
    tunnels: TunnelManager
    runner: web.AppRunner
    address: str

    def pod(self, host: int, name: str) -> PodNet:
        ip = f"{self.cidr.rsplit('.', 1)[0]}.{host}"
        return self.network.attach(ip, pod=name, namespace="default", hostname=name)

    def route(self, state: str = "alive") -> Route:
        return Route(self.cidr, self.name, self.address, state=state)

    @property
    def gateway(self) -> str:
        return f"{self.cidr.rsplit('.', 1)[0]}.1"


@dataclass
class Cluster:
    nodes: list[Node] = field(default_factory=list)

    async def add(self, name: str, cidr: str, *, secret: bytes = SECRET) -> Node:
        network = NodeNetwork(name, cidr)
        routes = RouteTable(name)
        tunnels = TunnelManager(name, secret, routes, network)
        app = web.Application()
        tunnels.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        node = Node(name, cidr, network, routes, tunnels, runner, f"{host}:{port}")
        self.nodes.append(node)
        return node

    def mesh(self) -> None:
        """Every node routes to every other one."""
        for node in self.nodes:
            for other in self.nodes:
                if other is not node:
                    node.routes.update(other.route())

    async def stop(self, node: Node) -> None:
        for pod in node.network.pods():
            node.network.detach(pod.ip)
        await node.tunnels.close()
        await node.runner.cleanup()
        self.nodes.remove(node)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    running = Cluster()
    yield running
    for node in list(running.nodes):
        await running.stop(node)
    for _ in range(20):
        await asyncio.sleep(0)
    # Nothing the tunnels started may outlive them.
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


@pytest.fixture
async def pair(cluster: Cluster) -> tuple[Node, Node]:
    n1 = await cluster.add("node-1", "10.244.1.0/24")
    n2 = await cluster.add("node-2", "10.244.2.0/24")
    cluster.mesh()
    return n1, n2


async def until(condition: Callable[[], bool], what: str, rounds: int = 2000) -> None:
    """Wait for a condition that depends on real sockets (bounded, never a timing assertion)."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy everything back, then close after the peer's EOF."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def closed(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


# -- streams


async def test_cross_node_tcp_keeps_the_client_pod_ip_both_ways(pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    a, b = n1.pod(2, "a"), n2.pod(2, "b")
    seen: list[Any] = []

    async def who(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peername"))
        writer.write(f"{writer.get_extra_info('sockname')}".encode())
        await writer.drain()
        writer.close()

    for server, client in ((b, a), (a, b)):
        listener = await server.start_server(who, port=8080)
        reader, writer = await client.open_connection(server.ip, 8080)
        assert await reader.read() == str((server.ip, 8080)).encode()
        assert seen[-1] == writer.get_extra_info("sockname")
        assert seen[-1][0] == client.ip          # no NAT: the pod's own address
        await closed(writer)
        listener.close()
    assert [peer for peer, _, _ in n1.tunnels.tunnels()] == ["node-2", "node-2"]  # out + in


def echo_context(net: PodNet, stdout: Any) -> ContainerContext:
    info = PodInfo(name="echo", namespace="default", ip=net.ip, node=net.node, hostname="echo")
    return ContainerContext(name="echo", args=[], env={}, ports=[], pod=info, net=net,
                            log=structlog.get_logger(), stdout=stdout)


class Sink:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def target(net: PodNet, node: Node) -> ExecTarget:
    return ExecTarget(net=net, pod=net.pod, namespace=net.namespace, node=node.name,
                      pod_ip=net.ip, hostname=net.hostname,
                      routes=[("default", f"via {node.gateway} dev eth0")])


async def run(net: PodNet, node: Node, *argv: str) -> tuple[int, str, str]:
    out, err = bytearray(), bytearray()
    code = await run_command(target(net, node), list(argv), None, out.extend, err.extend)
    return code, out.decode(), err.decode()


async def test_echo_image_across_nodes_sees_the_caller_pod_ip(pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    client, server = n1.pod(7, "client"), n2.pod(3, "echo")
    stdout = Sink()
    task = asyncio.create_task(echo_image.run(echo_context(server, stdout)))
    try:
        await until(lambda: any(lst.port == 8080 for lst in server.listeners()), "echo listens")
        code, out, err = await run(client, n1, "curl", "-s", f"http://{server.ip}:8080/hi")
        assert (code, err) == (0, "")
        answer = json.loads(out)
        assert answer["podIP"] == server.ip
        assert answer["client"].startswith(f"{client.ip}:")
        assert answer["path"] == "/hi"
        assert stdout.text.startswith(f"{client.ip}:")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.errors: list[Exception] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


async def test_udp_both_ways_with_the_source_address(pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    a, b = n1.pod(2, "a"), n2.pod(2, "b")
    ta, pa = await a.create_datagram_endpoint(Datagrams, local_addr=(None, 5000))
    tb, pb = await b.create_datagram_endpoint(Datagrams, local_addr=(None, 5353))
    try:
        ta.sendto(b"query", (b.ip, 5353))
        data, addr = await pb.got.get()
        assert (data, addr) == (b"query", (a.ip, 5000))
        tb.sendto(b"answer", addr)
        assert await pa.got.get() == (b"answer", (b.ip, 5353))
        ta.sendto(b"x" * 60000, (b.ip, 5353))       # a big one, one datagram still
        assert await pb.got.get() == (b"x" * 60000, (a.ip, 5000))
        ta.sendto(b"lost", ("10.244.9.9", 53))
        await until(lambda: bool(pa.errors), "an error for the unroutable send")
        assert isinstance(pa.errors[0], OSError) and pa.errors[0].errno == errno.EHOSTUNREACH
    finally:
        ta.close()
        tb.close()


async def test_200_concurrent_streams_deliver_every_byte(pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    client, server = n1.pod(2, "client"), n2.pod(2, "server")
    listener = await server.start_server(echo, port=9000)
    rng = random.Random(200)
    payloads = [rng.randbytes(rng.randrange(1, 300_000)) for _ in range(200)]

    async def one(payload: bytes) -> tuple[str, str]:
        reader, writer = await client.open_connection(server.ip, 9000)
        back = hashlib.sha256()

        async def receive() -> None:
            while data := await reader.read(65536):
                back.update(data)

        receiving = asyncio.create_task(receive())
        view = memoryview(payload)
        for start in range(0, len(payload), 50_000):
            writer.write(view[start:start + 50_000])
            await writer.drain()
        writer.write_eof()
        await receiving
        await closed(writer)
        return hashlib.sha256(payload).hexdigest(), back.hexdigest()

    results = await asyncio.gather(*(one(p) for p in payloads))
    assert all(sent == received for sent, received in results)
    listener.close()
    await until(lambda: not n1.tunnels.streams() and not n2.tunnels.streams(),
                "every stream forgotten")


async def test_a_stalled_reader_does_not_block_another_stream(pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    client, server = n1.pod(2, "client"), n2.pod(2, "server")
    stalled_reader: list[asyncio.StreamReader] = []
    release = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled_reader.append(reader)
        await release.wait()
        total = 0
        while data := await reader.read(1 << 20):
            total += len(data)
        writer.write(str(total).encode())
        await writer.drain()
        writer.close()

    await server.start_server(stall, port=9000)
    await server.start_server(echo, port=9001)
    reader1, writer1 = await client.open_connection(server.ip, 9000)
    sent = 0
    stop = False
    chunk = b"s" * 65536

    async def flood() -> None:
        nonlocal sent
        while not stop:
            writer1.write(chunk)
            sent += len(chunk)
            await writer1.drain()
        writer1.write_eof()

    flooding = asyncio.create_task(flood())
    # The stalled stream fills its window and the writer's buffer, then drain() blocks.
    await until(lambda: writer1.transport.get_write_buffer_size() > HIGH_WATER,
                "the stalled writer is paused")
    paused_at = sent
    window = n1.tunnels.window
    assert paused_at < 2 * window + 4 * HIGH_WATER       # bounded, not growing with time

    # Meanwhile another stream on the same tunnel moves 4 MiB both ways.
    reader2, writer2 = await client.open_connection(server.ip, 9001)
    payload = random.Random(2).randbytes(4 << 20)

    async def send_all() -> None:
        writer2.write(payload)
        await writer2.drain()
        writer2.write_eof()

    sending = asyncio.create_task(send_all())
    assert await reader2.readexactly(len(payload)) == payload
    await sending
    await closed(writer2)

    assert sent == paused_at                                # still stalled, still bounded
    [stalled] = [s for s in n1.tunnels.streams() if s.dst == (server.ip, 9000)]
    assert stalled.credit == 0
    [far_end] = [s for s in n2.tunnels.streams() if s.dst == (server.ip, 9000)]
    assert far_end.unread <= window

    stop = True
    release.set()       # the reader wakes up: everything that was held back arrives
    await flooding
    assert int(await reader1.read()) == sent
    await closed(writer1)


async def test_refused_and_unreachable(cluster: Cluster, pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    client = n1.pod(2, "client")
    n2.pod(2, "server")
    with pytest.raises(ConnectionRefusedError):
        await client.open_connection("10.244.2.2", 81)
    for ip in ("10.244.2.99",       # in node-2's podCIDR, no such pod: node-2 says so
               "10.244.9.9",        # no route at all
               "10.96.0.10"):       # a Service IP: not routed by the tunnels (yet)
        with pytest.raises(OSError) as caught:
            await client.open_connection(ip, 80)
        assert caught.value.errno == errno.EHOSTUNREACH, ip
    # A route to an agent that does not answer: unreachable too, never a hang.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_address = f"127.0.0.1:{sock.getsockname()[1]}"     # bound, not listening
    n1.routes.update(Route("10.244.5.0/24", "node-5", dead_address))
    with capture_logs() as logs, pytest.raises(OSError) as caught:
        await client.open_connection("10.244.5.2", 80)
    assert caught.value.errno == errno.EHOSTUNREACH
    assert any(e["event"] == "tunnel.dial_failed" and e["peer"] == "node-5" for e in logs)


async def test_half_close_and_reset_propagate(pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    client, server = n1.pod(2, "client"), n2.pod(2, "server")
    ends: asyncio.Queue[Streams] = asyncio.Queue()

    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()          # until the client's FIN
        writer.write(b"got " + request)
        await writer.drain()
        writer.close()

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ends.put_nowait((reader, writer))

    await server.start_server(answer_after_eof, port=7000)
    await server.start_server(keep, port=7001)

    reader, writer = await client.open_connection(server.ip, 7000)
    writer.write(b"question")
    writer.write_eof()                          # half-close: we still read the answer
    assert await reader.read() == b"got question"
    await closed(writer)

    reader, writer = await client.open_connection(server.ip, 7001)
    _, far_writer = await ends.get()
    far_writer.transport.abort()                # the server resets
    with pytest.raises(ConnectionResetError):
        await reader.read()
    await closed(writer)

    reader, writer = await client.open_connection(server.ip, 7001)
    far_reader, _ = await ends.get()
    writer.transport.abort()                    # the client resets
    with pytest.raises(ConnectionResetError):
        await far_reader.read()
    await until(lambda: not n1.tunnels.streams() and not n2.tunnels.streams(),
                "reset streams forgotten")


# -- routes and nodes coming and going


async def test_dead_route_resets_streams_and_fails_fast_then_recovers(
        pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    client, server = n1.pod(2, "client"), n2.pod(2, "server")
    await server.start_server(echo, port=9000)
    reader, writer = await client.open_connection(server.ip, 9000)
    writer.write(b"hi")
    assert await reader.readexactly(2) == b"hi"

    n1.routes.update(n2.route(SUSPECT))         # suspect: traffic still flows
    writer.write(b"still")
    assert await reader.readexactly(5) == b"still"

    with capture_logs() as logs:
        n1.routes.update(n2.route(DEAD))
    with pytest.raises(ConnectionResetError):
        await reader.read()
    assert any(e["event"] == "tunnel.closed" and e["reason"] == "route dead" for e in logs)
    with pytest.raises(OSError) as caught:
        await client.open_connection(server.ip, 9000)
    assert caught.value.errno == errno.EHOSTUNREACH
    await closed(writer)

    n1.routes.update(n2.route())                # the node is back: dialed again on use
    reader, writer = await client.open_connection(server.ip, 9000)
    writer.write(b"again")
    assert await reader.readexactly(5) == b"again"
    await closed(writer)


async def test_restarted_agent_at_a_new_address(cluster: Cluster,
                                                pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    client = n1.pod(2, "client")
    server = n2.pod(2, "server")
    await server.start_server(echo, port=9000)
    reader, writer = await client.open_connection(server.ip, 9000)
    await cluster.stop(n2)                      # the agent goes away: its WebSocket drops
    with pytest.raises(ConnectionResetError):
        await reader.read()
    await closed(writer)

    n2b = await cluster.add("node-2", "10.244.2.0/24")
    await n2b.pod(2, "server").start_server(echo, port=9000)
    n2b.routes.update(n1.route())
    n1.routes.update(n2b.route())               # gossip brings the new address
    reader, writer = await client.open_connection(server.ip, 9000)
    writer.write(b"new")
    assert await reader.readexactly(3) == b"new"
    await closed(writer)


# -- authentication


async def raw_ws(node: Node, session: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
    return await session.ws_connect(f"http://{node.address}/tunnel")


async def handshake(node: Node, http: aiohttp.ClientSession,
                    key: bytes) -> tuple[aiohttp.ClientWebSocketResponse, proto.Session]:
    ws = await raw_ws(node, http)
    raw, hello = proto.make_hello(key, "intruder", node.name, now=time.time())
    await ws.send_bytes(raw)
    msg = await ws.receive()
    keys = proto.accept_welcome(key, msg.data, hello, now=time.time())
    return ws, proto.Session(keys, dialer=True)


async def test_handshakes_with_a_wrong_secret_or_replayed_are_refused(
        cluster: Cluster, pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    server = n2.pod(2, "server")
    await server.start_server(echo, port=9000)
    client = n1.pod(2, "client")
    reader, writer = await client.open_connection(server.ip, 9000)    # a session in use

    async with aiohttp.ClientSession() as http:
        with capture_logs() as logs:
            ws = await raw_ws(n2, http)
            forged, _ = proto.make_hello(derive_key(b"wrong secret", "tunnel"), "x", "node-2",
                                         now=time.time())
            await ws.send_bytes(forged)
            assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE
            await ws.close()

            key = derive_key(SECRET, "tunnel")
            hello, _ = proto.make_hello(key, "node-9", "node-2", now=time.time())
            first = await raw_ws(n2, http)
            await first.send_bytes(hello)
            assert (await first.receive()).type == aiohttp.WSMsgType.BINARY   # a WELCOME
            again = await raw_ws(n2, http)
            await again.send_bytes(hello)                                      # replayed
            assert (await again.receive()).type == aiohttp.WSMsgType.CLOSE
            await again.close()
            await first.close()

            garbage = await raw_ws(n2, http)
            await garbage.send_str("hello?")
            assert (await garbage.receive()).type == aiohttp.WSMsgType.CLOSE
            await garbage.close()

    reasons = [e["reason"] for e in logs if e["event"] == "tunnel.rejected"]
    assert reasons == ["bad handshake MAC", "replayed handshake", "handshake expected"]

    # A node configured with another secret cannot reach anyone: unreachable, and logged.
    n3 = await cluster.add("node-3", "10.244.3.0/24", secret=b"not the cluster secret")
    n3.routes.update(n2.route())
    stranger = n3.pod(2, "stranger")
    with capture_logs() as logs, pytest.raises(OSError) as caught:
        await stranger.open_connection(server.ip, 9000)
    assert caught.value.errno == errno.EHOSTUNREACH
    assert any(e["event"] == "tunnel.rejected" and e["reason"] == "bad handshake MAC"
               for e in logs)

    writer.write(b"unharmed")                   # the agent kept serving the real session
    assert await reader.readexactly(8) == b"unharmed"
    await closed(writer)


async def test_garbage_or_forged_records_end_only_that_session(
        pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    server = n2.pod(2, "server")
    accepted: asyncio.Queue[Streams] = asyncio.Queue()

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.put_nowait((reader, writer))

    await server.start_server(keep, port=9000)
    client = n1.pod(2, "client")
    _, writer = await client.open_connection(server.ip, 9000)
    real_far_reader, _ = await accepted.get()
    key = derive_key(SECRET, "tunnel")

    async with aiohttp.ClientSession() as http:
        with capture_logs() as logs:
            ws, session = await handshake(n2, http, key)
            await ws.send_bytes(b"\x00" * 40)                   # garbage after the handshake
            assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE,
                                                 aiohttp.WSMsgType.CLOSED)
            await ws.close()

            # An authentic session opens a stream to the pod, then a forged record arrives.
            ws, session = await handshake(n2, http, key)
            session.open(("10.244.1.77", 40000), (server.ip, 9000), "forged-flow")
            await ws.send_bytes(session.take_output() or b"")
            reply = await ws.receive()
            assert [type(e) for e in session.receive(reply.data)] == [proto.OpenOk]
            far_reader, _ = await accepted.get()
            session.send(1, b"legit")
            record = bytearray(session.take_output() or b"")
            record[-1] ^= 0xFF
            await ws.send_bytes(bytes(record))
            with pytest.raises(ConnectionResetError):   # its stream is reset, nothing else
                await far_reader.read()
            await ws.close()

    rejected = [e for e in logs if e["event"] == "tunnel.rejected"]
    assert [e["reason"] for e in rejected] == ["bad record MAC", "bad record MAC"]
    assert rejected[1]["streams"] == 1

    writer.write(b"fine")                       # the real session is untouched
    assert await real_far_reader.readexactly(4) == b"fine"
    await closed(writer)


# -- ICMP echo


async def test_ping_across_nodes(pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    a, a2, b = n1.pod(2, "a"), n1.pod(3, "a2"), n2.pod(2, "b")
    assert await a.ping(b.ip, seq=1, timeout_s=5) > 0
    assert await b.ping(a.ip, seq=1, timeout_s=5) > 0
    assert a.echo_ttl(b.ip) == 63 and a.echo_ttl(a2.ip) == 64
    with pytest.raises(OSError) as caught:
        await a.ping("10.244.9.9", seq=1, timeout_s=5)
    assert caught.value.errno == errno.EHOSTUNREACH
    with pytest.raises(TimeoutError):
        await a.ping("10.244.2.99", seq=1, timeout_s=0.2)   # routed, but nobody answers


REPLY = re.compile(r"^64 bytes from (\S+): icmp_seq=(\d+) ttl=(\d+) time=\d+\.\d{3} ms$")


async def test_toolbox_ping_output(pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    a, a2, b = n1.pod(2, "a"), n1.pod(3, "a2"), n2.pod(2, "b")

    code, out, _ = await run(a, n1, "ping", "-c", "3", "-i", "0.01", b.ip)
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == f"PING {b.ip} ({b.ip}) 56(84) bytes of data."
    replies = [REPLY.match(line) for line in lines[1:4]]
    assert [(m.group(1), m.group(2), m.group(3)) for m in replies if m] == \
        [(b.ip, str(i), "63") for i in (1, 2, 3)]
    assert lines[4:6] == ["", f"--- {b.ip} ping statistics ---"]
    assert re.match(r"^3 packets transmitted, 3 received, 0% packet loss, time \d+ms$", lines[6])
    assert re.match(r"^rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms$", lines[7])

    code, out, _ = await run(a, n1, "ping", "-c", "1", a2.ip)
    assert code == 0 and f"from {a2.ip}: icmp_seq=1 ttl=64 " in out

    code, out, _ = await run(a, n1, "ping", "-c", "2", "-q", "-i", "0.01", b.ip)
    assert code == 0 and "bytes from" not in out and "2 received" in out

    code, out, _ = await run(a, n1, "ping", "-c", "1", "10.244.9.9")
    assert code == 1
    assert "From 10.244.1.1 icmp_seq=1 Destination Host Unreachable" in out
    assert "1 packets transmitted, 0 received, +1 errors, 100% packet loss" in out

    code, out, _ = await run(a, n1, "ping", "-c", "2", "-i", "0.01", "-W", "0.2", "10.244.2.99")
    assert code == 1
    assert "2 packets transmitted, 0 received, 100% packet loss" in out

    code, _, err = await run(a, n1, "ping", "-c", "1", "no-such-host")
    assert code == 2 and err == "ping: no-such-host: Name or service not known\n"


async def test_a_session_out_of_stream_ids_is_replaced_without_harm(
        pair: tuple[Node, Node]) -> None:
    n1, n2 = pair
    client, server = n1.pod(2, "client"), n2.pod(2, "server")
    await server.start_server(echo, port=9000)
    old_reader, old_writer = await client.open_connection(server.ip, 9000)
    peer = "node-2"
    old = n1.tunnels._dialed[peer]
    old.session._next_sid = proto.MAX_SID + 1      # as after 2**31 streams
    with capture_logs() as logs:
        reader, writer = await client.open_connection(server.ip, 9000)
    assert [e["event"] for e in logs if e["event"].startswith("tunnel.r")] == ["tunnel.retired"]
    assert n1.tunnels._dialed[peer] is not old
    for r, w in ((reader, writer), (old_reader, old_writer)):    # both streams work
        w.write(b"ok")
        assert await r.readexactly(2) == b"ok"
    await closed(writer)
    await closed(old_writer)
    await until(lambda: old.closed == "retired", "the retired tunnel closes with its last stream")
