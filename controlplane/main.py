"""The control plane process: `podnet controlplane` / `python -m controlplane`.

It owns the API server and its durable store, node IPAM (admission), the scheduler and the
node lifecycle controller. Every component is entered into one AsyncExitStack and torn down
in reverse order on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import socket
import sys

import structlog
from aiohttp import web

from controlplane.api import Api
from controlplane.apiserver import build_app
from controlplane.controllers import NodeLifecycle, Scheduler
from controlplane.daemonsets import DaemonSetController
from controlplane.dns.server import DnsServer
from controlplane.endpoints import EndpointsController
from controlplane.faultexpiry import FaultExpiry
from controlplane.jobs import JobAdmission, JobController
from controlplane.loadbalancers import LoadBalancerNotice
from controlplane.nodeipam import NodeIpam
from controlplane.nodeportipam import NodePortIpam
from controlplane.proxy import ClusterIPProxy, serve_tunnels
from controlplane.serviceipam import ServiceIpam, ensure_system_services
from controlplane.statefulsets import StatefulSetController
from controlplane.store import Store
from controlplane.ui import UiHub, UiServer
from controlplane.workloads import (
    DeploymentController,
    GarbageCollector,
    PodEviction,
    ReplicaSetController,
)
from podnet import __version__, discovery, eventloop, logs, settings
from podnet.auth import SecretError, agent_token, api_token, generate_secret, load_secret
from podnet.cluster import write_json_atomic
from podnet.observe.flows import FlowTable
from podnet.observe.links import LinkHistory
from podnet.observe.ring import flow_ring
from podnet.pki import PkiError, ensure_pki, server_context, sign_cluster_info
from podnet.resources import BY_KIND
from podnet.services.nodeports import parse_range
from podnet.settings import ControlPlaneSettings, SettingsError
from podnet.supervise import run_process, run_until_stopped

log = structlog.get_logger()
NODES = BY_KIND["Node"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="podnet controlplane",
        description="Run the control plane: a Kubernetes-shaped API server with a durable "
                    "store, the scheduler, node IPAM and the node lifecycle controller.")
    settings.add_arguments(p, ControlPlaneSettings)
    p.add_argument("--log-level", default=os.environ.get("PODNET_LOG_LEVEL", "info"),
                   choices=sorted(logs.LEVELS), help="lowest level logged (env PODNET_LOG_LEVEL)")
    return p


def agent_address(api: Api):  # type: ignore[no-untyped-def]
    """Where a node's agent listens, from its Node object (as the API server finds kubelets)."""

    def lookup(node_name: str) -> tuple[str, int] | None:
        try:
            node = api.get(NODES, None, node_name)
        except Exception:  # any lookup failure means "no agent known"
            return None
        status = node.get("status") or {}
        port = (status.get("daemonEndpoints") or {}).get("kubeletEndpoint", {}).get("Port")
        host = next((a.get("address") for a in status.get("addresses") or []
                     if a.get("type") == "InternalIP"), None)
        if not host or not isinstance(port, int):
            return None
        return str(host), port

    return lookup


async def advertise(s: ControlPlaneSettings, api_port: int, dns_port: int,
                    stack: contextlib.AsyncExitStack) -> None:
    """Publish the API URL and DNS address with mDNS on one address (never all interfaces:
    see podnet/discovery.py); agents started without --controlplane find us that way."""
    interface = s.mdns_interface or discovery.default_interface(s.listen_host) or ""
    ad = discovery.controlplane_advertisement(s.cluster_name, interface, s.listen_host,
                                              api_port, s.dns_host, dns_port)
    advertiser = discovery.Advertiser(ad, interface)
    try:
        await advertiser.start()
    except OSError as e:
        await advertiser.close()
        raise SettingsError(f"--mdns-interface: cannot advertise on {interface}: "
                            f"{e.strerror or e} (or pass --no-advertise)") from None
    stack.push_async_callback(advertiser.close)


