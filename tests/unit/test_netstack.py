"""The pod network stack: virtual streams and datagrams with the kernel's semantics."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import pytest
from aiohttp import web

from agents.netstack import (
    EPHEMERAL_FIRST,
    EPHEMERAL_LAST,
    NodeNetwork,
    PodNet,
    StreamPeer,
)

A_IP, B_IP = "10.244.1.2", "10.244.1.3"


@pytest.fixture
async def node() -> AsyncIterator[NodeNetwork]:
    network = NodeNetwork("node-1", "10.244.1.0/24")
    yield network
    for pod in network.pods():
        network.detach(pod.ip)
    await settle()
    # Nothing the stack did may outlive the test.
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


@pytest.fixture
def a(node: NodeNetwork) -> PodNet:
    return node.attach(A_IP, pod="a", namespace="default", hostname="a")


@pytest.fixture
def b(node: NodeNetwork) -> PodNet:
    return node.attach(B_IP, pod="b", namespace="default", hostname="b")


async def settle(rounds: int = 50) -> None:
    """Let queued callbacks run (delivery is loop.call_soon based, so this is enough)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool], rounds: int = 10_000) -> None:
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_stream_echo_and_addresses(a: PodNet, b: PodNet) -> None:
    seen: list[tuple[object, object]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((writer.get_extra_info("peername"), writer.get_extra_info("sockname")))
        await echo_handler(reader, writer)

    async with await b.start_server(handler, port=80) as server:
        assert server.sockets[0].getsockname() == ("0.0.0.0", 80)
        reader, writer = await a.open_connection(B_IP, 80)
        writer.write(b"hello pod")
        assert await reader.readexactly(9) == b"hello pod"
        local = writer.get_extra_info("sockname")
        # No NAT: each side sees the other's pod IP and port.
        assert local[0] == A_IP and EPHEMERAL_FIRST <= local[1] <= EPHEMERAL_LAST
        assert writer.get_extra_info("peername") == (B_IP, 80)
        assert writer.get_extra_info("socket") is None
        assert seen == [(local, (B_IP, 80))]
        assert ("tcp", local, (B_IP, 80), "ESTAB") in a.connections()
        writer.close()
        await writer.wait_closed()
        assert await reader.read() == b""


async def test_half_close(a: PodNet, b: PodNet) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()          # until the client's EOF
        writer.write(data.upper())          # still allowed: only one direction is closed
        writer.close()

    async with await b.start_server(handler, port=7):
        reader, writer = await a.open_connection(B_IP, 7)
        assert writer.can_write_eof()
        writer.write(b"abc")
        writer.write(b"def")
        writer.write_eof()
        assert await reader.read() == b"ABCDEF"
        writer.close()
        await writer.wait_closed()


async def test_refused_unreachable_and_in_use(node: NodeNetwork, a: PodNet, b: PodNet) -> None:
    with pytest.raises(ConnectionRefusedError) as refused:
        await a.open_connection(B_IP, 81)
    assert refused.value.errno == errno.ECONNREFUSED
    # In this node's podCIDR without a pod, elsewhere in the cluster, outside it: no route.
    for ip in ("10.244.1.99", "10.244.7.5", "192.0.2.1"):
        with pytest.raises(OSError) as unreachable:
            await a.open_connection(ip, 80)
        assert unreachable.value.errno == errno.EHOSTUNREACH
    server = await b.start_server(echo_handler, port=80)
    for host in (None, "0.0.0.0", B_IP, "127.0.0.1"):
        with pytest.raises(OSError) as in_use:
            await b.start_server(echo_handler, host, 80)
        assert in_use.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as foreign:
        await b.start_server(echo_handler, A_IP, 80)
    assert foreign.value.errno == errno.EADDRNOTAVAIL
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await a.open_connection(B_IP, 80)       # closed servers stop accepting
    # Nothing leaked: failed connects released their ephemeral ports.
    assert a.connections() == [] and b.listeners() == []


async def test_specific_bindings(a: PodNet, b: PodNet) -> None:
    """Loopback and pod-IP bindings are separate, like on a real host."""
    inside = await b.start_server(echo_handler, "127.0.0.1", 9000)
    outside = await b.start_server(echo_handler, B_IP, 9000)
    assert {(lst.host, lst.port) for lst in b.listeners()} == {
        ("127.0.0.1", 9000), (B_IP, 9000)}
    for pod, host in ((b, "localhost"), (a, B_IP), (b, B_IP)):
        reader, writer = await pod.open_connection(host, 9000)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        writer.close()
        await writer.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await a.open_connection("127.0.0.1", 9000)      # a's own loopback: nothing there
    for server in (inside, outside):
        server.close()
        await server.wait_closed()


async def test_localhost_is_shared_by_the_pods_containers(a: PodNet) -> None:
    """Two containers of one pod get the same PodNet: 127.0.0.1 reaches a sibling."""
    sidecar_net, app_net = a, a
    got: list[object] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(writer.get_extra_info("peername"))
        writer.write(await reader.readexactly(4))
        writer.close()

    async with await sidecar_net.start_server(handler, port=15000):
        for host in ("127.0.0.1", "localhost", A_IP, "a"):
            reader, writer = await app_net.open_connection(host, 15000)
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            writer.close()
            await writer.wait_closed()
    assert [peer[0] for peer in got] == ["127.0.0.1", "127.0.0.1", A_IP, A_IP]  # type: ignore[index]


async def test_backpressure_is_per_stream_and_bounded(a: PodNet, b: PodNet) -> None:
    limit, chunk = 2**16, 2**14
    release = asyncio.Event()
    stalled: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await reader.readexactly(1) == b"S":     # the stalled stream: stop reading
            stalled.append((reader, writer))
            await release.wait()
            total = hashlib.sha256()
            while data := await reader.read(limit):
                total.update(data)
            writer.write(total.hexdigest().encode())
            writer.close()
        else:
            await echo_handler(reader, writer)

    server = await b.start_server(handler, port=80, limit=limit)
    slow_reader, slow = await a.open_connection(B_IP, 80)
    sent = hashlib.sha256()
    counted = 0

    async def pump() -> None:
        nonlocal counted
        slow.write(b"S")
        while not release.is_set():
            data = bytes([counted % 251]) * chunk
            slow.write(data)
            sent.update(data)
            counted += len(data)
            await slow.drain()      # blocks while the reader is stalled

    pumping = asyncio.create_task(pump())
    # Stalled: the reader stopped reading, and the writer's buffer is over its high-water mark.
    def is_stalled() -> bool:
        server_side = cast(asyncio.Transport, stalled[0][1].transport) if stalled else None
        return (server_side is not None and not server_side.is_reading()
                and slow.transport.get_write_buffer_size() > 2**16)

    await until(is_stalled)
    before = counted
    # A second stream between the same two pods keeps flowing meanwhile.
    fast_reader, fast = await a.open_connection(B_IP, 80)
    fast.write(b"F")
    for i in range(200):
        fast.write(i.to_bytes(4, "big"))
        assert await fast_reader.readexactly(4) == i.to_bytes(4, "big")
    await settle()
    # The writer is parked in drain(): nothing more was sent, and what is in flight is bounded
    # by the reader's buffer (2 x limit) plus the writer's high-water mark and one write.
    assert counted == before and not pumping.done()
    assert slow.transport.get_write_buffer_size() > 0
    assert counted <= 2 * limit + 2 * (2**16 + chunk)
    release.set()
    await pumping
    slow.write_eof()
    assert await slow_reader.read() == sent.hexdigest().encode()
    for writer in (slow, fast):
        writer.close()
        await writer.wait_closed()
    server.close()
    await server.wait_closed()


async def test_abort_resets_the_peer(a: PodNet, b: PodNet) -> None:
    outcome: asyncio.Future[BaseException | bytes] = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            outcome.set_result(await reader.read(100) + await reader.read(100))
        except ConnectionResetError as exc:
            outcome.set_result(exc)
        writer.close()

    async with await b.start_server(handler, port=80):
        _, writer = await a.open_connection(B_IP, 80)
        writer.write(b"partial")
        await settle()
        writer.transport.abort()
        result = await outcome
        assert isinstance(result, ConnectionResetError) and result.errno == errno.ECONNRESET


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.eof = False
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def test_close_gives_eof_then_connection_lost(a: PodNet, b: PodNet) -> None:
    accepted: list[Recorder] = []

    def factory() -> Recorder:
        accepted.append(Recorder())
        return accepted[-1]

    async with await b.create_server(factory, port=80):
        transport, client = await a.create_connection(Recorder, B_IP, 80)
        transport.write(b"last words")
        transport.close()
        assert transport.is_closing()
        assert await client.lost is None
        server_side = accepted[0]
        assert await server_side.lost is None
        assert server_side.data == b"last words" and server_side.eof


async def test_detach_resets_connections_and_listeners(node: NodeNetwork, a: PodNet,
                                                       b: PodNet) -> None:
    accepted: list[Recorder] = []

    def factory() -> Recorder:
        accepted.append(Recorder())
        return accepted[-1]

    server = await b.create_server(factory, port=80)
    _, client = await a.create_connection(Recorder, B_IP, 80)
    await settle()
    node.detach(B_IP)
    assert isinstance(await client.lost, ConnectionResetError)
    assert await accepted[0].lost is None
    await server.wait_closed()
    assert not server.is_serving() and node.pod(B_IP) is None
    with pytest.raises(OSError) as gone:
        await a.open_connection(B_IP, 80)
    assert gone.value.errno == errno.EHOSTUNREACH
    with pytest.raises(OSError) as down:
        await b.open_connection(A_IP, 80)
    assert down.value.errno == errno.ENETDOWN


async def test_200_concurrent_streams_with_checksums(a: PodNet, b: PodNet) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        while data := await reader.read(4096):
            digest.update(data)
        writer.write(digest.digest())
        writer.close()

    async def one(i: int) -> None:
        reader, writer = await a.open_connection(B_IP, 80)
        payload = hashlib.sha256(str(i).encode()).digest() * (50 + i * 7)
        for start in range(0, len(payload), 1000):
            writer.write(payload[start:start + 1000])
            await writer.drain()
        writer.write_eof()
        assert await reader.read() == hashlib.sha256(payload).digest()
        writer.close()
        await writer.wait_closed()

    async with await b.start_server(handler, port=80, limit=1024):
        await asyncio.gather(*(one(i) for i in range(200)))
    assert a.connections() == [] and b.connections() == []


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.put_nowait(exc)


async def test_udp_both_ways_with_source_address(a: PodNet, b: PodNet) -> None:
    server_t, server = await b.create_datagram_endpoint(Datagrams, local_addr=("0.0.0.0", 53))
    client_t, client = await a.create_datagram_endpoint(Datagrams, remote_addr=(B_IP, 53))
    client_addr = client_t.get_extra_info("sockname")
    assert client_addr[0] == A_IP and client_t.get_extra_info("peername") == (B_IP, 53)
    client_t.sendto(b"query")
    data, source = await server.queue.get()
    assert (data, source) == (b"query", client_addr)
    server_t.sendto(b"answer", source)
    assert await client.queue.get() == (b"answer", (B_IP, 53))
    assert ("udp", "0.0.0.0", 53) in b.listeners()
    # Loopback inside the pod shows 127.0.0.1 as the source.
    local_t, _ = await b.create_datagram_endpoint(Datagrams, local_addr=("127.0.0.1", 0))
    local_t.sendto(b"self", ("127.0.0.1", 53))
    assert await server.queue.get() == (b"self", local_t.get_extra_info("sockname"))
    for transport in (server_t, client_t, local_t):
        transport.close()


async def test_udp_errors_like_the_kernel(a: PodNet, b: PodNet) -> None:
    connected_t, connected = await a.create_datagram_endpoint(Datagrams, remote_addr=(B_IP, 9))
    loose_t, loose = await a.create_datagram_endpoint(Datagrams, local_addr=(None, 0))
    connected_t.sendto(b"x")        # b has no socket on 9: ICMP port unreachable
    error = await connected.errors.get()
    assert isinstance(error, ConnectionRefusedError)
    loose_t.sendto(b"x", (B_IP, 9))     # an unconnected socket does not hear about it
    loose_t.sendto(b"x", ("10.244.9.9", 9))
    unreachable = await loose.errors.get()
    assert unreachable.errno == errno.EHOSTUNREACH  # type: ignore[attr-defined]
    await settle()
    assert loose.errors.empty()
    for transport in (connected_t, loose_t):
        transport.close()


async def test_udp_receive_queue_is_bounded(a: PodNet, b: PodNet) -> None:
    sink_t, sink = await b.create_datagram_endpoint(Datagrams, local_addr=(B_IP, 5000))
    src_t, _ = await a.create_datagram_endpoint(Datagrams, remote_addr=(B_IP, 5000))
    for _ in range(1000):           # sent in one go: the receiver gets no turn in between
        src_t.sendto(b"z" * 1000)
    await settle()
    assert 0 < sink.queue.qsize() < 1000
    assert sink.queue.qsize() + sink_t.dropped == 1000  # type: ignore[attr-defined]
    for transport in (sink_t, src_t):
        transport.close()


async def test_getaddrinfo(a: PodNet) -> None:
    infos = await a.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    assert infos == [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                      ("127.0.0.1", 80))]
    assert {i[4] for i in await a.getaddrinfo("a", "8080")} == {(A_IP, 8080)}
    assert len(await a.getaddrinfo(B_IP, 1)) == 3       # stream, datagram, raw like libc
    with pytest.raises(socket.gaierror) as missing:
        await a.getaddrinfo("web.default.svc.cluster.local", 80)
    assert missing.value.errno == socket.EAI_NONAME

    async def resolver(name: str) -> list[str]:
        return [B_IP] if name == "web" else []

    a.resolver = resolver
    assert [i[4] for i in await a.getaddrinfo("web", 80, type=socket.SOCK_DGRAM)] == [(B_IP, 80)]
    with pytest.raises(socket.gaierror):
        await a.getaddrinfo("nope", 80)


