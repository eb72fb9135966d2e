"""The DaemonSet controller: one pod on every Ready node that the template's node selector and
required node affinity admit.

Pods are named `<ds>-<5 random characters>` and pinned as Kubernetes pins them: the
controller writes a required node affinity `matchFields metadata.name In [<node>]` into the
pod and the scheduler binds it there (`kubectl get pod -o yaml` shows it). They tolerate the
taints Kubernetes adds DaemonSet tolerations for (not-ready and unreachable NoExecute,
unschedulable and the pressure taints NoSchedule), so a cordoned node keeps its daemon pod.
Labels: `controller-revision-hash` (a hash of the template) and `pod-template-generation`;
each template is kept as a ControllerRevision `<ds>-<hash>` (`kubectl rollout history/undo`).

Nodes joining get a pod; a node that is deleted has its pod deleted. A node that is NotReady
keeps its pod (Kubernetes' DaemonSet pods tolerate the not-ready taint) but gets no new one
and is not counted in `desiredNumberScheduled` until it is Ready again: podnet has no taints,
and a pod bound to a node without a running agent could never start.

`updateStrategy: RollingUpdate` replaces old-template pods node by node, keeping at most
`maxUnavailable` desired nodes without a ready pod (`maxSurge` is accepted but podnet replaces
by deleting first); `OnDelete` leaves that to the user.

`daemonset_plan` and `daemonset_status` are pure functions, unit tested without a store.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controlplane.api import node_is_ready
from controlplane.revisions import ensure_revision, prune_revisions
from controlplane.scheduling import node_affinity_matches
from controlplane.workloads import (
    Obj,
    _d,
    _int,
    _l,
    _owned_by,
    _Writer,
    controller_uid,
    owner_ref,
    pod_active,
    pod_available,
    pod_ready,
    resolve_int_or_percent,
    template_hash,
)
from podnet.resources import BY_KIND

PODS = BY_KIND["Pod"]
NODES = BY_KIND["Node"]
DAEMON_SETS = BY_KIND["DaemonSet"]

REVISION_LABEL = "controller-revision-hash"
GENERATION_LABEL = "pod-template-generation"

# What kube's DaemonSet controller adds to every daemon pod (AddOrUpdateDaemonPodTolerations).
DAEMON_TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)


def template_revision(ds: Obj) -> str:
    return template_hash(_d(_d(ds.get("spec")).get("template")))


def pod_revision(pod: Obj) -> str:
    return str(_d(_d(pod.get("metadata")).get("labels")).get(REVISION_LABEL) or "")


def target_node(pod: Obj) -> str:
    """The node a daemon pod is for: its binding, or (not yet bound) its affinity's name."""
    spec = _d(pod.get("spec"))
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = _d(_d(_d(spec.get("affinity")).get("nodeAffinity")).get(
        "requiredDuringSchedulingIgnoredDuringExecution"))
    for term in _l(required.get("nodeSelectorTerms")):
        for req in _l(_d(term).get("matchFields")):
            req = _d(req)
            values = _l(req.get("values"))
            if req.get("key") == "metadata.name" and req.get("operator") == "In" \
                    and len(values) == 1:
                return str(values[0])
    return ""


def node_wants_pod(ds: Obj, node: Obj) -> bool:
    """The template's nodeSelector and required node affinity admit this node."""
    pod_spec = _d(_d(_d(ds.get("spec")).get("template")).get("spec"))
    labels = _d(_d(node.get("metadata")).get("labels"))
    selector = _d(pod_spec.get("nodeSelector"))
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    return node_affinity_matches(pod_spec, node)


@dataclass
class Plan:
    create_on: list[str] = field(default_factory=list)    # node names
    delete: list[Obj] = field(default_factory=list)


def _created(pod: Obj) -> tuple[str, str]:
    meta = _d(pod.get("metadata"))
    return (str(meta.get("creationTimestamp") or ""), str(meta.get("name") or ""))


def daemonset_plan(ds: Obj, pods: Sequence[Obj], nodes: Sequence[Obj], now: datetime) -> Plan:
    """Pods to create (one per node lacking one) and to delete (extra, misplaced, failed, or
    replaced by a rolling update), given the pods `ds` controls and every Node."""
    plan = Plan()
    by_node: dict[str, list[Obj]] = {}
    for pod in pods:
        if pod_active(pod):
            by_node.setdefault(target_node(pod), []).append(pod)
        elif not _d(pod.get("metadata")).get("deletionTimestamp"):
            plan.delete.append(pod)  # a finished daemon pod is replaced, as in Kubernetes
    node_by_name = {str(_d(n.get("metadata")).get("name")): n for n in nodes}
    spec = _d(ds.get("spec"))
    revision = template_revision(ds)
    desired: list[str] = []
    for name, node in sorted(node_by_name.items()):
        if not node_wants_pod(ds, node):
            continue
        here = sorted(by_node.get(name, []), key=_created)
        if node_is_ready(node):
            desired.append(name)
            if not here:
                plan.create_on.append(name)
        plan.delete.extend(here[1:])  # one pod per node: keep the oldest
    for name, here in by_node.items():
        host = node_by_name.get(name)
        if host is None or not node_wants_pod(ds, host):
            plan.delete.extend(here)  # the node is gone, or no longer admits the pod
    strategy = _d(spec.get("updateStrategy"))
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return plan
    min_ready = _int(spec.get("minReadySeconds"))
    max_unavailable = max(1, resolve_int_or_percent(
        _d(strategy.get("rollingUpdate")).get("maxUnavailable", 1), len(desired), True))
    doomed = {id(p) for p in plan.delete}
    current = {name: sorted(by_node.get(name, []), key=_created)[0]
               for name in desired if by_node.get(name)}
    unavailable = sum(1 for name in desired if name not in current
                      or not pod_available(current[name], min_ready, now))
    old = [(name, pod) for name, pod in current.items()
           if pod_revision(pod) != revision and id(pod) not in doomed]
    # Old pods that are not available cost nothing to replace; then the budget decides.
    old.sort(key=lambda item: pod_available(item[1], min_ready, now))
    for _, pod in old:
        if not pod_available(pod, min_ready, now):
            plan.delete.append(pod)
        elif unavailable < max_unavailable:
            plan.delete.append(pod)
            unavailable += 1
    return plan


