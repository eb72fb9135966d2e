"""The agent's Node object: registration and heartbeats (what kubelet's node status does)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import platform
import socket
from datetime import UTC, datetime
from typing import Any

import structlog

from podnet import __version__
from podnet.apierrors import ApiError
from podnet.client import ApiClient, ApiUnavailable
from podnet.resources import BY_KIND

log = structlog.get_logger()
NODES = BY_KIND["Node"]
AGENT_ADDRESS_ANNOTATION = "podnet.io/agent-address"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def max_pods(pod_cidr: str | None) -> int:
    """As many pods as the podCIDR has addresses for (network, gateway, broadcast excluded)."""
    if not pod_cidr:
        return 110  # kubelet's default, until the control plane has given us a podCIDR
    return max(0, ipaddress.ip_network(pod_cidr).num_addresses - 3)


def node_status(host: str, port: int, pod_cidr: str | None, ready: bool = True) -> dict[str, Any]:
    now = _now()
    capacity = {"cpu": str(os.cpu_count() or 1), "memory": "8Gi",
                "pods": str(max_pods(pod_cidr)), "ephemeral-storage": "10Gi"}
    return {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [{
            "type": "Ready", "status": "True" if ready else "False",
            "reason": "KubeletReady" if ready else "KubeletNotReady",
            "message": "podnet agent is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
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


async def register(api: ApiClient, name: str, host: str, port: int) -> dict[str, Any]:
    """Create this node's Node object, or take over the existing one (a restart).

    The control plane's node IPAM assigns `spec.podCIDR` on creation; an existing Node keeps
    its podCIDR, so pods come back in the same subnet after a restart.
    """
    body = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "podnet.io/agent": "true"},
            "annotations": {AGENT_ADDRESS_ANNOTATION: f"{host}:{port}"}},
        "spec": {},
    }
    try:
        node = await api.create(NODES, None, body)
    except ApiError as e:
        if e.code != 409:
            raise
        node = await api.patch(NODES, None, name, {"metadata": {
            "annotations": {AGENT_ADDRESS_ANNOTATION: f"{host}:{port}"}}})
    cidr = (node.get("spec") or {}).get("podCIDR")
    node = await api.patch(NODES, None, name, {"status": node_status(host, port, cidr)},
                           subresource="status")
    log.info("node.registered", pod_cidr=node.get("spec", {}).get("podCIDR"),
             address=f"{host}:{port}")
    return node


async def heartbeat(api: ApiClient, name: str, host: str, port: int, pod_cidr: str,
                    interval_s: float) -> None:
    """Renew the Ready condition forever; the control plane marks silence as NotReady."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await api.patch(NODES, None, name, {"status": node_status(host, port, pod_cidr)},
                            subresource="status")
        except ApiError as e:
            if e.code == 404:  # someone deleted our Node: register again, as kubelet does
                log.warning("node.deleted_reregistering")
                await register(api, name, host, port)
            else:
                log.warning("node.heartbeat_rejected", error=str(e))
        except ApiUnavailable as e:
            log.warning("node.heartbeat_failed", error=str(e))
