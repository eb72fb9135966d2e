"""StatefulSets, DaemonSets and Jobs: the pure decisions (ordering, scale-down order, rolling
update, one pod per node, job completion and back-off), their validation and Table rows, and
in-process controller passes over a real Api (no agents: tests mark pods Running/Ready or
Succeeded/Failed themselves, as an agent would)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controlplane.api import Api
from controlplane.daemonsets import (
    DaemonSetController,
    daemonset_plan,
    daemonset_status,
    pod_for_node,
    template_revision,
)
from controlplane.jobs import (
    JobAdmission,
    JobController,
    compress_indexes,
    job_plan,
    pod_for_job,
)
from controlplane.scheduling import choose_node, node_affinity_matches
from controlplane.statefulsets import (
    POD_INDEX_LABEL,
    POD_NAME_LABEL,
    REVISION_LABEL,
    StatefulSetController,
    pod_for_ordinal,
    revision_name,
    statefulset_plan,
    statefulset_status,
    uses_current_revision,
)
from controlplane.store import Store
from controlplane.tables import table
from controlplane.workloads import GarbageCollector, pods_to_evict
from podnet.resources import BY_KIND
from podnet.validation import validate

PODS, NODES = BY_KIND["Pod"], BY_KIND["Node"]
STS, DS, JOBS = BY_KIND["StatefulSet"], BY_KIND["DaemonSet"], BY_KIND["Job"]
NOW = datetime(2030, 1, 1, 0, 10, tzinfo=UTC)
TEMPLATE = {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "podnet/echo"}]}}


def sts(replicas: int = 3, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "default", "uid": "sts-uid",
                         "generation": 1},
            "spec": {"replicas": replicas, "serviceName": "nginx",
                     "selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE,
                     **spec}}


def pod(name: str, *, ready: bool = True, phase: str = "Running", revision: str = "",
        node: str | None = "node-1", terminating: bool = False,
        created: str = "2030-01-01T00:00:00Z", labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "creationTimestamp": created,
                            "labels": {**({REVISION_LABEL: revision} if revision else {}),
                                       **(labels or {})}}
    if annotations:
        meta["annotations"] = annotations
    if terminating:
        meta["deletionTimestamp"] = "2030-01-01T00:05:00Z"
    return {"metadata": meta, "spec": {"nodeName": node} if node else {},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False",
                 "lastTransitionTime": "2030-01-01T00:00:00Z"}]}}


# --- StatefulSet decisions -------------------------------------------------------------------

def test_ordered_ready_creates_one_pod_at_a_time_in_order() -> None:
    rev = revision_name(sts())
    assert statefulset_plan(sts(), []).create == [0]
    # web-0 exists but is not Ready yet: nothing more.
    plan = statefulset_plan(sts(), [pod("web-0", ready=False, revision=rev)])
    assert plan.create == [] and plan.delete == [] and "web-0" in plan.waiting
    assert statefulset_plan(sts(), [pod("web-0", revision=rev)]).create == [1]
    # A lost web-0 comes back first, with the same name, before web-2 is made.
    plan = statefulset_plan(sts(), [pod("web-1", revision=rev)])
    assert plan.create == [0]


def test_parallel_creates_and_deletes_at_once() -> None:
    assert statefulset_plan(sts(podManagementPolicy="Parallel"), []).create == [0, 1, 2]
    rev = revision_name(sts())
    pods = [pod(f"web-{n}", revision=rev, ready=False) for n in range(5)]
    plan = statefulset_plan(sts(2, podManagementPolicy="Parallel"), pods)
    assert plan.delete == ["web-4", "web-3", "web-2"]


def test_scale_down_removes_the_highest_ordinal_first_one_at_a_time() -> None:
    rev = revision_name(sts())
    pods = [pod(f"web-{n}", revision=rev) for n in range(4)]
    assert statefulset_plan(sts(1), pods).delete == ["web-3"]
    # While web-3 terminates, web-2 waits.
    pods[3] = pod("web-3", revision=rev, terminating=True)
    assert statefulset_plan(sts(1), pods).delete == []
    # An unhealthy remaining pod stops the scale-down (OrderedReady).
    pods = [pod("web-0", revision=rev, ready=False), pod("web-1", revision=rev)]
    assert statefulset_plan(sts(1), pods).delete == []


def test_rolling_update_goes_from_the_highest_ordinal_down_to_the_partition() -> None:
    old = "web-old"
    pods = [pod(f"web-{n}", revision=old) for n in range(3)]
    assert statefulset_plan(sts(), pods).delete == ["web-2"]
    new = revision_name(sts())
    pods[2] = pod("web-2", revision=new)
    assert statefulset_plan(sts(), pods).delete == ["web-1"]
    partitioned = sts(updateStrategy={"type": "RollingUpdate",
                                      "rollingUpdate": {"partition": 2}})
    assert statefulset_plan(partitioned, pods).delete == []
    on_delete = sts(updateStrategy={"type": "OnDelete"})
    assert statefulset_plan(on_delete, [pod(f"web-{n}", revision=old) for n in range(3)]
                            ).delete == []


def test_statefulset_status_and_revisions() -> None:
    s = sts(2)
    rev = revision_name(s)
    assert rev.startswith("web-")
    status = statefulset_status(s, [pod("web-0", revision=rev), pod("web-1", ready=False,
                                                                      revision=rev)], NOW)
    assert status == {"observedGeneration": 1, "replicas": 2, "readyReplicas": 1,
                      "currentReplicas": 2, "updatedReplicas": 2, "availableReplicas": 1,
                      "currentRevision": rev, "updateRevision": rev, "collisionCount": 0}
    # Mid-update the current revision stays until every pod is updated and ready.
    s["status"] = {"currentRevision": "web-old"}
    status = statefulset_status(s, [pod("web-0", revision="web-old"),
                                    pod("web-1", revision=rev)], NOW)
    assert (status["currentRevision"], status["currentReplicas"],
            status["updatedReplicas"]) == ("web-old", 1, 1)


def test_statefulset_pod_identity() -> None:
    body = pod_for_ordinal(sts(), 1)
    assert body["metadata"]["name"] == "web-1"
    assert body["metadata"]["labels"] == {"app": "web", POD_NAME_LABEL: "web-1",
                                          POD_INDEX_LABEL: "1",
                                          REVISION_LABEL: revision_name(sts())}
    assert body["spec"]["hostname"] == "web-1" and body["spec"]["subdomain"] == "nginx"
    assert body["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"


def test_a_staged_update_recreates_pods_below_the_partition_at_the_old_revision() -> None:
    staged = sts(updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 2}})
    staged["status"] = {"currentRevision": "web-old"}
    assert [uses_current_revision(staged, n) for n in range(3)] == [True, True, False]
    staged["status"] = {"currentRevision": revision_name(staged)}
    assert not uses_current_revision(staged, 0)
    old_template = {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "old"}]}}
    body = pod_for_ordinal(staged, 0, old_template, "web-old")
    assert body["metadata"]["labels"][REVISION_LABEL] == "web-old"
    assert body["spec"]["containers"][0]["image"] == "old"


def test_ordinals_start() -> None:
    assert statefulset_plan(sts(2, ordinals={"start": 5}), []).create == [5]


# --- DaemonSet decisions ---------------------------------------------------------------------

def node(name: str, *, ready: bool = True, labels: dict[str, str] | None = None
         ) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}},
            "status": {"conditions": [{"type": "Ready",
                                       "status": "True" if ready else "False"}]}}


def ds(**pod_spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "agent", "namespace": "default", "uid": "ds-uid",
                         "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "updateStrategy": {"type": "RollingUpdate",
                                        "rollingUpdate": {"maxUnavailable": 1}},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"containers": [{"name": "a", "image": "x"}],
                                           **pod_spec}}}}


def test_daemonset_wants_one_pod_per_ready_matching_node() -> None:
    nodes = [node("n1"), node("n2"), node("n3", ready=False),
             node("n4", labels={"disk": "ssd"})]
    rev = template_revision(ds())
    plan = daemonset_plan(ds(), [pod("a-1", node="n1", revision=rev)], nodes, NOW)
    assert plan.create_on == ["n2", "n4"] and plan.delete == []
    picky = ds(nodeSelector={"disk": "ssd"})
    plan = daemonset_plan(picky, [pod("a-1", node="n1", revision=template_revision(picky))],
                          nodes, NOW)
    assert plan.create_on == ["n4"]
    assert [p["metadata"]["name"] for p in plan.delete] == ["a-1"]  # n1 no longer fits


def test_daemonset_follows_nodes_leaving_and_keeps_pods_on_not_ready_nodes() -> None:
    rev = template_revision(ds())
    pods = [pod("a-1", node="n1", revision=rev), pod("a-2", node="gone", revision=rev),
            pod("a-3", node="n3", revision=rev),
            pod("a-4", node="n1", revision=rev, created="2030-01-01T00:01:00Z")]
    plan = daemonset_plan(ds(), pods, [node("n1"), node("n3", ready=False)], NOW)
    assert plan.create_on == []
    assert sorted(p["metadata"]["name"] for p in plan.delete) == ["a-2", "a-4"]


def test_daemonset_rolling_update_respects_max_unavailable() -> None:
    nodes = [node("n1"), node("n2"), node("n3")]
    pods = [pod(f"a-{n}", node=f"n{n}", revision="old") for n in (1, 2, 3)]
    plan = daemonset_plan(ds(), pods, nodes, NOW)
    assert len(plan.delete) == 1 and plan.create_on == []
    # One node already lacks a ready pod: no budget left for another replacement.
    pods[0] = pod("a-1", node="n1", revision=template_revision(ds()), ready=False)
    assert daemonset_plan(ds(), pods, nodes, NOW).delete == []


def test_daemonset_status_counts() -> None:
    rev = template_revision(ds())
    nodes = [node("n1"), node("n2"), node("n3", ready=False)]
    pods = [pod("a-1", node="n1", revision=rev), pod("a-2", node="n2", ready=False,
                                                     revision="old")]
    assert daemonset_status(ds(), pods, nodes, NOW) == {
        "observedGeneration": 1, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
        "numberReady": 1, "numberAvailable": 1, "updatedNumberScheduled": 1,
        "numberMisscheduled": 0, "numberUnavailable": 1}


def test_daemon_pods_are_pinned_by_node_affinity_and_the_scheduler_honours_it() -> None:
    body = pod_for_node(ds(), "n2")
    terms = body["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                       "values": ["n2"]}]}]
    assert {"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
            "effect": "NoSchedule"} in body["spec"]["tolerations"]
    nodes: list[Mapping[str, Any]] = [node("n1"), node("n2"), node("n3")]
    assert not node_affinity_matches(body["spec"], nodes[0])
    assert choose_node(body, nodes, {"n1": 0, "n2": 9, "n3": 0}).node == "n2"
    cordoned = {**node("n2"), "spec": {"unschedulable": True}}
    assert choose_node(body, [nodes[0], cordoned], {}).node == "n2"
    decision = choose_node(body, [nodes[0]], {})
    assert decision.node is None and "node affinity/selector" in decision.reason


def test_node_affinity_expressions() -> None:
    spec = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]},
                                  {"key": "gpu", "operator": "DoesNotExist"}]},
            {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]}]}}}}
    assert node_affinity_matches(spec, node("x", labels={"zone": "a"}))
    assert not node_affinity_matches(spec, node("x", labels={"zone": "a", "gpu": "1"}))
    assert node_affinity_matches(spec, node("x", labels={"cores": "16"}))
    assert not node_affinity_matches(spec, node("x", labels={"cores": "4"}))


@pytest.mark.parametrize("affinity", [
    "x", {"nodeAffinity": 3}, {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                                                 {"nodeSelectorTerms": 7}}},
    {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": 5, "matchFields": [{"key": "metadata.name", "operator": "In",
                                                 "values": 9}]}]}}},
])
def test_malformed_affinity_never_breaks_scheduling(affinity: Any) -> None:
    pod_obj = {"spec": {"affinity": affinity, "tolerations": "none"}}
    decision = choose_node(pod_obj, [node("n1")], {})  # must not raise
    assert decision.node in (None, "n1")


def test_daemon_pods_on_a_not_ready_node_are_not_evicted() -> None:
    daemon = pod("a-1", node="n1")
    daemon["metadata"]["ownerReferences"] = [{"kind": "DaemonSet", "controller": True}]
    other = pod("web-1", node="n1")
    doomed = pods_to_evict([daemon, other], {"n1": 0.0}, 100.0, 10.0, ["n1"])
    assert [p["metadata"]["name"] for p in doomed] == ["web-1"]
    # A deleted node takes its daemon pod with it.
    assert len(pods_to_evict([daemon], {"n1": 0.0}, 100.0, 10.0, [])) == 1


# --- Job decisions ---------------------------------------------------------------------------

def job(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "work", "namespace": "default", "uid": "job-uid"},
            "spec": {"completions": 3, "parallelism": 2, "backoffLimit": 6,
                     "completionMode": "NonIndexed",
                     "template": {"metadata": {"labels": {"job-name": "work"}},
                                  "spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "w", "image": "x"}]}},
                     **spec}}


def finished(name: str, phase: str, at: datetime = NOW - timedelta(minutes=1),
             **kw: Any) -> dict[str, Any]:
    p = pod(name, phase=phase, ready=False, **kw)
    p["status"]["containerStatuses"] = [{"name": "w", "state": {"terminated": {
        "exitCode": 0 if phase == "Succeeded" else 1,
        "finishedAt": at.strftime("%Y-%m-%dT%H:%M:%SZ")}}}]
    return p


def types(plan_status: dict[str, Any]) -> list[str]:
    return [c["type"] for c in plan_status.get("conditions", [])]


def test_job_keeps_parallelism_pods_until_completions() -> None:
    plan = job_plan(job(), [], NOW)
    assert plan.create == [None, None]
    assert plan.status["startTime"] == "2030-01-01T00:10:00Z"
    plan = job_plan(job(), [finished("a", "Succeeded"), finished("b", "Succeeded"),
                            pod("c")], NOW)
    assert plan.create == []  # one left to do, and one is running
    assert plan.status["active"] == 1 and plan.status["succeeded"] == 2
    assert types(plan.status) == []


def test_job_completes_with_success_criteria_then_complete() -> None:
    done = [finished(n, "Succeeded") for n in "abc"]
    plan = job_plan(job(), done, NOW)
    assert types(plan.status) == ["SuccessCriteriaMet", "Complete"]
    complete = plan.status["conditions"][1]
    assert (complete["status"], complete["reason"]) == ("True", "CompletionsReached")
    assert plan.status["completionTime"] == "2030-01-01T00:10:00Z"
    assert plan.status["succeeded"] == 3 and "active" not in plan.status
    # Succeeded while a sibling still runs: it is removed, and Complete waits for it.
    plan = job_plan(job(completions=2), [*done[:2], pod("d")], NOW)
    assert types(plan.status) == ["SuccessCriteriaMet"]
    assert [p["metadata"]["name"] for p in plan.delete] == ["d"]


def test_job_fails_past_the_backoff_limit_after_a_back_off() -> None:
    j = job(completions=1, parallelism=1, backoffLimit=1)
    # First failure a moment ago: the replacement waits for its back-off.
    plan = job_plan(j, [finished("a", "Failed", at=NOW)], NOW)
    assert plan.create == [] and plan.status["failed"] == 1
    plan = job_plan(j, [finished("a", "Failed", at=NOW - timedelta(seconds=2))], NOW)
    assert plan.create == [None]
    plan = job_plan(j, [finished("a", "Failed"), finished("b", "Failed")], NOW)
    assert types(plan.status) == ["FailureTarget", "Failed"]
    assert plan.status["conditions"][1]["reason"] == "BackoffLimitExceeded"
    assert plan.create == []


def test_job_on_failure_counts_restarts() -> None:
    j = job(completions=1, parallelism=1, backoffLimit=2)
    j["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    running = pod("a")
    running["status"]["containerStatuses"] = [{"name": "w", "restartCount": 2}]
    plan = job_plan(j, [running], NOW)
    assert types(plan.status) == ["FailureTarget"]
    assert plan.delete == [running]


def test_job_deadline() -> None:
    j = job(activeDeadlineSeconds=30)
    j["status"] = {"startTime": "2030-01-01T00:09:00Z"}
    plan = job_plan(j, [pod("a")], NOW)
    assert types(plan.status) == ["FailureTarget"]
    assert plan.status["conditions"][0]["reason"] == "DeadlineExceeded"


def test_work_queue_job_completes_when_one_succeeds_and_the_rest_are_done() -> None:
    j = job(completions=None, parallelism=2)
    assert job_plan(j, [], NOW).create == [None, None]
    plan = job_plan(j, [finished("a", "Succeeded"), pod("b")], NOW)
    assert plan.create == [] and types(plan.status) == []
    plan = job_plan(j, [finished("a", "Succeeded"), finished("b", "Succeeded")], NOW)
    assert types(plan.status) == ["SuccessCriteriaMet", "Complete"]


def test_indexed_job() -> None:
    j = job(completionMode="Indexed", completions=4, parallelism=2)
    key = "batch.kubernetes.io/job-completion-index"
    assert job_plan(j, [], NOW).create == [0, 1]
    plan = job_plan(j, [finished("a", "Succeeded", annotations={key: "0"}),
                        pod("b", annotations={key: "1"})], NOW)
    assert plan.create == [2]
    assert plan.status["completedIndexes"] == "0"
    body = pod_for_job(j, 2)
    assert body["metadata"]["generateName"] == "work-2-"
    assert body["metadata"]["annotations"][key] == "2"
    assert body["spec"]["hostname"] == "work-2"
    assert {"name": "JOB_COMPLETION_INDEX", "value": "2"} in body["spec"]["containers"][0][
        "env"]
    assert compress_indexes([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_suspended_job_runs_nothing() -> None:
    plan = job_plan(job(suspend=True), [pod("a")], NOW)
    assert plan.create == [] and len(plan.delete) == 1
    assert types(plan.status) == ["Suspended"] and "startTime" not in plan.status


# --- validation ------------------------------------------------------------------------------

def errors(kind: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    return [e.message() for e in validate(kind, obj, old=old, field_validation="Strict").errors]


def test_statefulset_validation_and_defaults() -> None:
    good = sts(volumeClaimTemplates=[{"metadata": {"name": "www"}, "spec": {}}])
    result = validate("StatefulSet", good, field_validation="Strict")
    assert result.errors == []
    spec = result.obj["spec"]
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"] == {"type": "RollingUpdate",
                                      "rollingUpdate": {"partition": 0}}
    assert spec["revisionHistoryLimit"] == 10
    bad = sts(podManagementPolicy="Random")
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    assert errors("StatefulSet", bad) == [
        'spec.template.metadata.labels: Invalid value: map[string]string{"app":"web"}: '
        "`selector` does not match template `labels`",
        'spec.podManagementPolicy: Unsupported value: "Random": supported values: '
        '"OrderedReady", "Parallel"']
    stored = validate("StatefulSet", sts()).obj
    changed = sts(serviceName="other")
    assert errors("StatefulSet", changed, old=stored)[0].startswith(
        "spec: Forbidden: updates to statefulset spec for fields other than 'replicas'")
    assert errors("StatefulSet", sts(5), old=stored) == []


def test_daemonset_validation_and_defaults() -> None:
    result = validate("DaemonSet", {**ds(), "apiVersion": "apps/v1", "kind": "DaemonSet"},
                      field_validation="Strict")
    assert result.errors == []
    assert result.obj["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 1,
                                                                     "maxSurge": 0}
    zero = ds()
    zero["spec"]["updateStrategy"]["rollingUpdate"] = {"maxUnavailable": 0, "maxSurge": 0}
    assert errors("DaemonSet", zero) == [
        "spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: 0: "
        "may not be 0 when `maxSurge` is 0"]


def test_job_validation_and_defaults() -> None:
    body = {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "namespace": "default"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "pi", "image": "x"}]}}}}
    result = validate("Job", body, field_validation="Strict")
    assert result.errors == []
    spec = result.obj["spec"]
    assert (spec["completions"], spec["parallelism"], spec["backoffLimit"],
            spec["completionMode"], spec["suspend"]) == (1, 1, 6, "NonIndexed", False)
    always = json.loads(json.dumps(body))
    del always["spec"]["template"]["spec"]["restartPolicy"]
    assert errors("Job", always) == [
        'spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: '
        '"OnFailure", "Never"']
    selected = json.loads(json.dumps(body))
    selected["spec"]["selector"] = {"matchLabels": {"a": "b"}}
    assert errors("Job", selected) == [
        'spec.selector: Invalid value: "{...}": `selector` not auto-generated']
    selected["spec"]["manualSelector"] = True
    assert "`selector` does not match template `labels`" in errors("Job", selected)[0]
    policy = json.loads(json.dumps(body))
    policy["spec"]["podFailurePolicy"] = {"rules": []}
    result = validate("Job", policy, field_validation="Strict")
    assert result.errors == [] and result.warnings == [
        "spec.podFailurePolicy: podnet does not implement this field; every failed pod "
        "counts against backoffLimit"]
    indexed = json.loads(json.dumps(body))
    indexed["spec"].update(completionMode="Indexed", parallelism=2)
    assert errors("Job", indexed) == [
        "spec.completions: Required value: when completion mode is Indexed"]


# --- tables ----------------------------------------------------------------------------------

def test_table_rows_read_like_kubectl() -> None:
    s = sts(3)
    s["status"] = {"readyReplicas": 2}
    s["metadata"]["creationTimestamp"] = "2030-01-01T00:09:00Z"
    t = table("StatefulSet", [s], now=NOW, resource_version="1")
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Ready", "Age",
                                                           "Containers", "Images"]
    assert t["rows"][0]["cells"] == ["web", "2/3", "60s", "web", "podnet/echo"]
    d = ds(nodeSelector={"disk": "ssd"})
    d["status"] = {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
                   "updatedNumberScheduled": 2, "numberAvailable": 1}
    t = table("DaemonSet", [d], now=NOW, resource_version="1")
    assert [c["name"] for c in t["columnDefinitions"]][:8] == [
        "Name", "Desired", "Current", "Ready", "Up-to-date", "Available", "Node Selector",
        "Age"]
    assert t["rows"][0]["cells"][:7] == ["agent", 2, 2, 1, 2, 1, "disk=ssd"]
    j = job()
    j["status"] = {"succeeded": 3, "startTime": "2030-01-01T00:09:00Z",
                   "completionTime": "2030-01-01T00:09:12Z",
                   "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                  {"type": "Complete", "status": "True"}]}
    t = table("Job", [j], now=NOW, resource_version="1")
    assert [c["name"] for c in t["columnDefinitions"]][:5] == [
        "Name", "Status", "Completions", "Duration", "Age"]
    assert t["rows"][0]["cells"][:4] == ["work", "Complete", "3/3", "12s"]
    running = job(completions=None, parallelism=2)
    assert table("Job", [running], now=NOW, resource_version="1")["rows"][0]["cells"][1:4] \
        == ["Running", "0/1 of 2", ""]


# --- controllers over a real Api -------------------------------------------------------------

@pytest.fixture
async def api() -> AsyncIterator[Api]:
    store = Store.open(None)
    a = Api(store, admission=[JobAdmission()])
    a.bootstrap()
    yield a
    store.close()


async def converge(*controllers: Any, passes: int = 4) -> None:
    for _ in range(passes):
        for c in controllers:
            await c.reconcile()


async def set_status(api: Api, name: str, status: dict[str, Any]) -> None:
    await api.patch(PODS, "default", name, json.dumps({"status": status}).encode(),
                    "application/merge-patch+json", subresource="status")


RUNNING_READY = {"phase": "Running", "conditions": [
    {"type": "Ready", "status": "True", "lastTransitionTime": "2030-01-01T00:00:00Z"}]}


def pod_names(api: Api) -> list[str]:
    return sorted(p["metadata"]["name"] for p in api.list(PODS, "default")["items"])


async def test_statefulset_controller_orders_pods_and_collects_them(api: Api) -> None:
    body = sts(2)
    del body["metadata"]["uid"], body["metadata"]["generation"]
    await api.create(STS, "default", body)
    sc, gc = StatefulSetController(api), GarbageCollector(api)
    await converge(sc)
    assert pod_names(api) == ["web-0"]
    await set_status(api, "web-0", RUNNING_READY)
    await converge(sc)
    assert pod_names(api) == ["web-0", "web-1"]
    await set_status(api, "web-1", RUNNING_READY)
    await converge(sc)
    status = api.get(STS, "default", "web")["status"]
    assert status["readyReplicas"] == 2 and status["updatedReplicas"] == 2
    (revision,) = api.list(BY_KIND["ControllerRevision"], "default")["items"]
    assert revision["metadata"]["name"] == status["updateRevision"]
    assert revision["revision"] == 1
    assert revision["data"]["spec"]["template"]["$patch"] == "replace"
    row = table("ControllerRevision", [revision], now=NOW, resource_version="1")["rows"][0]
    assert row["cells"][1:3] == ["statefulset.apps/web", 1]
    # kubectl scale goes through the scale subresource.
    await api.patch_scale(STS, "default", "web", b'{"spec":{"replicas":1}}',
                          "application/merge-patch+json")
    await converge(sc)
    assert pod_names(api) == ["web-0"]  # no Ready node here: deletion is immediate
    await api.delete(STS, "default", "web")
    await converge(sc, gc)
    assert pod_names(api) == []
    assert api.list(BY_KIND["ControllerRevision"], "default")["items"] == []


async def test_job_admission_generates_the_selector_and_labels(api: Api) -> None:
    body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "pi", "image": "x"}]}}}}
    created, _ = await api.create(JOBS, "default", body)
    uid = created["metadata"]["uid"]
    assert created["spec"]["selector"] == {
        "matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert created["spec"]["template"]["metadata"]["labels"] == {
        "batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
        "batch.kubernetes.io/job-name": "pi", "job-name": "pi"}
    # An update that keeps the generated selector is fine; changing the template is not.
    await api.patch(JOBS, "default", "pi", b'{"spec":{"parallelism":2}}',
                    "application/merge-patch+json")
    with pytest.raises(Exception) as caught:
        await api.patch(JOBS, "default", "pi", b'{"spec":{"template":{"metadata":{"labels":'
                        b'{"x":"y"}}}}}', "application/merge-patch+json")
    assert "spec.template: Invalid value" in str(caught.value)
    jc = JobController(api)
    await converge(jc)
    (name,) = pod_names(api)
    assert name.startswith("pi-") and len(name) == len("pi-") + 5
    await set_status(api, name, {"phase": "Succeeded"})
    await converge(jc)
    status = api.get(JOBS, "default", "pi")["status"]
    assert [c["type"] for c in status["conditions"]] == ["SuccessCriteriaMet", "Complete"]


async def test_daemonset_controller_follows_nodes(api: Api) -> None:
    for name in ("n1", "n2"):
        await api.create(NODES, None, {"metadata": {"name": name}})
        await api.patch(NODES, None, name, json.dumps({"status": node(name)["status"]}).encode(),
                        "application/merge-patch+json", subresource="status")
    body = ds()
    del body["metadata"]["uid"], body["metadata"]["generation"]
    await api.create(DS, "default", {"apiVersion": "apps/v1", "kind": "DaemonSet", **body})
    dc = DaemonSetController(api)
    await converge(dc)
    pods = api.list(PODS, "default")["items"]
    assert len(pods) == 2
    targets = sorted(p["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchFields"][0]["values"][0] for p in pods)
    assert targets == ["n1", "n2"]
    await api.delete(NODES, None, "n2")
    await converge(dc)
    assert len(api.list(PODS, "default")["items"]) == 1
    assert api.get(DS, "default", "agent")["status"]["desiredNumberScheduled"] == 1


async def test_a_deleted_statefulset_pod_returns_after_a_pause(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    body = sts(1)
    del body["metadata"]["uid"], body["metadata"]["generation"]
    await api.create(STS, "default", body)
    sc = StatefulSetController(api)
    await converge(sc)
    old_uid = api.get(PODS, "default", "web-0")["metadata"]["uid"]
    await api.delete(PODS, "default", "web-0")  # no Ready node: gone at once
    clock = [1000.0]
    monkeypatch.setattr("controlplane.statefulsets.time.monotonic", lambda: clock[0])
    await converge(sc)
    assert pod_names(api) == []  # just went away: not yet
    clock[0] += 0.6
    await converge(sc)
    assert pod_names(api) == ["web-0"]
    assert api.get(PODS, "default", "web-0")["metadata"]["uid"] != old_uid


async def test_a_finished_job_is_deleted_after_its_ttl(api: Api) -> None:
    body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
            "spec": {"ttlSecondsAfterFinished": 0,
                     "template": {"spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "c", "image": "x"}]}}}}
    await api.create(JOBS, "default", body)
    jc, gc = JobController(api), GarbageCollector(api)
    await converge(jc)
    (name,) = pod_names(api)
    await set_status(api, name, {"phase": "Succeeded"})
    await converge(jc, gc)
    assert api.list(JOBS, "default")["items"] == []
    assert pod_names(api) == []


async def test_orphan_deletion_keeps_pods_and_a_new_statefulset_adopts_them(api: Api) -> None:
    body = sts(1)
    del body["metadata"]["uid"], body["metadata"]["generation"]
    await api.create(STS, "default", body)
    sc, gc = StatefulSetController(api), GarbageCollector(api)
    await converge(sc)
    with pytest.raises(Exception) as caught:
        await api.delete(STS, "default", "web", propagation="Sideways")
    assert "propagationPolicy: Unsupported value" in str(caught.value)
    await api.delete(STS, "default", "web", propagation="Orphan")
    await converge(sc, gc)
    (pod_obj,) = api.list(PODS, "default")["items"]
    assert "ownerReferences" not in pod_obj["metadata"]
    assert api.list(BY_KIND["ControllerRevision"], "default")["items"][0]["metadata"].get(
        "ownerReferences") is None
    created, _ = await api.create(STS, "default", body)
    await converge(sc, gc)
    (adopted,) = api.list(PODS, "default")["items"]
    assert adopted["metadata"]["uid"] == pod_obj["metadata"]["uid"]
    assert adopted["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    (revision,) = api.list(BY_KIND["ControllerRevision"], "default")["items"]
    assert revision["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
