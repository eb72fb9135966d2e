"""The Job controller: run pods to completion, retry failures up to `backoffLimit`.

A Job keeps up to `parallelism` pods running until `completions` pods have Succeeded (with
no `completions`, until one has and the rest are done), then it is `Complete`. A pod that
Fails (restartPolicy Never), or restarts (OnFailure), counts against `backoffLimit`; past
it, or past `activeDeadlineSeconds`, the Job is `Failed` (reason BackoffLimitExceeded or
DeadlineExceeded) and its running pods are deleted. Like Kubernetes 1.31+, the interim
condition `SuccessCriteriaMet` / `FailureTarget` comes first and the terminal one once no
pod is left running; `kubectl wait --for=condition=complete` waits for `Complete`.

A failed pod is replaced after a back-off that doubles from 1 s (kube's starts at 10 s; a
teaching tool wants faster), capped at 30 s.

Pods are named `<job>-<5 random characters>` (`<job>-<index>-<5>` for `completionMode:
Indexed`, which also sets the `batch.kubernetes.io/job-completion-index` annotation and
label, the `JOB_COMPLETION_INDEX` variable and the hostname `<job>-<index>`). Their labels,
like the Job's generated selector, come from `JobAdmission`, which runs on create once the
Job has its uid: `batch.kubernetes.io/controller-uid`, `controller-uid`,
`batch.kubernetes.io/job-name`, `job-name`.

`ttlSecondsAfterFinished` deletes a finished Job (and so, through the garbage collector, its
pods) that long after it finished. `suspend: true` deletes the active pods and creates none.

`job_plan` is a pure function, unit tested without a store.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from controlplane import events
from controlplane.api import parse_time, rfc3339
from controlplane.workloads import (
    Obj,
    _d,
    _int,
    _l,
    _owned_by,
    _Writer,
    controller_uid,
    owner_ref,
    pod_ready,
)
from podnet.api.workload_rules import JOB_NAME_LABELS, JOB_UID_LABELS, generated_selector
from podnet.resources import BY_KIND, Resource

PODS = BY_KIND["Pod"]
JOBS = BY_KIND["Job"]

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0

COMPLETE_MESSAGE = "Reached expected number of succeeded pods"
BACKOFF_MESSAGE = "Job has reached the specified backoff limit"
DEADLINE_MESSAGE = "Job was active longer than specified deadline"


class JobAdmission:
    """On create: the generated selector and the job labels on the pod template (Kubernetes
    does this in the Job strategy's PrepareForCreate, from the new Job's uid)."""

    def admit(self, op: str, res: Resource, obj: dict[str, Any],
              old: dict[str, Any] | None) -> None:
        if op != "CREATE" or res is not JOBS:
            return
        meta, spec = obj.get("metadata"), obj.get("spec")
        if not isinstance(meta, dict) or not isinstance(spec, dict):
            return
        template = spec.get("template")
        if not isinstance(template, dict):
            return
        tmeta = template.setdefault("metadata", {})
        if not isinstance(tmeta, dict):
            return
        labels = tmeta.setdefault("labels", {})
        if not isinstance(labels, dict):
            return
        if spec.get("manualSelector") is not True:
            uid, name = str(meta.get("uid")), str(meta.get("name"))
            for key in JOB_UID_LABELS:
                labels.setdefault(key, uid)
            for key in JOB_NAME_LABELS:
                labels.setdefault(key, name)
            spec["selector"] = generated_selector(uid)


# ---------------------------------------------------------------------- pure: the plan

def _phase(pod: Obj) -> str:
    return str(_d(pod.get("status")).get("phase") or "")


def _terminating(pod: Obj) -> bool:
    return bool(_d(pod.get("metadata")).get("deletionTimestamp"))


def _active(pod: Obj) -> bool:
    return not _terminating(pod) and _phase(pod) not in ("Succeeded", "Failed")


def _index(pod: Obj) -> int | None:
    text = _d(_d(pod.get("metadata")).get("annotations")).get(INDEX_KEY)
    try:
        return int(str(text))
    except ValueError:
        return None


def _finished_at(pod: Obj) -> datetime | None:
    """When a pod's last container finished (for the failure back-off)."""
    latest: datetime | None = None
    for cs in _l(_d(pod.get("status")).get("containerStatuses")):
        when = parse_time(_d(_d(_d(cs).get("state")).get("terminated")).get("finishedAt"))
        if when is not None and (latest is None or when > latest):
            latest = when
    return latest


