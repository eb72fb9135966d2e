"""Workload controllers: Deployments, ReplicaSets, garbage collection, pod eviction.

- `ReplicaSetController` keeps `spec.replicas` active pods per ReplicaSet: pods named
  `<rs>-<5 random characters>` (generateName), labelled from the template, owned by the
  ReplicaSet (`ownerReferences`, `controller: true`). Scaling down removes the pods that
  matter least first (unscheduled, not running, not ready, crowded on one node, newest).
- `DeploymentController` keeps one ReplicaSet per pod template, named `<deploy>-<hash>` with the
  `pod-template-hash` label, and rolls from the old ones to the new one within `maxSurge` /
  `maxUnavailable` (or all at once for `Recreate`).
- `GarbageCollector` deletes objects whose owners are gone (background propagation): deleting a
  Deployment removes its ReplicaSets, and with them their pods.
- `PodEviction` deletes the pods of a node that has not been Ready for
  `pod_eviction_timeout_s` (or no longer exists), so their ReplicaSets replace them elsewhere.

The decisions are pure functions (`replica_set_diff`, `pods_to_delete`, `rollout_step`,
`deployment_status`, `template_hash`), unit tested without a store; the controllers are thin
loops over `store.scan()` that write only what changes.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controlplane import events
from controlplane.api import MERGE_PATCH, Api, node_is_ready, parse_time
from controlplane.reconcile import Reconciler
from podnet.apierrors import ApiError
from podnet.resources import BY_KIND, Resource

PODS = BY_KIND["Pod"]
NODES = BY_KIND["Node"]
REPLICA_SETS = BY_KIND["ReplicaSet"]
DEPLOYMENTS = BY_KIND["Deployment"]
SERVICES = BY_KIND["Service"]
ENDPOINT_SLICES = BY_KIND["EndpointSlice"]

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# Kubernetes' SafeEncodeString alphabet: no vowels, no look-alikes (also used by generateName).
_SAFE = "bcdfghjklmnpqrstvwxz2456789"

Obj = Mapping[str, Any]


def _d(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def controller_uid(obj: Obj) -> str | None:
    for ref in _l(_d(obj.get("metadata")).get("ownerReferences")):
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return str(ref.get("uid") or "") or None
    return None


def owner_ref(owner: Obj, kind: str, api_version: str) -> dict[str, Any]:
    meta = _d(owner.get("metadata"))
    return {"apiVersion": api_version, "kind": kind, "name": meta.get("name"),
            "uid": meta.get("uid"), "controller": True, "blockOwnerDeletion": True}


# ---------------------------------------------------------------------- pure: pods

def pod_active(pod: Obj) -> bool:
    """Counts towards a ReplicaSet's replicas: not terminating, not finished."""
    return (not _d(pod.get("metadata")).get("deletionTimestamp")
            and _d(pod.get("status")).get("phase") not in ("Succeeded", "Failed"))


def _ready_condition(pod: Obj) -> Mapping[str, Any] | None:
    for cond in _l(_d(pod.get("status")).get("conditions")):
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return cond
    return None


def pod_ready(pod: Obj) -> bool:
    cond = _ready_condition(pod)
    return cond is not None and cond.get("status") == "True"


def pod_available(pod: Obj, min_ready_s: int, now: datetime) -> bool:
    if not pod_ready(pod):
        return False
    if min_ready_s <= 0:
        return True
    since = parse_time(_d(_ready_condition(pod)).get("lastTransitionTime"))
    return since is not None and (now - since).total_seconds() >= min_ready_s


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def _restarts(pod: Obj) -> int:
    return sum(_int(_d(cs).get("restartCount"))
               for cs in _l(_d(pod.get("status")).get("containerStatuses")))


