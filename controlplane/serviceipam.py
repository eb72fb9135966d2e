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

A dual-stack cluster has a service CIDR per family (primary first). Which families a Service
gets follows kube-apiserver (`initIPFamilyFields` and the allocator): `ipFamilyPolicy`
defaults to SingleStack (RequireDualStack for a selector-less headless Service), and to the
stored policy on update; `ipFamilies` is inferred from given `clusterIPs`, defaults to the
primary family, and gets the other family for PreferDualStack/RequireDualStack when the
cluster has both; one ClusterIP is allocated per family from that family's range. The
stateless checks (clusterIPs vs ipFamilies, what an update may change) are in
podnet/validation.py; what needs the cluster's families is here, in Kubernetes' words.

`ensure_system_services` creates the `kubernetes` and `kube-dns` Services at start: both
SingleStack in the primary family.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from podnet.apierrors import ApiError, FieldError, invalid
from podnet.resources import BY_KIND, Resource
from podnet.validation import GoSlice

if TYPE_CHECKING:
    from controlplane.api import Api

log = structlog.get_logger()
SERVICES = BY_KIND["Service"]

Services = Callable[[], Iterable[Mapping[str, Any]]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

KUBERNETES = ("default", "kubernetes")
KUBE_DNS = ("kube-system", "kube-dns")
_STATIC_BAND_MAX = 256
_OTHER = {"IPv4": "IPv6", "IPv6": "IPv4"}


def family_of(ip: Any) -> str | None:
    """"IPv4"/"IPv6" for an address, None for anything else."""
    try:
        return f"IPv{ipaddress.ip_address(ip).version}" if isinstance(ip, str) else None
    except ValueError:
        return None


class ServiceIpam:
    def __init__(self, service_cidrs: str | Sequence[str], services: Services,
                 rng: random.Random | None = None) -> None:
        cidrs = [service_cidrs] if isinstance(service_cidrs, str) else list(service_cidrs)
        # family -> range, primary first (dicts keep insertion order)
        self.nets: dict[str, Network] = {}
        for cidr in cidrs:
            net = ipaddress.ip_network(cidr)
            self.nets[f"IPv{net.version}"] = net
        self.families = list(self.nets)
        self.net = self.nets[self.families[0]]  # the primary range
        self.services = services
        self.rng = rng or random.Random()
        first = self.net.network_address
        # Which Service owns each reserved address (in the primary range: both system
        # Services are SingleStack in the primary family).
        self.reserved: dict[str, tuple[str, str]] = {str(first + 1): KUBERNETES,
                                                     str(first + 10): KUBE_DNS}

    @property
    def primary_family(self) -> str:
        return self.families[0]

    @property
    def kubernetes_ip(self) -> str:
        return str(self.net.network_address + 1)

    @property
    def dns_ip(self) -> str:
        return str(self.net.network_address + 10)

    def used(self) -> dict[str, tuple[str, str]]:
        """ClusterIP -> (namespace, name), every family, for every stored Service."""
        out: dict[str, tuple[str, str]] = {}
        for svc in self.services():
            spec = svc.get("spec") or {}
            ips = [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])]
            meta = svc.get("metadata") or {}
            for ip in ips:
                if isinstance(ip, str) and ip and ip != "None":
                    out[_canonical(ip)] = (str(meta.get("namespace") or ""),
                                           str(meta.get("name") or ""))
        return out

    def check(self, ip: str, owner: tuple[str, str],
              used: Mapping[str, tuple[str, str]]) -> str | None:
        """Why `owner` may not have `ip` (the message Kubernetes gives), or None."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None  # validation has already rejected it with its own message
        net = self.nets.get(f"IPv{addr.version}", self.net)
        # The network address is never handed out, nor IPv4's broadcast address (IPv6 has
        # none: kube-apiserver's allocator uses the last address of an IPv6 range).
        excluded = (net.network_address,
                    *((net.broadcast_address,) if net.version == 4 else ()))
        if addr.version != net.version or addr not in net or addr in excluded:
            return (f"provided IP is not in the valid range. The range of valid IPs is "
                    f"{net}")
        holder = used.get(str(addr)) or self.reserved.get(str(addr))
        if holder is not None and holder != owner:
            return "provided IP is already allocated"
        return None

    def allocate(self, owner: tuple[str, str], used: Mapping[str, tuple[str, str]],
                 family: str | None = None) -> str:
        """A free ClusterIP for `owner` in `family`'s range (default: the primary)."""
        net = self.nets[family or self.primary_family]
        if net is self.net:
            for ip, who in self.reserved.items():
                if who == owner and used.get(ip, owner) == owner:
                    return ip
        size = net.num_addresses
        base = int(net.network_address)
        band = min(max(16, size // 16), _STATIC_BAND_MAX)
        taken = set(used) | set(self.reserved)
        last = size - 1 if net.version == 4 else size  # exclusive; IPv4 skips broadcast

        def address(offset: int) -> str:
            return str(ipaddress.ip_address(base + offset))

        low, high = (band, last) if last - band > 0 else (1, last)
        for _ in range(64):  # random probes find a free address at once unless nearly full
            offset = self.rng.randrange(low, high)
            if address(offset) not in taken:
                return address(offset)
        for offset in (*range(low, high), *range(1, low)):
            if address(offset) not in taken:
                return address(offset)
        raise ApiError(500, "InternalError",
                       f"failed to allocate a serviceIP: range is full ({net})")

    # --- families (kube-apiserver's initIPFamilyFields) ---------------------------------

    def init_families(self, name: str, spec: dict[str, Any],
                      old_spec: dict[str, Any] | None) -> None:
        """Default and check ipFamilyPolicy and ipFamilies against this cluster's families;
        a 422 in Kubernetes' words when they cannot be met."""
        policy = spec.get("ipFamilyPolicy")
        if policy is None:
            if old_spec and old_spec.get("ipFamilyPolicy"):
                policy = old_spec["ipFamilyPolicy"]
            elif spec.get("clusterIP") == "None" and not spec.get("selector"):
                policy = "RequireDualStack"  # headless and selector-less: both if possible
            else:
                policy = "SingleStack"
        spec["ipFamilyPolicy"] = policy
        ips = list(spec.get("clusterIPs") or [])
        families = list(spec.get("ipFamilies") or [])
        errors: list[FieldError] = []
        if old_spec is not None:
            old_ips = list(old_spec.get("clusterIPs") or [])
            old_families = list(old_spec.get("ipFamilies") or [])
            if policy == "SingleStack":
                # SingleStack with the fields unchanged is a clear wish to downgrade.
                if ips == old_ips and len(ips) > 1:
                    ips = ips[:1]
                if families == old_families and len(families) > 1:
                    families = families[:1]
            else:
                if ips and len(ips) < len(old_ips):
                    errors.append(FieldError("spec.ipFamilyPolicy", "Invalid value",
                                             "must be 'SingleStack' to release the secondary "
                                             "cluster IP", policy))
                if families and len(families) < len(old_families):
                    errors.append(FieldError("spec.ipFamilyPolicy", "Invalid value",
                                             "must be 'SingleStack' to release the secondary "
                                             "IP family", policy))
        if policy == "SingleStack":
            if len(ips) == 2:
                errors.append(FieldError("spec.ipFamilyPolicy", "Invalid value",
                                         "must be 'RequireDualStack' or 'PreferDualStack' "
                                         "when multiple cluster IPs are specified", policy))
            if len(families) == 2:
                errors.append(FieldError("spec.ipFamilyPolicy", "Invalid value",
                                         "must be 'RequireDualStack' or 'PreferDualStack' "
                                         "when multiple IP families are specified", policy))
        for i, ip in enumerate(ips):  # families follow the addresses given
            if ip == "None":
                break
            family = family_of(ip)
            if family is not None and i >= len(families):
                if family not in self.nets:
                    errors.append(FieldError(f"spec.clusterIPs[{i}]", "Invalid value",
                                             f"{family} is not configured on this cluster",
                                             GoSlice(ips)))
                else:
                    families.append(family)
        if errors:
            raise invalid("Service", name, errors)
        spec["clusterIPs"] = ips
        if not ips:
            del spec["clusterIPs"]
        if spec.get("clusterIP") == "None" and not spec.get("selector"):
            # Headless and selector-less: may list both families even on a single-stack
            # cluster (its endpoints are whatever the user writes).
            families = families or [self.primary_family]
            if len(families) < 2 and policy != "SingleStack":
                families.append(_OTHER[families[0]])
            spec["ipFamilies"] = families
            return
        if policy == "RequireDualStack" and len(self.nets) < 2:
            errors.append(FieldError("spec.ipFamilyPolicy", "Invalid value",
                                     "this cluster is not configured for dual-stack services",
                                     policy))
        for i, family in enumerate(families):
            if family not in self.nets:
                errors.append(FieldError(f"spec.ipFamilies[{i}]", "Invalid value",
                                         "not configured on this cluster", family))
        if errors:
            raise invalid("Service", name, errors)
        families = families or [self.primary_family]
        if policy != "SingleStack" and len(families) == 1 and len(self.nets) == 2:
            families.append(_OTHER[families[0]])
        spec["ipFamilies"] = families

    # --- admission ------------------------------------------------------------------------

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
        old_spec = (old or {}).get("spec") or {} if op == "UPDATE" else None
        if old_spec is not None and old_spec.get("type") == "ExternalName":
            old_spec = None  # from ExternalName: allocated as on create
        if old_spec is not None:
            kept = old_spec.get("clusterIP")
            if kept and not spec.get("clusterIP"):
                # An update that leaves clusterIP out keeps the allocated one (as in
                # Kubernetes, so `kubectl replace` of the original manifest works).
                spec["clusterIP"] = kept
            if not old_spec.get("clusterIPs") and kept:
                # stored before podnet kept clusterIPs: read as SingleStack in its family
                old_spec = {**old_spec, "clusterIPs": [kept],
                            "ipFamilies": [family_of(kept) or self.primary_family]}
            if not spec.get("clusterIPs") and spec.get("clusterIP") == kept:
                spec["clusterIPs"] = list(old_spec.get("clusterIPs") or [])
        explicit = bool(spec.get("clusterIPs"))  # given by the user (or kept on update)
        if spec.get("clusterIP") and not spec.get("clusterIPs"):
            spec["clusterIPs"] = [spec["clusterIP"]]
        if old_spec is not None and _same_prefer_dual_stack(spec, old_spec):
            return  # not upgraded/downgraded by a cluster change (Kubernetes' rule)
        self.init_families(owner[1], spec, old_spec)
        if spec.get("clusterIP") == "None":
            spec["clusterIPs"] = ["None"]
            return
        self._allocate_all(owner, spec, old_spec, explicit)

    def _allocate_all(self, owner: tuple[str, str], spec: dict[str, Any],
                      old_spec: dict[str, Any] | None, explicit: bool) -> None:
        """One ClusterIP per family of spec.ipFamilies: the given ones checked, the others
        allocated; one already held by this Service (an update) is kept as it is."""
        families: list[str] = spec["ipFamilies"]
        ips: list[str] = list(spec.get("clusterIPs") or [])
        held = set((old_spec or {}).get("clusterIPs") or [])
        used: dict[str, tuple[str, str]] | None = None
        for i, family in enumerate(families):
            ip = ips[i] if i < len(ips) else ""
            if ip and ip in held:
                continue  # unchanged: it was checked when it was allocated
            if used is None:
                used = self.used()
            if ip:
                why = self.check(ip, owner, used)
                if why is not None:
                    if explicit:  # Kubernetes' words for clusterIPs
                        raise invalid("Service", owner[1], [FieldError(
                            "spec.clusterIPs", "Invalid value",
                            f"failed to allocate IP {ip}: {why}", GoSlice(ips))])
                    # clusterIP alone (a client that knows one address): named as given
                    raise invalid("Service", owner[1],
                                  [FieldError("spec.clusterIP", "Invalid value", why, ip)])
            else:
                ip = self.allocate(owner, used, family)
                log.info("serviceipam.allocated", namespace=owner[0], service=owner[1],
                         cluster_ip=ip, family=family)
            if i < len(ips):
                ips[i] = ip
            else:
                ips.append(ip)
            used[_canonical(ip)] = owner
        spec["clusterIPs"] = ips[:len(families)]
        spec["clusterIP"] = spec["clusterIPs"][0]


def _same_prefer_dual_stack(spec: dict[str, Any], old_spec: dict[str, Any]) -> bool:
    """Both PreferDualStack, same type, clusterIPs and ipFamilies: such a Service is neither
    upgraded nor downgraded when the cluster's families change (Kubernetes'
    isMatchingPreferDualStackClusterIPFields)."""
    if spec.get("ipFamilyPolicy") != "PreferDualStack" \
            or old_spec.get("ipFamilyPolicy") not in (None, "PreferDualStack") \
            or (spec.get("type") or "ClusterIP") != (old_spec.get("type") or "ClusterIP"):
        return False
    return list(spec.get("clusterIPs") or []) == list(old_spec.get("clusterIPs") or []) \
        and list(spec.get("ipFamilies") or []) == list(old_spec.get("ipFamilies") or [])


def _canonical(ip: str) -> str:
    """One spelling per address (fd00::a and fd00:0::a are one)."""
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


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