def _restarts(pod: Obj) -> int:
    return sum(_int(_d(cs).get("restartCount"))
               for cs in _l(_d(pod.get("status")).get("containerStatuses")))


def compress_indexes(indexes: Sequence[int]) -> str:
    """Kubernetes' completedIndexes format: "0-2,5,7-8"."""
    out: list[str] = []
    ordered = sorted(set(indexes))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


@dataclass
class Plan:
    create: list[int | None] = field(default_factory=list)  # completion index or None
    delete: list[Obj] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # type, reason, msg


def _condition(kind: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    stamp = rfc3339(now)
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": stamp, "lastTransitionTime": stamp}


def job_plan(job: Obj, pods: Sequence[Obj], now: datetime) -> Plan:
    """The next steps for `job` given the pods it controls, and its new status."""
    spec, old = _d(job.get("spec")), _d(job.get("status"))
    plan = Plan()
    conditions = [dict(_d(c)) for c in _l(old.get("conditions"))]
    have = {str(c.get("type")) for c in conditions if c.get("status") == "True"}
    active = [p for p in pods if _active(p)]
    terminating = [p for p in pods if _terminating(p) and _phase(p) not in ("Succeeded",
                                                                             "Failed")]
    succeeded_pods = [p for p in pods if _phase(p) == "Succeeded"]
    failed_pods = [p for p in pods if _phase(p) == "Failed"]
    # Counts never go down: a finished pod deleted by hand stays counted.
    succeeded = max(_int(old.get("succeeded")), len(succeeded_pods))
    failed = max(_int(old.get("failed")), len(failed_pods))
    indexed = spec.get("completionMode") == "Indexed"
    completions = spec.get("completions")
    parallelism = max(0, _int(spec.get("parallelism"), 1))
    backoff_limit = _int(spec.get("backoffLimit"), 6)
    start = parse_time(old.get("startTime"))
    suspended = spec.get("suspend") is True
    if start is None and not suspended:
        start = now
    done_indexes = sorted({i for p in succeeded_pods if (i := _index(p)) is not None})
    if indexed and isinstance(completions, int):
        done_indexes = [i for i in done_indexes if 0 <= i < completions]
        succeeded = max(_int(old.get("succeeded")), len(done_indexes))

    finished = "Complete" in have or "Failed" in have
    target = "SuccessCriteriaMet" in have or "FailureTarget" in have
    if not finished and not target:
        reached = (succeeded >= completions if isinstance(completions, int)
                   else succeeded > 0 and not active)
        restarts = sum(_restarts(p) for p in active)
        on_failure = _d(_d(spec.get("template")).get("spec")).get("restartPolicy") == \
            "OnFailure"
        deadline = _int(spec.get("activeDeadlineSeconds"), 0)
        if reached:
            conditions.append(_condition("SuccessCriteriaMet", "CompletionsReached",
                                         COMPLETE_MESSAGE, now))
        # OnFailure restarts in place: kube counts the restarts of running pods instead.
        elif failed > backoff_limit or (on_failure and restarts > 0
                                        and restarts >= max(1, backoff_limit)):
            conditions.append(_condition("FailureTarget", "BackoffLimitExceeded",
                                         BACKOFF_MESSAGE, now))
            plan.events.append(("Warning", "BackoffLimitExceeded", BACKOFF_MESSAGE))
        elif deadline and start is not None and not suspended and \
                now >= start + timedelta(seconds=deadline):
            conditions.append(_condition("FailureTarget", "DeadlineExceeded",
                                         DEADLINE_MESSAGE, now))
            plan.events.append(("Warning", "DeadlineExceeded", DEADLINE_MESSAGE))
    interim = next((c for c in conditions if c.get("type") in ("SuccessCriteriaMet",
                                                               "FailureTarget")
                    and c.get("status") == "True"), None)
    if interim is not None or finished or suspended:
        plan.delete.extend(active)  # nothing more runs; a terminal Job keeps no pods running
        if interim is not None and not finished and not active and not terminating:
            terminal = "Complete" if interim["type"] == "SuccessCriteriaMet" else "Failed"
            conditions.append(_condition(terminal, str(interim.get("reason")),
                                         str(interim.get("message")), now))
            if terminal == "Complete":
                plan.events.append(("Normal", "Completed", "Job completed"))
        suspended_cond = any(c.get("type") == "Suspended" for c in conditions)
        if suspended and not finished and not suspended_cond:
            conditions.append(_condition("Suspended", "JobSuspended", "Job suspended", now))
    else:
        conditions = [c for c in conditions if c.get("type") != "Suspended"]
        plan.create = _to_create(spec, active, succeeded, done_indexes, parallelism)
        # Shrunk parallelism: remove the newest extras.
        extra = len(active) - parallelism
        if extra > 0:
            newest = sorted(active, key=lambda p: str(_d(p.get("metadata")).get(
                "creationTimestamp") or ""), reverse=True)
            plan.delete.extend(newest[:extra])
        if plan.create and failed_pods:
            delay = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** max(0, failed - 1))
            last = max((t for p in failed_pods if (t := _finished_at(p)) is not None),
                       default=None)
            if last is not None and (now - last).total_seconds() < delay:
                plan.create = []  # the 1 s resync looks again

    status: dict[str, Any] = {
        "active": len(active) - len([p for p in plan.delete if _active(p)]),
        "ready": sum(1 for p in active if pod_ready(p)),
        "succeeded": succeeded, "failed": failed,
        "terminating": len(terminating),
        "uncountedTerminatedPods": {},
    }
    if start is not None:
        status["startTime"] = rfc3339(start)
    if indexed:
        status["completedIndexes"] = compress_indexes(done_indexes)
    complete = next((c for c in conditions if c.get("type") == "Complete"), None)
    if complete is not None:
        status["completionTime"] = old.get("completionTime") or complete["lastTransitionTime"]
    if conditions:
        status["conditions"] = conditions
    # Kubernetes leaves zero counters out of the JSON (omitempty), except ready/terminating.
    for key in ("active", "succeeded", "failed"):
        if not status[key]:
            del status[key]
    plan.status = status
    return plan


