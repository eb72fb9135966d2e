"""NetworkPolicy enforcement in the agent: peer lookups, UDP conntrack, and the node network's
connect/accept/datagram paths with an `Enforcer` plugged in."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from agents.netstack import NodeNetwork, PodNet, PolicyDropped, StreamPeer
from agents.policy import Conntrack, Enforcer, PolicyState, named_ports

A_IP, B_IP, C_IP = "10.244.1.2", "10.244.1.3", "10.244.2.9"


def pod(ns: str, name: str, ip: str, node: str = "node-1", labels: dict[str, str] | None = None,
        ports: list[dict[str, Any]] | None = None, phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "labels": labels or {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports or []}]},
            "status": {"podIP": ip, "phase": phase}}


def netpol(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


DENY_ALL = netpol("x", "deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})


def make_state() -> PolicyState:
    state = PolicyState()
    state.replace("Namespace", [{"metadata": {"name": "x", "labels": {"team": "blue"}}},
                                {"metadata": {"name": "y"}}])
    state.replace("Node", [{"metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.244.1.0/24"}},
                           {"metadata": {"name": "node-2"}, "spec": {"podCIDR": "10.244.2.0/24"}}])
    state.replace("Pod", [
        pod("x", "a", A_IP, ports=[{"name": "http", "containerPort": 80}]),
        pod("x", "b", B_IP),
        pod("y", "c", C_IP, node="node-2"),
        pod("y", "done", "10.244.2.50", node="node-2", phase="Succeeded"),
    ])
    state.replace("NetworkPolicy", [])
    return state


# --- lookups ----------------------------------------------------------------------------------


def test_peers_by_ip() -> None:
    state = make_state()
    a = state.peer(A_IP)
    assert (a.namespace, a.pod, a.node) == ("x", "a", "node-1")
    assert a.labels == {"app": "a"}
    assert a.namespace_labels == {"team": "blue", "kubernetes.io/metadata.name": "x"}
    assert a.named_ports == {"http": (80, "TCP")}
    gateway = state.peer("10.244.2.1")
    assert not gateway.is_pod and gateway.node == "node-2"
    assert state.peer("10.96.0.10").pod == "coredns"
    assert not state.peer("10.244.2.50").is_pod    # a finished pod no longer holds its IP
    assert not state.peer("192.0.2.1").is_pod


def test_lookups_follow_events() -> None:
    state = make_state()
    state.apply("Pod", "MODIFIED", pod("x", "a", A_IP, labels={"app": "new"}))
    assert state.peer(A_IP).labels == {"app": "new"}
    state.apply("Namespace", "MODIFIED", {"metadata": {"name": "x", "labels": {"team": "red"}}})
    assert state.peer(A_IP).namespace_labels["team"] == "red"
    state.apply("Pod", "DELETED", pod("x", "a", A_IP))
    assert not state.peer(A_IP).is_pod
    before = state.generation
    state.apply("NetworkPolicy", "ADDED", DENY_ALL)
    assert state.generation == before + 1
    assert state.policies.names == ["x/deny"]
    state.apply("NetworkPolicy", "DELETED", DENY_ALL)
    assert len(state.policies) == 0


def test_named_ports_ignore_garbage() -> None:
    obj = {"spec": {"containers": [
        "junk", {"ports": ["junk", {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                           {"name": 5, "containerPort": 1}, {"containerPort": 2}]}]}}
    assert named_ports(obj) == {"dns": (53, "UDP")}
    assert named_ports({"spec": "x"}) == {}


def test_conntrack_idle_timeout_replies_and_bound() -> None:
    now = [0.0]
    ct = Conntrack(idle_s=30, limit=2, clock=lambda: now[0])
    s, d = ("10.244.1.2", 1000), ("10.244.2.2", 53)
    ct.add(s, d)
    assert ct.seen(s, d) and ct.seen(d, s)      # the flow and its replies
    now[0] = 29.0
    assert ct.seen(d, s)                        # traffic keeps it alive
    now[0] = 60.0
    assert not ct.seen(s, d)                    # idle too long
    assert len(ct) == 0
    for port in (1, 2, 3):
        ct.add(("10.244.1.2", port), d)
    assert len(ct) == 2 and not ct.seen(("10.244.1.2", 1), d)


# --- the enforcer -------------------------------------------------------------------------


def test_enforcer_judges_both_directions_and_logs_each() -> None:
    state = make_state()
    state.replace("NetworkPolicy", [netpol("x", "deny-in", {"podSelector": {}})])
    enforcer = Enforcer(state, "node-1")
    with capture_logs() as logs:
        assert not enforcer.stream((C_IP, 40000), (A_IP, 80), "f-1", egress=True, ingress=True)
    verdicts = [e for e in logs if e["event"] == "policy.verdict"]
    assert [(e["direction"], e["verdict"], e["namespace"], e["pod"]) for e in verdicts] == [
        ("egress", "allowed", "y", "c"), ("ingress", "denied", "x", "a")]
    denied = verdicts[1]
    assert denied["flow"] == "f-1" and denied["src"] == f"{C_IP}:40000"
    assert denied["dst"] == f"{A_IP}:80" and denied["port"] == 80
    assert denied["protocol"] == "tcp" and denied["policy"] is None
    assert denied["reason"] == (
        "denied: x/deny-in selects this pod for ingress and no rule allows it")
    assert verdicts[0]["reason"] == "no policy selects this pod: allowed by default"


def test_enforcer_leaves_cluster_ips_to_the_endpoint_but_judges_kube_dns() -> None:
    state = make_state()
    state.replace("NetworkPolicy", [DENY_ALL])
    enforcer = Enforcer(state, "node-1")
    with capture_logs() as logs:
        assert enforcer.stream((A_IP, 40000), ("10.96.3.4", 80), "f", egress=True, ingress=False)
    assert logs == []
    assert not enforcer.stream((A_IP, 40000), ("10.96.0.10", 53), "f", egress=True,
                               ingress=False)


def test_enforcer_udp_flow_is_judged_once_and_replies_pass() -> None:
    state = make_state()
    state.replace("NetworkPolicy", [netpol("x", "from-b", {"podSelector": {}, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]})])
    enforcer = Enforcer(state, "node-1")
    b, a, c = (B_IP, 5000), (A_IP, 53), (C_IP, 6000)
    with capture_logs() as logs:
        for _ in range(3):
            assert enforcer.datagram(b, a, "f", egress=True, ingress=True)
            assert enforcer.datagram(a, b, "f", egress=True, ingress=True)     # replies
        for _ in range(3):
            assert not enforcer.datagram(c, a, "g", egress=False, ingress=True)
    assert [(e["flow"], e["direction"], e["verdict"]) for e in logs] == [
        ("f", "egress", "allowed"), ("f", "ingress", "allowed"), ("g", "ingress", "denied")]
    # A policy change lets a denied flow be judged again; an allowed one stays (conntrack).
    state.apply("NetworkPolicy", "ADDED", netpol("x", "from-y", {"podSelector": {}, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "y"}}}]}]}))
    assert enforcer.datagram(c, a, "g", egress=False, ingress=True)
    state.apply("NetworkPolicy", "ADDED", DENY_ALL)
    state.apply("NetworkPolicy", "DELETED", netpol("x", "from-b", {}))
    assert enforcer.datagram(b, a, "f", egress=True, ingress=True)


# --- the node network with enforcement ------------------------------------------------------


@pytest.fixture
async def node() -> AsyncIterator[tuple[NodeNetwork, PolicyState]]:
    network = NodeNetwork("node-1", "10.244.1.0/24")
    state = make_state()
    network.policy = Enforcer(state, "node-1")
    yield network, state
    for p in network.pods():
        network.detach(p.ip)
    for _ in range(20):
        await asyncio.sleep(0)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


def pods(network: NodeNetwork) -> tuple[PodNet, PodNet]:
    return (network.attach(A_IP, pod="a", namespace="x", hostname="a"),
            network.attach(B_IP, pod="b", namespace="x", hostname="b"))


async def echo_server(net: PodNet, port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    await net.start_server(handle, None, port)


async def test_denied_connect_is_dropped_until_the_callers_timeout(
        node: tuple[NodeNetwork, PolicyState]) -> None:
    network, state = node
    a, b = pods(network)
    await echo_server(a, 80)
    reader, writer = await b.open_connection(A_IP, 80)  # before the policy: connects
    state.replace("NetworkPolicy", [netpol("x", "deny-in", {"podSelector": {}})])
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(b.open_connection(A_IP, 80), 0.2)
    # The abandoned connect left nothing behind: b holds only the connection made before.
    assert [c.local for c in b.connections()] == [writer.get_extra_info("sockname")]
    # The established connection is kept, and its replies pass.
    writer.write(b"still here")
    assert await reader.read(100) == b"still here"
    writer.close()
    # Loopback and a pod to itself are never judged.
    r2, w2 = await a.open_connection(A_IP, 80)
    w2.write(b"self")
    assert await r2.read(100) == b"self"
    w2.close()


async def test_policy_reject_refuses_at_once(node: tuple[NodeNetwork, PolicyState]) -> None:
    network, state = node
    assert network.policy is not None
    network.policy.reject = True
    a, b = pods(network)
    await echo_server(a, 80)
    state.replace("NetworkPolicy", [netpol("x", "deny-in", {"podSelector": {}})])
    with pytest.raises(ConnectionRefusedError):
        await b.open_connection(A_IP, 80)


async def test_accept_stream_raises_policy_dropped_for_inbound(
        node: tuple[NodeNetwork, PolicyState]) -> None:
    network, state = node
    a, _ = pods(network)
    await echo_server(a, 80)
    state.replace("NetworkPolicy", [netpol("x", "deny-in", {"podSelector": {}})])

    class Nobody:
        def ready(self) -> bool:
            return False

        def deliver(self, data: bytes) -> None: ...

        def deliver_eof(self) -> None: ...

        def hang_up(self, exc: Exception | None) -> None: ...

        def wake(self) -> None: ...

    peer: StreamPeer = Nobody()
    with pytest.raises(PolicyDropped) as info:
        network.accept_stream((C_IP, 4000), (A_IP, 80), peer, "f")
    assert info.value.errno == errno.ETIMEDOUT
    # Egress of the client is judged too for streams the ClusterIP proxy brings in.
    state.replace("NetworkPolicy", [netpol("y", "deny-out", {
        "podSelector": {}, "policyTypes": ["Egress"]})])
    with pytest.raises(PolicyDropped):
        network.accept_stream((C_IP, 4000), (A_IP, 80), peer, "f", judge_egress=True)
    end = network.accept_stream((C_IP, 4000), (A_IP, 80), peer, "f")
    end.hang_up(None)


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()
        self.errors: list[Exception] = []

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.got.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


async def test_udp_denied_is_dropped_and_replies_of_allowed_flows_pass(
        node: tuple[NodeNetwork, PolicyState]) -> None:
    network, state = node
    a, b = pods(network)
    state.replace("NetworkPolicy", [netpol("x", "deny-in-a", {
        "podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Ingress"]})])
    server_t, server = await a.create_datagram_endpoint(Inbox, local_addr=(None, 53))
    client_t, client = await b.create_datagram_endpoint(Inbox, remote_addr=(A_IP, 53))
    client_t.sendto(b"dropped")
    await asyncio.sleep(0.01)
    assert server.got.empty() and client.errors == []
    # b is not isolated: a's datagram to b passes, and b's reply (a reply of that flow) too,
    # although a does not admit b's flows of its own.
    b_server_t, b_server = await b.create_datagram_endpoint(Inbox, local_addr=(None, 7))
    server_t.sendto(b"ping", (B_IP, 7))
    assert await asyncio.wait_for(b_server.got.get(), 1) == b"ping"
    b_server_t.sendto(b"pong", (A_IP, 53))
    assert await asyncio.wait_for(server.got.get(), 1) == b"pong"
    for t in (server_t, client_t, b_server_t):
        t.close()


async def test_udp_reject_reports_on_connected_socket(
        node: tuple[NodeNetwork, PolicyState]) -> None:
    network, state = node
    assert network.policy is not None
    network.policy.reject = True
    a, b = pods(network)
    state.replace("NetworkPolicy", [netpol("x", "deny-in", {"podSelector": {}})])
    server_t, _ = await a.create_datagram_endpoint(Inbox, local_addr=(None, 53))
    client_t, client = await b.create_datagram_endpoint(Inbox, remote_addr=(A_IP, 53))
    client_t.sendto(b"x")
    await asyncio.sleep(0.01)
    assert [getattr(e, "errno", None) for e in client.errors] == [errno.ECONNREFUSED]
    server_t.close()
    client_t.close()


def test_datagrams_the_proxy_translated_are_left_to_the_proxy() -> None:
    """UDP through a Service arrives from ClusterIP:port (the proxy judged it against the real
    client and endpoint); the endpoint's reply goes back to that address: neither is judged
    here, while kube-dns, the one Service IP policy sees as a pod, is."""
    state = make_state()
    state.replace("NetworkPolicy", [DENY_ALL])
    assert state.verdicts(("10.96.5.5", 33000), (A_IP, 53), "udp", egress=False,
                          ingress=True) == []
    assert state.verdicts((A_IP, 53), ("10.96.5.5", 33000), "udp", egress=True,
                          ingress=False) == []
    [(pod, verdict)] = state.verdicts((A_IP, 5353), ("10.96.0.10", 53), "udp", egress=True,
                                      ingress=False)
    assert pod.pod == "a" and not verdict.allowed
