"""Who an IP is, as faults see it, from stored Pods and Services (pure, no I/O).

The agents keep the same answers live from their watches (agents/faults.py); `podnet explain`
builds them once from a snapshot. kube-dns has no pod (the control plane answers it): faults
see the pod and Service it is in a real cluster, as NetworkPolicy does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from podnet.faults.model import Endpoint

__all__ = ["DNS_SERVICE", "endpoints_by_ip", "kube_dns_endpoint"]

DNS_SERVICE = "kube-system/kube-dns"
_TERMINAL = ("Succeeded", "Failed")


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def kube_dns_endpoint(ip: str, services: Iterable[str] = ()) -> Endpoint:
    return Endpoint(ip=ip, namespace="kube-system", pod="coredns",
                    labels={"k8s-app": "kube-dns"},
                    services=frozenset({*services, DNS_SERVICE}))


def endpoints_by_ip(pods: Iterable[Mapping[str, Any]], services: Iterable[Mapping[str, Any]],
                    dns_ip: str) -> dict[str, Endpoint]:
    out: dict[str, Endpoint] = {}
    for pod in pods:
        if not isinstance(pod, Mapping):
            continue
        meta, status, spec = _meta(pod), pod.get("status"), pod.get("spec")
        if not isinstance(status, Mapping):
            continue
        ip = status.get("podIP")
        if not isinstance(ip, str) or not ip or status.get("phase") in _TERMINAL:
            continue
        labels = meta.get("labels")
        node = spec.get("nodeName") if isinstance(spec, Mapping) else None
        # A dual-stack pod is the same endpoint at each of its addresses (status.podIPs).
        extra = status.get("podIPs")
        others = [e.get("ip") for e in extra if isinstance(e, Mapping)] \
            if isinstance(extra, list) else []
        for addr in dict.fromkeys([ip, *(a for a in others if isinstance(a, str) and a)]):
            out[addr] = Endpoint(
                ip=addr, node=str(node or ""), namespace=str(meta.get("namespace") or ""),
                pod=str(meta.get("name") or ""),
                labels={str(k): str(v) for k, v in labels.items()}
                if isinstance(labels, Mapping) else {})
    by_service: dict[str, set[str]] = {}
    for svc in services:
        if not isinstance(svc, Mapping):
            continue
        meta, spec = _meta(svc), svc.get("spec")
        if not isinstance(spec, Mapping):
            continue
        ips = spec.get("clusterIPs")
        if not isinstance(ips, list) or not ips:
            ips = [spec.get("clusterIP")]
        for ip in ips:      # one ClusterIP per family on a dual-stack Service
            if isinstance(ip, str) and ip and ip != "None":
                by_service.setdefault(ip, set()).add(
                    f"{meta.get('namespace')}/{meta.get('name')}")
    for ip, names in by_service.items():
        out[ip] = Endpoint(ip=ip, services=frozenset(names))
    out[dns_ip] = kube_dns_endpoint(dns_ip, by_service.get(dns_ip, ()))
    return out