def _to_create(spec: Mapping[str, Any], active: Sequence[Obj], succeeded: int,
               done_indexes: Sequence[int], parallelism: int) -> list[int | None]:
    completions = spec.get("completions")
    if spec.get("completionMode") == "Indexed" and isinstance(completions, int):
        busy = {i for p in active if (i := _index(p)) is not None}
        todo = [i for i in range(completions) if i not in busy and i not in done_indexes]
        room = max(0, parallelism - len(active))
        return list(todo[:room])
    if isinstance(completions, int):
        wanted = min(parallelism, completions - succeeded)
    else:
        wanted = 0 if succeeded > 0 else parallelism  # a work queue: stop once one succeeds
    return [None] * max(0, wanted - len(active))


def finished_at(job: Obj) -> datetime | None:
    for cond in _l(_d(job.get("status")).get("conditions")):
        cond = _d(cond)
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return parse_time(cond.get("lastTransitionTime"))
    return None


def pod_for_job(job: Obj, index: int | None) -> dict[str, Any]:
    meta, spec = _d(job.get("metadata")), _d(job.get("spec"))
    template = copy.deepcopy(dict(_d(spec.get("template"))))
    tmeta = _d(template.get("metadata"))
    labels = dict(_d(tmeta.get("labels")))
    annotations = dict(_d(tmeta.get("annotations")))
    pod_spec = dict(_d(template.get("spec")))
    prefix = f"{meta.get('name')}-"
    if index is not None:
        prefix = f"{meta.get('name')}-{index}-"
        labels[INDEX_KEY] = annotations[INDEX_KEY] = str(index)
        pod_spec.setdefault("hostname", f"{meta.get('name')}-{index}")
        for key in ("containers", "initContainers"):
            for c in _l(pod_spec.get(key)):
                if isinstance(c, dict):
                    env = [e for e in _l(c.get("env")) if _d(e).get("name") !=
                           "JOB_COMPLETION_INDEX"]
                    env.append({"name": "JOB_COMPLETION_INDEX", "value": str(index)})
                    c["env"] = env
    pod_meta: dict[str, Any] = {"generateName": prefix, "namespace": meta.get("namespace"),
                                "labels": labels,
                                "ownerReferences": [owner_ref(job, "Job", "batch/v1")]}
    if annotations:
        pod_meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": pod_spec}


