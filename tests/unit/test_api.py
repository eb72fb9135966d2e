"""`Api` semantics without HTTP: create/update/patch/delete rules, admission, watch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.api import Api, WatchStream
from controlplane.store import Store
from podnet.apierrors import ApiError
from podnet.resources import BY_KIND, Resource

PODS, NODES, NAMESPACES = BY_KIND["Pod"], BY_KIND["Node"], BY_KIND["Namespace"]


def pod(name: str = "", **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": labels}
    if name:
        meta["name"] = name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "c", "image": "podnet/echo"}]}}


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    store = Store.open(None, max_changes=20)
    a = Api(store, finalizer_period_s=0.05)
    a.bootstrap()
    await a.start()
    yield a
    await a.close()
    store.close()


async def next_events(stream: WatchStream, n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        ev = await asyncio.wait_for(stream.__anext__(), 2)
        obj = ev["object"]
        out.append((ev["type"], obj.get("metadata", {}).get("name") or obj.get("reason", "")))
    return out


async def test_create_stamps_server_fields(api: Api) -> None:
    created, warnings = await api.create(PODS, "default", pod("a"))
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    assert created["status"]["phase"] == "Pending" and warnings == []
    generated, _ = await api.create(PODS, "default", {**pod(), "metadata": {
        "generateName": "web-"}})
    name = generated["metadata"]["name"]
    assert name.startswith("web-") and len(name) == 9
    with pytest.raises(ApiError) as e:
        await api.create(PODS, "default", pod("a"))
    assert e.value.code == 409 and e.value.reason == "AlreadyExists"
    with pytest.raises(ApiError) as e:
        await api.create(PODS, "missing", pod("b"))
    assert e.value.code == 404 and 'namespaces "missing" not found' in e.value.message
    bad = pod("c")
    bad["spec"]["containers"][0]["image"] = ""
    with pytest.raises(ApiError) as e:
        await api.create(PODS, "default", bad)
    assert e.value.code == 422 and "spec.containers[0].image" in e.value.message
    dry, _ = await api.create(PODS, "default", pod("d"), dry_run=True)
    assert dry["metadata"]["name"] == "d" and api.store.get(PODS, "default", "d") is None


async def test_update_conflict_noop_and_status(api: Api) -> None:
    created, _ = await api.create(PODS, "default", pod("a"))
    rv = created["metadata"]["resourceVersion"]
    # An update that changes nothing writes nothing.
    same, _ = await api.update(PODS, "default", "a", created)
    assert same["metadata"]["resourceVersion"] == rv
    changed = json.loads(json.dumps(created))
    changed["metadata"]["labels"] = {"x": "1"}
    changed["status"] = {"phase": "Running"}  # ignored on the main resource
    updated, _ = await api.update(PODS, "default", "a", changed)
    assert updated["metadata"]["resourceVersion"] != rv
    assert updated["status"]["phase"] == "Pending"
    with pytest.raises(ApiError) as e:
        await api.update(PODS, "default", "a", changed)  # carries the old rv
    assert e.value.code == 409 and "the object has been modified" in e.value.message
    status = {"metadata": {"name": "a"}, "status": {"phase": "Running", "podIP": "10.244.0.5"}}
    after, _ = await api.update(PODS, "default", "a", status, subresource="status")
    assert after["status"]["podIP"] == "10.244.0.5"
    assert after["metadata"]["labels"] == {"x": "1"}  # only .status changed


async def test_patch_types(api: Api) -> None:
    await api.create(PODS, "default", pod("a", app="x"))
    obj, _, created = await api.patch(PODS, "default", "a", b'{"metadata":{"labels":{"b":"1"}}}',
                                      "application/merge-patch+json")
    assert obj["metadata"]["labels"] == {"app": "x", "b": "1"} and not created
    with pytest.raises(ApiError) as e:
        await api.patch(PODS, "default", "a", b"{}", "text/plain")
    assert e.value.code == 415
    with pytest.raises(ApiError) as e:
        await api.patch(PODS, "default", "a", b"{nope", "application/merge-patch+json")
    assert e.value.code == 400
    with pytest.raises(ApiError) as e:
        await api.patch(PODS, "default", "a", b'{"spec":{"containers":[{"name":"c","image":""}]}}',
                        "application/strategic-merge-patch+json")
    assert e.value.code == 422
    body = b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"n"},"spec":{"containers":' \
           b'[{"name":"c","image":"podnet/echo"}]}}'
    obj, _, created = await api.patch(PODS, "default", "n", body, "application/apply-patch+yaml")
    assert created and obj["metadata"]["uid"]


class RecordingAdmission:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def admit(self, op: str, res: Resource, obj: dict[str, Any],
              old: dict[str, Any] | None) -> None:
        self.calls.append((op, res.plural))
        if obj["metadata"].get("name") == "forbidden":
            raise ApiError(403, "Forbidden", "no")
        obj["metadata"].setdefault("annotations", {})["admitted"] = op


async def test_admission_runs_before_writes(api: Api) -> None:
    hook = RecordingAdmission()
    api.add_admission(hook)
    created, _ = await api.create(PODS, "default", pod("a"))
    assert created["metadata"]["annotations"]["admitted"] == "CREATE"
    with pytest.raises(ApiError):
        await api.create(PODS, "default", pod("forbidden"))
    assert api.store.get(PODS, "default", "forbidden") is None
    await api.patch(PODS, "default", "a", b'{"metadata":{"labels":{"z":"1"}}}',
                    "application/merge-patch+json")
    await api.delete(PODS, "default", "a")
    assert hook.calls == [("CREATE", "pods"), ("CREATE", "pods"), ("UPDATE", "pods"),
                          ("DELETE", "pods")]


async def ready_node(api: Api, name: str, ready: bool = True) -> None:
    await api.create(NODES, None, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                                   "status": {"conditions": [{"type": "Ready",
                                                              "status": str(ready)}]}})


async def test_graceful_pod_deletion(api: Api) -> None:
    await ready_node(api, "up", True)
    await ready_node(api, "down", False)
    for name, node in (("on-up", "up"), ("on-down", "down")):
        await api.create(PODS, "default", pod(name))
        await api.bind("default", name, node)
    with pytest.raises(ApiError) as e:
        await api.bind("default", "on-up", "down")
    assert e.value.code == 409
    gone = await api.delete(PODS, "default", "on-down")  # NotReady node: at once
    assert api.store.get(PODS, "default", "on-down") is None and gone["metadata"]["name"]
    term = await api.delete(PODS, "default", "on-up")
    assert term["metadata"]["deletionGracePeriodSeconds"] == 30
    shorter = await api.delete(PODS, "default", "on-up", grace_period_seconds=5)
    assert shorter["metadata"]["deletionGracePeriodSeconds"] == 5
    longer = await api.delete(PODS, "default", "on-up", grace_period_seconds=60)
    assert longer["metadata"]["deletionGracePeriodSeconds"] == 5
    with pytest.raises(ApiError) as e:
        await api.delete(PODS, "default", "on-up", grace_period_seconds=0, uid="wrong")
    assert e.value.code == 409
    await api.delete(PODS, "default", "on-up", grace_period_seconds=0)
    assert api.store.get(PODS, "default", "on-up") is None


async def test_namespace_lifecycle(api: Api) -> None:
    with pytest.raises(ApiError) as e:
        await api.delete(NAMESPACES, None, "kube-system")
    assert e.value.code == 403
    await api.create(NAMESPACES, None, {"metadata": {"name": "team"}})
    await api.create(PODS, "team", pod("a"))
    ns = await api.delete(NAMESPACES, None, "team")
    assert ns["status"]["phase"] == "Terminating"
    with pytest.raises(ApiError) as e:
        await api.create(PODS, "team", pod("b"))
    assert e.value.code == 403
    for _ in range(100):
        if api.store.get(NAMESPACES, None, "team") is None:
            break
        await asyncio.sleep(0.02)
    assert api.store.get(NAMESPACES, None, "team") is None
    assert api.store.get(PODS, "team", "a") is None


async def test_watch_from_now_replay_selectors_and_expiry(api: Api) -> None:
    await api.create(PODS, "default", pod("a", app="web"))
    await api.create(PODS, "default", pod("b", app="db"))
    rv = api.list(PODS, "default")["metadata"]["resourceVersion"]
    initial = api.watch(PODS, "default", resource_version="0", label_selector="app=web")
    assert await next_events(initial, 1) == [("ADDED", "a")]
    replay = api.watch(PODS, "default", resource_version=rv, label_selector="app=web")
    await api.patch(PODS, "default", "b", b'{"metadata":{"labels":{"app":"web"}}}',
                    "application/merge-patch+json")
    await api.patch(PODS, "default", "a", b'{"metadata":{"labels":{"app":"old"}}}',
                    "application/merge-patch+json")
    await api.delete(PODS, "default", "b")
    expected = [("ADDED", "b"), ("DELETED", "a"), ("DELETED", "b")]
    assert await next_events(replay, 3) == expected
    assert await next_events(initial, 3) == expected
    # An unchanged update is not an event; an object in another namespace is filtered out.
    await api.create(PODS, "kube-system", pod("c", app="web"))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(initial.__anext__(), 0.1)
    initial.close()
    replay.close()
    # Old enough to have been pruned (max_changes=20): one ERROR event with a 410.
    for i in range(40):
        await api.create(PODS, "default", pod(f"p{i}"))
    expired = api.watch(PODS, "default", resource_version="1")
    event = await asyncio.wait_for(expired.__anext__(), 1)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410
    with pytest.raises(StopAsyncIteration):
        await expired.__anext__()
    with pytest.raises(ApiError):
        api.watch(PODS, "default", resource_version="abc")
    with pytest.raises(ApiError):
        api.watch(PODS, "default", resource_version=None, field_selector="spec.bogus=1")


async def test_watch_replays_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = Store.open(path)
    api = Api(store)
    api.bootstrap()
    await api.create(PODS, "default", pod("a"))
    rv = api.list(PODS)["metadata"]["resourceVersion"]
    await api.patch(PODS, "default", "a", b'{"metadata":{"labels":{"v":"2"}}}',
                    "application/merge-patch+json")
    store.close()
    store = Store.open(path)
    api = Api(store)
    api.bootstrap()  # idempotent: no new writes
    assert store.rv == int(rv) + 1
    stream = api.watch(PODS, None, resource_version=rv)
    assert await next_events(stream, 1) == [("MODIFIED", "a")]
    stream.close()
    store.close()