def pods_to_delete(pods: Sequence[Obj], count: int) -> list[Obj]:
    """The `count` pods a ReplicaSet scales down first, by Kubernetes' ranking: unscheduled,
    then pending, then not ready, then those sharing a node with more of their siblings
    (keeps the spread), then recently ready, then most restarted, then the newest."""
    if count <= 0:
        return []
    # Counted again after each pick, so removing several pods evens the nodes out instead of
    # emptying the most crowded one.
    per_node = Counter(_d(p.get("spec")).get("nodeName") for p in pods)

    def key(pod: Obj) -> tuple[Any, ...]:
        spec, status = _d(pod.get("spec")), _d(pod.get("status"))
        node = spec.get("nodeName")
        ready_since = str(_d(_ready_condition(pod)).get("lastTransitionTime") or "")
        created = str(_d(pod.get("metadata")).get("creationTimestamp") or "")
        return (
            bool(node),
            _PHASE_RANK.get(str(status.get("phase")), 0),
            pod_ready(pod),
            -per_node[node] if node else 0,
            _Desc(ready_since),
            -_restarts(pod),
            _Desc(created),
        )

    left = list(pods)
    chosen: list[Obj] = []
    while left and len(chosen) < count:
        pick = min(left, key=key)
        left.remove(pick)
        chosen.append(pick)
        per_node[_d(pick.get("spec")).get("nodeName")] -= 1
    return chosen


@dataclass(frozen=True, order=False)
class _Desc:
    """Sorts strings in descending order (newest timestamp first) inside a tuple key."""

    value: str

    def __lt__(self, other: _Desc) -> bool:
        return self.value > other.value


def replica_set_diff(rs: Obj, pods: Sequence[Obj]) -> tuple[int, list[Obj]]:
    """(pods to create, pods to delete) so that `spec.replicas` pods of `rs` are active."""
    wanted = max(0, _int(_d(rs.get("spec")).get("replicas"), 1))
    active = [p for p in pods if pod_active(p)]
    if len(active) < wanted:
        return wanted - len(active), []
    return 0, pods_to_delete(active, len(active) - wanted)


def replica_set_status(rs: Obj, pods: Sequence[Obj], now: datetime) -> dict[str, Any]:
    spec = _d(rs.get("spec"))
    active = [p for p in pods if pod_active(p)]
    labels = _d(_d(_d(spec.get("template")).get("metadata")).get("labels"))
    min_ready = _int(spec.get("minReadySeconds"))
    status: dict[str, Any] = {
        "replicas": len(active),
        "fullyLabeledReplicas": sum(
            1 for p in active
            if all(_d(_d(p.get("metadata")).get("labels")).get(k) == v
                   for k, v in labels.items())),
        "readyReplicas": sum(1 for p in active if pod_ready(p)),
        "availableReplicas": sum(1 for p in active if pod_available(p, min_ready, now)),
        "observedGeneration": _int(_d(rs.get("metadata")).get("generation"), 1),
    }
    terminating = sum(1 for p in pods if _d(p.get("metadata")).get("deletionTimestamp"))
    if terminating:
        status["terminatingReplicas"] = terminating
    return status


def pod_from_template(rs: Obj) -> dict[str, Any]:
    meta = _d(rs.get("metadata"))
    template = copy.deepcopy(dict(_d(_d(rs.get("spec")).get("template"))))
    tmeta = dict(_d(template.get("metadata")))
    pod_meta: dict[str, Any] = {"generateName": f"{meta.get('name')}-",
                                "namespace": meta.get("namespace"),
                                "labels": dict(_d(tmeta.get("labels"))),
                                "ownerReferences": [owner_ref(rs, "ReplicaSet", "apps/v1")]}
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(_d(tmeta["annotations"]))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
            "spec": template.get("spec") or {}}


# ---------------------------------------------------------------------- pure: deployments

