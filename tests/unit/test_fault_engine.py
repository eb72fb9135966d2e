"""Faults where traffic passes, in process: a NodeNetwork with two pods and the agent's
FaultEngine on it (no cluster). Timing checks are lower bounds only (a delay can only be
observed as at least what was set); the rest checks what arrives, in what order, and what
the engine decided."""

from __future__ import annotations

import asyncio
import errno
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from agents.faults import DROP_EVENTS_PER_S, FaultEngine, FaultState, _DropLog
from agents.netstack import HIGH_WATER, NodeNetwork, PodNet

A_IP, B_IP = "10.244.1.2", "10.244.1.3"


def pod_obj(name: str, ip: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"nodeName": "node-1"}, "status": {"podIP": ip, "phase": "Running"}}


def fault_obj(name: str = "f", /, **spec: Any) -> dict[str, Any]:
    spec.setdefault("from", {"pod": "default/a"})
    spec.setdefault("to", {"pod": "default/b"})
    return {"metadata": {"name": name}, "spec": spec}


class Lab:
    def __init__(self, network: NodeNetwork, state: FaultState, engine: FaultEngine) -> None:
        self.network, self.state, self.engine = network, state, engine
        self.a = network.attach(A_IP, pod="a", namespace="default", hostname="a")
        self.b = network.attach(B_IP, pod="b", namespace="default", hostname="b")

    def set(self, *faults: dict[str, Any]) -> None:
        self.state.replace("NetworkFault", faults)
        self.engine.refresh()


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    network = NodeNetwork("node-1", "10.244.1.0/24")
    state = FaultState()
    state.replace("Node", [{"metadata": {"name": "node-1"},
                            "spec": {"podCIDR": "10.244.1.0/24"}}])
    state.replace("Pod", [pod_obj("a", A_IP, app="client"), pod_obj("b", B_IP, app="web")])
    engine = FaultEngine(state, "node-1", user_timeout_s=0.3, network=network)
    network.faults = engine
    yield Lab(network, state, engine)
    for p in network.pods():
        network.detach(p.ip)
    for _ in range(20):
        await asyncio.sleep(0)


async def echo_server(pod: PodNet, port: int = 80) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
    return await pod.start_server(handle, "0.0.0.0", port)


async def rtt(pod: PodNet, n: int = 3) -> float:
    reader, writer = await pod.open_connection(B_IP, 80)
    loop = asyncio.get_running_loop()
    best = math.inf
    for _ in range(n):
        start = loop.time()
        writer.write(b"x" * 64)
        await reader.readexactly(64)
        best = min(best, loop.time() - start)
    writer.close()
    return best


async def test_no_fault_leaves_the_path_alone(lab: Lab) -> None:
    assert not lab.engine.active
    lab.set(fault_obj(delayMs=0, lossPct=0))        # zero means zero
    assert not lab.engine.active
    await echo_server(lab.b)
    _reader, writer = await lab.a.open_connection(B_IP, 80)
    transport: Any = writer.transport
    assert type(transport._peer).__name__ == "VirtualStreamTransport"   # no lane between
    writer.close()


async def test_tcp_delay_each_way_and_reset_restores(lab: Lab) -> None:
    await echo_server(lab.b)
    lab.set(fault_obj(delayMs=40, direction="to"))
    assert lab.engine.active
    assert await rtt(lab.a) >= 0.040
    lab.set(fault_obj(delayMs=40, direction="both"))
    assert await rtt(lab.a) >= 0.080
    # the reverse pair is not selected by a `to` fault from b to a
    lab.set(fault_obj(delayMs=40, direction="to", **{"from": {"pod": "default/b"},
                                                     "to": {"pod": "default/a"}}))
    assert await rtt(lab.a) >= 0.040                # b -> a replies are delayed
    lab.set()
    _reader, writer = await lab.a.open_connection(B_IP, 80)
    transport: Any = writer.transport
    assert type(transport._peer).__name__ == "VirtualStreamTransport"
    writer.close()


async def test_tcp_jitter_and_loss_keep_the_stream_whole_and_ordered(lab: Lab) -> None:
    await echo_server(lab.b)
    lab.set(fault_obj(delayMs=2, jitterMs=10, lossPct=20, seed=3))
    reader, writer = await lab.a.open_connection(B_IP, 80)
    sent = bytearray()
    for i in range(200):
        chunk = f"{i:05d}".encode() * 10
        sent += chunk
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0)
    got = await reader.readexactly(len(sent))
    assert got == bytes(sent)
    writer.close()


