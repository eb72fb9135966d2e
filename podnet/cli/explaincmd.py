"""`podnet explain`: the command, and the I/O behind it (the API, the agents' route tables,
the logs). The reasoning itself is pure: podnet/cli/explain.py and podnet/cli/flowstory.py.

Exit codes: 0 the packet would get through (or did), 1 denied by policy or unreachable (or
the flow failed), 2 bad input (a FROM/TO that names nothing, an unknown flow id), 3 the
cluster could not be read.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from podnet.apierrors import ApiError
from podnet.cli.explain import ExplainError, Snapshot, as_json, explain, render
from podnet.cli.flowstory import render_story, story, story_json
from podnet.client import ApiClient, ApiUnavailable, fetch_cluster_info
from podnet.resources import BY_KIND

EXIT_BAD_INPUT = 2
EXIT_NO_CLUSTER = 3
ROUTES_TIMEOUT_S = 2.0


def add_arguments(p: Any) -> None:
    p.add_argument("source", nargs="?", metavar="FROM",
                   help="a pod: NS/POD, POD (namespace default) or its IP")
    p.add_argument("destination", nargs="?", metavar="TO",
                   help="a pod (NS/POD, POD, IP), a Service (svc/NAME, svc/NS/NAME, its "
                        "ClusterIP) or kube-dns")
    p.add_argument("--port", default=None, metavar="P",
                   help="destination port, a number or a name (default: the pod's first "
                        "container port, the Service's first port, 53 for kube-dns)")
    p.add_argument("--protocol", default=None, choices=("tcp", "udp", "TCP", "UDP"),
                   help="default: the port's own protocol, else tcp (udp for kube-dns)")
    p.add_argument("--flow", default=None, metavar="ID",
                   help="explain a flow that happened, from the logs (see `podnet logs`)")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")


def _fail(message: str, code: int) -> int:
    print(f"podnet explain: {message}", file=sys.stderr)
    return code


def run(args: Any, directory: Path) -> int:
    from podnet.cluster import ClusterNotFound, read_cluster

    if args.flow is not None:
        if args.source or args.destination:
            return _fail("give either FROM TO or --flow ID, not both", EXIT_BAD_INPUT)
        return _run_flow(args.flow, directory, args.output)
    if not args.source or not args.destination:
        return _fail("give FROM and TO (e.g. `podnet explain default/client svc/web`), or "
                     "--flow ID", EXIT_BAD_INPUT)
    try:
        info = read_cluster(directory)
        snap = asyncio.run(fetch_snapshot(info))
    except ClusterNotFound as e:
        return _fail(str(e), EXIT_NO_CLUSTER)
    except (ApiUnavailable, ApiError, OSError) as e:
        return _fail(f"cannot read the cluster: {e}", EXIT_NO_CLUSTER)
    try:
        ex = explain(snap, args.source, args.destination, args.port, args.protocol)
    except ExplainError as e:
        return _fail(str(e), EXIT_BAD_INPUT)
    try:
        print(json.dumps(as_json(ex), indent=2) if args.output == "json" else render(ex))
    except BrokenPipeError:
        pass        # `podnet explain ... | head`: the exit code still tells the verdict
    return ex.exit_code


async def fetch_snapshot(info: dict[str, Any]) -> Snapshot:
    """Everything explain reads, in one go: stored objects from the API, each node's route
    table from its agent (an agent that does not answer is noted, not fatal)."""
    from podnet.auth import agent_token, api_token, load_secret
    from podnet.cluster import client_ssl
    from podnet.routesview import fetch_routes
    from podnet.services.servicemap import agent_address

    secret = load_secret(Path(info["secret_file"]))
    cluster = await fetch_cluster_info(info["api"], secret)
    snap = Snapshot(service_cidr=cluster.service_cidr, service_cidrs=cluster.service_families,
                    proxy_address=cluster.tunnel_dial_address(info["api"]))
    kinds = ("Pod", "Service", "EndpointSlice", "Node", "Namespace", "NetworkPolicy")
    async with ApiClient(info["api"], api_token(secret), ssl_context=client_ssl(info)) as api:
        lists = await asyncio.gather(*(api.list(BY_KIND[k]) for k in kinds))
    items = [[i for i in (body or {}).get("items") or [] if isinstance(i, dict)]
             for body in lists]
    snap.pods, snap.services, snap.slices, snap.nodes, snap.namespaces, snap.policies = items
    dns = next((s for s in snap.services
                if (s.get("metadata") or {}).get("namespace") == "kube-system"
                and (s.get("metadata") or {}).get("name") == "kube-dns"), None)
    if dns is not None and isinstance((dns.get("spec") or {}).get("clusterIP"), str):
        snap.dns_ip = dns["spec"]["clusterIP"]
    nodes = []
    for node in snap.nodes:
        name, address = (node.get("metadata") or {}).get("name"), agent_address(node)
        if isinstance(name, str) and address:
            nodes.append({"name": name, "address": address})
    snap.routes = await fetch_routes(nodes, agent_token(secret), ROUTES_TIMEOUT_S)
    snap.fault_seed = cluster.fault_seed
    if "NetworkFault" in BY_KIND:
        async with ApiClient(info["api"], api_token(secret),
                             ssl_context=client_ssl(info)) as api:
            try:
                body = await api.list(BY_KIND["NetworkFault"])
            except ApiError:
                body = None     # an API without faults: explain the path without them
        snap.faults = [i for i in (body or {}).get("items") or [] if isinstance(i, dict)]
    return snap


def _run_flow(flow: str, directory: Path, output: str) -> int:
    from podnet.logview import Filter, Stats, read_events

    logs_dir = directory / "logs"
    try:
        info = json.loads((directory / "cluster.json").read_text())
        logs_dir = Path(info.get("logs_dir") or logs_dir)
    except (OSError, ValueError, AttributeError):
        pass
    if not logs_dir.is_dir():
        return _fail(f"no logs in {logs_dir}", EXIT_NO_CLUSTER)
    flt = Filter(flow=flow)
    events = [e.data for e in read_events(logs_dir, Stats()) if flt.match(e)]
    if not events:
        return _fail(f"no events for flow {flow} in {logs_dir}", EXIT_BAD_INPUT)
    told = story(flow, events)
    try:
        print(json.dumps(story_json(told), indent=2) if output == "json"
              else render_story(told))
    except BrokenPipeError:
        pass
    return told.exit_code