def template_hash(template: Obj, collision_count: int = 0) -> str:
    """A stable short hash of a pod template, spelled like Kubernetes' pod-template-hash
    (FNV-1a 32 of the template, its decimal digits mapped onto the safe alphabet)."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    if collision_count:
        text += f"#{collision_count}"
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE[ord(ch) % len(_SAFE)] for ch in str(h))


def _without_hash(template: Obj) -> dict[str, Any]:
    out = copy.deepcopy(dict(template))
    meta = dict(_d(out.get("metadata")))
    labels = dict(_d(meta.get("labels")))
    labels.pop(HASH_LABEL, None)
    meta["labels"] = labels
    out["metadata"] = meta
    return out


def same_template(rs_template: Obj, deploy_template: Obj) -> bool:
    a, b = _without_hash(rs_template), _without_hash(deploy_template)
    return a == b


def resolve_int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        try:
            pct = int(value[:-1])
        except ValueError:
            return 0
        exact = pct * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return max(0, _int(value))


def surge_and_unavailable(deploy: Obj) -> tuple[int, int]:
    """maxSurge (rounded up) and maxUnavailable (rounded down); never both 0."""
    spec = _d(deploy.get("spec"))
    replicas = _int(spec.get("replicas"), 1)
    strategy = _d(spec.get("strategy"))
    if strategy.get("type") == "Recreate":
        return 0, replicas
    rolling = _d(strategy.get("rollingUpdate"))
    surge = resolve_int_or_percent(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = resolve_int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # as Kubernetes does, so a rollout can always make progress
    return surge, min(unavailable, replicas)


@dataclass(frozen=True)
class RsState:
    name: str
    replicas: int      # spec.replicas
    current: int       # status.replicas (active pods)
    available: int     # status.availableReplicas


def rollout_step(replicas: int, strategy: str, surge: int, unavailable: int,
                 new: RsState, olds: list[RsState]) -> dict[str, int]:
    """Desired spec.replicas for the new ReplicaSet and the old ones (oldest first), one step
    of Kubernetes' rollout: only names whose replicas change are returned."""
    want: dict[str, int] = {new.name: new.replicas, **{o.name: o.replicas for o in olds}}
    if strategy == "Recreate":
        for o in olds:
            want[o.name] = 0
        # Only once every old pod is gone may new ones start.
        if not any(o.replicas or o.current for o in olds):
            want[new.name] = replicas
    elif not any(o.replicas for o in olds):
        want[new.name] = replicas  # nothing to roll from: plain scaling
    else:
        old_total = sum(o.replicas for o in olds)
        total = old_total + new.replicas
        new_target = new.replicas
        if new_target > replicas:
            new_target = replicas
        elif total < replicas + surge:
            new_target += min(replicas + surge - total, replicas - new.replicas)
        want[new.name] = new_target
        min_available = replicas - unavailable
        all_pods = old_total + new_target
        new_unavailable = max(0, new_target - new.available)
        budget = all_pods - min_available - new_unavailable
        # First the old pods that are not available anyway (removing them costs nothing)...
        for o in olds:
            if budget <= 0:
                break
            unhealthy = max(0, o.replicas - o.available)
            cut = min(unhealthy, budget, want[o.name])
            want[o.name] -= cut
            budget -= cut
        # ...then available ones, while enough stay available overall.
        available = sum(o.available for o in olds) + new.available
        allowed = available - min_available
        for o in olds:
            if allowed <= 0:
                break
            cut = min(want[o.name], allowed, max(0, budget))
            want[o.name] -= cut
            allowed -= cut
            budget -= cut
    current = {new.name: new.replicas, **{o.name: o.replicas for o in olds}}
    return {name: n for name, n in want.items() if current[name] != n}


def _condition(ctype: str, status: str, reason: str, message: str,
               previous: Iterable[Any]) -> dict[str, Any]:
    """A condition, keeping the previous timestamps when nothing about it changed (so an
    unchanged Deployment is never rewritten)."""
    now = _now()
    for old in previous:
        if isinstance(old, Mapping) and old.get("type") == ctype:
            if (old.get("status"), old.get("reason"), old.get("message")) == (
                    status, reason, message):
                return dict(old)
            transition = old.get("lastTransitionTime") if old.get("status") == status else now
            return {"type": ctype, "status": status, "lastUpdateTime": now,
                    "lastTransitionTime": transition or now, "reason": reason,
                    "message": message}
    return {"type": ctype, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
            "reason": reason, "message": message}


