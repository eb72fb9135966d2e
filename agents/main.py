"""The node agent process: `podnet agent` / `python -m agents`.

Start-up order: read settings and the cluster secret, serve the agent's HTTP endpoints (so
the address can be registered), register the Node and learn its podCIDR, then keep three
tasks running until SIGINT/SIGTERM: heartbeats, the pod watch, and the runtime's pods.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import socket
import sys
from typing import Any

import structlog
from aiohttp import web

from agents import node as nodeobj
from agents.cni.gossip import GossipService
from agents.cni.membership import GossipSettings
from agents.cni.routes import Route, RouteTable
from agents.faults import FaultEngine, FaultState, FaultWatch
from agents.netstack import NodeNetwork
from agents.nodeports import NodePorts
from agents.observe import ObserveEndpoint
from agents.policy import Enforcer, PolicyState, PolicyWatch
from agents.runtime import PodRuntime
from agents.server import build_agent_app
from agents.tunnels import TunnelManager
from podnet import discovery, eventloop, logs, settings
from podnet.apierrors import ApiError
from podnet.auth import SecretError, agent_token, load_secret
from podnet.client import (
    ApiClient,
    ApiUnavailable,
    CaMismatch,
    ClusterInfo,
    fetch_cluster_info,
)
from podnet.cluster import write_json_atomic
from podnet.informer import Informer
from podnet.pki import client_context
from podnet.resources import BY_KIND
from podnet.settings import AgentSettings, SettingsError
from podnet.supervise import run_process, run_until_stopped
from podnet.tunnelnet import CONTROLPLANE

log = structlog.get_logger()
PODS, NODES = BY_KIND["Pod"], BY_KIND["Node"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="podnet agent",
        description="Run one node agent: registers a Node with the control plane, runs the "
                    "pods scheduled to it as coroutines, and serves exec and logs for them.")
    settings.add_arguments(p, AgentSettings)
    gossip_flags = p.add_argument_group("gossip (route distribution and failure detection)")
    settings.add_arguments(gossip_flags, GossipSettings)
    p.add_argument("--log-level", default=os.environ.get("PODNET_LOG_LEVEL", "info"),
                   choices=sorted(logs.LEVELS), help="lowest level logged (env PODNET_LOG_LEVEL)")
    return p


def pod_informer(api: ApiClient, runtime: PodRuntime, node: str) -> Informer:
    """The pods bound to this node: every (re)list resyncs the runtime, every event syncs
    one pod."""

    async def on_event(kind: str, pod: dict[str, Any]) -> None:
        if kind == "DELETED":
            await runtime.forget(str((pod.get("metadata") or {}).get("uid") or ""))
        else:
            await runtime.sync(pod)

    return Informer(api, PODS, field_selector=f"spec.nodeName={node}",
                    on_list=runtime.resync, on_event=on_event)


async def fetch_info_until_ready(url: str, secret: bytes) -> ClusterInfo:
    """The cluster CA and addressing (HMAC-verified), retrying while the control plane is
    not up yet."""
    delay = 0.1
    while True:
        try:
            return await fetch_cluster_info(url, secret)
        except ApiUnavailable as e:
            log.info("node.waiting_for_controlplane", error=str(e))
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def discover_controlplane(s: AgentSettings, secret: bytes) -> tuple[str, ClusterInfo]:
    """The API URL and verified cluster-info of the control plane found with mDNS. Only one
    whose cluster-info verifies under our secret is accepted: an advertisement proves
    nothing, so foreign clusters and rogue advertisers are passed over."""
    interface = s.discovery_interface or ""
    log.info("node.discovering_controlplane", interface=interface,
             timeout_s=s.discovery_timeout_s)

    async def verified(ad: discovery.Advertisement) -> ClusterInfo | None:
        try:
            return await fetch_cluster_info(ad.api, secret, timeout_s=2.0)
        except (ApiUnavailable, CaMismatch) as e:
            log.info("node.controlplane_declined", api=ad.api, cluster=ad.cluster,
                     reason=str(e))
            return None

    ad, cluster = await discovery.browse(interface, s.discovery_timeout_s, verified)
    return ad.api, cluster


async def register_until_ready(api: ApiClient, s: AgentSettings, host: str, port: int,
                               conditions: nodeobj.Conditions) -> dict[str, Any]:
    """Register, retrying while the control plane is not up yet."""
    delay = 0.1
    while True:
        try:
            node = await nodeobj.register(api, s.name, host, port, conditions)
            if node.get("spec", {}).get("podCIDR"):
                return node
            log.warning("node.no_pod_cidr_yet")
        except ApiUnavailable as e:
            log.info("node.waiting_for_controlplane", error=str(e))
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def seed_from_controlplane(api: ApiClient, gossip: GossipService, me: str) -> None:
    """The agents the control plane knows of, as gossip seeds (best effort: gossip also has
    --peers and the peers file, and the control plane may be down)."""
    try:
        nodes = (await api.list(NODES)).get("items", [])
    except (ApiError, ApiUnavailable) as e:
        log.info("gossip.no_seeds_from_controlplane", error=str(e))
        return
    seeds = [n["metadata"].get("annotations", {}).get(nodeobj.AGENT_ADDRESS_ANNOTATION)
             for n in nodes if n.get("metadata", {}).get("name") != me]
    gossip.add_seeds(a for a in seeds if a)


async def run(s: AgentSettings, g: GossipSettings, stop: asyncio.Event) -> None:
    secret = load_secret(s.secret_path)
    token = agent_token(secret)
    async with contextlib.AsyncExitStack() as stack:
        if s.controlplane:
            url, cluster = s.controlplane, await fetch_info_until_ready(s.controlplane, secret)
        else:
            url, cluster = await discover_controlplane(s, secret)
        api = await stack.enter_async_context(
            ApiClient(url, token, ssl_context=client_context(cluster.ca_pem)))
        # Registration needs our address and the runtime needs the registered podCIDR, so
        # bind the socket first, register, and only then serve on it.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((s.listen_host, s.listen_port))
        except OSError as e:
            sock.close()
            raise SettingsError(f"--listen-port: cannot listen on {s.listen_host}:"
                                f"{s.listen_port}: {e.strerror}") from None
        stack.callback(sock.close)
        port = int(sock.getsockname()[1])
        host = s.advertise_host or s.listen_host
        conditions = nodeobj.Conditions()
        node = await register_until_ready(api, s, host, port, conditions)
        pod_cidr = node["spec"]["podCIDR"]
        # Dual-stack: a podCIDR and cluster/service CIDR per family, primary first.
        pod_cidrs = nodeobj.pod_cidrs(node)
        cluster_cidrs, service_cidrs = cluster.cluster_families, cluster.service_families
        network = NodeNetwork(s.name, pod_cidr, cluster.cluster_cidr, pod_cidrs=pod_cidrs,
                              cluster_cidrs=cluster_cidrs)
        runtime = PodRuntime(node=s.name, host_ip=host, pod_cidr=pod_cidr, network=network,
                             api=api, cluster_domain=cluster.cluster_domain,
                             cluster_cidr=cluster.cluster_cidr, pod_cidrs=pod_cidrs,
                             cluster_cidrs=cluster_cidrs,
                             dns_ip=str(ipaddress.ip_network(cluster.service_cidr)[10]))
        stack.push_async_callback(runtime.close)
        # The CNI: routes learned by gossip, pod traffic to other nodes through tunnels.
        routes = RouteTable(s.name)
        # Service IPs go to the control plane's ClusterIP proxy (address from cluster-info).
        proxy_address = cluster.tunnel_dial_address(url)
        proxy_route = Route(cluster.service_cidr, CONTROLPLANE, proxy_address) \
            if proxy_address else None
        tunnels = TunnelManager(s.name, secret, routes, network,
                                service_route=lambda ip: proxy_route,
                                service_cidr=cluster.service_cidr,
                                service_cidrs=service_cidrs)
        stack.push_async_callback(tunnels.close)
        gossip = GossipService(s.name, pod_cidr, f"{host}:{port}", secret, routes, g,
                               seeds=s.peer_list,
                               peers_file=s.state_dir / "run" / f"peers-{s.name}.json",
                               pod_cidrs=tuple(pod_cidrs))

        # The live feed for the control plane's topology page (flows, routes, link counters).
        observe = ObserveEndpoint(s.name, routes, tunnels)

        def cni_routes(app: web.Application) -> None:
            gossip.add_routes(app)
            tunnels.add_routes(app)
            observe.add_routes(app)

        runner = web.AppRunner(build_agent_app(runtime, token, extra=cni_routes,
                                               route_table=routes), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        # Tunnels end before the server stops: the server waits for its open handlers, and
        # a peer's inbound tunnel would otherwise hold it until that peer gives up on us.
        stack.push_async_callback(tunnels.close)
        await web.SockSite(runner, sock).start()
        await gossip.start()
        stack.push_async_callback(gossip.close)
        await seed_from_controlplane(api, gossip, s.name)
        # Heartbeats, the routes we hold, and Ready only once routes are in place both ways.
        reporter = nodeobj.NodeReporter(api, s.name, host, port, pod_cidr, routes, conditions,
                                        s.heartbeat_interval_s)
        stack.push_async_callback(reporter.shutdown)
        nodeports = NodePorts(api, s.name, s.listen_host, pod_cidr, network, tunnels)
        # NetworkPolicy, enforced here from what this agent watches (agents/policy.py).
        policy_state = PolicyState(
            dns_ip=str(ipaddress.ip_network(cluster.service_cidr)[10]),
            service_cidr=cluster.service_cidr, service_cidrs=service_cidrs)
        network.policy = Enforcer(policy_state, s.name, reject=s.policy_reject)
        policy_watch = PolicyWatch(api, policy_state, s.name)
        # Network faults, acting where this node's pods send (agents/faults.py); a partition
        # between nodes also cuts this agent's gossip to the node on the other side.
        fault_state = FaultState(cluster_seed=cluster.fault_seed,
                                 dns_ip=str(ipaddress.ip_network(cluster.service_cidr)[10]))
        fault_engine = FaultEngine(fault_state, s.name, network=network)
        network.faults = fault_engine
        gossip.cut = fault_engine.node_cut
        fault_watch = FaultWatch(api, fault_state, fault_engine)
        # One Service list for the node: NodePort listeners and containers' Service variables.
        runtime.services = nodeports.services
        tasks = [
            asyncio.create_task(reporter.run(), name="node-reporter"),
            asyncio.create_task(pod_informer(api, runtime, s.name).run(), name="pod-watch"),
            # NodePort Services: real listeners on our own address (agents/nodeports.py).
            asyncio.create_task(nodeports.run(), name="nodeports"),
            asyncio.create_task(policy_watch.run(), name="policy-watch"),
            asyncio.create_task(fault_watch.run(), name="fault-watch"),
        ]
        if s.ready_file:
            write_json_atomic(s.ready_file, {"pid": os.getpid(), "name": s.name,
                                             "address": f"{host}:{port}", "podCIDR": pod_cidr})
        log.info("agent.ready", address=f"{host}:{port}", pod_cidr=pod_cidr,
                 pod_cidrs=pod_cidrs if len(pod_cidrs) > 1 else None,
                 loop=eventloop.loop_name())
        await run_until_stopped(stop, tasks, log, "agent")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        s = settings.load(AgentSettings, args)
        g = settings.load(GossipSettings, args)
    except SettingsError as e:
        print(f"podnet agent: {e}", file=sys.stderr)
        return 2
    logs.configure(f"agent-{s.name}", component="agent", node=s.name,
                   logs_dir=s.state_dir / "logs", level=args.log_level)
    return run_process("agent", lambda stop: run(s, g, stop),
                       (SecretError, SettingsError, CaMismatch, discovery.DiscoveryError))
