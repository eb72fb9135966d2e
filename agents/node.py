"""The agent's Node object: registration and heartbeats (what kubelet's node status does)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import platform
import socket
from datetime import UTC, datetime
from typing import Any

import structlog

from agents import netready
from agents.cni.routes import RouteTable
from podnet import __version__
from podnet.addresses import cidr_families
from podnet.apierrors import ApiError
from podnet.client import ApiClient, ApiUnavailable
from podnet.informer import Informer
from podnet.resources import BY_KIND

log = structlog.get_logger()
NODES = BY_KIND["Node"]
AGENT_ADDRESS_ANNOTATION = "podnet.io/agent-address"


def pod_cidrs(node: dict[str, Any]) -> list[str]:
    """The Node's podCIDRs, primary (spec.podCIDR) first."""
    spec = node.get("spec") or {}
    return cidr_families(spec["podCIDR"], spec.get("podCIDRs"))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def max_pods(pod_cidr: str | None) -> int:
    """As many pods as the podCIDR has addresses for (network, gateway, broadcast excluded)."""
    if not pod_cidr:
        return 110  # kubelet's default, until the control plane has given us a podCIDR
    net = ipaddress.ip_network(pod_cidr)
    if net.version == 6:
        return 110  # a /64 holds more than any node runs: kubelet's default stands
    return max(0, net.num_addresses - 3)


def node_status(host: str, port: int, pod_cidr: str | None,
                conditions: list[dict[str, Any]]) -> dict[str, Any]:
    capacity = {"cpu": str(os.cpu_count() or 1), "memory": "8Gi",
                "pods": str(max_pods(pod_cidr)), "ephemeral-storage": "10Gi"}
    return {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": conditions,
        "addresses": [{"type": "InternalIP", "address": host},
                      {"type": "Hostname", "address": socket.gethostname()}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "architecture": platform.machine() or "amd64",
            "bootID": "", "machineID": "", "systemUUID": "",
            "containerRuntimeVersion": f"podnet://{__version__}",
            "kernelVersion": platform.release(),
            "kubeProxyVersion": "", "kubeletVersion": f"v1.32.0-podnet.{__version__}",
            "operatingSystem": "linux", "osImage": "podnet (pods as asyncio coroutines)",
        },
    }


class Conditions:
    """The node's Ready and NetworkUnavailable conditions, with Kubernetes' timestamps: the
    heartbeat time moves on every report, the transition time only when a status flips."""

    def __init__(self) -> None:
        self.network = netready.Verdict(False, "waiting for gossip: the agent is starting")
        self.shutting_down = False
        self._since: dict[str, tuple[str, str]] = {}  # type -> (status, lastTransitionTime)

    @property
    def ready(self) -> bool:
        return self.network.ready and not self.shutting_down

    def _cond(self, kind: str, status: str, reason: str, message: str,
              now: str) -> dict[str, Any]:
        previous = self._since.get(kind)
        if previous is None or previous[0] != status:
            previous = (status, now)
            self._since[kind] = previous
        return {"type": kind, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": previous[1]}

    def render(self) -> list[dict[str, Any]]:
        now = _now()
        if self.shutting_down:
            network = self._cond("NetworkUnavailable", "True", netready.NODE_SHUTDOWN,
                                 "the podnet agent stopped: its routes are withdrawn", now)
            ready = self._cond("Ready", "False", "KubeletNotReady", "node is shutting down",
                               now)
        elif self.network.ready:
            network = self._cond("NetworkUnavailable", "False", netready.ROUTES_READY,
                                 self.network.message, now)
            ready = self._cond("Ready", "True", "KubeletReady",
                               "podnet agent is posting ready status", now)
        else:
            network = self._cond("NetworkUnavailable", "True", netready.ROUTES_WAITING,
                                 self.network.message, now)
            # kubelet's own wording when the CNI is not ready yet.
            ready = self._cond("Ready", "False", "KubeletNotReady",
                               "container runtime network not ready: NetworkReady=false "
                               "reason:NetworkPluginNotReady message:podnet: "
                               + self.network.message, now)
        return [network, ready]

    def key(self) -> tuple[bool, bool, str]:
        """What a status write must carry news of (timestamps aside)."""
        return self.network.ready, self.shutting_down, self.network.message


async def register(api: ApiClient, name: str, host: str, port: int,
                   conditions: Conditions) -> dict[str, Any]:
    """Create this node's Node object, or take over the existing one (a restart).

    The control plane's node IPAM assigns `spec.podCIDR` on creation; an existing Node keeps
    its podCIDR, so pods come back in the same subnet after a restart. The node registers
    NotReady (its routes are not known yet); `NodeReporter` makes it Ready.
    """
    annotations = {AGENT_ADDRESS_ANNOTATION: f"{host}:{port}",
                   netready.ROUTES_ANNOTATION: ""}
    body = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "podnet.io/agent": "true"},
            "annotations": annotations},
        "spec": {},
    }
    try:
        node = await api.create(NODES, None, body)
    except ApiError as e:
        if e.code != 409:
            raise
        node = await api.patch(NODES, None, name, {"metadata": {
            "annotations": annotations}})
    cidr = (node.get("spec") or {}).get("podCIDR")
    node = await api.patch(NODES, None, name,
                           {"status": node_status(host, port, cidr, conditions.render())},
                           subresource="status")
    log.info("node.registered", pod_cidr=node.get("spec", {}).get("podCIDR"),
             address=f"{host}:{port}")
    return node