def deployment_status(deploy: Obj, new_rs: Obj | None, all_rs: Sequence[Obj]) -> dict[str, Any]:
    spec, old_status = _d(deploy.get("spec")), _d(deploy.get("status"))
    replicas = _int(spec.get("replicas"), 1)
    _, unavailable_allowed = surge_and_unavailable(deploy)

    def total(field: str) -> int:
        return sum(_int(_d(rs.get("status")).get(field)) for rs in all_rs)

    spec_total = sum(_int(_d(rs.get("spec")).get("replicas")) for rs in all_rs)
    status: dict[str, Any] = {
        "observedGeneration": _int(_d(deploy.get("metadata")).get("generation"), 1),
        "replicas": total("replicas"),
        "updatedReplicas": _int(_d(new_rs.get("status")).get("replicas")) if new_rs else 0,
        "readyReplicas": total("readyReplicas"),
        "availableReplicas": total("availableReplicas"),
    }
    unavailable = max(0, spec_total - status["availableReplicas"])
    if unavailable:
        status["unavailableReplicas"] = unavailable
    if _int(old_status.get("collisionCount")):
        status["collisionCount"] = old_status["collisionCount"]
    previous = _l(old_status.get("conditions"))
    if status["availableReplicas"] >= replicas - unavailable_allowed:
        available = _condition("Available", "True", "MinimumReplicasAvailable",
                               "Deployment has minimum availability.", previous)
    else:
        available = _condition("Available", "False", "MinimumReplicasUnavailable",
                               "Deployment does not have minimum availability.", previous)
    conditions = [available]
    if new_rs is not None:
        rs_name = _d(new_rs.get("metadata")).get("name")
        complete = (status["updatedReplicas"] == replicas == status["replicas"]
                    and status["availableReplicas"] == replicas)
        if complete:
            conditions.append(_condition("Progressing", "True", "NewReplicaSetAvailable",
                                         f'ReplicaSet "{rs_name}" has successfully '
                                         "progressed.", previous))
        else:
            conditions.append(_condition("Progressing", "True", "ReplicaSetUpdated",
                                         f'ReplicaSet "{rs_name}" is progressing.', previous))
    status["conditions"] = conditions
    return status


def _revision(obj: Obj) -> int:
    try:
        return int(_d(_d(obj.get("metadata")).get("annotations")).get(REVISION) or 0)
    except (TypeError, ValueError):
        return 0


def _rs_state(rs: Obj) -> RsState:
    spec, status = _d(rs.get("spec")), _d(rs.get("status"))
    return RsState(str(rs["metadata"]["name"]), _int(spec.get("replicas"), 1),
                   _int(status.get("replicas")), _int(status.get("availableReplicas")))


def _created(obj: Obj) -> tuple[str, str]:
    meta = _d(obj.get("metadata"))
    return (str(meta.get("creationTimestamp") or ""), str(meta.get("name") or ""))


def _owned_by(objects: Iterable[Obj]) -> dict[str, list[Obj]]:
    out: dict[str, list[Obj]] = defaultdict(list)
    for obj in objects:
        uid = controller_uid(obj)
        if uid:
            out[uid].append(obj)
    return out


# ---------------------------------------------------------------------- controllers

class _Writer(Reconciler):
    """Shared helpers: API writes that log failures instead of raising."""

    async def _guarded_sync(self, kind: str, obj: Obj, sync: Awaitable[None]) -> None:
        """Await one object's sync; a failure is logged as `<kind>.sync_failed` and the
        controller goes on with its other objects."""
        try:
            await sync
        except Exception:  # a malformed object: skip it, keep the others going
            self.log.exception(f"{kind}.sync_failed", name=obj["metadata"].get("name"))

    async def _patch(self, res: Resource, ns: str, name: str, body: Any, *,
                     subresource: str | None = None) -> bool:
        try:
            await self.api.patch(res, ns, name, _json(body), MERGE_PATCH,
                                 subresource=subresource)
        except ApiError as e:
            self._failed("patch", res, ns, name, e)
            return False
        return True

    async def _delete(self, res: Resource, ns: str, name: str, uid: str | None = None) -> bool:
        try:
            await self.api.delete(res, ns, name, uid=uid)
        except ApiError as e:
            if e.code != 404:
                self._failed("delete", res, ns, name, e)
            return False
        return True

    async def _create_pod(self, owner: Obj, body: dict[str, Any]) -> bool:
        """Create one of `owner`'s pods, with the controller's event either way."""
        meta = owner["metadata"]
        ns, name = str(meta["namespace"]), str(meta["name"])
        try:
            pod, _ = await self.api.create(PODS, ns, body, field_validation="Ignore")
        except ApiError as e:
            self._failed("create", PODS, ns, f"{name}-*", e)
            await events.record(self.api, dict(owner), "Warning", "FailedCreate",
                                f"Error creating: {e}", self.name)
            return False
        await events.record(self.api, dict(owner), "Normal", "SuccessfulCreate",
                            f"Created pod: {pod['metadata']['name']}", self.name)
        return True

    async def _delete_pod(self, owner: Obj, pod: Obj) -> bool:
        """Delete one of `owner`'s pods (this very pod: by uid), with the controller's event."""
        pmeta = pod["metadata"]
        ns = str(owner["metadata"]["namespace"])
        if not await self._delete(PODS, ns, str(pmeta["name"]), str(pmeta.get("uid"))):
            return False
        await events.record(self.api, dict(owner), "Normal", "SuccessfulDelete",
                            f"Deleted pod: {pmeta['name']}", self.name)
        return True

    def _failed(self, verb: str, res: Resource, ns: str, name: str, e: ApiError) -> None:
        self.log.warning(f"{self.name}.write_failed", verb=verb, resource=res.plural,
                         namespace=ns, name=name, code=e.code, error=str(e))
        if e.code == 409:
            self.kick.set()


