"""Validation and defaulting of StatefulSets, DaemonSets and Jobs, with Kubernetes' field paths,
defaults and wording. No I/O.

These build on the shared helpers of `podnet.validation` (schema walk, pod and template checks)
and are looked up by `podnet.validation.validate` on first use, which keeps the import one-way.

Defaults are Kubernetes' (apps/v1, batch/v1), so a stored object reads like one from a real
cluster: a StatefulSet gets `podManagementPolicy: OrderedReady`, `updateStrategy` RollingUpdate
with `partition: 0`, `revisionHistoryLimit: 10`; a DaemonSet RollingUpdate with
`maxUnavailable: 1`, `maxSurge: 0`; a Job `completions`/`parallelism` 1 (when neither is set),
`backoffLimit: 6`, `completionMode: NonIndexed`, `suspend: false`.

A Job's selector is generated from its uid (the control plane's job admission does that once
the uid exists, see controlplane/jobs.py); a Job that brings its own selector must say
`manualSelector: true`, as in Kubernetes.
"""

from __future__ import annotations

from typing import Any

from podnet.validation import (
    _TOP,
    ANY,
    BOOL,
    CONDITION,
    INT,
    INTORSTR,
    LABEL_SELECTOR,
    POD_TEMPLATE,
    STR,
    KindRules,
    ListOf,
    Obj,
    _check_label_selector,
    _check_selector_update,
    _check_template,
    _check_template_pods,
    _Ctx,
    _d,
    _default_pod,
    _int,
    _int_or_percent,
    _shown,
    _supported,
    validate_dns1035_label,
)

__all__ = ["WORKLOAD_KINDS"]

_TEMPLATE = "spec.template"


def _template_default(spec: dict[str, Any]) -> None:
    template = spec.get("template")
    if isinstance(template, dict):
        template.setdefault("metadata", {})
        _default_pod(template)


def _non_negative(ctx: _Ctx, spec: dict[str, Any], key: str, path: str | None = None) -> None:
    value = _int(spec.get(key))
    if value is not None and value < 0:
        ctx.err(path or f"spec.{key}", "Invalid value", "must be greater than or equal to 0",
                value)


# --- StatefulSet -----------------------------------------------------------------------------

_STS_STATUS = Obj({"replicas": INT, "readyReplicas": INT, "currentReplicas": INT,
                   "updatedReplicas": INT, "availableReplicas": INT, "observedGeneration": INT,
                   "collisionCount": INT, "currentRevision": STR, "updateRevision": STR,
                   "conditions": ListOf(CONDITION)}, open=True)
STATEFUL_SET = Obj({**_TOP, "spec": Obj({
    "replicas": INT, "selector": LABEL_SELECTOR, "template": POD_TEMPLATE,
    "serviceName": STR, "podManagementPolicy": STR, "minReadySeconds": INT,
    "revisionHistoryLimit": INT,
    "updateStrategy": Obj({"type": STR, "rollingUpdate": Obj({"partition": INT,
                                                              "maxUnavailable": INTORSTR})}),
    # Accepted so tutorial manifests apply unchanged; podnet has no storage (see the
    # StatefulSet controller, which says so in an Event).
    "volumeClaimTemplates": ListOf(ANY), "persistentVolumeClaimRetentionPolicy": ANY,
    "ordinals": Obj({"start": INT}),
}), "status": _STS_STATUS})

_STS_POLICIES = ("OrderedReady", "Parallel")
_UPDATE_TYPES = ("OnDelete", "RollingUpdate")
# What a StatefulSet update may change (everything else in its spec is fixed at creation).
_STS_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy", "revisionHistoryLimit",
                "persistentVolumeClaimRetentionPolicy", "minReadySeconds")