class NodeReporter:
    """Keeps this node's Node object true: heartbeats, the routes this agent holds, and
    whether its network is ready (see agents/netready.py).

    One task writes, so reports never race each other: it wakes on the heartbeat interval,
    on any change to the route table, and on any change to another Node (their routes and
    readiness decide ours). Writes happen only when something changed, plus the heartbeat.
    """

    SETTLE_S = 0.005   # a burst of route changes becomes one write

    def __init__(self, api: ApiClient, name: str, host: str, port: int, pod_cidr: str,
                 routes: RouteTable, conditions: Conditions, interval_s: float) -> None:
        self.api = api
        self.name = name
        self.host = host
        self.port = port
        self.pod_cidr = pod_cidr
        self.routes = routes
        self.conditions = conditions
        self.interval_s = interval_s
        self.kick = asyncio.Event()
        self.nodes = Informer(api, NODES, on_list=self._changed, on_event=self._changed)
        self._published: str | None = None
        self._reported: tuple[bool, bool, str] | None = None
        routes.on_change(lambda old, new: self.kick.set())

    async def _changed(self, *_: Any) -> None:
        self.kick.set()

    def held(self) -> dict[str, str]:
        return {r.node: r.pod_cidr for r in self.routes.all()
                if r.usable and r.node != self.name}

    async def run(self) -> None:
        informer = asyncio.create_task(self.nodes.run(), name="node-informer")
        try:
            await self._loop()
        finally:
            informer.cancel()
            await asyncio.gather(informer, return_exceptions=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.kick.wait(), max(0.0, next_beat - loop.time()))
            await asyncio.sleep(self.SETTLE_S)
            self.kick.clear()
            beat = loop.time() >= next_beat
            try:
                await self._report(beat)
            except ApiError as e:
                if e.code == 404:  # someone deleted our Node: register again, as kubelet does
                    log.warning("node.deleted_reregistering")
                    self._published = self._reported = None
                    await register(self.api, self.name, self.host, self.port, self.conditions)
                else:
                    log.warning("node.heartbeat_rejected", error=str(e))
            except ApiUnavailable as e:
                log.warning("node.heartbeat_failed", error=str(e))
                beat = True  # try again at the next interval, not in a tight loop
            if beat:
                next_beat = loop.time() + self.interval_s

    async def _report(self, beat: bool) -> None:
        held = self.held()
        routes = netready.format_routes(held)
        if routes != self._published:
            await self.api.patch(NODES, None, self.name, {"metadata": {"annotations": {
                netready.ROUTES_ANNOTATION: routes}}})
            self._published = routes
            log.info("node.routes_published", routes=routes or "-")
        if self.nodes.synced.is_set():
            dead = [r.node for r in self.routes.all() if not r.usable]
            verdict = netready.decide(self.name, self.nodes.items.values(), held, dead,
                                      was_ready=self.conditions.network.ready)
            if verdict != self.conditions.network:
                if verdict.ready != self.conditions.network.ready:
                    log.info("node.network_ready" if verdict.ready else "node.network_waiting",
                             message=verdict.message)
                self.conditions.network = verdict
        if beat or self.conditions.key() != self._reported:
            await self.post()

    async def post(self) -> None:
        key = self.conditions.key()
        await self.api.patch(NODES, None, self.name, {"status": node_status(
            self.host, self.port, self.pod_cidr, self.conditions.render())},
            subresource="status")
        self._reported = key

    async def shutdown(self) -> None:
        """Say the node is going away, so nobody waits for its routes (best effort)."""
        self.conditions.shutting_down = True
        with contextlib.suppress(ApiError, ApiUnavailable, TimeoutError):
            await asyncio.wait_for(self.post(), 1.0)
