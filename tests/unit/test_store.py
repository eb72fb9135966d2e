"""The durable store: durability across reopen, change-log replay and expiry, copies,
failed writes, corrupt rows and bounded watchers."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from controlplane.store import (
    ADDED,
    DELETED,
    MODIFIED,
    Expired,
    ObjectExists,
    ObjectNotFound,
    Store,
    StoreError,
    VersionConflict,
)
from podnet.resources import BY_KIND

PODS, NODES = BY_KIND["Pod"], BY_KIND["Node"]


def pod(name: str, ns: str = "default", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "podnet/echo"}]}}


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


def test_create_get_list_stamp_rv() -> None:
    s = Store.open(None)
    a = s.create(PODS, pod("a"))
    b = s.create(PODS, pod("b", "other"))
    assert a["metadata"]["resourceVersion"] == "1"
    assert b["metadata"]["resourceVersion"] == "2"
    assert s.rv == 2
    assert s.get(PODS, "default", "a") == a
    assert s.get(PODS, "default", "missing") is None
    items, rv = s.list(PODS)
    assert [i["metadata"]["name"] for i in items] == ["a", "b"] and rv == 2
    assert [i["metadata"]["name"] for i in s.list(PODS, "other")[0]] == ["b"]
    with pytest.raises(ObjectExists):
        s.create(PODS, pod("a"))
    s.close()


def test_returned_objects_are_copies() -> None:
    s = Store.open(None)
    source = pod("a")
    created = s.create(PODS, source)
    source["metadata"]["labels"]["x"] = "mutated"
    created["spec"]["containers"].clear()
    got = s.get(PODS, "default", "a")
    assert got is not None
    got["metadata"]["name"] = "zzz"
    listed = s.list(PODS)[0][0]
    listed["spec"] = {}
    again = s.get(PODS, "default", "a")
    assert again is not None
    assert again["metadata"]["labels"] == {}
    assert again["metadata"]["name"] == "a"
    assert again["spec"]["containers"][0]["name"] == "c"
    s.close()


def test_update_and_delete_with_preconditions() -> None:
    s = Store.open(None)
    s.create(PODS, pod("a"))
    changed = pod("a", x="1")
    with pytest.raises(VersionConflict):
        s.update(PODS, changed, expected_rv="99")
    updated = s.update(PODS, changed, expected_rv="1")
    assert updated["metadata"]["resourceVersion"] == "2"
    gone = s.delete(PODS, "default", "a")
    assert gone["metadata"]["resourceVersion"] == "3"
    assert gone["metadata"]["labels"] == {"x": "1"}
    with pytest.raises(ObjectNotFound):
        s.delete(PODS, "default", "a")
    with pytest.raises(ObjectNotFound):
        s.update(PODS, pod("nope"))
    s.close()


def test_everything_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "store.db"
    s = Store.open(path)
    s.create(PODS, pod("a"))
    s.create(PODS, pod("b"))
    s.create(NODES, node("n1"))
    s.update(PODS, pod("a", v="2"))
    s.delete(PODS, "default", "b")
    rv = s.rv
    s.close()

    s2 = Store.open(path)
    assert s2.rv == rv == 5
    a = s2.get(PODS, "default", "a")
    assert a is not None and a["metadata"]["labels"] == {"v": "2"}
    assert a["metadata"]["resourceVersion"] == "4"
    assert s2.get(PODS, "default", "b") is None
    assert s2.get(NODES, None, "n1") is not None
    # The counter continues; it never reuses a version.
    assert s2.create(PODS, pod("c"))["metadata"]["resourceVersion"] == "6"
    s2.close()


def test_change_log_replays_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    s = Store.open(path)
    s.create(PODS, pod("a"))            # rv 1
    s.create(NODES, node("n1"))         # rv 2 (another resource)
    s.update(PODS, pod("a", x="y"))     # rv 3
    s.delete(PODS, "default", "a")      # rv 4
    s.close()

    s2 = Store.open(path)
    changes = s2.changes_since(PODS, 1)
    assert [(c.type, c.rv) for c in changes] == [(MODIFIED, 3), (DELETED, 4)]
    assert changes[0].object()["metadata"]["labels"] == {"x": "y"}
    prev = changes[0].previous()
    assert prev is not None and prev["metadata"]["labels"] == {}
    first = s2.changes_since(PODS, 0)[0]
    assert (first.type, first.rv) == (ADDED, 1)
    assert s2.changes_since(PODS, 4) == []
    assert [c.rv for c in s2.changes_since(NODES, 0)] == [2]
    s2.close()


def test_pruned_log_is_expired_also_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    s = Store.open(path, max_changes=10)
    for i in range(30):
        s.create(PODS, pod(f"p{i}"))
    assert s.compacted_rv > 0
    with pytest.raises(Expired):
        s.changes_since(PODS, 1)
    recent = s.changes_since(PODS, s.rv - 5)
    assert [c.rv for c in recent] == list(range(s.rv - 4, s.rv + 1))
    compacted = s.compacted_rv
    (rows,) = sqlite3.connect(path).execute("SELECT COUNT(*) FROM changes").fetchone()
    assert rows <= 10 + 1 + 1  # the bound plus the batching slack
    s.close()

    s2 = Store.open(path, max_changes=10)
    assert s2.compacted_rv == compacted
    with pytest.raises(Expired):
        s2.changes_since(PODS, 1)
    assert [c.rv for c in s2.changes_since(PODS, s2.rv - 1)] == [s2.rv]
    s2.close()


class _FailingCommit:
    """A sqlite connection stand-in whose COMMIT fails like a full disk."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self.real.execute(sql, *args)

    @property
    def in_transaction(self) -> bool:
        return self.real.in_transaction


