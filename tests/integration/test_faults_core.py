"""Network faults acting where traffic really passes, on a real 2-node cluster with the real
kubectl: a delay between pods on different nodes shows in request latency (pod to pod and
through a ClusterIP), loss on UDP drops DNS queries (and says so in the flow log), and a
partition between the nodes cuts their gossip, so `podnet routes` shows the peer suspect then
dead, and alive again once the fault is deleted.

Latency checks are lower bounds implied by what was configured (a delay can only add), and
every wait for a change polls; no assertion is on how long podnet took."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
from aiohttp import web
from harness import RunningCluster, wait_for

from agents.cni.routes import Route, RouteTable
from agents.faults import FaultEngine, FaultState
from agents.netstack import NodeNetwork
from agents.tunnels import TunnelManager

PODS = """\
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  nodeName: node-1
  containers: [{name: bb, image: "busybox:1.36", command: ["sleep", "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: node-2
  containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
"""

DELAY_MS = 300


def fault_yaml(name: str, src: str, dst: str, **spec: Any) -> str:
    body = {"apiVersion": "podnet.dev/v1alpha1", "kind": "NetworkFault",
            "metadata": {"name": name}, "spec": {"from": json.loads(src),
                                                 "to": json.loads(dst), **spec}}
    return json.dumps(body)


class Lab:
    def __init__(self, cluster: RunningCluster) -> None:
        self.cluster = cluster
        self.web_ip = ""
        self.service_ip = ""

    def apply(self, manifest: str) -> None:
        result = self.cluster.kubectl("apply", "-f", "-", input=manifest)
        assert result.returncode == 0, result.stderr

    def delete(self, name: str) -> None:
        result = self.cluster.kubectl("delete", "networkfault", name)
        assert result.returncode == 0, result.stderr

    def curl_s(self, url: str) -> float | None:
        """Seconds one request from the client took (a new connection each), None on error."""
        result = self.cluster.kubectl("exec", "client", "--", "curl", "-s", "-m", "10",
                                      "-o", "/dev/null", "-w", "%{time_total}", url,
                                      timeout_s=30)
        return float(result.stdout) if result.returncode == 0 else None

    def events(self, event: str) -> list[dict[str, Any]]:
        result = self.cluster.podnet("logs", "--event", event, "-o", "json")
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def routes(self, node: str) -> dict[str, str]:
        """node -> the state its route has, as `node` sees it."""
        result = self.cluster.podnet("routes", "-o", "json", "--node", node)
        if result.returncode != 0:
            return {}
        return {r["node"]: r["state"] for r in json.loads(result.stdout).get(node, [])}


@pytest.fixture(scope="module")
def lab(cluster: RunningCluster) -> Iterator[Lab]:
    lab = Lab(cluster)
    lab.apply(PODS)
    lab.web_ip = cluster.running_pod("web", timeout_s=60)["status"]["podIP"]
    cluster.running_pod("client", timeout_s=60)
    svc = cluster.kubectl("get", "service", "web", "-o", "json", check=True)
    lab.service_ip = json.loads(svc.stdout)["spec"]["clusterIP"]
    wait_for(lambda: lab.curl_s(f"http://{lab.web_ip}/") is not None, 30,
             what="the client reaching nginx across the nodes")
    yield lab


@pytest.mark.kubectl
def test_delay_between_pods_on_two_nodes_shows_in_latency(lab: Lab) -> None:
    url = f"http://{lab.web_ip}/"
    lab.apply(fault_yaml("slow-web", '{"pod": "default/client"}', '{"selector": "app=web"}',
                         direction="to", delayMs=DELAY_MS))
    # client -> web only: the handshake and the request each cross the delay once
    least = 2 * DELAY_MS / 1000
    took = wait_for(lambda: (t := lab.curl_s(url)) is not None and t >= least and t, 30,
                    interval_s=0.2, what="the delay in force")
    assert took >= least
    delayed = [e for e in lab.events("fault.delayed") if e.get("dst") == f"{lab.web_ip}:80"]
    assert delayed and "slow-web" in delayed[-1]["faults"]
    # podnet explain names it, on the request way only
    explained = lab.cluster.podnet("explain", "default/client", "default/web", "-o", "json")
    assert explained.returncode == 0, explained.stderr
    assert json.loads(explained.stdout)["legs"][0]["faults"] == [
        {"name": "slow-web", "effects": f"delay {DELAY_MS}ms", "ways": ["request"]}]
    lab.delete("slow-web")
    wait_for(lambda: (t := lab.curl_s(url)) is not None and t < DELAY_MS / 1000, 30,
             interval_s=0.2, what="the delay gone")


@pytest.mark.kubectl
def test_delay_through_a_clusterip_matches_the_service(lab: Lab) -> None:
    url = f"http://{lab.service_ip}/"
    lab.apply(fault_yaml("slow-svc", '{"pod": "default/client"}', '{"service": "default/web"}',
                         delayMs=DELAY_MS))
    # both ways: handshake 2 delays, request and response 2 more
    least = 4 * DELAY_MS / 1000
    wait_for(lambda: (t := lab.curl_s(url)) is not None and t >= least, 30, interval_s=0.2,
             what="the delay through the ClusterIP")
    # the pod IP path is not the Service: untouched
    direct = lab.curl_s(f"http://{lab.web_ip}/")
    assert direct is not None and direct < least
    lab.delete("slow-svc")
    wait_for(lambda: (t := lab.curl_s(url)) is not None and t < DELAY_MS / 1000, 30,
             interval_s=0.2, what="the Service's delay gone")


def dig_ok(lab: Lab) -> bool:
    result = lab.cluster.kubectl("exec", "client", "--", "dig", "+short", "+time=1",
                                 "+tries=1", "web.default.svc.cluster.local", timeout_s=30)
    return result.returncode == 0 and lab.service_ip in result.stdout


@pytest.mark.kubectl
def test_udp_loss_drops_dns_queries(lab: Lab) -> None:
    assert dig_ok(lab)
    lab.apply(fault_yaml("lossy-dns", '{"namespace": "default"}',
                         '{"service": "kube-system/kube-dns"}', protocol="udp", port=53,
                         lossPct=100, seed=1))
    wait_for(lambda: not dig_ok(lab), 30, interval_s=0.2, what="DNS queries lost")
    dropped = [e for e in lab.events("fault.dropped") if e.get("fault") == "lossy-dns"]
    assert dropped and dropped[-1]["dst"].endswith(":53") and "seq" in dropped[-1]
    lab.delete("lossy-dns")
    wait_for(lambda: dig_ok(lab), 30, interval_s=0.2, what="DNS answering again")


@pytest.mark.kubectl
def test_node_partition_makes_routes_suspect_then_dead_and_heals(lab: Lab) -> None:
    assert lab.routes("node-1").get("node-2") == "alive"
    lab.apply(fault_yaml("split", '{"node": "node-1"}', '{"node": "node-2"}',
                         partition=True))
    seen: set[str] = set()

    def went_dead() -> bool:
        state = lab.routes("node-1").get("node-2", "")
        seen.add(state)
        return state == "dead"

    wait_for(went_dead, 60, interval_s=0.1, what="node-1 seeing node-2 dead")
    # suspect first (SWIM's suspicion), then dead: node-1's own record of the changes
    states = [e.get("state") for e in lab.events("gossip.member")
              if e.get("node") == "node-1" and e.get("member") == "node-2"]
    assert "suspect" in states and states.index("suspect") < len(states) - 1 - \
        states[::-1].index("dead"), (states, seen)
    # pod traffic between the nodes is cut as well: a connect is never answered
    assert lab.curl_s(f"http://{lab.web_ip}/") is None
    lab.delete("split")
    wait_for(lambda: lab.routes("node-1").get("node-2") == "alive"
             and lab.routes("node-2").get("node-1") == "alive", 60, interval_s=0.2,
             what="the routes alive again")
    wait_for(lambda: lab.curl_s(f"http://{lab.web_ip}/") is not None, 30,
             what="the client reaching nginx again")


# --- across a real tunnel, in process: lanes between a pod's end and the tunnel -----------------


@dataclass
class TunnelNode:
    network: NodeNetwork
    tunnels: TunnelManager
    runner: web.AppRunner
    engine: FaultEngine
    state: FaultState


@pytest.fixture
async def tunnel_pair() -> AsyncIterator[list[TunnelNode]]:
    nodes: list[TunnelNode] = []
    pods = [{"metadata": {"name": name, "namespace": "default"},
             "spec": {"nodeName": node}, "status": {"podIP": ip, "phase": "Running"}}
            for name, node, ip in (("client", "node-1", "10.244.1.5"),
                                   ("server", "node-2", "10.244.2.5"))]
    for name, cidr in (("node-1", "10.244.1.0/24"), ("node-2", "10.244.2.0/24")):
        network = NodeNetwork(name, cidr)
        routes = RouteTable(name)
        tunnels = TunnelManager(name, b"faults-core-test-secret", routes, network)
        app = web.Application()
        tunnels.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        state = FaultState()
        state.replace("Pod", pods)
        engine = FaultEngine(state, name, user_timeout_s=0.5, network=network)
        network.faults = engine
        nodes.append(TunnelNode(network, tunnels, runner, engine, state))
    for node, other, cidr, name in ((nodes[0], nodes[1], "10.244.2.0/24", "node-2"),
                                    (nodes[1], nodes[0], "10.244.1.0/24", "node-1")):
        host, port = other.runner.addresses[0][:2]
        node.tunnels.routes.update(Route(cidr, name, f"{host}:{port}"))
    try:
        yield nodes
    finally:
        for node in nodes:
            for p in node.network.pods():
                node.network.detach(p.ip)
            await node.tunnels.close()
            await node.runner.cleanup()


def set_faults(nodes: list[TunnelNode], *faults: dict[str, Any]) -> None:
    for node in nodes:
        node.state.replace("NetworkFault", faults)
        node.engine.refresh()


async def tunnel_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def fault_obj(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "f"},
            "spec": {"from": {"pod": "default/client"}, "to": {"pod": "default/server"},
                     **spec}}


async def test_faults_across_a_tunnel_keep_the_stream_and_partition_resets_it(
        tunnel_pair: list[TunnelNode]) -> None:
    n1, n2 = tunnel_pair
    client = n1.network.attach("10.244.1.5", pod="client", namespace="default",
                               hostname="client")
    server = n2.network.attach("10.244.2.5", pod="server", namespace="default",
                               hostname="server")
    await server.start_server(tunnel_echo, "0.0.0.0", 80)
    # opened before any fault: no lane yet
    old_reader, old_writer = await client.open_connection("10.244.2.5", 80)
    old_writer.write(b"ping")
    assert await old_reader.readexactly(4) == b"ping"

    # delay, jitter and loss across the tunnel: every byte, in order
    set_faults(tunnel_pair, fault_obj(delayMs=5, jitterMs=5, lossPct=10, seed=1))
    reader, writer = await client.open_connection("10.244.2.5", 80)
    payload = bytes(range(256)) * 2048       # 512 KiB
    writer.write(payload)
    assert await asyncio.wait_for(reader.readexactly(len(payload)), 60) == payload
    writer.close()

    # a partition: a new connect is never answered, the stream opened before any fault
    # stalls and is reset once the user timeout (0.5 s here) passes
    set_faults(tunnel_pair, fault_obj(partition=True))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.open_connection("10.244.2.5", 80), 0.3)
    old_writer.write(b"lost?")
    with pytest.raises((ConnectionError, TimeoutError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(old_reader.readexactly(5), 30)

    # deleted: a new connection goes straight through, without a lane
    set_faults(tunnel_pair)
    reader, writer = await client.open_connection("10.244.2.5", 80)
    assert type(cast(Any, writer.transport)._peer).__name__ != "_Lane"
    writer.write(b"back")
    assert await reader.readexactly(4) == b"back"
    writer.close()
