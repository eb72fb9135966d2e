"""The Endpoints and EndpointSlice controllers: which pods back each Service.

For every Service with a selector, the pods in its namespace that match it become:
- its Endpoints object (same name): ready pods under `addresses`, the others under
  `notReadyAddresses`, grouped into subsets by the ports they resolve to;
- its EndpointSlices (label `kubernetes.io/service-name`, managed by
  `endpointslice-controller.k8s.io`): one endpoint per pod with `ready`/`serving`/
  `terminating` conditions. Terminating pods stay in slices (not ready, maybe serving) as in
  Kubernetes, so a proxy can drain them; they leave Endpoints at once.

Services without a selector (and ExternalName Services) are left alone, so hand-made Endpoints
and EndpointSlices for them are kept. The ClusterIP proxy and the DNS server read these
objects, so a pass runs within milliseconds of a pod or Service change, and writes only what
differs.

The desired state is computed by pure functions (`endpoints_subsets`, `desired_slices`), unit
tested without a store.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
from collections import defaultdict
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.api import Api
from controlplane.reconcile import Reconciler
from podnet.apierrors import ApiError
from podnet.resources import BY_KIND, Resource
from podnet.selectors import LabelSelector, SelectorError

PODS = BY_KIND["Pod"]
SERVICES = BY_KIND["Service"]
ENDPOINTS = BY_KIND["Endpoints"]
ENDPOINT_SLICES = BY_KIND["EndpointSlice"]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
# Kubernetes' endpointslice-mirroring controller: hand-made Endpoints of a selector-less
# Service become EndpointSlices, so everything that reads slices (the proxy, DNS) sees them.
MIRRORED_BY = "endpointslicemirroring-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"
MAX_ENDPOINTS_PER_SLICE = 100  # kube-controller-manager's default

Obj = Mapping[str, Any]


# ---------------------------------------------------------------------- pure: pods

def _d(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def pod_ready(pod: Obj) -> bool:
    return any(isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
               for c in _l(_d(pod.get("status")).get("conditions")))


def pod_terminating(pod: Obj) -> bool:
    return bool(_d(pod.get("metadata")).get("deletionTimestamp"))


def pod_ip(pod: Obj) -> str:
    ip = _d(pod.get("status")).get("podIP")
    return ip if isinstance(ip, str) else ""


def address_type(ip: Any) -> str | None:
    """`IPv4`/`IPv6` (an EndpointSlice's addressType) for an address; None if it is not one."""
    if not isinstance(ip, str):
        return None
    try:
        return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    except ValueError:
        return None


def pod_ips(pod: Obj) -> dict[str, str]:
    """A pod's address per family (`status.podIPs`, else `status.podIP`)."""
    out: dict[str, str] = {}
    raw = [_d(p).get("ip") for p in _l(_d(pod.get("status")).get("podIPs"))] or [pod_ip(pod)]
    for ip in raw:
        # The API validated pod IPs: a colon is enough to tell the family, and this runs
        # for every selected pod on every pass.
        if isinstance(ip, str) and ip:
            out.setdefault("IPv6" if ":" in ip else "IPv4", ip)
    return out


def ip_of(pod: Obj, family: str) -> str | None:
    """The pod's address of one family. The primary (`status.podIP`) first: on a
    single-stack cluster that is the answer, without looking at `podIPs`."""
    ip = pod_ip(pod)
    if ip and (":" in ip) == (family == "IPv6"):
        return ip
    return pod_ips(pod).get(family)


def service_families(svc: Obj, pods: Iterable[Obj] = ()) -> list[str]:
    """The address types a Service's EndpointSlices cover, as Kubernetes' EndpointSlice
    controller decides: `spec.ipFamilies`, else the ClusterIP's family; a headless Service
    without `ipFamilies` takes the families its pods have (IPv4 when it has none), so an
    IPv4-only cluster keeps exactly one IPv4 slice."""
    spec = _d(svc.get("spec"))
    families = [f for f in _l(spec.get("ipFamilies")) if f in ("IPv4", "IPv6")]
    if families:
        return list(dict.fromkeys(families))
    family = address_type(spec.get("clusterIP"))
    if family is not None:
        return [family]
    seen: dict[str, None] = {}
    for pod in pods:
        for fam in pod_ips(pod):
            seen.setdefault(fam, None)
    return sorted(seen, key=("IPv4", "IPv6").index) or ["IPv4"]


def _pod_may_serve(pod: Obj, include_terminating: bool) -> bool:
    """Kubernetes' ShouldPodBeInEndpoints: has an IP, not finished, not going away."""
    if not pod_ip(pod):
        return False
    if _d(pod.get("status")).get("phase") in ("Succeeded", "Failed"):
        return False
    return include_terminating or not pod_terminating(pod)


def resolve_target_port(pod: Obj, port: Obj) -> int | None:
    """The pod's port for a Service port: a number as is, a name looked up among the pod's
    container ports with the same protocol (None: this pod does not serve that port)."""
    target = port.get("targetPort")
    if target is None or target == "" or target == 0:
        target = port.get("port")
    if isinstance(target, int) and not isinstance(target, bool):
        return target if 0 < target < 65536 else None
    if not isinstance(target, str):
        return None
    protocol = port.get("protocol") or "TCP"
    for c in _l(_d(pod.get("spec")).get("containers")):
        for cp in _l(_d(c).get("ports")):
            cp = _d(cp)
            if cp.get("name") == target and (cp.get("protocol") or "TCP") == protocol:
                number = cp.get("containerPort")
                return number if isinstance(number, int) else None
    return None


def _target_ref(pod: Obj) -> dict[str, Any]:
    meta = _d(pod.get("metadata"))
    return {"kind": "Pod", "namespace": meta.get("namespace", ""), "name": meta.get("name", ""),
            "uid": meta.get("uid", "")}


def _hostname(pod: Obj, svc: Obj) -> str:
    """A pod's DNS hostname under a headless Service: only when its subdomain names it."""
    spec = _d(pod.get("spec"))
    svc_meta, pod_meta = _d(svc.get("metadata")), _d(pod.get("metadata"))
    if (spec.get("hostname") and spec.get("subdomain") == svc_meta.get("name")
            and pod_meta.get("namespace") == svc_meta.get("namespace")):
        return str(spec["hostname"])
    return ""


def selector_of(svc: Obj) -> LabelSelector | None:
    """The Service's pod selector; None when it has none (its endpoints are hand-made)."""
    spec = _d(svc.get("spec"))
    selector = spec.get("selector")
    if spec.get("type") == "ExternalName" or not isinstance(selector, Mapping) or not selector:
        return None
    try:
        return LabelSelector.from_spec({"matchLabels": dict(selector)})
    except SelectorError:
        return None


def selected_pods(svc: Obj, pods: Iterable[Obj]) -> list[Obj]:
    selector = selector_of(svc)
    if selector is None:
        return []
    return [p for p in pods if selector.matches(_d(_d(p.get("metadata")).get("labels")))]


# ---------------------------------------------------------------------- pure: Endpoints

def _address(pod: Obj, svc: Obj, ip: str) -> dict[str, Any]:
    addr: dict[str, Any] = {"ip": ip}
    hostname = _hostname(pod, svc)
    if hostname:
        addr["hostname"] = hostname
    node = _d(pod.get("spec")).get("nodeName")
    if node:
        addr["nodeName"] = node
    addr["targetRef"] = _target_ref(pod)
    return addr


def _endpoint_port(port: Obj, number: int) -> dict[str, Any]:
    out: dict[str, Any] = {"port": number, "protocol": port.get("protocol") or "TCP"}
    if port.get("name"):
        out["name"] = port["name"]
    if port.get("appProtocol"):
        out["appProtocol"] = port["appProtocol"]
    return out


def _port_key(p: Mapping[str, Any]) -> tuple[str, int, str]:
    return (str(p.get("name", "")), int(p.get("port") or 0), str(p.get("protocol", "")))


def endpoints_subsets(svc: Obj, pods: Iterable[Obj]) -> list[dict[str, Any]]:
    """The `subsets` of a selector Service's Endpoints, repacked like Kubernetes does:
    addresses that serve the same set of ports share one subset."""
    spec = _d(svc.get("spec"))
    publish = spec.get("publishNotReadyAddresses") is True
    ports = [_d(p) for p in _l(spec.get("ports"))]
    headless = spec.get("clusterIP") == "None"
    # Endpoints hold one family, the Service's primary one (as in Kubernetes); a pod with no
    # address of that family is not listed.
    selected = selected_pods(svc, pods)
    primary = service_families(svc, selected)[0]
    # ports-tuple -> (ready addresses, not-ready addresses)
    groups: dict[tuple[tuple[str, int, str], ...], tuple[list[dict[str, Any]],
                                                          list[dict[str, Any]]]] = {}
    port_bodies: dict[tuple[str, int, str], dict[str, Any]] = {}
    for pod in selected:
        if not _pod_may_serve(pod, include_terminating=publish):
            continue
        ip = ip_of(pod, primary)
        if ip is None:
            continue
        resolved = []
        for port in ports:
            number = resolve_target_port(pod, port)
            if number is None:
                continue  # a named port this pod does not have: not an endpoint for it
            body = _endpoint_port(port, number)
            port_bodies[_port_key(body)] = body
            resolved.append(_port_key(body))
        if ports and not resolved:
            continue
        if not ports and not headless:
            continue  # Kubernetes lists port-less endpoints for headless Services only
        key = tuple(sorted(set(resolved)))
        ready, not_ready = groups.setdefault(key, ([], []))
        (ready if publish or pod_ready(pod) else not_ready).append(_address(pod, svc, ip))
    subsets = []
    for key in sorted(groups):
        ready, not_ready = groups[key]
        subset: dict[str, Any] = {}
        if ready:
            subset["addresses"] = sorted(ready, key=_address_order)
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=_address_order)
        if key:
            subset["ports"] = [port_bodies[k] for k in key]
        subsets.append(subset)
    return subsets