def daemonset_status(ds: Obj, pods: Sequence[Obj], nodes: Sequence[Obj],
                     now: datetime) -> dict[str, Any]:
    spec = _d(ds.get("spec"))
    revision = template_revision(ds)
    min_ready = _int(spec.get("minReadySeconds"))
    by_node: dict[str, list[Obj]] = {}
    for pod in pods:
        if pod_active(pod):
            by_node.setdefault(target_node(pod), []).append(pod)
    desired = current = ready = available = updated = misscheduled = 0
    node_by_name = {str(_d(n.get("metadata")).get("name")): n for n in nodes}
    for name, node in node_by_name.items():
        wants = node_wants_pod(ds, node)
        here = by_node.get(name, [])
        if not wants:
            misscheduled += bool(here)
            continue
        if not node_is_ready(node):
            continue
        desired += 1
        if here:
            current += 1
            ready += any(pod_ready(p) for p in here)
            available += any(pod_available(p, min_ready, now) for p in here)
            updated += any(pod_revision(p) == revision for p in here)
    status: dict[str, Any] = {
        "observedGeneration": _int(_d(ds.get("metadata")).get("generation"), 1),
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": current,
        "numberReady": ready,
        "numberAvailable": available,
        "updatedNumberScheduled": updated,
        "numberMisscheduled": misscheduled,
    }
    if desired - available > 0:
        status["numberUnavailable"] = desired - available
    return status


def pod_for_node(ds: Obj, node: str) -> dict[str, Any]:
    meta, spec = _d(ds.get("metadata")), _d(ds.get("spec"))
    template = copy.deepcopy(dict(_d(spec.get("template"))))
    tmeta = _d(template.get("metadata"))
    labels = {**dict(_d(tmeta.get("labels"))), REVISION_LABEL: template_revision(ds),
              GENERATION_LABEL: str(_int(meta.get("generation"), 1))}
    pod_meta: dict[str, Any] = {"generateName": f"{meta.get('name')}-",
                                "namespace": meta.get("namespace"), "labels": labels,
                                "ownerReferences": [owner_ref(ds, "DaemonSet", "apps/v1")]}
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(_d(tmeta["annotations"]))
    pod_spec = dict(_d(template.get("spec")))
    # Kubernetes replaces the required node affinity terms with the one naming the node.
    affinity = dict(_d(pod_spec.get("affinity")))
    node_affinity = dict(_d(affinity.get("nodeAffinity")))
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}
    affinity["nodeAffinity"] = node_affinity
    pod_spec["affinity"] = affinity
    tolerations = [t for t in _l(pod_spec.get("tolerations")) if isinstance(t, Mapping)]
    for tol in DAEMON_TOLERATIONS:
        if not any(t.get("key") == tol["key"] and t.get("effect") == tol["effect"]
                   for t in tolerations):
            tolerations.append(dict(tol))
    pod_spec["tolerations"] = tolerations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": pod_spec}


class DaemonSetController(_Writer):
    name = "daemonset-controller"
    watches = (PODS, NODES, DAEMON_SETS)

    async def reconcile(self) -> None:
        pods_by_owner = _owned_by(self.store.scan(PODS))
        nodes = self.store.scan(NODES)
        now = datetime.now(UTC)
        work = []
        for ds in self.store.scan(DAEMON_SETS):
            if ds["metadata"].get("deletionTimestamp"):
                continue
            uid = str(ds["metadata"].get("uid"))
            work.append(self._guarded_sync(
                "daemonset", ds, self._sync(ds, pods_by_owner.get(uid, []), nodes, now)))
        if work:
            await asyncio.gather(*work)

    async def _sync(self, ds: Obj, pods: list[Obj], nodes: Sequence[Obj],
                    now: datetime) -> None:
        meta = ds["metadata"]
        ns, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta.get("uid"))
        revision = template_revision(ds)
        template = _d(_d(ds.get("spec")).get("template"))
        # A revision that cannot be written (logged) does not hold the pods back.
        await ensure_revision(self, ds, "DaemonSet", f"{name}-{revision}", revision, template)
        plan = daemonset_plan(ds, pods, nodes, now)
        for node in plan.create_on:
            await self._create_pod(ds, pod_for_node(ds, node))
        for doomed in plan.delete:
            await self._delete_pod(ds, doomed)
        if plan.create_on or plan.delete:
            pods = [p for p in self.store.scan(PODS)
                    if p["metadata"].get("namespace") == ns and controller_uid(p) == uid]
        status = daemonset_status(ds, pods, nodes, now)
        await prune_revisions(self, ds, {f"{name}-{h}" for h in
                                         {revision, *(pod_revision(p) for p in pods)}})
        old: Mapping[str, Any] = _d(ds.get("status"))
        if {k: v for k, v in old.items() if k != "conditions"} != status:
            patch = {**{k: None for k in old if k not in status and k != "conditions"},
                     **status}
            await self._patch(DAEMON_SETS, ns, name, {"status": patch}, subresource="status")