async def test_tcp_rate_paces_with_backpressure(lab: Lab) -> None:
    done = asyncio.Event()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = 0
        while data := await reader.read(65536):
            received += len(data)
        assert received == 300_000 // 16384 * 16384 + 16384
        done.set()
        writer.close()

    await lab.b.start_server(sink, "0.0.0.0", 81)
    lab.set(fault_obj(rateKbit=800, direction="to"))        # 100 kB/s
    _reader, writer = await lab.a.open_connection(B_IP, 81)
    loop = asyncio.get_running_loop()
    start = loop.time()
    lane: Any = None
    for _ in range(300_000 // 16384 + 1):
        writer.write(b"z" * 16384)
        await writer.drain()
        lane = writer.transport._peer      # type: ignore[attr-defined]
        # nothing piles up beyond the lane's bound: the writer waits in drain()
        assert lane.queued <= 2 * HIGH_WATER + 16384   # its bound + one flush of the writer
    assert type(lane).__name__ == "_Lane"
    writer.write_eof()
    await asyncio.wait_for(done.wait(), 30)
    elapsed = loop.time() - start
    # 300 kB at 100 kB/s: at least 3 s minus the first burst
    assert elapsed >= 2.9
    writer.close()


async def test_partition_connect_times_out_and_open_stream_resets(lab: Lab) -> None:
    await echo_server(lab.b)
    reader, writer = await lab.a.open_connection(B_IP, 80)
    lab.set(fault_obj(partition=True))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(lab.a.open_connection(B_IP, 80), 0.2)
    writer.write(b"hello")
    # stalled: nothing comes back, then the user timeout (0.3 s here) resets it
    with pytest.raises((ConnectionError, TimeoutError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(5), 5)
    writer.close()


async def test_partition_heals_an_open_stream_before_the_timeout(lab: Lab) -> None:
    lab.engine.user_timeout_s = 30
    await echo_server(lab.b)
    reader, writer = await lab.a.open_connection(B_IP, 80)
    lab.set(fault_obj(partition=True))
    writer.write(b"hello")
    echo = asyncio.ensure_future(reader.readexactly(5))
    await asyncio.wait({echo}, timeout=0.1)
    assert not echo.done()              # held by the partition
    lab.set()
    assert await asyncio.wait_for(echo, 5) == b"hello"
    writer.close()


class Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append(data)
        self.arrived.set()


async def send_datagrams(lab: Lab, n: int, port: int) -> set[int]:
    """n numbered datagrams a -> b:port from a fixed source port; the numbers that arrived."""
    server_t, server = await lab.b.create_datagram_endpoint(Collect, local_addr=("0.0.0.0", port))
    client_t, _ = await lab.a.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("0.0.0.0", 40000), remote_addr=(B_IP, port))
    for i in range(n):
        client_t.sendto(str(i).encode())
        if i % 50 == 0:
            await asyncio.sleep(0)
    for _ in range(100):
        await asyncio.sleep(0)
    client_t.close()
    server_t.close()
    return {int(d) for d in server.got}


async def test_udp_loss_binomial_and_seeded(lab: Lab) -> None:
    n = 2000
    assert len(await send_datagrams(lab, n, 53)) == n
    lab.set(fault_obj(lossPct=10, seed=42, protocol="udp"))
    first = await send_datagrams(lab, n, 53)
    lost = n - len(first)
    assert abs(lost - 200) <= 3 * math.sqrt(n * 0.1 * 0.9), lost
    lab.set()
    lab.set(fault_obj(lossPct=10, seed=42, protocol="udp"))
    assert await send_datagrams(lab, n, 53) == first
    lab.set(fault_obj(lossPct=10, seed=43, protocol="udp"))
    assert await send_datagrams(lab, n, 53) != first
    lab.set(fault_obj(lossPct=10, seed=42, protocol="tcp"))     # UDP untouched
    assert len(await send_datagrams(lab, n, 53)) == n
    lab.set(fault_obj(lossPct=10, seed=42, port=54))            # other port untouched
    assert len(await send_datagrams(lab, n, 53)) == n


async def test_udp_delay_and_partition(lab: Lab) -> None:
    server_t, server = await lab.b.create_datagram_endpoint(Collect, local_addr=("0.0.0.0", 9))
    client_t, _ = await lab.a.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=(B_IP, 9))
    lab.set(fault_obj(delayMs=50))
    loop = asyncio.get_running_loop()
    start = loop.time()
    client_t.sendto(b"late")
    for _ in range(50):
        await asyncio.sleep(0)
    assert server.got == []             # not yet: it is on its way
    await asyncio.wait_for(server.arrived.wait(), 5)
    assert loop.time() - start >= 0.050
    lab.set(fault_obj(partition=True))
    for _ in range(10):
        client_t.sendto(b"cut")
    await asyncio.sleep(0.05)
    assert server.got == [b"late"]
    client_t.close()
    server_t.close()