def _default_stateful_set(obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("persistentVolumeClaimRetentionPolicy",
                    {"whenDeleted": "Retain", "whenScaled": "Retain"})
    strategy = spec.setdefault("updateStrategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("partition", 0)
    _template_default(spec)


def _check_stateful_set(ctx: _Ctx, obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        ctx.err("spec.selector", "Required value")
        return
    _check_template(ctx, "StatefulSet", spec)
    ctx.extend(_supported("spec.podManagementPolicy", spec.get("podManagementPolicy"),
                          _STS_POLICIES))
    strategy = _d(spec.get("updateStrategy"))
    stype = strategy.get("type")
    ctx.extend(_supported("spec.updateStrategy.type", stype, _UPDATE_TYPES))
    rolling = strategy.get("rollingUpdate")
    if stype == "OnDelete" and rolling is not None:
        ctx.err("spec.updateStrategy.rollingUpdate", "Invalid value",
                "only allowed for updateStrategy 'RollingUpdate'", _shown(rolling))
    _non_negative(ctx, _d(rolling), "partition", "spec.updateStrategy.rollingUpdate.partition")
    if _d(rolling).get("maxUnavailable") is not None:
        ctx.warnings.append("spec.updateStrategy.rollingUpdate.maxUnavailable: podnet does not "
                            "implement this field; pods are updated one at a time")
    _non_negative(ctx, spec, "revisionHistoryLimit")
    _non_negative(ctx, _d(spec.get("ordinals")), "start", "spec.ordinals.start")
    service = spec.get("serviceName")
    if isinstance(service, str) and service:
        ctx.extend(validate_dns1035_label(service, "spec.serviceName"))


def _check_stateful_set_update(ctx: _Ctx, obj: dict[str, Any], old: dict[str, Any]) -> None:
    new_spec, old_spec = _d(obj.get("spec")), _d(old.get("spec"))
    fixed_new = {k: v for k, v in new_spec.items() if k not in _STS_MUTABLE}
    fixed_old = {k: v for k, v in old_spec.items() if k not in _STS_MUTABLE}
    if fixed_new != fixed_old:
        ctx.err("spec", "Forbidden", "updates to statefulset spec for fields other than "
                "'replicas', 'ordinals', 'template', 'updateStrategy', "
                "'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and "
                "'minReadySeconds' are forbidden")


# --- DaemonSet -------------------------------------------------------------------------------

_DS_STATUS = Obj({"currentNumberScheduled": INT, "desiredNumberScheduled": INT,
                  "numberAvailable": INT, "numberMisscheduled": INT, "numberReady": INT,
                  "numberUnavailable": INT, "updatedNumberScheduled": INT,
                  "observedGeneration": INT, "collisionCount": INT,
                  "conditions": ListOf(CONDITION)}, open=True)
DAEMON_SET = Obj({**_TOP, "spec": Obj({
    "selector": LABEL_SELECTOR, "template": POD_TEMPLATE, "minReadySeconds": INT,
    "revisionHistoryLimit": INT,
    "updateStrategy": Obj({"type": STR, "rollingUpdate": Obj({"maxUnavailable": INTORSTR,
                                                              "maxSurge": INTORSTR})}),
}), "status": _DS_STATUS})


def _default_daemon_set(obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("revisionHistoryLimit", 10)
    strategy = spec.setdefault("updateStrategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("maxUnavailable", 1)
                rolling.setdefault("maxSurge", 0)
    _template_default(spec)


def _check_daemon_set(ctx: _Ctx, obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        ctx.err("spec.selector", "Required value")
        return
    _check_template(ctx, "DaemonSet", spec)
    strategy = _d(spec.get("updateStrategy"))
    stype = strategy.get("type")
    ctx.extend(_supported("spec.updateStrategy.type", stype, _UPDATE_TYPES))
    rolling = strategy.get("rollingUpdate")
    if stype == "OnDelete" and rolling is not None:
        ctx.err("spec.updateStrategy.rollingUpdate", "Forbidden",
                "may not be specified when strategy `type` is 'OnDelete'")
    elif isinstance(rolling, dict):
        base = "spec.updateStrategy.rollingUpdate"
        unavailable = _int_or_percent(ctx, rolling.get("maxUnavailable"),
                                      f"{base}.maxUnavailable")
        surge = _int_or_percent(ctx, rolling.get("maxSurge"), f"{base}.maxSurge")
        if not unavailable and not surge:
            ctx.err(f"{base}.maxUnavailable", "Invalid value",
                    "may not be 0 when `maxSurge` is 0", rolling.get("maxUnavailable"))
        if unavailable and surge:
            ctx.err(f"{base}.maxSurge", "Invalid value",
                    "may not be set when maxUnavailable is non-zero", rolling.get("maxSurge"))
        elif surge:
            ctx.warnings.append(f"{base}.maxSurge: podnet does not implement surging; old "
                                "pods are replaced one node at a time (maxUnavailable 1)")
    _non_negative(ctx, spec, "revisionHistoryLimit")


# --- Job -------------------------------------------------------------------------------------

_JOB_STATUS = Obj({"active": INT, "ready": INT, "succeeded": INT, "failed": INT,
                   "terminating": INT, "startTime": ANY, "completionTime": ANY,
                   "completedIndexes": STR, "failedIndexes": STR,
                   "uncountedTerminatedPods": ANY, "conditions": ListOf(CONDITION)}, open=True)
JOB = Obj({**_TOP, "spec": Obj({
    "parallelism": INT, "completions": INT, "activeDeadlineSeconds": INT, "backoffLimit": INT,
    "backoffLimitPerIndex": INT, "maxFailedIndexes": INT, "selector": LABEL_SELECTOR,
    "manualSelector": BOOL, "template": POD_TEMPLATE, "ttlSecondsAfterFinished": INT,
    "completionMode": STR, "suspend": BOOL, "podReplacementPolicy": STR,
    "podFailurePolicy": ANY, "successPolicy": ANY, "managedBy": STR,
}), "status": _JOB_STATUS})

_COMPLETION_MODES = ("Indexed", "NonIndexed")
_JOB_RESTART_POLICIES = ("OnFailure", "Never")
# Labels the job admission puts on a Job's pod template (and so on its pods).
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
JOB_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")


def _default_job(obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    if spec.get("podFailurePolicy") is None:
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    _template_default(spec)


def generated_selector(uid: str) -> dict[str, Any]:
    """The selector the server gives a Job without `manualSelector` (from its uid)."""
    return {"matchLabels": {JOB_UID_LABELS[0]: uid}}


def _check_job_template(ctx: _Ctx, spec: dict[str, Any], uid: Any) -> None:
    template = spec.get("template")
    selector = spec.get("selector")
    manual = spec.get("manualSelector") is True
    if manual:
        if selector is None:
            ctx.err("spec.selector", "Required value")
        else:
            _check_label_selector(ctx, selector, "spec.selector")
    elif selector is not None and (not uid or _d(selector) != generated_selector(str(uid))):
        # Without manualSelector the server generates the selector from the Job's uid.
        ctx.err("spec.selector", "Invalid value", "`selector` not auto-generated",
                _shown(selector))
    if not isinstance(template, dict):
        ctx.err(_TEMPLATE, "Required value")
        return
    _check_template_pods(ctx, template, selector if manual else None, _JOB_RESTART_POLICIES)


def _not_implemented(ctx: _Ctx, spec: dict[str, Any], fields: dict[str, str]) -> None:
    """Accepted (so manifests apply unchanged) but not acted on: said in a warning, which
    kubectl prints, rather than ignored in silence."""
    for key, consequence in fields.items():
        if spec.get(key) is not None:
            ctx.warnings.append(f"spec.{key}: podnet does not implement this field; "
                                f"{consequence}")


_JOB_UNIMPLEMENTED = {
    "podFailurePolicy": "every failed pod counts against backoffLimit",
    "successPolicy": "the Job succeeds by completions alone",
    "backoffLimitPerIndex": "failures count against backoffLimit for the whole Job",
    "maxFailedIndexes": "failures count against backoffLimit for the whole Job",
    "managedBy": "podnet's job controller manages the Job",
}


def _check_job(ctx: _Ctx, obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        ctx.err(_TEMPLATE, "Required value")
        return
    _not_implemented(ctx, spec, _JOB_UNIMPLEMENTED)
    _check_job_template(ctx, spec, _d(obj.get("metadata")).get("uid"))
    for key in ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"):
        _non_negative(ctx, spec, key)
    deadline = _int(spec.get("activeDeadlineSeconds"))
    if deadline is not None and deadline <= 0:
        ctx.err("spec.activeDeadlineSeconds", "Invalid value", "must be greater than 0",
                deadline)
    mode = spec.get("completionMode")
    ctx.extend(_supported("spec.completionMode", mode, _COMPLETION_MODES))
    if mode == "Indexed" and spec.get("completions") is None:
        ctx.err("spec.completions", "Required value", "when completion mode is Indexed")


def _check_job_update(ctx: _Ctx, obj: dict[str, Any], old: dict[str, Any]) -> None:
    _check_selector_update(ctx, obj, old)
    new_spec, old_spec = _d(obj.get("spec")), _d(old.get("spec"))
    for key in ("template", "completionMode", "completions"):
        if key in old_spec and new_spec.get(key) != old_spec.get(key):
            ctx.err(f"spec.{key}", "Invalid value", "field is immutable",
                    _shown(new_spec.get(key)))


# --- ControllerRevision ----------------------------------------------------------------------

CONTROLLER_REVISION = Obj({**_TOP, "data": ANY, "revision": INT})


def _check_controller_revision(ctx: _Ctx, obj: dict[str, Any]) -> None:
    if "revision" not in obj:
        ctx.err("revision", "Required value")
    _non_negative(ctx, obj, "revision", "revision")


def _check_controller_revision_update(ctx: _Ctx, obj: dict[str, Any],
                                      old: dict[str, Any]) -> None:
    if obj.get("data") != old.get("data"):
        ctx.err("data", "Invalid value", "field is immutable", _shown(obj.get("data")))


WORKLOAD_KINDS: dict[str, KindRules] = {
    "ControllerRevision": KindRules(CONTROLLER_REVISION, check=_check_controller_revision,
                                    check_update=_check_controller_revision_update),
    "StatefulSet": KindRules(STATEFUL_SET, check=_check_stateful_set,
                             default=_default_stateful_set,
                             check_update=_check_stateful_set_update),
    "DaemonSet": KindRules(DAEMON_SET, check=_check_daemon_set, default=_default_daemon_set,
                           check_update=_check_selector_update),
    "Job": KindRules(JOB, check=_check_job, default=_default_job,
                     check_update=_check_job_update),
}
