"""The StatefulSet controller: pods with stable names, created and removed in order.

A StatefulSet `web` with `replicas: 3` owns pods `web-0`, `web-1`, `web-2` (ordinals from
`spec.ordinals.start`, default 0). Each pod carries `spec.hostname=<pod>` and
`spec.subdomain=<serviceName>`, so behind the headless Service named by `serviceName` the
cluster DNS answers `web-0.nginx.default.svc.cluster.local` (the endpoints controller copies
the hostname into the EndpointSlice). Labels: `statefulset.kubernetes.io/pod-name`,
`apps.kubernetes.io/pod-index` and `controller-revision-hash` (`<sts>-<template hash>`).

`podManagementPolicy: OrderedReady` (the default) creates one pod at a time in ordinal order,
each only once every lower one is Running and Ready, and removes them from the highest
ordinal down, one at a time, only while the rest are healthy. `Parallel` creates and removes
all at once. A deleted pod comes back with the same name. `updateStrategy: RollingUpdate`
replaces pods whose revision is not the template's, from the highest ordinal down to
`partition`, one at a time and only while every pod is Running and Ready; `OnDelete` leaves
that to the user.

podnet has no storage: `volumeClaimTemplates` are accepted (tutorials carry them) and no
PersistentVolumeClaim is made; a Warning Event on the StatefulSet says so.

Each template is kept as a ControllerRevision `<sts>-<hash>` (controlplane/revisions.py), so
`kubectl rollout history/undo sts/web` work, and a pod below `partition` that is recreated
during a staged update gets the old template back.

`statefulset_plan` and `statefulset_status` are pure functions, unit tested without a store.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controlplane import events
from controlplane.api import Api
from controlplane.revisions import (
    CONTROLLER_REVISIONS,
    ensure_revision,
    prune_revisions,
    template_of,
)
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
    template_hash,
)
from podnet.apierrors import ApiError
from podnet.resources import BY_KIND
from podnet.selectors import LabelSelector, SelectorError

PODS = BY_KIND["Pod"]
STATEFUL_SETS = BY_KIND["StatefulSet"]

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
REVISION_LABEL = "controller-revision-hash"


def revision_name(sts: Obj) -> str:
    """`<sts>-<hash of the pod template>`: the update revision, as pods are labelled."""
    name = str(_d(sts.get("metadata")).get("name"))
    return f"{name}-{template_hash(_d(_d(sts.get('spec')).get('template')))}"


def ordinal_of(sts_name: str, pod: Obj) -> int | None:
    """The ordinal in a pod's name `<sts>-<n>`, or None for a pod not named that way."""
    name = str(_d(pod.get("metadata")).get("name") or "")
    m = re.fullmatch(re.escape(sts_name) + r"-(0|[1-9][0-9]*)", name)
    return int(m.group(1)) if m else None


def pod_revision(pod: Obj) -> str:
    return str(_d(_d(pod.get("metadata")).get("labels")).get(REVISION_LABEL) or "")


def _running_and_ready(pod: Obj) -> bool:
    return (_d(pod.get("status")).get("phase") == "Running" and pod_ready(pod)
            and not _d(pod.get("metadata")).get("deletionTimestamp"))


def _terminating(pod: Obj) -> bool:
    return bool(_d(pod.get("metadata")).get("deletionTimestamp"))


def _finished(pod: Obj) -> bool:
    return _d(pod.get("status")).get("phase") in ("Succeeded", "Failed")


@dataclass
class Plan:
    """What one pass does: pods to create (by ordinal) and to delete (by name), in order."""

    create: list[int] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    waiting: str = ""       # why an ordered pass stopped (logged at debug level)


def wanted_ordinals(sts: Obj) -> range:
    spec = _d(sts.get("spec"))
    start = max(0, _int(_d(spec.get("ordinals")).get("start")))
    return range(start, start + max(0, _int(spec.get("replicas"), 1)))


