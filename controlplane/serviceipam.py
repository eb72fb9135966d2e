"""Service IPAM: ClusterIPs from the service CIDR (kube-apiserver's ClusterIP allocator).

It runs as admission, so a Service is never stored without its ClusterIP and two Services
can never share one. Like node IPAM, what is in use is read from the stored Services at each
allocation and never cached: a create rejected afterwards (name taken, dry run) cannot leak an
address, and a deleted Service's address is free again as soon as it is gone.

Two addresses are reserved, as in every kubeadm cluster: the first host address (10.96.0.1)
for `default/kubernetes` and the tenth (10.96.0.10) for `kube-system/kube-dns`. Pods'
resolv.conf names 10.96.0.10 before the kube-dns Service exists, so no other Service may
take it even then.

Dynamic addresses are random, from above a lower band of 256 (Kubernetes' split since 1.24):
users who pick `spec.clusterIP` themselves pick low addresses and rarely collide with the
allocator, and a deleted Service's address is not handed out again at once, so a client
still talking to the old address does not silently reach a new Service.

`ensure_system_services` creates the `kubernetes` and `kube-dns` Services at start.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from podnet.apierrors import ApiError, FieldError, invalid
from podnet.resources import BY_KIND, Resource

if TYPE_CHECKING:
    from controlplane.api import Api

log = structlog.get_logger()
SERVICES = BY_KIND["Service"]

Services = Callable[[], Iterable[Mapping[str, Any]]]

KUBERNETES = ("default", "kubernetes")
KUBE_DNS = ("kube-system", "kube-dns")
_STATIC_BAND_MAX = 256


class ServiceIpam:
    def __init__(self, service_cidr: str, services: Services,
                 rng: random.Random | None = None) -> None:
        self.net = ipaddress.IPv4Network(service_cidr)
        self.services = services
        self.rng = rng or random.Random()
        first = self.net.network_address
        # Which Service owns each reserved address.
        self.reserved: dict[str, tuple[str, str]] = {str(first + 1): KUBERNETES,
                                                     str(first + 10): KUBE_DNS}

    @property
    def kubernetes_ip(self) -> str:
        return str(self.net.network_address + 1)

    @property
    def dns_ip(self) -> str:
        return str(self.net.network_address + 10)

    def used(self) -> dict[str, tuple[str, str]]:
        """ClusterIP -> (namespace, name), for every stored Service that has one."""
        out: dict[str, tuple[str, str]] = {}
        for svc in self.services():
            ip = (svc.get("spec") or {}).get("clusterIP")
            if isinstance(ip, str) and ip and ip != "None":
                meta = svc.get("metadata") or {}
                out[ip] = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        return out

    def check(self, ip: str, owner: tuple[str, str],
              used: Mapping[str, tuple[str, str]]) -> str | None:
        """Why `owner` may not have `ip` (the message Kubernetes gives), or None."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None  # validation has already rejected it with its own message
        if (not isinstance(addr, ipaddress.IPv4Address) or addr not in self.net
                or addr in (self.net.network_address, self.net.broadcast_address)):
            return (f"provided IP is not in the valid range. The range of valid IPs is "
                    f"{self.net}")
        holder = used.get(ip) or self.reserved.get(ip)
        if holder is not None and holder != owner:
            return "provided IP is already allocated"
        return None

    def allocate(self, owner: tuple[str, str], used: Mapping[str, tuple[str, str]]) -> str:
        for ip, who in self.reserved.items():
            if who == owner and used.get(ip, owner) == owner:
                return ip
        size = self.net.num_addresses
        base = int(self.net.network_address)
        band = min(max(16, size // 16), _STATIC_BAND_MAX)
        taken = set(used) | set(self.reserved)

        def free(offset: int) -> bool:
            return str(ipaddress.IPv4Address(base + offset)) not in taken

        low, high = (band, size - 1) if size - 1 - band > 0 else (1, size - 1)
        for _ in range(64):  # random probes find a free address at once unless nearly full
            offset = self.rng.randrange(low, high)
            if free(offset):
                return str(ipaddress.IPv4Address(base + offset))
        for offset in (*range(low, high), *range(1, low)):
            if free(offset):
                return str(ipaddress.IPv4Address(base + offset))
        raise ApiError(500, "InternalError",
                       f"failed to allocate a serviceIP: range is full ({self.net})")

    def admit(self, op: str, res: Resource, obj: dict[str, Any],
              old: dict[str, Any] | None) -> None:
        if res.kind != "Service" or op not in ("CREATE", "UPDATE"):
            return
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        meta = obj.get("metadata") or {}
        owner = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if spec.get("type") == "ExternalName":
            # An ExternalName Service is a DNS CNAME: it has no virtual IP at all.
            for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                spec.pop(key, None)
            return
        old_spec = (old or {}).get("spec") or {}
        kept = old_spec.get("clusterIP")
        if op == "UPDATE" and kept and not spec.get("clusterIP"):
            # An update that leaves clusterIP out keeps the allocated one (as in Kubernetes,
            # so `kubectl replace` of the original manifest works).
            spec["clusterIP"] = kept
        ip = spec.get("clusterIP")
        if ip == "None":
            spec["clusterIPs"] = ["None"]
        elif ip and ip == kept:
            pass  # unchanged: it was checked when it was allocated
        else:
            used = self.used()
            if ip:
                why = self.check(str(ip), owner, used)
                if why is not None:
                    raise invalid("Service", owner[1],
                                  [FieldError("spec.clusterIP", "Invalid value", why, ip)])
            else:
                ip = self.allocate(owner, used)
                log.info("serviceipam.allocated", namespace=owner[0], service=owner[1],
                         cluster_ip=ip)
            spec["clusterIP"] = ip
        spec["clusterIPs"] = [spec["clusterIP"]]
        spec["ipFamilies"] = ["IPv4"]
        spec["ipFamilyPolicy"] = "SingleStack"


def system_services(ipam: ServiceIpam) -> list[dict[str, Any]]:
    """The Services every cluster has: `kubernetes` and `kube-dns`."""
    kubernetes = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        # No selector, and its Endpoints stay empty: podnet's API server listens on a real
        # socket on the host, outside the emulated network, so no pod can reach it at a pod
        # or service address. The Service exists so DNS and `kubectl get svc` read as usual.
        "spec": {"clusterIP": ipam.kubernetes_ip, "type": "ClusterIP",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                            "targetPort": 6443}]},
    }
    kube_dns = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                                "kubernetes.io/name": "CoreDNS"}},
        # No selector either: the control plane's own DNS server answers at this address
        # (it is not a pod), so there are no pods to select.
        "spec": {"clusterIP": ipam.dns_ip, "type": "ClusterIP",
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP",
                            "targetPort": 53},
                           {"name": "metrics", "port": 9153, "protocol": "TCP",
                            "targetPort": 9153}]},
    }
    return [kubernetes, kube_dns]


async def ensure_system_services(api: Api, ipam: ServiceIpam) -> None:
    """Create `kubernetes` and `kube-dns` if missing (idempotent; run at every start). A
    user's Service already holding one of the reserved addresses is logged, never moved."""
    for svc in system_services(ipam):
        meta = svc["metadata"]
        if api.store.peek(SERVICES, meta["namespace"], meta["name"]) is not None:
            continue
        try:
            await api.create(SERVICES, meta["namespace"], svc)
        except ApiError as e:
            log.error("serviceipam.system_service_failed", service=meta["name"],
                      error=str(e))
            continue
        log.info("serviceipam.system_service_created", namespace=meta["namespace"],
                 service=meta["name"], cluster_ip=svc["spec"]["clusterIP"])
    # `kubectl get endpoints kubernetes` works as in any cluster, but lists no address: the
    # API server is outside the emulated network (see system_services).
    endpoints = BY_KIND["Endpoints"]
    if api.store.peek(endpoints, *KUBERNETES) is None:
        try:
            await api.create(endpoints, KUBERNETES[0], {
                "apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": KUBERNETES[1], "namespace": KUBERNETES[0],
                             "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}}})
        except ApiError as e:
            log.error("serviceipam.system_endpoints_failed", error=str(e))
