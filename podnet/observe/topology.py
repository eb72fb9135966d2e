"""The topology page's model: stored objects and the agents' route tables -> plain JSON
entities keyed by string, and the patch between two such views. Pure: no I/O, no clock.

Every entity is exactly what the page renders (controlplane/ui/static/), so the control plane
sends a change as the entities that differ (`diff`), never the whole picture again. Fields
that change without meaning anything to a viewer (resourceVersions, heartbeat times, route
ages) are left out on purpose: they would turn every heartbeat into a patch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from podnet.faults.model import Endpoint, FaultError, Selector, parse_fault
from podnet.selectors import LabelSelector, SelectorError

__all__ = ["DEPENDS", "KINDS", "Patch", "View", "as_lists", "build_view", "diff", "empty_view",
           "patch_empty", "rebuild"]

Obj = Mapping[str, Any]
Entity = dict[str, Any]
View = dict[str, dict[str, Entity]]     # kind -> key -> entity
Patch = dict[str, dict[str, list[Any]]]  # {"upsert": {kind: [entity]}, "delete": {kind: [key]}}

KINDS = ("nodes", "pods", "services", "policies", "faults")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# Gossip states, worst last: a node is as bad as the worst any live peer says.
_GOSSIP_RANK = {"alive": 0, "suspect": 1, "dead": 2}


def empty_view() -> View:
    return {kind: {} for kind in KINDS}


def _d(value: Any) -> Mapping[str, Any]:
    # dict first: stored objects are dicts, and an ABC check costs several times more.
    if type(value) is dict:
        return value
    return value if isinstance(value, Mapping) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _meta(obj: Obj) -> tuple[str, str]:
    meta = _d(obj.get("metadata"))
    return _s(meta.get("namespace")), _s(meta.get("name"))


def _labels(obj: Obj) -> dict[str, str]:
    labels = _d(_d(obj.get("metadata")).get("labels"))
    return {str(k): str(v) for k, v in labels.items()}


def _condition(obj: Obj, kind: str) -> str | None:
    for c in _l(_d(obj.get("status")).get("conditions")):
        if isinstance(c, Mapping) and c.get("type") == kind:
            return _s(c.get("status"))
    return None


# ------------------------------------------------------------------------------ nodes

def _node_address(node: Obj) -> str:
    status = _d(node.get("status"))
    host = next((_s(a.get("address")) for a in _l(status.get("addresses"))
                 if isinstance(a, Mapping) and a.get("type") == "InternalIP"), "")
    port = _d(_d(status.get("daemonEndpoints")).get("kubeletEndpoint")).get("Port")
    if host and isinstance(port, int) and not isinstance(port, bool):
        return f"{host}:{port}"
    return host


def _route_rows(routes: Iterable[Any]) -> list[Entity]:
    rows = [{"podCIDR": _s(r.get("podCIDR")), "node": _s(r.get("node")),
             "state": _s(r.get("state")) or "unknown"}
            for r in routes if isinstance(r, Mapping)]
    rows.sort(key=lambda r: (r["node"], r["podCIDR"]))
    return rows


def _nodes(nodes: Iterable[Obj], routes_by_node: Mapping[str, list[Any]]) -> dict[str, Entity]:
    # seen[target][reporter] = the worst state `reporter`'s table gives `target`'s routes.
    seen: dict[str, dict[str, str]] = {}
    tables: dict[str, list[Entity]] = {}
    for reporter, routes in routes_by_node.items():
        rows = _route_rows(routes if isinstance(routes, list) else [])
        tables[reporter] = rows
        for row in rows:
            target, state = row["node"], row["state"]
            if not target or target == reporter or state not in _GOSSIP_RANK:
                continue
            mine = seen.setdefault(target, {})
            old = mine.get(reporter)
            if old is None or _GOSSIP_RANK[state] > _GOSSIP_RANK[old]:
                mine[reporter] = state
    out: dict[str, Entity] = {}
    for node in nodes:
        _, name = _meta(node)
        if not name:
            continue
        by = dict(sorted(seen.get(name, {}).items()))
        gossip = max(by.values(), key=_GOSSIP_RANK.__getitem__) if by else "unknown"
        ready = _condition(node, "Ready") == "True" \
            and _condition(node, "NetworkUnavailable") != "True"
        spec = _d(node.get("spec"))
        cidrs = spec.get("podCIDRs")
        out[name] = {"key": name, "name": name,
                     "podCIDR": _s(spec.get("podCIDR")),
                     # one per family on a dual-stack cluster, the primary first
                     "podCIDRs": [_s(c) for c in cidrs if isinstance(c, str)]
                     if isinstance(cidrs, list) else [],
                     "address": _node_address(node), "ready": ready, "gossip": gossip,
                     "seenBy": by, "routes": tables.get(name, [])}
    return out


# ------------------------------------------------------------------------------- pods

def _pods(pods: Iterable[Obj]) -> dict[str, Entity]:
    out: dict[str, Entity] = {}
    for pod in pods:
        ns, name = _meta(pod)
        if not name:
            continue
        status = _d(pod.get("status"))
        key = f"{ns}/{name}"
        out[key] = {"key": key, "namespace": ns, "name": name,
                    "node": _s(_d(pod.get("spec")).get("nodeName")),
                    "ip": _s(status.get("podIP")), "phase": _s(status.get("phase")) or "Pending",
                    "ready": _condition(pod, "Ready") == "True", "labels": _labels(pod)}
    return out


# --------------------------------------------------------------------------- services

def _endpoints(slices: Iterable[Obj]) -> dict[str, list[Entity]]:
    """Service key -> its endpoints from every slice, one per address, sorted by IP."""
    out: dict[str, dict[tuple[str, str], Entity]] = {}
    for sl in slices:
        ns, _ = _meta(sl)
        svc = _labels(sl).get(SERVICE_NAME_LABEL)
        if not svc:
            continue
        bucket = out.setdefault(f"{ns}/{svc}", {})
        for ep in _l(sl.get("endpoints")):
            if not isinstance(ep, Mapping):
                continue
            ref = _d(ep.get("targetRef"))
            pod = f"{_s(ref.get('namespace')) or ns}/{_s(ref.get('name'))}" \
                if ref.get("kind") == "Pod" and _s(ref.get("name")) else ""
            # EndpointSlice semantics: an unknown readiness counts as ready.
            ready = _d(ep.get("conditions")).get("ready") is not False
            for ip in _l(ep.get("addresses")):
                if isinstance(ip, str) and ip:
                    bucket[(ip, pod)] = {"ip": ip, "pod": pod,
                                         "node": _s(ep.get("nodeName")), "ready": ready}
    return {k: [v[i] for i in sorted(v)] for k, v in out.items()}


def _ports(spec: Mapping[str, Any]) -> list[str]:
    out = []
    for p in _l(spec.get("ports")):
        if isinstance(p, Mapping) and isinstance(p.get("port"), int):
            out.append(f"{p['port']}/{_s(p.get('protocol')) or 'TCP'}")
    return out


def _services(services: Iterable[Obj], slices: Iterable[Obj]) -> dict[str, Entity]:
    endpoints = _endpoints(slices)
    out: dict[str, Entity] = {}
    for svc in services:
        ns, name = _meta(svc)
        if not name:
            continue
        spec = _d(svc.get("spec"))
        key = f"{ns}/{name}"
        out[key] = {"key": key, "namespace": ns, "name": name,
                    "type": _s(spec.get("type")) or "ClusterIP",
                    "clusterIP": _s(spec.get("clusterIP")), "ports": _ports(spec),
                    "endpoints": endpoints.get(key, [])}
    return out


# --------------------------------------------------------------------------- policies

def _rules_text(rules: Any, word: str) -> str:
    rules = _l(rules)
    if not rules:
        return f"{word}: deny all"
    if any(isinstance(r, Mapping) and not r for r in rules):
        return f"{word}: allow all"
    return f"{word}: {len(rules)} rule{'s' if len(rules) != 1 else ''}"


def _policies(policies: Iterable[Obj], pods: Mapping[str, Entity]) -> dict[str, Entity]:
    out: dict[str, Entity] = {}
    for pol in policies:
        ns, name = _meta(pol)
        if not name:
            continue
        spec = _d(pol.get("spec"))
        key = f"{ns}/{name}"
        types = [t for t in _l(spec.get("policyTypes")) if t in ("Ingress", "Egress")]
        if not types:  # the API's defaulting, for objects stored without it
            types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
        try:
            selector: LabelSelector | None = LabelSelector.from_spec(
                _d(spec.get("podSelector")))
        except SelectorError:
            selector = None
        selects = sorted(k for k, p in pods.items() if selector is not None
                         and p["namespace"] == ns and selector.matches(p["labels"]))
        if selector is None:
            summary = "unreadable podSelector: selects nothing"
        else:
            who = "every pod" if selector.empty else str(selector)
            parts = [_rules_text(spec.get("ingress"), "ingress") if "Ingress" in types else "",
                     _rules_text(spec.get("egress"), "egress") if "Egress" in types else ""]
            summary = f"{who} in {ns}: " + ", ".join(p for p in parts if p)
        out[key] = {"key": key, "namespace": ns, "name": name, "selects": selects,
                    "types": types, "summary": summary}
    return out


# ----------------------------------------------------------------------------- faults

def _targets(sel: Selector, pods: Mapping[str, Entity],
             services_of: Mapping[str, frozenset[str]]) -> tuple[list[str], list[str]]:
    """The pods and nodes one side of a fault names."""
    if sel.kind == "node":
        return [], [sel.value]
    hit = []
    for key, p in pods.items():
        ep = Endpoint(ip=p["ip"], node=p["node"], namespace=p["namespace"], pod=p["name"],
                      labels=p["labels"], services=services_of.get(key, frozenset()))
        if sel.matches(ep):
            hit.append(key)
    return hit, []


def _faults(faults: Iterable[Obj], pods: Mapping[str, Entity],
            services: Mapping[str, Entity]) -> dict[str, Entity]:
    # A service-side fault applies to flows sent to the Service: show it on its endpoints.
    services_of: dict[str, set[str]] = {}
    for skey, svc in services.items():
        for ep in svc["endpoints"]:
            if ep["pod"]:
                services_of.setdefault(ep["pod"], set()).add(skey)
    frozen = {k: frozenset(v) for k, v in services_of.items()}
    out: dict[str, Entity] = {}
    for obj in faults:
        _, name = _meta(obj)
        if not name:
            continue
        expires = _d(obj.get("status")).get("expiresAt")
        entity: Entity = {"key": name, "name": name, "summary": "", "pods": [], "nodes": [],
                          "expires": expires if isinstance(expires, str) else None}
        try:
            fault = parse_fault(obj)
        except FaultError as e:
            entity["summary"] = f"unreadable: {e}"
            out[name] = entity
            continue
        arrow = {"to": "->", "from": "<-", "both": "<->"}.get(fault.direction, "->")
        proto = "" if fault.protocol == "all" else f" {fault.protocol}"
        port = f" port {fault.port}" if fault.port else ""
        entity["summary"] = (f"{fault.effects()}, {fault.src.text()} {arrow} "
                             f"{fault.dst.text()}{proto}{port}")
        src_pods, src_nodes = _targets(fault.src, pods, frozen)
        dst_pods, dst_nodes = _targets(fault.dst, pods, frozen)
        entity["pods"] = sorted(set(src_pods) | set(dst_pods))
        entity["nodes"] = sorted(set(src_nodes) | set(dst_nodes))
        out[name] = entity
    return out


# ------------------------------------------------------------------------------- view

# Which kinds of entity each input feeds (a changed input rebuilds only these).
DEPENDS = {
    "nodes": ("nodes",), "routes": ("nodes",),
    "pods": ("pods", "policies", "faults"),
    "services": ("services", "faults"), "slices": ("services", "faults"),
    "policies": ("policies",), "faults": ("faults",),
}


def build_view(nodes: Iterable[Obj], pods: Iterable[Obj], services: Iterable[Obj],
               slices: Iterable[Obj], policies: Iterable[Obj], faults: Iterable[Obj],
               routes_by_node: Mapping[str, list[Any]], now: float) -> View:
    """The whole picture. `routes_by_node`: node name -> the route table its agent reported
    (only agents whose feed is live: a silent agent's opinion of the others is not counted).
    `now` is accepted for time-relative fields; none is shown at present."""
    return rebuild(empty_view(), set(KINDS), nodes=nodes, pods=pods, services=services,
                   slices=slices, policies=policies, faults=faults,
                   routes_by_node=routes_by_node, now=now)


def rebuild(old: View, kinds: set[str], *, nodes: Iterable[Obj], pods: Iterable[Obj],
            services: Iterable[Obj], slices: Iterable[Obj], policies: Iterable[Obj],
            faults: Iterable[Obj], routes_by_node: Mapping[str, list[Any]],
            now: float) -> View:
    """`old` with only `kinds` built again (see DEPENDS), the others shared with `old`: a
    node heartbeat costs the three node entities, not the 300 pods. Inputs are iterated only
    for the kinds that need them."""
    del now
    new = dict(old)
    if "nodes" in kinds:
        new["nodes"] = _nodes(nodes, routes_by_node)
    if "pods" in kinds:
        new["pods"] = _pods(pods)
    if "services" in kinds:
        new["services"] = _services(services, slices)
    if "policies" in kinds:
        new["policies"] = _policies(policies, new["pods"])
    if "faults" in kinds:
        new["faults"] = _faults(faults, new["pods"], new["services"])
    return new


def diff(old: View, new: View) -> Patch:
    """What turns `old` into `new`: the entities added or changed, and the keys removed."""
    upsert: dict[str, list[Any]] = {}
    delete: dict[str, list[Any]] = {}
    for kind in KINDS:
        before, after = old.get(kind, {}), new.get(kind, {})
        if before is after:
            continue    # not rebuilt
        changed = [e for k, e in after.items() if before.get(k) != e]
        gone = [k for k in before if k not in after]
        if changed:
            upsert[kind] = changed
        if gone:
            delete[kind] = gone
    return {"upsert": upsert, "delete": delete}


def patch_empty(patch: Patch) -> bool:
    return not patch["upsert"] and not patch["delete"]


def as_lists(view: View) -> dict[str, list[Entity]]:
    """The view as the snapshot sends it: per kind, the entities in key order."""
    return {kind: [view[kind][k] for k in sorted(view.get(kind, {}))] for kind in KINDS}