async def _slow_start(count: int, make: Callable[[], Awaitable[bool]]) -> int:
    """Run `count` creations in doubling batches (1, 2, 4...), stopping after a batch with a
    failure: a template the API keeps rejecting costs one request, not `count` (Kubernetes'
    slowStartBatch). Returns how many succeeded."""
    done = ok = 0
    batch = 1
    while done < count:
        size = min(batch, count - done)
        results = await asyncio.gather(*(make() for _ in range(size)))
        done += size
        ok += sum(results)
        if not all(results):
            break
        batch *= 2
    return ok


class ReplicaSetController(_Writer):
    name = "replicaset-controller"
    watches = (PODS, REPLICA_SETS)

    async def reconcile(self) -> None:
        pods_by_owner = _owned_by(self.store.scan(PODS))
        now = datetime.now(UTC)
        work = []
        for rs in self.store.scan(REPLICA_SETS):
            if rs["metadata"].get("deletionTimestamp"):
                continue
            work.append(self._sync(rs, pods_by_owner.get(str(rs["metadata"].get("uid")), []),
                                   now))
        if work:
            await asyncio.gather(*work)

    async def _sync(self, rs: Obj, pods: list[Obj], now: datetime) -> None:
        meta = rs["metadata"]
        ns, name = str(meta["namespace"]), str(meta["name"])
        try:
            create, delete = replica_set_diff(rs, pods)
        except Exception:  # a malformed ReplicaSet: skip it, keep the others going
            self.log.exception("replicaset.sync_failed", namespace=ns, replicaset=name)
            return
        if create:
            body = pod_from_template(rs)
            await _slow_start(create, lambda: self._create_pod(rs, body))
        for pod in delete:
            await self._delete_pod(rs, pod)
        if create or delete:
            # Fresh state for the status: the writes above changed the pods.
            uid = str(meta.get("uid"))
            pods = [p for p in self.store.scan(PODS)
                    if p["metadata"].get("namespace") == ns and controller_uid(p) == uid]
        status = replica_set_status(rs, pods, now)
        old = {k: v for k, v in _d(rs.get("status")).items() if k != "conditions"}
        if old != status:
            # Merge patch: absent keys mean "unchanged", so a vanished count is sent as null.
            patch = {**{k: None for k in old if k not in status}, **status}
            await self._patch(REPLICA_SETS, ns, name, {"status": patch}, subresource="status")