def statefulset_plan(sts: Obj, pods: Sequence[Obj]) -> Plan:
    """The next steps for `sts` given its pods (those it controls)."""
    meta, spec = _d(sts.get("metadata")), _d(sts.get("spec"))
    name = str(meta.get("name"))
    ordered = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
    wanted = wanted_ordinals(sts)
    by_ordinal: dict[int, Obj] = {}
    strays: list[Obj] = []
    for pod in pods:
        n = ordinal_of(name, pod)
        if n is None or n in by_ordinal:
            strays.append(pod)  # not one of ours by name, or a duplicate: remove it
        else:
            by_ordinal[n] = pod
    plan = Plan(delete=[str(_d(p.get("metadata")).get("name")) for p in strays
                        if not _terminating(p)])
    # A finished pod (a container that exited under restartPolicy Never/OnFailure) is
    # replaced by a fresh one of the same name, as Kubernetes does.
    for n in wanted:
        done = by_ordinal.get(n)
        if done is not None and _finished(done) and not _terminating(done):
            plan.delete.append(str(_d(done.get("metadata")).get("name")))
            if ordered:
                plan.waiting = f"recreating failed pod {name}-{n}"
                return plan
    # 1. Create the missing ordinals (lowest first).
    for n in wanted:
        have = by_ordinal.get(n)
        if have is None:
            plan.create.append(n)
            if ordered:
                plan.waiting = f"waiting for {name}-{n} to be Running and Ready"
                return plan
        elif ordered and not _running_and_ready(have):
            plan.waiting = f"waiting for {name}-{n} to be Running and Ready"
            return plan
    # 2. Remove the condemned ordinals (highest first).
    condemned = sorted((n for n in by_ordinal if n not in wanted), reverse=True)
    if condemned:
        if not ordered:
            plan.delete.extend(f"{name}-{n}" for n in condemned
                               if not _terminating(by_ordinal[n]))
            return plan
        if any(_terminating(by_ordinal[n]) for n in condemned):
            plan.waiting = "waiting for a condemned pod to terminate"
            return plan
        if not all(_running_and_ready(by_ordinal[n]) for n in wanted if n in by_ordinal):
            plan.waiting = "waiting for the remaining pods to be healthy before scaling down"
            return plan
        plan.delete.append(f"{name}-{condemned[0]}")
        return plan
    # 3. Rolling update: highest ordinal first, down to the partition, one pod at a time.
    strategy = _d(spec.get("updateStrategy"))
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return plan
    partition = _int(_d(strategy.get("rollingUpdate")).get("partition"))
    update = revision_name(sts)
    if any(_terminating(p) for p in by_ordinal.values()):
        return plan
    if not all(_running_and_ready(by_ordinal[n]) for n in wanted if n in by_ordinal):
        return plan
    for n in sorted(wanted, reverse=True):
        if n - wanted.start < partition:
            break
        old_pod = by_ordinal.get(n)
        if old_pod is not None and pod_revision(old_pod) != update:
            plan.delete.append(f"{name}-{n}")
            plan.waiting = f"updating {name}-{n} to revision {update}"
            break
    return plan


def statefulset_status(sts: Obj, pods: Sequence[Obj], now: datetime) -> dict[str, Any]:
    meta, spec = _d(sts.get("metadata")), _d(sts.get("spec"))
    old = _d(sts.get("status"))
    update = revision_name(sts)
    current = str(old.get("currentRevision") or update)
    active = [p for p in pods if pod_active(p)]
    min_ready = _int(spec.get("minReadySeconds"))
    status: dict[str, Any] = {
        "observedGeneration": _int(meta.get("generation"), 1),
        "replicas": len(active),
        "readyReplicas": sum(1 for p in active if pod_ready(p)),
        "currentReplicas": sum(1 for p in active if pod_revision(p) == current),
        "updatedReplicas": sum(1 for p in active if pod_revision(p) == update),
        "availableReplicas": sum(1 for p in active if pod_available(p, min_ready, now)),
        "currentRevision": current,
        "updateRevision": update,
        "collisionCount": _int(old.get("collisionCount")),
    }
    # The update is complete once every pod runs the new revision and is ready: the new
    # revision becomes the current one (Kubernetes' completeRollingUpdate).
    replicas = max(0, _int(spec.get("replicas"), 1))
    if (_d(spec.get("updateStrategy")).get("type", "RollingUpdate") == "RollingUpdate"
            and status["updatedReplicas"] == status["replicas"] == replicas
            and status["readyReplicas"] == replicas):
        status["currentRevision"] = update
        status["currentReplicas"] = status["updatedReplicas"]
    return status


def uses_current_revision(sts: Obj, ordinal: int) -> bool:
    """A pod created now at `ordinal` gets the current (old) revision, not the update one:
    during a RollingUpdate staged with `partition`, ordinals below it stay at the old
    template (Kubernetes' newVersionedStatefulSetPod)."""
    spec, status = _d(sts.get("spec")), _d(sts.get("status"))
    strategy = _d(spec.get("updateStrategy"))
    current = status.get("currentRevision")
    if strategy.get("type", "RollingUpdate") != "RollingUpdate" or not current \
            or current == revision_name(sts):
        return False
    partition = _int(_d(strategy.get("rollingUpdate")).get("partition"))
    return ordinal - wanted_ordinals(sts).start < partition


