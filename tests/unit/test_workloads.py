"""Deployments and ReplicaSets: the pure decisions (replica diff, scale-down ranking, rollout
steps, template hash, orphans, eviction) and in-process controller passes over a real Api."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controlplane.api import Api
from controlplane.store import Store
from controlplane.workloads import (
    DEPLOYMENTS,
    HASH_LABEL,
    PODS,
    REPLICA_SETS,
    DeploymentController,
    GarbageCollector,
    ReplicaSetController,
    RsState,
    orphans,
    pods_to_delete,
    pods_to_evict,
    replica_set_diff,
    rollout_step,
    surge_and_unavailable,
    template_hash,
)
from podnet.resources import Resource


def pod(name: str, *, node: str | None = "node-1", ready: bool = True, phase: str = "Running",
        created: str = "2030-01-01T00:00:00Z", terminating: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "creationTimestamp": created}
    if terminating:
        meta["deletionTimestamp"] = "2030-01-01T00:01:00Z"
    spec: dict[str, Any] = {"nodeName": node} if node else {}
    return {"metadata": meta, "spec": spec,
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}]}}


def names(pods: list[Any]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


# --- ReplicaSet decisions --------------------------------------------------------------------

def test_replica_set_diff_counts_only_active_pods() -> None:
    rs = {"spec": {"replicas": 3}}
    pods = [pod("a"), pod("t", terminating=True), pod("done", phase="Succeeded")]
    assert replica_set_diff(rs, pods) == (2, [])
    assert replica_set_diff({"spec": {"replicas": 0}}, pods)[1] == [pods[0]]
    assert replica_set_diff({"spec": {"replicas": 1}}, pods) == (0, [])


def test_scale_down_prefers_unscheduled_pending_not_ready_then_newest() -> None:
    pods = [pod("old-ready", created="2030-01-01T00:00:00Z"),
            pod("new-ready", created="2030-01-01T00:05:00Z", node="node-2"),
            pod("not-ready", ready=False, node="node-2"),
            pod("pending", phase="Pending", ready=False, node="node-2"),
            pod("unscheduled", node=None, phase="Pending", ready=False)]
    assert names(pods_to_delete(pods, 4)) == ["unscheduled", "pending", "not-ready",
                                              "new-ready"]


def test_scale_down_keeps_pods_spread() -> None:
    pods = [pod("a1", node="a"), pod("a2", node="a"), pod("a3", node="a"),
            pod("b1", node="b"), pod("b2", node="b")]
    chosen = pods_to_delete(pods, 3)
    remaining = [p for p in pods if p not in chosen]
    assert sorted(p["spec"]["nodeName"] for p in remaining) == ["a", "b"]


# --- Deployment decisions --------------------------------------------------------------------

def test_template_hash_is_stable_and_safe() -> None:
    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}
    h = template_hash(template)
    assert h == template_hash(dict(reversed(list(template.items()))))
    assert h != template_hash(template, 1)
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789") and 1 <= len(h) <= 10


def test_surge_rounds_up_and_unavailable_down() -> None:
    rolling = {"maxSurge": "25%", "maxUnavailable": "25%"}
    deploy: dict[str, Any] = {"spec": {"replicas": 3, "strategy": {
        "type": "RollingUpdate", "rollingUpdate": rolling}}}
    assert surge_and_unavailable(deploy) == (1, 0)
    deploy["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": 0, "maxUnavailable": 0}
    assert surge_and_unavailable(deploy) == (0, 1)


def test_plain_scaling_sets_the_new_replica_set() -> None:
    assert rollout_step(5, "RollingUpdate", 1, 0, RsState("new", 3, 3, 3), []) == {"new": 5}
    assert rollout_step(3, "RollingUpdate", 1, 0, RsState("new", 3, 3, 3), []) == {}


def simulate(replicas: int, surge: int, unavailable: int,
             strategy: str = "RollingUpdate") -> list[tuple[int, int]]:
    """Run rollout steps to completion, pods becoming available at once; (new, old) each step."""
    new, old = RsState("new", 0, 0, 0), RsState("old", replicas, replicas, replicas)
    seen = []
    for _ in range(50):
        change = rollout_step(replicas, strategy, surge, unavailable, new, [old])
        n, o = change.get("new", new.replicas), change.get("old", old.replicas)
        new, old = RsState("new", n, n, n), RsState("old", o, o, o)
        seen.append((n, o))
        assert n + o <= replicas + surge
        assert n + o >= replicas - unavailable or strategy == "Recreate"
        if (n, o) == (replicas, 0):
            return seen
    raise AssertionError(f"rollout did not finish: {seen}")


def test_rolling_update_respects_surge_and_unavailable() -> None:
    assert simulate(3, 1, 0) == [(1, 3), (1, 2), (2, 2), (2, 1), (3, 1), (3, 0)]
    simulate(10, 3, 2)
    simulate(4, 0, 1)


def test_rollout_waits_for_new_pods_to_become_available() -> None:
    step = rollout_step(3, "RollingUpdate", 1, 0, RsState("new", 1, 1, 0),
                        [RsState("old", 3, 3, 3)])
    assert step == {}  # the surge pod is not available yet: nothing old may go


def test_recreate_scales_old_to_zero_first() -> None:
    first = rollout_step(3, "Recreate", 0, 3, RsState("new", 0, 0, 0),
                         [RsState("old", 3, 3, 3)])
    assert first == {"old": 0}
    waiting = rollout_step(3, "Recreate", 0, 3, RsState("new", 0, 0, 0),
                           [RsState("old", 0, 2, 0)])
    assert waiting == {}  # old pods still terminating
    assert rollout_step(3, "Recreate", 0, 3, RsState("new", 0, 0, 0),
                        [RsState("old", 0, 0, 0)]) == {"new": 3}


# --- garbage collection and eviction ---------------------------------------------------------

def test_orphans_are_objects_whose_known_owners_are_all_gone() -> None:
    def owned(name: str, *refs: tuple[str, str, str]) -> dict[str, Any]:
        return {"metadata": {"name": name, "ownerReferences": [
            {"apiVersion": v, "kind": k, "uid": u, "name": "x"} for v, k, u in refs]}}

    objs = [owned("alive", ("apps/v1", "ReplicaSet", "rs-1")),
            owned("orphan", ("apps/v1", "ReplicaSet", "rs-gone")),
            owned("half", ("apps/v1", "ReplicaSet", "rs-gone"), ("apps/v1", "Deployment", "d")),
            owned("unknown-kind", ("batch/v1", "CronJob", "cj")),
            {"metadata": {"name": "free"}}]
    uids: dict[Resource, set[str]] = defaultdict(set, {REPLICA_SETS: {"rs-1"},
                                                        DEPLOYMENTS: {"d"}})
    assert names(orphans(objs, uids)) == ["orphan"]


def test_pods_of_nodes_lost_too_long_are_evicted() -> None:
    pods = [pod("a", node="n1"), pod("b", node="n2"), pod("c", node=None)]
    assert names(pods_to_evict(pods, {"n1": 100.0, "n2": 105.0}, 110.0, 10.0)) == ["a"]


# --- controllers, in process -----------------------------------------------------------------

@pytest.fixture
async def api() -> AsyncIterator[Api]:
    store = Store.open(None)
    a = Api(store)
    a.bootstrap()
    yield a
    store.close()


DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
    "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{"name": "echo", "image": "podnet/echo"}]}}}}


async def converge(api: Api, *controllers: Any, passes: int = 6) -> None:
    for _ in range(passes):
        for c in controllers:
            await c.reconcile()


async def test_deployment_makes_a_replica_set_and_pods(api: Api) -> None:
    deploy, _ = await api.create(DEPLOYMENTS, "default", DEPLOYMENT)
    dc, rc = DeploymentController(api), ReplicaSetController(api)
    await converge(api, dc, rc)
    (rs,) = api.list(REPLICA_SETS, "default")["items"]
    h = rs["metadata"]["labels"][HASH_LABEL]
    assert rs["metadata"]["name"] == f"web-{h}"
    assert rs["spec"]["replicas"] == 3
    assert rs["metadata"]["ownerReferences"][0]["uid"] == deploy["metadata"]["uid"]
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    pods = api.list(PODS, "default")["items"]
    assert len(pods) == 3
    for p in pods:
        assert p["metadata"]["name"].startswith(f"web-{h}-")
        assert len(p["metadata"]["name"]) == len(f"web-{h}-") + 5
        assert p["metadata"]["labels"] == {"app": "web", HASH_LABEL: h}
        ref = p["metadata"]["ownerReferences"][0]
        assert ref["kind"] == "ReplicaSet" and ref["controller"] is True
    status = api.get(DEPLOYMENTS, "default", "web")["status"]
    assert status["replicas"] == 3 and status["observedGeneration"] == 1
    assert status["readyReplicas"] == 0  # no agent here marks them Ready
    # Scaling through the scale subresource, as `kubectl scale` does.
    scale = await api.patch_scale(DEPLOYMENTS, "default", "web", b'{"spec":{"replicas":1}}',
                                  "application/merge-patch+json")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 1
    assert scale["status"]["selector"] == "app=web"
    await converge(api, dc, rc)
    assert len(api.list(PODS, "default")["items"]) == 1
    with pytest.raises(Exception) as caught:
        await api.update_scale(DEPLOYMENTS, "default", "web", {"spec": {"replicas": -1}})
    assert "spec.replicas: Invalid value: -1" in str(caught.value)
    # A deleted pod is replaced, under a new name.
    (only,) = api.list(PODS, "default")["items"]
    await api.delete(PODS, "default", only["metadata"]["name"])
    await converge(api, dc, rc)
    (replacement,) = api.list(PODS, "default")["items"]
    assert replacement["metadata"]["name"] != only["metadata"]["name"]


async def test_new_template_rolls_to_a_new_replica_set(api: Api) -> None:
    await api.create(DEPLOYMENTS, "default", DEPLOYMENT)
    dc, rc = DeploymentController(api), ReplicaSetController(api)
    await converge(api, dc, rc)
    await api.patch(DEPLOYMENTS, "default", "web", b'{"spec":{"template":{"spec":{'
                    b'"containers":[{"name":"echo","image":"podnet/echo:v2"}]}}}}',
                    "application/strategic-merge-patch+json")
    await converge(api, dc, rc)
    sets = {rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: rs
            for rs in api.list(REPLICA_SETS, "default")["items"]}
    assert set(sets) == {"1", "2"}
    # No agent marks pods Ready, so nothing is available: with maxUnavailable 0 (25% of 3)
    # the old pods stay, and only the surge pod of the new ReplicaSet is created.
    assert sets["1"]["spec"]["replicas"] == 3
    assert sets["2"]["spec"]["replicas"] == 1


async def test_deleting_a_deployment_collects_its_replica_sets_and_pods(api: Api) -> None:
    await api.create(DEPLOYMENTS, "default", DEPLOYMENT)
    dc, rc, gc = DeploymentController(api), ReplicaSetController(api), GarbageCollector(api)
    await converge(api, dc, rc, gc)
    assert len(api.list(PODS, "default")["items"]) == 3
    await api.delete(DEPLOYMENTS, "default", "web")
    await converge(api, dc, rc, gc)
    assert api.list(REPLICA_SETS, "default")["items"] == []
    assert api.list(PODS, "default")["items"] == []