class DeploymentController(_Writer):
    name = "deployment-controller"
    watches = (DEPLOYMENTS, REPLICA_SETS)

    async def reconcile(self) -> None:
        rs_by_owner = _owned_by(self.store.scan(REPLICA_SETS))
        work = []
        for deploy in self.store.scan(DEPLOYMENTS):
            if deploy["metadata"].get("deletionTimestamp"):
                continue
            work.append(self._guarded(deploy, rs_by_owner.get(str(deploy["metadata"]["uid"]),
                                                              [])))
        if work:
            await asyncio.gather(*work)

    async def _guarded(self, deploy: Obj, owned: list[Obj]) -> None:
        try:
            await self._sync(deploy, owned)
        except ApiError as e:
            self.log.warning("deployment.sync_failed", name=deploy["metadata"].get("name"),
                             error=str(e))
        except Exception:  # a malformed Deployment: skip it, keep the others going
            self.log.exception("deployment.sync_failed", name=deploy["metadata"].get("name"))

    async def _sync(self, deploy: Obj, owned: list[Obj]) -> None:
        meta, spec = deploy["metadata"], _d(deploy.get("spec"))
        ns, name = str(meta["namespace"]), str(meta["name"])
        template = _d(spec.get("template"))
        owned = sorted(owned, key=_created)
        new_rs = next((rs for rs in owned
                       if same_template(_d(_d(rs.get("spec")).get("template")), template)),
                      None)
        olds = [rs for rs in owned if rs is not new_rs]
        if new_rs is None and spec.get("paused") is not True:
            new_rs = await self._create_rs(deploy, olds)
            if new_rs is None:
                return
        if new_rs is not None and spec.get("paused") is not True:
            await self._scale(deploy, new_rs, olds)
            await self._revise(deploy, new_rs, olds)
            await self._prune_history(deploy, olds)
        fresh = [self.store.peek(REPLICA_SETS, ns, str(rs["metadata"]["name"]))
                 for rs in owned + ([new_rs] if new_rs is not None and new_rs not in owned
                                    else [])]
        all_rs = [rs for rs in fresh if rs is not None]
        current_new = (self.store.peek(REPLICA_SETS, ns, str(new_rs["metadata"]["name"]))
                       if new_rs is not None else None)
        status = deployment_status(deploy, current_new, all_rs)
        if status != _d(deploy.get("status")):
            old = _d(deploy.get("status"))
            patch = {**{k: None for k in old if k not in status}, **status}
            await self._patch(DEPLOYMENTS, ns, name, {"status": patch}, subresource="status")

    async def _create_rs(self, deploy: Obj, olds: list[Obj]) -> Obj | None:
        meta, spec = deploy["metadata"], _d(deploy.get("spec"))
        ns, name = str(meta["namespace"]), str(meta["name"])
        collisions = _int(_d(deploy.get("status")).get("collisionCount"))
        template = copy.deepcopy(dict(_d(spec.get("template"))))
        for _ in range(10):
            pod_hash = template_hash(template, collisions)
            rs_name = f"{name}-{pod_hash}"
            if self.store.peek(REPLICA_SETS, ns, rs_name) is None:
                break
            collisions += 1  # a ReplicaSet of that name is not ours: hash again
        else:
            self.log.warning("deployment.hash_collisions", deployment=name)
            return None
        if collisions != _int(_d(deploy.get("status")).get("collisionCount")):
            await self._patch(DEPLOYMENTS, ns, name, {"status": {"collisionCount": collisions}},
                              subresource="status")
        rs_template = copy.deepcopy(template)
        tmeta = rs_template.setdefault("metadata", {})
        tmeta["labels"] = {**dict(_d(tmeta.get("labels"))), HASH_LABEL: pod_hash}
        selector = copy.deepcopy(dict(_d(spec.get("selector"))))
        selector["matchLabels"] = {**dict(_d(selector.get("matchLabels"))), HASH_LABEL: pod_hash}
        replicas = _int(spec.get("replicas"), 1)
        surge, _ = surge_and_unavailable(deploy)
        revision = max((_revision(rs) for rs in olds), default=0) + 1
        body = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": rs_name, "namespace": ns, "labels": dict(tmeta["labels"]),
                         "annotations": {REVISION: str(revision),
                                         DESIRED_REPLICAS: str(replicas),
                                         MAX_REPLICAS: str(replicas + surge)},
                         "ownerReferences": [owner_ref(deploy, "Deployment", "apps/v1")]},
            "spec": {"replicas": 0, "minReadySeconds": _int(spec.get("minReadySeconds")),
                     "selector": selector, "template": rs_template},
        }
        try:
            created, _ = await self.api.create(REPLICA_SETS, ns, body, field_validation="Ignore")
        except ApiError as e:
            self._failed("create", REPLICA_SETS, ns, rs_name, e)
            return None
        self.log.info("deployment.replicaset_created", deployment=name, replicaset=rs_name)
        return created

    async def _scale(self, deploy: Obj, new_rs: Obj, olds: list[Obj]) -> None:
        meta, spec = deploy["metadata"], _d(deploy.get("spec"))
        ns = str(meta["namespace"])
        replicas = _int(spec.get("replicas"), 1)
        surge, unavailable = surge_and_unavailable(deploy)
        strategy = str(_d(spec.get("strategy")).get("type") or "RollingUpdate")
        changes = rollout_step(replicas, strategy, surge, unavailable, _rs_state(new_rs),
                               [_rs_state(o) for o in olds])
        by_name = {str(rs["metadata"]["name"]): rs for rs in [new_rs, *olds]}
        for rs_name, count in changes.items():
            before = _int(_d(by_name[rs_name].get("spec")).get("replicas"), 1)
            patch = {"metadata": {"annotations": {DESIRED_REPLICAS: str(replicas),
                                                  MAX_REPLICAS: str(replicas + surge)}},
                     "spec": {"replicas": count}}
            if await self._patch(REPLICA_SETS, ns, rs_name, patch):
                verb = "up" if count > before else "down"
                await events.record(self.api, dict(deploy), "Normal", "ScalingReplicaSet",
                                    f"Scaled {verb} replica set {rs_name} from {before} to "
                                    f"{count}", self.name)

    async def _revise(self, deploy: Obj, new_rs: Obj, olds: list[Obj]) -> None:
        """The new ReplicaSet carries the highest revision (a rollback to an old template
        makes its ReplicaSet the newest revision again), and the Deployment shows it."""
        ns, name = str(deploy["metadata"]["namespace"]), str(deploy["metadata"]["name"])
        top = max((_revision(rs) for rs in olds), default=0)
        revision = _revision(new_rs)
        if revision <= top:
            revision = top + 1
            await self._patch(REPLICA_SETS, ns, str(new_rs["metadata"]["name"]),
                              {"metadata": {"annotations": {REVISION: str(revision)}}})
        if _revision(deploy) != revision:
            await self._patch(DEPLOYMENTS, ns, name,
                              {"metadata": {"annotations": {REVISION: str(revision)}}})

    async def _prune_history(self, deploy: Obj, olds: list[Obj]) -> None:
        limit = _int(_d(deploy.get("spec")).get("revisionHistoryLimit"), 10)
        ns = str(deploy["metadata"]["namespace"])
        idle = [rs for rs in olds
                if self.store.peek(REPLICA_SETS, ns, str(rs["metadata"]["name"])) is not None
                and _int(_d(rs.get("spec")).get("replicas"), 1) == 0
                and _int(_d(rs.get("status")).get("replicas")) == 0]
        for rs in sorted(idle, key=_revision)[:max(0, len(idle) - limit)]:
            await self._delete(REPLICA_SETS, ns, str(rs["metadata"]["name"]),
                               str(rs["metadata"].get("uid")))