def pod_for_ordinal(sts: Obj, ordinal: int, template: Obj | None = None,
                    revision: str | None = None) -> dict[str, Any]:
    """The pod `<sts>-<ordinal>`, from the StatefulSet's template or (for an older revision)
    from `template` labelled `revision`."""
    meta, spec = _d(sts.get("metadata")), _d(sts.get("spec"))
    name = f"{meta.get('name')}-{ordinal}"
    template = copy.deepcopy(dict(template if template is not None
                                  else _d(spec.get("template"))))
    tmeta = _d(template.get("metadata"))
    labels = {**dict(_d(tmeta.get("labels"))), POD_NAME_LABEL: name,
              POD_INDEX_LABEL: str(ordinal), REVISION_LABEL: revision or revision_name(sts)}
    pod_meta: dict[str, Any] = {"name": name, "namespace": meta.get("namespace"),
                                "labels": labels,
                                "ownerReferences": [owner_ref(sts, "StatefulSet", "apps/v1")]}
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(_d(tmeta["annotations"]))
    pod_spec = dict(_d(template.get("spec")))
    pod_spec["hostname"] = name
    if spec.get("serviceName"):
        pod_spec["subdomain"] = spec["serviceName"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": pod_spec}


def adoptable_by(sts: Obj, pod: Obj) -> bool:
    """An orphaned pod this StatefulSet takes over: same namespace, named `<sts>-<n>`,
    matching its selector, not terminating."""
    meta, pmeta = _d(sts.get("metadata")), _d(pod.get("metadata"))
    if pmeta.get("namespace") != meta.get("namespace") or pmeta.get("deletionTimestamp"):
        return False
    if ordinal_of(str(meta.get("name")), pod) is None or controller_uid(pod) is not None:
        return False
    try:
        selector = LabelSelector.from_spec(dict(_d(_d(sts.get("spec")).get("selector"))))
    except SelectorError:
        return False
    labels = {str(k): str(v) for k, v in _d(pmeta.get("labels")).items()}
    return not selector.empty and selector.matches(labels)


def claim_names(sts: Obj) -> list[str]:
    return [str(_d(_d(c).get("metadata")).get("name") or "?")
            for c in _l(_d(sts.get("spec")).get("volumeClaimTemplates"))]


# A pod that just went away is recreated (same name) no sooner than this. podnet pods stop in
# milliseconds, far faster than kubelet's; without a pause, `kubectl delete pod web-0` could
# read the old web-0 (terminating), then list the new one before it saw the old one's
# DELETED event, and wait for the new one's deletion forever.
RECREATE_DELAY_S = 0.5


class StatefulSetController(_Writer):
    name = "statefulset-controller"
    watches = (PODS, STATEFUL_SETS)

    def __init__(self, api: Api) -> None:
        super().__init__(api)
        self._storage_noted: set[str] = set()  # StatefulSet uids told "no storage"
        self._present: set[str] = set()        # "ns/pod" of our pods seen on the last pass
        self._gone_at: dict[str, float] = {}   # "ns/pod" -> when it was first seen gone

    async def reconcile(self) -> None:
        all_pods = self.store.scan(PODS)
        pods_by_owner = _owned_by(all_pods)
        now = datetime.now(UTC)
        self._note_gone(pods_by_owner)
        orphans = [p for p in all_pods if controller_uid(p) is None]
        work = []
        for sts in self.store.scan(STATEFUL_SETS):
            if sts["metadata"].get("deletionTimestamp"):
                continue
            uid = str(sts["metadata"].get("uid"))
            adoptable = [p for p in orphans if adoptable_by(sts, p)]
            work.append(self._guarded_sync("statefulset", sts, self._sync(
                sts, pods_by_owner.get(uid, []) + adoptable, now)))
        if work:
            await asyncio.gather(*work)

    async def _adopt(self, sts: Obj, pods: list[Obj]) -> list[Obj]:
        """Take over orphaned pods of this StatefulSet's name and selector (left behind by
        `kubectl delete sts --cascade=orphan`), as Kubernetes' controller ref manager does."""
        meta = sts["metadata"]
        ns = str(meta["namespace"])
        kept: list[Obj] = []
        for pod in pods:
            if controller_uid(pod) is not None:
                kept.append(pod)
                continue
            pname = str(pod["metadata"]["name"])
            refs = [*_l(pod["metadata"].get("ownerReferences")),
                    owner_ref(sts, "StatefulSet", "apps/v1")]
            if await self._patch(PODS, ns, pname, {"metadata": {"ownerReferences": refs}}):
                self.log.info("statefulset.adopted", namespace=ns, statefulset=meta["name"],
                              pod=pname)
                fresh = self.store.peek(PODS, ns, pname)
                if fresh is not None:
                    kept.append(fresh)
        return kept

    def _note_gone(self, pods_by_owner: Mapping[str, list[Obj]]) -> None:
        mono = time.monotonic()
        uids = {str(s["metadata"].get("uid")) for s in self.store.scan(STATEFUL_SETS)}
        present = {f"{p['metadata'].get('namespace')}/{p['metadata'].get('name')}"
                   for uid in uids for p in pods_by_owner.get(uid, [])}
        for key in self._present - present:
            self._gone_at[key] = mono
        self._present = present
        self._gone_at = {k: t for k, t in self._gone_at.items()
                         if mono - t < RECREATE_DELAY_S and k not in present}

    def _recreate_wait(self, ns: str, pod_name: str) -> float:
        """Seconds left before `pod_name` may be created again (0: now)."""
        gone = self._gone_at.get(f"{ns}/{pod_name}")
        return 0.0 if gone is None else max(0.0, RECREATE_DELAY_S - (time.monotonic() - gone))

    async def _sync(self, sts: Obj, pods: list[Obj], now: datetime) -> None:
        meta = sts["metadata"]
        ns, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta.get("uid"))
        sts_obj = dict(sts)
        if any(controller_uid(p) is None for p in pods):
            pods = await self._adopt(sts, pods)
        if claim_names(sts) and uid not in self._storage_noted:
            self._storage_noted.add(uid)
            await events.record(
                self.api, sts_obj, "Warning", "NoStorage",
                "podnet has no storage: volumeClaimTemplates "
                f"({', '.join(claim_names(sts))}) get no PersistentVolumeClaims; "
                "pods run without those volumes", self.name)
        update = revision_name(sts)
        template = _d(_d(sts.get("spec")).get("template"))
        # A revision that cannot be written (logged) does not hold the pods back; the next
        # pass tries again.
        await ensure_revision(self, sts, "StatefulSet", update, update.removeprefix(f"{name}-"),
                              template)
        current_name = str(_d(sts.get("status")).get("currentRevision") or update)
        current = self.store.peek(CONTROLLER_REVISIONS, ns, current_name)
        plan = statefulset_plan(sts, pods)
        if plan.waiting:
            self.log.debug("statefulset.waiting", namespace=ns, name=name, why=plan.waiting)
        for ordinal in plan.create:
            if current is not None and uses_current_revision(sts, ordinal):
                body = pod_for_ordinal(sts, ordinal, template_of(current), current_name)
            else:
                body = pod_for_ordinal(sts, ordinal)
            wait_s = self._recreate_wait(ns, body["metadata"]["name"])
            if wait_s > 0:
                asyncio.get_running_loop().call_later(wait_s, self.kick.set)
                continue
            try:
                await self.api.create(PODS, ns, body, field_validation="Ignore")
            except ApiError as e:
                # Not `_failed`: a 409 here is a pod of that name that is not ours, and retrying
                # at once would spin; the next change or resync tries again.
                self.log.warning(f"{self.name}.write_failed", verb="create",
                                 resource=PODS.plural, namespace=ns,
                                 name=body["metadata"]["name"], code=e.code, error=str(e))
                await events.record(self.api, sts_obj, "Warning", "FailedCreate",
                                    f"create Pod {body['metadata']['name']} in StatefulSet "
                                    f"{name} failed error: {e}", self.name)
                continue
            await events.record(self.api, sts_obj, "Normal", "SuccessfulCreate",
                                f"create Pod {body['metadata']['name']} in StatefulSet {name} "
                                "successful", self.name)
        for pod_name in plan.delete:
            pod = next((p for p in pods if p["metadata"].get("name") == pod_name), None)
            if await self._delete(PODS, ns, pod_name,
                                  str(pod["metadata"].get("uid")) if pod else None):
                await events.record(self.api, sts_obj, "Normal", "SuccessfulDelete",
                                    f"delete Pod {pod_name} in StatefulSet {name} successful",
                                    self.name)
        if plan.create or plan.delete:
            pods = [p for p in self.store.scan(PODS)
                    if p["metadata"].get("namespace") == ns and controller_uid(p) == uid]
        status = statefulset_status(sts, pods, now)
        await prune_revisions(self, sts, {status["currentRevision"], status["updateRevision"],
                                          *(pod_revision(p) for p in pods)})
        old: Mapping[str, Any] = _d(sts.get("status"))
        if {k: v for k, v in old.items() if k != "conditions"} != status:
            patch = {**{k: None for k in old if k not in status and k != "conditions"},
                     **status}
            await self._patch(STATEFUL_SETS, ns, name, {"status": patch}, subresource="status")