def _address_order(addr: Mapping[str, Any]) -> tuple[str, str]:
    return (str(addr.get("ip")), str(_d(addr.get("targetRef")).get("uid")))


# ---------------------------------------------------------------------- pure: EndpointSlices

@dataclass(frozen=True)
class SliceContent:
    """What one EndpointSlice should hold (its ports and endpoints)."""

    ports: tuple[tuple[str, int, str], ...]
    port_bodies: tuple[dict[str, Any], ...]
    endpoints: tuple[dict[str, Any], ...]
    address_type: str = "IPv4"


def desired_slices(svc: Obj, pods: Iterable[Obj],
                   max_per_slice: int = MAX_ENDPOINTS_PER_SLICE) -> list[SliceContent]:
    """The EndpointSlices a selector Service should have: one set per address family the
    Service covers (`service_families`), pods grouped by the ports they serve, at most
    `max_per_slice` endpoints a slice. No pods: one empty slice of the primary family (as in
    Kubernetes, so `kubectl get endpointslices` shows the Service has been seen)."""
    spec = _d(svc.get("spec"))
    publish = spec.get("publishNotReadyAddresses") is True
    ports = [_d(p) for p in _l(spec.get("ports"))]
    selected = selected_pods(svc, pods)
    families = service_families(svc, selected)
    groups: dict[tuple[int, tuple[tuple[str, int, str], ...]], list[dict[str, Any]]] = (
        defaultdict(list))
    bodies: dict[tuple[str, int, str], dict[str, Any]] = {}
    for pod in selected:
        if not _pod_may_serve(pod, include_terminating=True):
            continue
        resolved = []
        for port in ports:
            number = resolve_target_port(pod, port)
            if number is None:
                continue
            body = {"name": str(port.get("name") or ""), "port": number,
                    "protocol": port.get("protocol") or "TCP"}
            if port.get("appProtocol"):
                body["appProtocol"] = port["appProtocol"]
            bodies[_port_key(body)] = body
            resolved.append(_port_key(body))
        if ports and not resolved:
            continue
        ready, terminating = pod_ready(pod), pod_terminating(pod)
        for index, family in enumerate(families):
            ip = ip_of(pod, family)
            if ip is None:
                continue
            endpoint: dict[str, Any] = {
                "addresses": [ip],
                "conditions": {"ready": publish or (ready and not terminating),
                               "serving": publish or ready, "terminating": terminating},
            }
            hostname = _hostname(pod, svc)
            if hostname:
                endpoint["hostname"] = hostname
            node = _d(pod.get("spec")).get("nodeName")
            if node:
                endpoint["nodeName"] = node
            endpoint["targetRef"] = _target_ref(pod)
            groups[(index, tuple(sorted(set(resolved))))].append(endpoint)
    out = []
    for index, key in sorted(groups):
        eps = sorted(groups[(index, key)], key=lambda e: (e["addresses"][0],
                                                          e["targetRef"].get("uid", "")))
        for start in range(0, len(eps), max_per_slice):
            out.append(SliceContent(key, tuple(bodies[k] for k in key),
                                    tuple(eps[start:start + max_per_slice]), families[index]))
    if not out:
        out.append(SliceContent((), (), (), families[0]))
    return out