def test_failed_write_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    s = Store.open(path)
    s.create(PODS, pod("a"))
    sub = s.subscribe(PODS)
    real = s._db
    assert real is not None
    s._db = _FailingCommit(real)  # type: ignore[assignment]
    with pytest.raises(StoreError):
        s.create(PODS, pod("b"))
    with pytest.raises(StoreError):
        s.update(PODS, pod("a", x="1"))
    with pytest.raises(StoreError):
        s.delete(PODS, "default", "a")
    s._db = real
    assert s.rv == 1
    assert s.get(PODS, "default", "b") is None
    a = s.get(PODS, "default", "a")
    assert a is not None and a["metadata"]["labels"] == {}
    assert len(sub) == 0  # no watch event for a write that did not happen
    # The store keeps working afterwards, and the failed writes left nothing on disk.
    assert s.create(PODS, pod("b"))["metadata"]["resourceVersion"] == "2"
    s.close()
    s2 = Store.open(path)
    assert [p["metadata"]["name"] for p in s2.list(PODS)[0]] == ["a", "b"]
    s2.close()


def test_corrupt_rows_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    s = Store.open(path)
    s.create(PODS, pod("good"))
    s.close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO objects VALUES ('pods', 'default', 'bad', '{not json')")
    db.execute("INSERT INTO objects VALUES ('pods', 'default', 'list', '[1, 2]')")
    db.execute("""INSERT INTO objects VALUES ('pods', 'default', 'wrongkey',
                  '{"metadata": {"name": "other", "namespace": "default"}}')""")
    db.commit()
    db.close()
    s2 = Store.open(path)
    assert [p["metadata"]["name"] for p in s2.list(PODS)[0]] == ["good"]
    s2.close()


def test_closed_store_refuses_writes() -> None:
    s = Store.open(None)
    s.close()
    with pytest.raises(StoreError):
        s.create(PODS, pod("a"))


async def test_subscription_delivers_and_overflow_closes() -> None:
    s = Store.open(None, watch_queue=3)
    fast = s.subscribe(PODS)
    s.create(PODS, pod("a"))
    change = await asyncio.wait_for(fast.get(), 1)
    assert change is not None and change.type == ADDED and change.rv == 1
    slow = s.subscribe(PODS)
    for i in range(5):
        s.create(PODS, pod(f"p{i}"))
    await s.durable()  # watchers hear of writes once they are committed
    # The slow watcher is cut off instead of growing; the writer never waited.
    assert slow.closed and slow.overflowed
    assert await slow.get() is None
    assert s.rv == 6
    s.close()
    assert fast.closed


async def test_subscription_get_is_cancel_safe() -> None:
    s = Store.open(None)
    sub = s.subscribe(PODS)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sub.get(), 0.05)
    s.create(PODS, pod("a"))
    change = await asyncio.wait_for(sub.get(), 1)
    assert change is not None and change.object()["metadata"]["name"] == "a"
    s.close()


async def test_writes_in_one_tick_share_one_commit_and_watchers_wait_for_it() -> None:
    s = Store.open(None)
    sub = s.subscribe(PODS)
    commits = 0
    real = s._db
    assert real is not None

    class CountingDb:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def execute(self, sql: str, *args: object) -> object:
            nonlocal commits
            commits += sql == "COMMIT"
            return real.execute(sql, *args)

    s._db = CountingDb()  # type: ignore[assignment]
    for i in range(10):
        s.create(PODS, pod(f"p{i}"))
    assert len(sub) == 0  # not durable yet: no watcher may see it
    await s.durable()
    assert commits == 1
    assert len(sub) == 10
    s._db = real
    s.close()