async def test_aiohttp_app_sees_the_client_pod_ip(a: PodNet, b: PodNet) -> None:
    async def whoami(request: web.Request) -> web.Response:
        return web.Response(text=f"{request.remote} {request.method} {request.path}")

    app = web.Application()
    app.router.add_get("/whoami", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    assert runner.server is not None
    server = await b.create_server(runner.server, port=8080)
    reader, writer = await a.open_connection(B_IP, 8080)
    for _ in range(2):      # keep-alive: two requests on one connection
        writer.write(b"GET /whoami HTTP/1.1\r\nHost: b\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        assert await reader.readexactly(length) == f"{A_IP} GET /whoami".encode()
    writer.close()
    await writer.wait_closed()
    server.close()
    await runner.cleanup()
    await server.wait_closed()


async def test_serve_forever_and_context_manager(a: PodNet, b: PodNet) -> None:
    server = await b.start_server(echo_handler, port=0)
    port = server.sockets[0].getsockname()[1]
    assert EPHEMERAL_FIRST <= port <= EPHEMERAL_LAST
    serving = asyncio.create_task(server.serve_forever())
    await settle()
    reader, writer = await a.open_connection(B_IP, port)
    writer.write(b"ok")
    assert await reader.readexactly(2) == b"ok"
    writer.close()
    await writer.wait_closed()
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert not server.is_serving() and server.sockets == ()


class FakeTunnel:
    """Stands in for the tunnel layer: 'remote' pods live on a second NodeNetwork."""

    def __init__(self, other: NodeNetwork) -> None:
        self.other = other

    async def open_stream(self, src: tuple[str, int], dst: tuple[str, int],
                          local: StreamPeer, flow: str) -> StreamPeer:
        return self.other.accept_stream(src, dst, local, flow)

    def send_datagram(self, src: tuple[str, int], dst: tuple[str, int], data: bytes,
                      flow: str) -> None:
        self.other.deliver_datagram(src, dst, data)


async def test_remote_delivery_seam(node: NodeNetwork, a: PodNet) -> None:
    other = NodeNetwork("node-2", "10.244.2.0/24")
    c = other.attach("10.244.2.5", pod="c", namespace="default", hostname="c")
    node.remote = FakeTunnel(other)
    async with await c.start_server(echo_handler, port=80):
        reader, writer = await a.open_connection("10.244.2.5", 80)
        writer.write(b"across")
        assert await reader.readexactly(6) == b"across"
        writer.close()
        await writer.wait_closed()
    with pytest.raises(OSError) as local_gap:
        await a.open_connection("10.244.1.77", 80)      # own podCIDR never goes remote
    assert local_gap.value.errno == errno.EHOSTUNREACH
    other.detach(c.ip)


class Buffered(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buffer = bytearray(5)      # small on purpose: data arrives in several pieces
        self.data = b""
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data += bytes(self.buffer[:nbytes])

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def test_buffered_protocol_and_write_rules(a: PodNet, b: PodNet) -> None:
    accepted: list[Buffered] = []

    def factory() -> Buffered:
        accepted.append(Buffered())
        return accepted[-1]

    async with await b.create_server(factory, port=80):
        transport, _ = await a.create_connection(Recorder, B_IP, 80)
        transport.write(bytearray(b"0123456789abc"))
        transport.write_eof()
        with pytest.raises(RuntimeError):
            transport.write(b"more")
        transport.close()
        assert await accepted[0].lost is None
        assert accepted[0].data == b"0123456789abc"
        # A socket bound to loopback cannot reach another pod.
        with pytest.raises(OSError) as invalid:
            await a.create_connection(Recorder, B_IP, 80, local_addr=("127.0.0.1", 0))
        assert invalid.value.errno == errno.EINVAL
        with pytest.raises(OSError) as taken:
            await b.create_connection(Recorder, B_IP, 80, local_addr=(None, 80))
        assert taken.value.errno == errno.EADDRINUSE