def _service_labels(svc: Obj) -> dict[str, str]:
    labels = {str(k): str(v) for k, v in _d(_d(svc.get("metadata")).get("labels")).items()}
    if _d(svc.get("spec")).get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    return labels


def slice_labels(svc: Obj) -> dict[str, str]:
    labels = _service_labels(svc)
    labels[SERVICE_NAME_LABEL] = str(_d(svc.get("metadata")).get("name"))
    labels[MANAGED_BY_LABEL] = MANAGED_BY
    return labels


def _owner_ref(svc: Obj) -> dict[str, Any]:
    meta = _d(svc.get("metadata"))
    return {"apiVersion": "v1", "kind": "Service", "name": meta.get("name"),
            "uid": meta.get("uid"), "controller": True, "blockOwnerDeletion": True}


def _slice_body(content: SliceContent) -> dict[str, Any]:
    """The fields of a slice this controller owns (besides labels and ownerReferences)."""
    body: dict[str, Any] = {"addressType": content.address_type,
                            "endpoints": list(content.endpoints)}
    if content.port_bodies:
        body["ports"] = list(content.port_bodies)
    return body


def _slice_matches(existing: Obj, content: SliceContent, labels: Mapping[str, str],
                   owner: Mapping[str, Any]) -> bool:
    meta = _d(existing.get("metadata"))
    body = _slice_body(content)
    return (existing.get("addressType") == body["addressType"]
            and _l(existing.get("endpoints")) == body["endpoints"]
            and _l(existing.get("ports")) == body.get("ports", [])
            and _d(meta.get("labels")) == labels
            and _l(meta.get("ownerReferences")) == [owner])