async def run(s: ControlPlaneSettings, stop: asyncio.Event) -> None:
    s.state_dir.mkdir(parents=True, exist_ok=True)
    path = s.secret_path
    secret = load_secret(path) if path.exists() else generate_secret(path)
    async with contextlib.AsyncExitStack() as stack:
        store = Store.open(s.state_dir / "store.db")
        stack.callback(store.close)
        api = Api(store)
        api.add_admission(NodeIpam(s.cluster_cidrs, s.node_cidr_mask,
                                   lambda: store.scan(NODES), s.node_cidr_mask_v6))
        service_ipam = ServiceIpam(s.service_cidrs, lambda: store.scan(BY_KIND["Service"]))
        api.add_admission(service_ipam)
        api.add_admission(JobAdmission())
        api.add_admission(NodePortIpam(parse_range(s.service_node_port_range),
                                       lambda: store.scan(BY_KIND["Service"])))
        api.bootstrap()
        await api.start()
        stack.push_async_callback(api.close)
        await ensure_system_services(api, service_ipam)
        # The ClusterIP proxy's tunnel endpoint: its address goes into the signed cluster-info.
        # The proxy serves the ClusterIPs of every family (each from its own family's
        # endpoints); kube-dns is at the primary range's 10th address.
        proxy = ClusterIPProxy(store, secret, service_cidr=s.service_cidr,
                               service_cidrs=s.service_cidrs, dns_ip=service_ipam.dns_ip)
        tunnel_runner, tunnel_address = await serve_tunnels(proxy, s.listen_host, s.tunnel_port)
        stack.push_async_callback(tunnel_runner.cleanup)
        await proxy.start()
        stack.push_async_callback(proxy.close)
        crt, key, ca_pem = ensure_pki(s.state_dir / "pki", [s.listen_host, socket.gethostname(),
                                                            *s.san_list])
        # The topology page (/podnet/ui/): its hub runs feeds only while a page is open.
        ui = UiServer(UiHub(store, agent_token=agent_token(secret), version=__version__,
                            new_flows=FlowTable, new_links=LinkHistory, ring=flow_ring(),
                            local_links=proxy.link_stats),
                      secret, api_token(secret),
                      used_codes_file=s.state_dir / "ui-used-logins")
        app = build_app(api, api_token=api_token(secret), agent_token=agent_token(secret),
                        agent_address=agent_address(api), extra_routes=ui.add_routes,
                        cluster_info=sign_cluster_info(secret, {
                            "ca": ca_pem.decode(), "clusterCIDR": s.cluster_cidr,
                            "serviceCIDR": s.service_cidr, "clusterDomain": s.cluster_domain,
                            # Lists, primary first (the two keys above are the primary).
                            "clusterCIDRs": s.cluster_cidrs, "serviceCIDRs": s.service_cidrs,
                            "tunnelAddress": tunnel_address, "faultSeed": s.fault_seed}))
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, s.listen_host, s.listen_port,
                           ssl_context=server_context(crt, key))
        try:
            await site.start()
        except OSError as e:
            raise SettingsError(f"--listen-port: cannot listen on {s.listen_host}:"
                                f"{s.listen_port}: {e.strerror}") from None
        port = int(runner.addresses[0][1])  # the port the OS chose for --listen-port 0
        address = f"{s.listen_host}:{port}"
        dns_server = DnsServer(store, host=s.dns_host, port=s.dns_port,
                               domain=s.cluster_domain, strict=s.dns_strict,
                               upstream=s.dns_upstream,
                               dns_ip=str(ipaddress.ip_network(s.service_cidr)[10]))
        try:
            await dns_server.start()
        except OSError as e:
            raise SettingsError(f"--dns-port: cannot listen on {s.dns_host}:{s.dns_port}: "
                                f"{e.strerror}") from None
        stack.push_async_callback(dns_server.close)
        proxy.dns = dns_server.query    # kube-dns:53 over the emulated network
        if s.advertise:
            await advertise(s, port, dns_server.port, stack)
        scheduler = Scheduler(api)
        lifecycle = NodeLifecycle(api, s.node_monitor_grace_s, s.node_monitor_period_s)
        tasks = [asyncio.create_task(scheduler.run(), name="scheduler"),
                 asyncio.create_task(lifecycle.run(), name="node-lifecycle"),
                 asyncio.create_task(EndpointsController(api).run(), name="endpoints"),
                 asyncio.create_task(LoadBalancerNotice(api).run(), name="loadbalancers"),
                 asyncio.create_task(ReplicaSetController(api).run(), name="replicasets"),
                 asyncio.create_task(DeploymentController(api).run(), name="deployments"),
                 asyncio.create_task(StatefulSetController(api).run(), name="statefulsets"),
                 asyncio.create_task(DaemonSetController(api).run(), name="daemonsets"),
                 asyncio.create_task(JobController(api).run(), name="jobs"),
                 asyncio.create_task(GarbageCollector(api).run(), name="garbage-collector"),
                 asyncio.create_task(PodEviction(api, s.pod_eviction_timeout_s).run(),
                                     name="pod-eviction"),
                 asyncio.create_task(FaultExpiry(api).run(), name="fault-expiry")]
        if s.ready_file:
            write_json_atomic(s.ready_file, {"pid": os.getpid(), "address": address,
                                             "api": f"https://{address}",
                                             "dns": {"host": s.dns_host,
                                                     "port": dns_server.port},
                                             "ca_file": str((s.state_dir / "pki" / "ca.crt")
                                                            .resolve())})
        log.info("controlplane.ready", api=f"https://{address}", dns_port=dns_server.port,
                 state_dir=str(s.state_dir),
                 loop=eventloop.loop_name())
        await run_until_stopped(stop, tasks, log, "controlplane")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        s = settings.load(ControlPlaneSettings, args)
    except SettingsError as e:
        print(f"podnet controlplane: {e}", file=sys.stderr)
        return 2
    logs.configure("controlplane", component="controlplane", node="",
                   logs_dir=s.state_dir / "logs", level=args.log_level)
    return run_process("controlplane", lambda stop: run(s, stop),
                       (SecretError, SettingsError, PkiError))