# Owner kinds this collector knows, by (apiVersion, kind). An owner of another kind is never
# treated as missing: podnet may not serve that kind at all.
_OWNER_KINDS: dict[tuple[str, str], Resource] = {
    ("apps/v1", "Deployment"): DEPLOYMENTS,
    ("apps/v1", "ReplicaSet"): REPLICA_SETS,
    ("apps/v1", "StatefulSet"): BY_KIND["StatefulSet"],
    ("apps/v1", "DaemonSet"): BY_KIND["DaemonSet"],
    ("batch/v1", "Job"): BY_KIND["Job"],
    ("v1", "Service"): SERVICES,
    ("v1", "Pod"): PODS,
}
_DEPENDENT_KINDS = (REPLICA_SETS, PODS, ENDPOINT_SLICES, BY_KIND["ControllerRevision"])


def orphans(dependents: Iterable[Obj], owner_uids: Mapping[Resource, set[str]]) -> list[Obj]:
    """Objects all of whose (known-kind) owners are gone: Kubernetes' garbage collector
    deletes an object once no owner it names exists any more (matched by uid)."""
    out = []
    for obj in dependents:
        refs = [r for r in _l(_d(obj.get("metadata")).get("ownerReferences"))
                if isinstance(r, Mapping)]
        known = [(r, _OWNER_KINDS.get((str(r.get("apiVersion")), str(r.get("kind")))))
                 for r in refs]
        if not refs or any(res is None for _, res in known):
            continue
        if all(str(r.get("uid")) not in owner_uids[res] for r, res in known if res):
            out.append(obj)
    return out


