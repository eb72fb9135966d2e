"""The control plane's port-forward relay (controlplane/portforward.py) between a SPDY client and
pod connections, with in-memory channels: errors in kubelet's words, and flow control that
keeps a fast side from filling memory when the other side is slow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from controlplane import portforward
from controlplane.portforward import ForwardError, ForwardSession, PodConnection
from podnet.wire import spdy
from podnet.wire.spdy import DataFrame, SettingId, Settings, SynStream, WindowUpdate

CHUNK = 16 * 1024


class FakeChannel:
    """kubectl's end of the channel: frames in through a queue, frames out decoded."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.compressor = spdy.HeaderCompressor()
        self.decoder = spdy.FrameDecoder()
        self.frames: list[spdy.Frame] = []
        self.changed = asyncio.Event()
        self.closed = False

    def send(self, *frames: spdy.Frame) -> None:
        self.incoming.put_nowait(spdy.encode_all(frames, self.compressor))

    async def read(self) -> bytes:
        return await self.incoming.get()

    async def write(self, data: bytes) -> None:
        for item in self.decoder.feed(data):
            assert not isinstance(item, spdy.StreamError), item
            self.frames.append(item)
        self.changed.set()

    async def close(self) -> None:
        self.closed = True
        self.changed.set()

    def data(self, stream_id: int) -> bytes:
        return b"".join(f.data for f in self.frames
                        if isinstance(f, DataFrame) and f.stream_id == stream_id)

    def fins(self) -> list[int]:
        return [f.stream_id for f in self.frames if isinstance(f, DataFrame) and f.fin]

    async def until(self, check: Callable[[], bool]) -> None:
        await until(check)


class FakePod:
    """A pod connection that has `size` bytes to send and takes bytes only when let."""

    def __init__(self, size: int = 0) -> None:
        self.flow = "test-1"
        self.left = size
        self.pulled = 0
        self.got = bytearray()
        self.eof = False
        self.accepting = asyncio.Event()
        self.accepting.set()

    async def send(self, data: bytes) -> None:
        await self.accepting.wait()
        self.got += data

    async def send_eof(self) -> None:
        self.eof = True

    async def receive(self) -> bytes:
        if self.left <= 0:
            await asyncio.Event().wait()       # the pod keeps its side open
        n = min(CHUNK, self.left)
        self.left -= n
        self.pulled += n
        return b"p" * n

    async def close(self) -> None:
        pass


async def until(check: Callable[[], bool]) -> None:
    """Let the tasks run until `check()` holds (a hang fails after 5 s instead of forever)."""
    async with asyncio.timeout(5):
        # Polls state spread over several fakes; one Event for all of it would be clumsier.
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0)


async def settle() -> None:
    """Let every runnable task run until the relay is idle (no timing involved)."""
    for _ in range(100):
        await asyncio.sleep(0)


Running = tuple[FakeChannel, dict[int, FakePod | Exception], ForwardSession]


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    channel = FakeChannel()
    pods: dict[int, FakePod | Exception] = {}

    async def dial(port: int) -> PodConnection:
        pod = pods[port]
        if isinstance(pod, Exception):
            raise pod
        return pod

    session = ForwardSession(channel, dial, namespace="default", pod="echo", uid="u-1",
                             protocol="test")
    task = asyncio.create_task(session.run(), name="test session")
    try:
        yield channel, pods, session
    finally:
        channel.incoming.put_nowait(b"")            # the client hangs up
        await asyncio.wait_for(task, 5)
    assert channel.closed


def open_pair(channel: FakeChannel, port: int, first: int = 1) -> None:
    request = str(first)
    channel.send(SynStream(first, {"streamtype": "error", "port": str(port),
                                   "requestid": request}),
                 DataFrame(first, b"", fin=True),
                 SynStream(first + 2, {"streamtype": "data", "port": str(port),
                                       "requestid": request}))


async def test_refused_port_is_reported_in_kubelets_words(running: Running) -> None:
    channel, pods, _ = running
    pods[81] = ForwardError("failed to connect to localhost:81 inside the pod's network "
                            "namespace: dial tcp4 127.0.0.1:81: connect: connection refused")
    open_pair(channel, 81)
    await channel.until(lambda: 1 in channel.fins() and 3 in channel.fins())
    assert channel.data(1).decode() == (
        "error forwarding port 81 to pod echo, uid u-1: failed to connect to localhost:81 "
        "inside the pod's network namespace: dial tcp4 127.0.0.1:81: connect: connection "
        "refused")
    assert channel.fins() == [3, 1]           # data first: kubectl reads errors after that


async def test_bytes_flow_both_ways_and_half_close_reaches_the_pod(running: Running) -> None:
    channel, pods, _ = running
    pod = pods[8080] = FakePod(size=3 * CHUNK)
    open_pair(channel, 8080)
    channel.send(DataFrame(3, b"hello"), DataFrame(3, b"", fin=True))
    await channel.until(lambda: len(channel.data(3)) == 3 * CHUNK)
    await settle()
    assert bytes(pod.got) == b"hello" and pod.eof


async def test_a_slow_reader_holds_the_pod_back(running: Running) -> None:
    channel, pods, session = running
    pod = pods[9000] = FakePod(size=1024 * 1024)
    channel.send(Settings(((0, SettingId.INITIAL_WINDOW_SIZE, 4096),)))
    open_pair(channel, 9000)
    await channel.until(lambda: len(channel.data(3)) == 4096)
    await settle()
    # The window is spent: nothing more is sent, and the pod is read at most one chunk ahead.
    assert len(channel.data(3)) == 4096
    assert pod.pulled <= CHUNK
    channel.send(WindowUpdate(3, 10_000))
    await channel.until(lambda: len(channel.data(3)) == 14_096)
    await settle()
    assert len(channel.data(3)) == 14_096 and pod.pulled <= 2 * CHUNK
    assert session.spdy.enforce_send_window


async def test_a_slow_pod_stops_reading_from_the_client(running: Running) -> None:
    channel, pods, session = running
    pod = pods[9000] = FakePod()
    pod.accepting.clear()                       # the pod takes nothing for now
    open_pair(channel, 9000)
    frames = 200                                # 3.2 MiB offered by the client
    for _ in range(frames):
        channel.send(DataFrame(3, b"c" * CHUNK))
    await settle()
    # The session stopped reading: most frames still wait in the channel, and what it read
    # is bounded by the inbox limit (plus the frame that crossed it).
    assert channel.incoming.qsize() > frames // 2
    inbox = max(p.inbox_bytes for p in session._pairs.values())
    assert inbox <= portforward.INBOX_LIMIT_BYTES + CHUNK
    pod.accepting.set()
    await until(lambda: len(pod.got) == frames * CHUNK)
    assert channel.incoming.qsize() == 0