def _slice_ports_key(existing: Obj) -> tuple[tuple[str, int, str], ...]:
    return tuple(sorted(_port_key(_d(p)) for p in _l(existing.get("ports"))))


def _slice_type(existing: Obj) -> str:
    return str(existing.get("addressType") or "IPv4")


# ---------------------------------------------------------------------- the controller

def mirrored_slices(svc: Obj, endpoints: Obj) -> dict[str, dict[str, Any]]:
    """The EndpointSlices mirroring a selector-less Service's hand-made Endpoints, by name:
    per subset (each subset has its own ports) one slice per address family, as Kubernetes'
    mirroring controller does (a slice holds one addressType): `<svc>-mirror-<i>` for the
    IPv4 addresses, `<svc>-mirror-<i>-ipv6` for the IPv6 ones. Ready for `addresses`, not
    ready for `notReadyAddresses`; an entry that is not an IP address is skipped."""
    meta = svc["metadata"]
    name = str(meta["name"])
    labels = {**_service_labels(svc), SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MIRRORED_BY}
    out: dict[str, dict[str, Any]] = {}
    for i, subset in enumerate(_l(endpoints.get("subsets"))):
        subset = _d(subset)
        by_family: dict[str, list[dict[str, Any]]] = {}
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for addr in _l(subset.get(key)):
                addr = _d(addr)
                family = address_type(addr.get("ip"))
                if family is None:
                    continue
                ep: dict[str, Any] = {"addresses": [addr["ip"]], "conditions": {
                    "ready": ready, "serving": ready, "terminating": False}}
                for field in ("hostname", "nodeName", "targetRef"):
                    if addr.get(field):
                        ep[field] = addr[field]
                by_family.setdefault(family, []).append(ep)
        ports = [{k: p[k] for k in ("name", "port", "protocol") if k in p}
                 for p in (_d(x) for x in _l(subset.get("ports")))]
        # An IPv4 slice even for an empty subset, as before families existed.
        for family in ("IPv4", "IPv6"):
            eps = by_family.get(family)
            if eps is None and (family == "IPv6" or "IPv6" in by_family):
                continue
            slice_name = f"{name}-mirror-{i}" + ("-ipv6" if family == "IPv6" else "")
            out[slice_name] = {
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": slice_name, "namespace": meta["namespace"],
                             "labels": labels, "ownerReferences": [_owner_ref(svc)]},
                "addressType": family, "endpoints": eps or [], "ports": ports}
    return out