class GarbageCollector(_Writer):
    """Background cascading deletion through ownerReferences."""

    name = "garbage-collector"
    watches = (DEPLOYMENTS, REPLICA_SETS, SERVICES, PODS, ENDPOINT_SLICES,
               BY_KIND["StatefulSet"], BY_KIND["DaemonSet"], BY_KIND["Job"])

    async def reconcile(self) -> None:
        # Owners first, then dependents: a ReplicaSet deleted in this pass makes its pods
        # orphans in the next one, which our own delete events trigger at once.
        uids = {res: {str(o["metadata"].get("uid")) for o in self.store.scan(res)}
                for res in set(_OWNER_KINDS.values())}
        work = []
        for res in _DEPENDENT_KINDS:
            for obj in orphans(self.store.scan(res), uids):
                meta = obj["metadata"]
                self.log.info("gc.deleting", resource=res.plural,
                              namespace=meta.get("namespace"), name=meta.get("name"))
                work.append(self._delete(res, str(meta.get("namespace")), str(meta["name"]),
                                         str(meta.get("uid"))))
        if work:
            await asyncio.gather(*work)


def _daemon_pod(pod: Obj) -> bool:
    return any(isinstance(r, Mapping) and r.get("controller") is True
               and r.get("kind") == "DaemonSet"
               for r in _l(_d(pod.get("metadata")).get("ownerReferences")))


def pods_to_evict(pods: Iterable[Obj], lost_since: Mapping[str, float], now: float,
                  timeout_s: float, existing: Iterable[str] = ()) -> list[Obj]:
    """Pods bound to nodes that have been lost (not Ready, or gone) for over `timeout_s`.

    DaemonSet pods on a node that still exists stay: Kubernetes gives them tolerations for
    the not-ready and unreachable taints, so they wait for their node to come back (the
    DaemonSet controller removes them if the Node is deleted)."""
    due = {node for node, since in lost_since.items() if now - since >= timeout_s}
    present = set(existing)
    return [p for p in pods if _d(p.get("spec")).get("nodeName") in due
            and not (_daemon_pod(p) and _d(p.get("spec")).get("nodeName") in present)]


class PodEviction(_Writer):
    """Deletes the pods of lost nodes, like the taint-based eviction of kube-controller-manager
    (a `not-ready`/`unreachable` NoExecute taint with the default 300 s toleration; podnet's
    default is shorter because its nodes come back in seconds, not minutes).

    How long a node has been lost is measured on this process's monotonic clock from when
    this controller first saw it not Ready (or its pods' node missing), so clock skew between
    machines cannot hasten or delay an eviction.
    """

    name = "pod-eviction"
    watches = (NODES,)

    def __init__(self, api: Api, timeout_s: float, period_s: float = 1.0) -> None:
        super().__init__(api)
        self.timeout_s = timeout_s
        self.resync_s = period_s
        self.lost_since: dict[str, float] = {}

    async def reconcile(self) -> None:
        now = time.monotonic()
        nodes = {str(n["metadata"]["name"]): n for n in self.store.scan(NODES)}
        pods = self.store.scan(PODS)
        lost = {name for name, node in nodes.items() if not node_is_ready(node)}
        lost |= {str(p["spec"]["nodeName"]) for p in pods
                 if _d(p.get("spec")).get("nodeName") and p["spec"]["nodeName"] not in nodes}
        self.lost_since = {name: self.lost_since.get(name, now) for name in lost}
        doomed = pods_to_evict(pods, self.lost_since, now, self.timeout_s, nodes)
        work = [self._evict(dict(p)) for p in doomed]
        if work:
            await asyncio.gather(*work)

    async def _evict(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        ns, name = str(meta["namespace"]), str(meta["name"])
        node = pod["spec"]["nodeName"]
        # Grace 0: no agent is left to run a graceful termination on a lost node.
        try:
            await self.api.delete(PODS, ns, name, grace_period_seconds=0, uid=meta.get("uid"))
        except ApiError as e:
            if e.code != 404:
                self._failed("delete", PODS, ns, name, e)
            return
        self.log.warning("pod.evicted", namespace=ns, pod=name, node=node,
                         lost_for_s=round(time.monotonic() - self.lost_since.get(node, 0), 1))
        await events.record(self.api, pod, "Normal", "TaintManagerEviction",
                            f"Marking for deletion Pod {ns}/{name} (node {node} lost for "
                            f"over {self.timeout_s:g}s)", "taint-eviction-controller")