# ---------------------------------------------------------------------- the controller

class JobController(_Writer):
    name = "job-controller"
    watches = (PODS, JOBS)
    resync_s = 1.0  # deadlines, back-offs and TTLs are checked at least this often

    async def reconcile(self) -> None:
        pods_by_owner = _owned_by(self.store.scan(PODS))
        now = datetime.now(UTC)
        work = []
        for job in self.store.scan(JOBS):
            if job["metadata"].get("deletionTimestamp"):
                continue
            uid = str(job["metadata"].get("uid"))
            work.append(self._guarded_sync(
                "job", job, self._sync(job, pods_by_owner.get(uid, []), now)))
        if work:
            await asyncio.gather(*work)

    async def _sync(self, job: Obj, pods: list[Obj], now: datetime) -> None:
        meta = job["metadata"]
        ns, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta.get("uid"))
        job_obj = dict(job)
        if await self._expire(job, now):
            return
        plan = job_plan(job, pods, now)
        for index in plan.create:
            await self._create_pod(job, pod_for_job(job, index))
        for doomed in plan.delete:
            await self._delete_pod(job, doomed)
        if plan.create:
            pods = [p for p in self.store.scan(PODS)
                    if p["metadata"].get("namespace") == ns and controller_uid(p) == uid]
            plan.status = job_plan(job, pods, now).status
        old: Mapping[str, Any] = _d(job.get("status"))
        if dict(old) != plan.status:
            patch = {**{k: None for k in old if k not in plan.status}, **plan.status}
            if await self._patch(JOBS, ns, name, {"status": patch}, subresource="status"):
                for kind, reason, message in plan.events:
                    await events.record(self.api, job_obj, kind, reason, message, self.name)
                self.log.info("job.status", namespace=ns, job=name,
                              active=plan.status.get("active", 0),
                              succeeded=plan.status.get("succeeded", 0),
                              failed=plan.status.get("failed", 0),
                              conditions=[c["type"] for c in plan.status.get("conditions",
                                                                              [])])

    async def _expire(self, job: Obj, now: datetime) -> bool:
        """ttlSecondsAfterFinished: delete a Job that finished that long ago."""
        ttl = _d(job.get("spec")).get("ttlSecondsAfterFinished")
        done = finished_at(job)
        if not isinstance(ttl, int) or done is None or now < done + timedelta(seconds=ttl):
            return False
        meta = job["metadata"]
        if await self._delete(JOBS, str(meta["namespace"]), str(meta["name"]),
                              str(meta.get("uid"))):
            self.log.info("job.expired", namespace=meta["namespace"], job=meta["name"],
                          ttl_s=ttl)
        return True