class EndpointsController(Reconciler):
    """Keeps Endpoints and EndpointSlices of selector Services in step with their pods."""

    name = "endpoints-controller"
    watches = (PODS, SERVICES, ENDPOINTS, ENDPOINT_SLICES)

    def __init__(self, api: Api) -> None:
        super().__init__(api)
        # Services this controller wrote Endpoints for: when one disappears, so do they.
        self._managed: set[tuple[str, str]] = set()

    async def reconcile(self) -> None:
        pods_by_ns: dict[str, list[Obj]] = defaultdict(list)
        for pod in self.store.scan(PODS):
            pods_by_ns[str(pod["metadata"].get("namespace"))].append(pod)
        slices_by_svc: dict[tuple[str, str], list[Obj]] = defaultdict(list)
        for es in self.store.scan(ENDPOINT_SLICES):
            meta = es["metadata"]
            labels = _d(meta.get("labels"))
            if labels.get(MANAGED_BY_LABEL) == MANAGED_BY and labels.get(SERVICE_NAME_LABEL):
                slices_by_svc[(str(meta.get("namespace")),
                               str(labels[SERVICE_NAME_LABEL]))].append(es)
        writes: list[Awaitable[None]] = []
        managed: set[tuple[str, str]] = set()
        mirrored: dict[tuple[str, str], Obj] = {}
        for es in self.store.scan(ENDPOINT_SLICES):
            if _d(es["metadata"].get("labels")).get(MANAGED_BY_LABEL) == MIRRORED_BY:
                mirrored[(str(es["metadata"].get("namespace")), str(es["metadata"]["name"]))] = es
        for svc in self.store.scan(SERVICES):
            meta = svc["metadata"]
            key = (str(meta.get("namespace")), str(meta.get("name")))
            if meta.get("deletionTimestamp"):
                continue
            if selector_of(svc) is None:
                self._mirror(svc, mirrored, writes)
                continue
            managed.add(key)
            try:
                pods = pods_by_ns.get(key[0], [])
                self._sync_endpoints(svc, pods, writes)
                self._sync_slices(svc, pods, slices_by_svc.pop(key, []), writes)
            except Exception:  # one odd Service must not keep the others' endpoints stale
                self.log.exception("endpoints.service_failed", namespace=key[0],
                                   service=key[1])
        for key in self._managed - managed:
            if self.store.peek(ENDPOINTS, key[0], key[1]) is not None:
                writes.append(self._delete(ENDPOINTS, key[0], key[1]))
        for (ns, name) in mirrored:  # mirrors whose Service or Endpoints are gone
            writes.append(self._delete(ENDPOINT_SLICES, ns, name))
        for (ns, _), leftovers in slices_by_svc.items():
            for es in leftovers:  # slices of a Service that is gone (or lost its selector)
                writes.append(self._delete(ENDPOINT_SLICES, ns, es["metadata"]["name"]))
        self._managed = managed
        if writes:
            await asyncio.gather(*writes)

    def _mirror(self, svc: Obj, existing: dict[tuple[str, str], Obj],
                writes: list[Awaitable[None]]) -> None:
        """Keep the mirrors of this selector-less Service's hand-made Endpoints current;
        what stays in `existing` afterwards is deleted by the caller."""
        ns, name = str(svc["metadata"]["namespace"]), str(svc["metadata"]["name"])
        if _d(svc.get("spec")).get("type") == "ExternalName":
            return
        endpoints = self.store.peek(ENDPOINTS, ns, name)
        wanted = mirrored_slices(svc, endpoints) if endpoints is not None else {}
        for slice_name, body in wanted.items():
            current = existing.pop((ns, slice_name), None)
            if current is not None and _slice_type(current) != body["addressType"]:
                # addressType is immutable: replace the slice (the next pass creates it).
                writes.append(self._delete(ENDPOINT_SLICES, ns, slice_name))
            elif current is None:
                writes.append(self._create(ENDPOINT_SLICES, ns, body))
            elif any(current.get(k) != body[k] for k in ("endpoints", "ports")) or _d(
                    current["metadata"].get("labels")) != body["metadata"]["labels"]:
                updated = copy.deepcopy(dict(current))
                updated["metadata"]["labels"] = body["metadata"]["labels"]
                updated.update(endpoints=body["endpoints"], ports=body["ports"])
                writes.append(self._update(ENDPOINT_SLICES, ns, slice_name, updated))

    def _sync_endpoints(self, svc: Obj, pods: list[Obj],
                        writes: list[Awaitable[None]]) -> None:
        meta = svc["metadata"]
        ns, name = str(meta["namespace"]), str(meta["name"])
        subsets = endpoints_subsets(svc, pods)
        labels = _service_labels(svc)
        current = self.store.peek(ENDPOINTS, ns, name)
        if current is None:
            obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Endpoints",
                                   "metadata": {"name": name, "namespace": ns,
                                                "labels": labels}}
            if subsets:
                obj["subsets"] = subsets
            writes.append(self._create(ENDPOINTS, ns, obj))
            return
        if (_l(current.get("subsets")) == subsets
                and _d(_d(current.get("metadata")).get("labels")) == labels):
            return
        updated = copy.deepcopy(dict(current))
        updated["metadata"]["labels"] = labels
        if subsets:
            updated["subsets"] = subsets
        else:
            updated.pop("subsets", None)
        writes.append(self._update(ENDPOINTS, ns, name, updated))

    def _sync_slices(self, svc: Obj, pods: list[Obj], existing: list[Obj],
                     writes: list[Awaitable[None]]) -> None:
        meta = svc["metadata"]
        ns, name = str(meta["namespace"]), str(meta["name"])
        labels = slice_labels(svc)
        owner = _owner_ref(svc)
        wanted = desired_slices(svc, pods)
        # Reuse slices that already serve the same ports first, so a pod change rewrites
        # one slice instead of reshuffling them all.
        free = sorted(existing, key=lambda es: str(es["metadata"]["name"]))
        plan: list[tuple[SliceContent, Obj | None]] = []
        # A slice's addressType is immutable, so only a slice of the same family is reused.
        for content in wanted:
            match = next((es for es in free if _slice_ports_key(es) == content.ports
                          and _slice_type(es) == content.address_type), None)
            if match is not None:
                free.remove(match)
            plan.append((content, match))
        for n, (content, match) in enumerate(plan):
            if match is None:
                match = next((es for es in free if _slice_type(es) == content.address_type),
                             None)
                if match is not None:
                    free.remove(match)
                    plan[n] = (content, match)
        for content, current in plan:
            if current is None:
                obj: dict[str, Any] = {
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"generateName": f"{name}-", "namespace": ns,
                                 "labels": labels, "ownerReferences": [owner]},
                    **_slice_body(content)}
                writes.append(self._create(ENDPOINT_SLICES, ns, obj))
            elif not _slice_matches(current, content, labels, owner):
                updated = copy.deepcopy(dict(current))
                updated["metadata"]["labels"] = labels
                updated["metadata"]["ownerReferences"] = [owner]
                updated.pop("ports", None)
                updated.update(_slice_body(content))
                writes.append(self._update(ENDPOINT_SLICES, ns,
                                           str(current["metadata"]["name"]), updated))
        for es in free:
            writes.append(self._delete(ENDPOINT_SLICES, ns, str(es["metadata"]["name"])))

    async def _create(self, res: Resource, ns: str, obj: dict[str, Any]) -> None:
        try:
            await self.api.create(res, ns, obj)
        except ApiError as e:
            self._failed("create", res, ns, obj["metadata"].get("name", ""), e)

    async def _update(self, res: Resource, ns: str, name: str, obj: dict[str, Any]) -> None:
        try:
            await self.api.update(res, ns, name, obj)
        except ApiError as e:
            self._failed("update", res, ns, name, e)

    async def _delete(self, res: Resource, ns: str, name: str) -> None:
        try:
            await self.api.delete(res, ns, name)
        except ApiError as e:
            if e.code != 404:
                self._failed("delete", res, ns, name, e)

    def _failed(self, verb: str, res: Resource, ns: str, name: str, e: ApiError) -> None:
        self.log.warning("endpoints.write_failed", verb=verb, resource=res.plural,
                         namespace=ns, name=name, code=e.code, error=str(e))
        if e.code == 409:
            self.kick.set()  # someone else wrote first: look again with fresh state