async def test_node_partition_cuts_only_between_the_nodes(lab: Lab) -> None:
    lab.set(fault_obj(partition=True, direction="to", **{"from": {"node": "node-1"},
                                                         "to": {"node": "node-2"}}))
    assert lab.engine.node_cut("node-2")
    assert not lab.engine.node_cut("node-3")
    lab.set(fault_obj(delayMs=10, **{"from": {"node": "node-1"}, "to": {"node": "node-2"}}))
    assert not lab.engine.node_cut("node-2")


def test_endpoints_for_dns_and_services() -> None:
    state = FaultState(dns_ip="10.96.0.10")
    state.replace("Service", [{"metadata": {"name": "web", "namespace": "x"},
                               "spec": {"clusterIP": "10.96.0.20"}}])
    dns = state.endpoint("10.96.0.10")
    assert dns.namespace == "kube-system" and "kube-system/kube-dns" in dns.services
    assert state.endpoint("10.96.0.20").services == frozenset({"x/web"})
    assert state.endpoint("garbage").ip == "garbage"
    state.replace("NetworkFault", [fault_obj(port=-1), {"metadata": 3},
                                   {"metadata": {"name": "x"}, "spec": "junk"}])
    assert not state.faults and len(state.errors) == 3
    state.replace("Pod", [{"metadata": "junk"}, {"spec": 1, "status": "x"}])
    assert state.endpoint("10.244.1.2").pod == ""


def test_a_dual_stack_pod_and_service_are_known_at_each_address() -> None:
    state = FaultState(dns_ip="10.96.0.10")
    pod = pod_obj("a", A_IP, app="web")
    pod["status"]["podIPs"] = [{"ip": A_IP}, {"ip": "fd00:10:244:1::2"}, "junk"]
    state.replace("Pod", [pod])
    state.replace("Service", [{"metadata": {"name": "web", "namespace": "x"},
                               "spec": {"clusterIP": "10.96.0.20",
                                        "clusterIPs": ["10.96.0.20", "fd00:10:96::20"]}}])
    state.replace("Node", [{"metadata": {"name": "node-1"},
                            "spec": {"podCIDR": "fd00:10:244:1::/64"}}])
    for ip in (A_IP, "fd00:10:244:1::2"):
        found = state.endpoint(ip)
        assert (found.ip, found.pod, found.labels) == (ip, "a", {"app": "web"})
    assert state.endpoint("fd00:10:96::20").services == frozenset({"x/web"})
    assert state.endpoint("fd00:10:244:1::1").node == "node-1"     # the node's gateway


async def test_a_reader_that_pauses_and_resumes_gets_everything(lab: Lab) -> None:
    # readexactly() beyond the reader's limit pauses and resumes the transport; the lane must
    # move data from the loop when woken, or the resumed reader would miss it and hang
    await echo_server(lab.b)
    lab.set(fault_obj(delayMs=1, jitterMs=1))
    reader, writer = await lab.a.open_connection(B_IP, 80)
    payload = bytes(range(256)) * 2048
    writer.write(payload)
    assert await asyncio.wait_for(reader.readexactly(len(payload)), 30) == payload
    writer.close()


async def test_a_connect_waiting_out_a_partition_gets_through_when_it_heals(lab: Lab) -> None:
    await echo_server(lab.b)
    lab.set(fault_obj(partition=True))
    connect = asyncio.ensure_future(lab.a.open_connection(B_IP, 80))
    await asyncio.wait({connect}, timeout=0.2)
    assert not connect.done()               # the SYN goes unanswered
    lab.set()
    # the next SYN retransmission (1 s after the first, as on Linux) is answered
    reader, writer = await asyncio.wait_for(connect, 10)
    writer.write(b"ok")
    assert await reader.readexactly(2) == b"ok"
    writer.close()


def test_dropped_events_are_rate_limited_with_a_summary() -> None:
    now = [0.0]
    with capture_logs() as logs:
        drops = _DropLog(structlog.get_logger(), lambda: now[0])
        for seq in range(DROP_EVENTS_PER_S + 50):
            drops("lossy", seq=seq)
        now[0] = 1.5
        drops("lossy", seq=999)
    events = [e["event"] for e in logs]
    assert events.count("fault.dropped") == DROP_EVENTS_PER_S + 1
    summary = next(e for e in logs if e["event"] == "fault.dropped_summary")
    assert summary["suppressed"] == 50 and summary["fault"] == "lossy"


async def test_a_connect_waiting_out_a_partition_fails_when_the_route_goes(lab: Lab) -> None:
    await echo_server(lab.b)
    lab.set(fault_obj(partition=True))
    connect = asyncio.ensure_future(lab.a.open_connection(B_IP, 80))
    await asyncio.wait({connect}, timeout=0.1)
    assert not connect.done()
    lab.network.detach(B_IP)        # no route any more: the next SYN cannot leave
    with pytest.raises(OSError) as err:
        await asyncio.wait_for(connect, 10)
    assert err.value.errno == errno.EHOSTUNREACH
