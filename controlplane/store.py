"""The durable object store behind the API server.

Every object lives twice: in memory (one dict per resource, so `get`/`list` never touch the
disk) and in a SQLite file (WAL, `synchronous=FULL`, so an accepted write is on disk before
the caller sees it).

Group commit: an fsync costs ~0.4 ms here, several times the rest of a write, so the writes
made in one event-loop tick share one transaction and one COMMIT. Each write runs in its own
SAVEPOINT (a failed write raises `StoreError` and leaves memory and the batch untouched), is
applied to memory, and is held back from watchers until its COMMIT: `await durable()` is how
the API waits for that before it acknowledges. If a COMMIT ever fails, the batch is rolled
back, memory is reloaded from the disk, and every writer waiting on it gets `StoreError`.
Without a running event loop (scripts, unit tests) every write commits at once.

One global resourceVersion counter stamps every write (`metadata.resourceVersion`). Each
write also appends a row to a bounded change log, which is what lets a watch started at
resourceVersion N replay the changes after N, also after a restart. Once N has been pruned
from the log, `changes_since` raises `Expired` and the client must re-list (HTTP 410).

Live watchers `subscribe()` and get a bounded `Subscription`. A watcher that falls behind is
closed instead of buffering without limit, so no watcher can slow a writer or grow memory.

The store is not thread-safe: it is used from the event loop thread only (SQLite is fast
enough to stay on the loop; see reference/perf.md).
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import structlog

from podnet.resources import Resource

log = structlog.get_logger()

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"

DEFAULT_MAX_CHANGES = 10_000
DEFAULT_WATCH_QUEUE = 1_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    res  TEXT NOT NULL,
    ns   TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (res, ns, name)
);
CREATE TABLE IF NOT EXISTS changes (
    rv   INTEGER PRIMARY KEY,
    res  TEXT NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    prev TEXT
);
CREATE INDEX IF NOT EXISTS changes_by_res ON changes (res, rv);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class StoreError(Exception):
    """The write could not be made durable (disk full, I/O error, closed store)."""


class ObjectExists(Exception):
    """`create` of a name that is already taken."""


class ObjectNotFound(Exception):
    """`update`/`delete` of an object that does not exist."""


class VersionConflict(Exception):
    """`update` with an `expected_rv` that is not the stored one."""


class Expired(Exception):
    """The requested resourceVersion is older than the change log."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


def resource_key(res: Resource) -> str:
    """The store's name for a resource: `pods`, `endpointslices.discovery.k8s.io`."""
    return f"{res.plural}.{res.group}" if res.group else res.plural


@dataclass(frozen=True)
class Change:
    """One write, as seen by watchers. Objects are JSON text: decode a private copy with
    `object()`/`previous()`, or share one read-only decoding between all the watchers of
    the write with `shared_object()`/`shared_previous()` (decoding once per write instead of
    once per watcher is most of the cost of fanning a change out)."""

    type: str         # ADDED | MODIFIED | DELETED
    rv: int
    key: str          # resource_key() of the resource written
    text: str         # the object after the write (DELETED: its last state, new rv)
    prev_text: str | None = None  # MODIFIED: the object before the write

    def object(self) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(self.text)
        return obj

    def previous(self) -> dict[str, Any] | None:
        if self.prev_text is None:
            return None
        prev: dict[str, Any] = json.loads(self.prev_text)
        return prev

    def shared_object(self) -> Mapping[str, Any]:
        """The object, decoded once for all watchers. Read-only: never mutate it."""
        cached = self.__dict__.get("_obj")
        if cached is None:
            cached = self.object()
            object.__setattr__(self, "_obj", cached)
        return cast(Mapping[str, Any], cached)

    def shared_previous(self) -> Mapping[str, Any] | None:
        """The previous state, decoded once for all watchers. Read-only."""
        if self.prev_text is None:
            return None
        cached = self.__dict__.get("_prev")
        if cached is None:
            cached = self.previous()
            object.__setattr__(self, "_prev", cached)
        return cast(Mapping[str, Any], cached)


class Subscription:
    """A bounded feed of changes to one resource.

    `get()` returns the next change, or None once the subscription is closed; a subscription
    whose backlog exceeds `maxsize` closes itself (`overflowed` is then True) so the watcher
    re-lists. `get()` is cancel-safe: a change is only removed when it is returned.
    """

    def __init__(self, key: str, maxsize: int, on_close: Callable[[Subscription], None]) -> None:
        self.key = key
        self.maxsize = maxsize
        self.overflowed = False
        self.closed = False
        self._items: collections.deque[Change] = collections.deque()
        self._ready = asyncio.Event()
        self._on_close = on_close

    def push(self, change: Change) -> None:
        if self.closed:
            return
        if len(self._items) >= self.maxsize:
            self.overflowed = True
            log.warning("store.watch_overflow", resource=self.key, backlog=len(self._items))
            self.close()
            return
        self._items.append(change)
        self._ready.set()

    def get_nowait(self) -> Change | None:
        return self._items.popleft() if self._items else None

    async def get(self) -> Change | None:
        while True:
            if self._items:
                return self._items.popleft()
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._items.clear()
        self._ready.set()
        self._on_close(self)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class _Entry:
    """An object in memory: the parsed dict (read-only, for filtering) and its JSON text
    (decoded again whenever a caller needs a copy it may mutate)."""

    obj: dict[str, Any]
    text: str


def _dumps(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _ns_name(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Store:
    """See the module docstring. Build with `Store.open(path)` (`None`: in memory)."""

    def __init__(self, db: sqlite3.Connection, *, max_changes: int, watch_queue: int) -> None:
        self._db: sqlite3.Connection | None = db
        self._max_changes = max_changes
        self._watch_queue = watch_queue
        self._objects: dict[str, dict[tuple[str, str], _Entry]] = {}
        self._subs: dict[str, set[Subscription]] = {}
        self._rv = 0
        self._compacted = 0  # changes with rv <= this have been pruned
        self._durable_rv = 0  # the newest rv that is committed to disk
        self._pending: list[Change] = []  # written in the open transaction, not yet committed
        self._batch: asyncio.Future[None] | None = None  # resolves when they are committed
        self._pending_compaction: int | None = None

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, path: str | Path | None, *, max_changes: int = DEFAULT_MAX_CHANGES,
             watch_queue: int = DEFAULT_WATCH_QUEUE) -> Store:
        if max_changes < 1:
            raise ValueError("max_changes must be at least 1")
        if path is None:
            target = ":memory:"
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            target = str(path)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a write is one explicit
        # transaction and nothing is committed behind our back.
        db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            store = cls(db, max_changes=max_changes, watch_queue=watch_queue)
            store._load()
        except sqlite3.Error as e:
            db.close()
            raise StoreError(f"cannot open store {target}: {e}") from e
        log.info("store.opened", path=target, objects=store.count(), rv=store.rv,
                 compacted_rv=store.compacted_rv)
        return store

    def _load(self) -> None:
        db = self._require_db()
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self._compacted = int(meta.get("compacted", 0))
        max_obj_rv = 0
        for res, ns, name, body in db.execute("SELECT res, ns, name, body FROM objects"):
            obj = self._parse_row(body, res=res, ns=ns, name=name)
            if obj is None:
                continue
            self._objects.setdefault(res, {})[(ns, name)] = _Entry(obj, _dumps(obj))
            max_obj_rv = max(max_obj_rv, _rv_of(obj))
        (max_change_rv,) = db.execute("SELECT COALESCE(MAX(rv), 0) FROM changes").fetchone()
        # The counter never goes back, even if the meta row were lost.
        self._rv = max(int(meta.get("rv", 0)), max_obj_rv, int(max_change_rv))
        self._durable_rv = self._rv
        self._prune_if_due()

    @staticmethod
    def _parse_row(body: str, **where: str) -> dict[str, Any] | None:
        try:
            obj = json.loads(body)
        except (ValueError, TypeError) as e:
            log.error("store.corrupt_row", error=str(e), **where)
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
            log.error("store.corrupt_row", error="not an object with metadata", **where)
            return None
        if _ns_name(obj) != (where["ns"], where["name"]):
            log.error("store.corrupt_row", error="metadata does not match its key", **where)
            return None
        return obj

    def close(self) -> None:
        if self._pending and self._db is not None:
            self._flush()
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.close()
        if self._db is not None:
            self._db.close()
            self._db = None

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("store is closed")
        return self._db

    # ------------------------------------------------------------------ reads

    @property
    def rv(self) -> int:
        """The newest resourceVersion handed out."""
        return self._rv

    @property
    def compacted_rv(self) -> int:
        """Changes with rv <= this are gone from the log; watching from there is 410."""
        return self._compacted

    def count(self, res: Resource | None = None) -> int:
        if res is not None:
            return len(self._objects.get(resource_key(res), {}))
        return sum(len(m) for m in self._objects.values())

    def get(self, res: Resource, ns: str | None, name: str) -> dict[str, Any] | None:
        """A copy of the object, or None."""
        entry = self._objects.get(resource_key(res), {}).get((ns or "", name))
        if entry is None:
            return None
        obj: dict[str, Any] = json.loads(entry.text)
        return obj

    def peek(self, res: Resource, ns: str | None, name: str) -> Mapping[str, Any] | None:
        """The stored object itself, without copying. Read-only: never mutate it."""
        entry = self._objects.get(resource_key(res), {}).get((ns or "", name))
        return entry.obj if entry is not None else None

    def list(self, res: Resource, ns: str | None = None,
             where: Callable[[Mapping[str, Any]], bool] | None = None,
             ) -> tuple[list[dict[str, Any]], int]:
        """Copies of the objects (in one namespace, or all; filtered by `where`, which sees
        the read-only stored object), sorted by namespace and name, and the current rv."""
        items = self._objects.get(resource_key(res), {})
        keys = sorted(k for k in items if ns is None or k[0] == ns)
        out: list[dict[str, Any]] = []
        for k in keys:
            entry = items[k]
            if where is None or where(entry.obj):
                out.append(json.loads(entry.text))
        return out, self._rv

    def scan(self, res: Resource) -> builtins.list[Mapping[str, Any]]:
        """Every stored object of `res`, uncopied and read-only: never mutate them. For
        in-process controllers that look at all objects on every pass."""
        return [entry.obj for entry in self._objects.get(resource_key(res), {}).values()]

    def changes_since(self, res: Resource, rv: int) -> builtins.list[Change]:
        """The logged changes to `res` with resourceVersion > rv, oldest first.

        Raises `Expired` when changes after `rv` may already have been pruned."""
        if rv < self._compacted:
            raise Expired(rv, self._compacted)
        # Only committed changes: uncommitted ones reach watchers through their subscription
        # once the COMMIT is done (this connection would otherwise see its own open batch).
        rows = self._require_db().execute(
            "SELECT rv, type, body, prev FROM changes WHERE res = ? AND rv > ? AND rv <= ? "
            "ORDER BY rv",
            (resource_key(res), rv, self._durable_rv),
        ).fetchall()
        return [Change(t, int(r), resource_key(res), body, prev) for r, t, body, prev in rows]

    # ------------------------------------------------------------------ writes

    def create(self, res: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store a new object; returns a copy stamped with its resourceVersion."""
        key = resource_key(res)
        ns, name = _ns_name(obj)
        if not name:
            raise ValueError("object has no metadata.name")
        if (ns, name) in self._objects.get(key, {}):
            raise ObjectExists(f"{key} {ns}/{name}")
        return self._write(key, ns, name, ADDED, obj, None)

    def update(self, res: Resource, obj: Mapping[str, Any],
               expected_rv: str | None = None) -> dict[str, Any]:
        """Replace an existing object (conditionally on `expected_rv` when given)."""
        key = resource_key(res)
        ns, name = _ns_name(obj)
        old = self._objects.get(key, {}).get((ns, name))
        if old is None:
            raise ObjectNotFound(f"{key} {ns}/{name}")
        if expected_rv is not None and str(_rv_of(old.obj)) != expected_rv:
            raise VersionConflict(f"{key} {ns}/{name}: stored rv {_rv_of(old.obj)}")
        return self._write(key, ns, name, MODIFIED, obj, old)

    def delete(self, res: Resource, ns: str | None, name: str) -> dict[str, Any]:
        """Remove an object; returns its last state, stamped with the deletion's rv."""
        key = resource_key(res)
        old = self._objects.get(key, {}).get((ns or "", name))
        if old is None:
            raise ObjectNotFound(f"{key} {ns}/{name}")
        return self._write(key, ns or "", name, DELETED, old.obj, old)

    def subscribe(self, res: Resource) -> Subscription:
        """A live feed of every later write to `res` (any namespace)."""
        key = resource_key(res)
        sub = Subscription(key, self._watch_queue, self._unsubscribe)
        self._subs.setdefault(key, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)

    def _write(self, key: str, ns: str, name: str, kind: str, obj: Mapping[str, Any],
               old: _Entry | None) -> dict[str, Any]:
        rv = self._rv + 1
        stamped = json.loads(_dumps(obj))  # a private, JSON-clean copy
        stamped.setdefault("metadata", {})["resourceVersion"] = str(rv)
        text = _dumps(stamped)
        prev_text = old.text if (old is not None and kind == MODIFIED) else None
        self._stage(key, ns, name, kind, rv, text, prev_text)
        # Staged in the open transaction: memory follows, watchers wait for the COMMIT.
        self._rv = rv
        bucket = self._objects.setdefault(key, {})
        if kind == DELETED:
            bucket.pop((ns, name), None)
        else:
            bucket[(ns, name)] = _Entry(stamped, text)
        self._pending.append(Change(kind, rv, key, text, prev_text))
        self._schedule_flush()
        result: dict[str, Any] = json.loads(text)
        return result

    def _stage(self, key: str, ns: str, name: str, kind: str, rv: int, text: str,
               prev_text: str | None) -> None:
        db = self._require_db()
        compact_to = self._compaction_target(rv)
        try:
            if not db.in_transaction:
                db.execute("BEGIN IMMEDIATE")
            db.execute("SAVEPOINT write")
            try:
                if kind == DELETED:
                    db.execute("DELETE FROM objects WHERE res = ? AND ns = ? AND name = ?",
                               (key, ns, name))
                else:
                    db.execute("INSERT OR REPLACE INTO objects (res, ns, name, body) "
                               "VALUES (?, ?, ?, ?)", (key, ns, name, text))
                db.execute("INSERT INTO changes (rv, res, type, body, prev) "
                           "VALUES (?, ?, ?, ?, ?)", (rv, key, kind, text, prev_text))
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('rv', ?)", (rv,))
                if compact_to is not None:
                    db.execute("DELETE FROM changes WHERE rv <= ?", (compact_to,))
                    db.execute("INSERT OR REPLACE INTO meta (key, value) "
                               "VALUES ('compacted', ?)", (compact_to,))
            except sqlite3.Error:
                db.execute("ROLLBACK TO write")
                raise
            finally:
                db.execute("RELEASE write")
        except sqlite3.Error as e:
            log.error("store.write_failed", resource=key, namespace=ns, name=name, error=str(e))
            raise StoreError(f"write of {key} {ns}/{name} failed: {e}") from e
        if compact_to is not None:
            self._pending_compaction = compact_to

    def _schedule_flush(self) -> None:
        if self._batch is not None:
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:  # nobody to batch with: commit now
            failure = self._flush()
            if failure is not None:
                raise failure
            return
        self._batch = loop.create_future()
        loop.call_soon(self._flush)

    def _flush(self) -> StoreError | None:
        """COMMIT the open transaction, then tell watchers and waiting writers."""
        batch, self._batch = self._batch, None
        pending, self._pending = self._pending, []
        db = self._db
        if db is None:
            closed = StoreError("store closed before the write was committed")
            if batch is not None and not batch.done():
                batch.set_exception(closed)
            return closed
        try:
            if db.in_transaction:
                db.execute("COMMIT")
        except sqlite3.Error as e:
            log.critical("store.commit_failed", error=str(e), writes=len(pending))
            self._rollback(db)
            self._reload()
            failure = StoreError(f"commit failed: {e}")
            if batch is not None and not batch.done():
                batch.set_exception(failure)
            return failure
        if self._pending_compaction is not None:
            self._compacted, self._pending_compaction = self._pending_compaction, None
        if pending:
            self._durable_rv = pending[-1].rv
        for change in pending:
            self._publish(change)
        if batch is not None and not batch.done():
            batch.set_result(None)
        return None

    def _reload(self) -> None:
        """Make memory what the disk holds again (after a failed COMMIT)."""
        self._objects.clear()
        self._pending_compaction = None
        self._load()

    async def durable(self) -> None:
        """Wait until every write made so far is committed to disk."""
        if self._batch is not None:
            await asyncio.shield(self._batch)

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except sqlite3.Error as e:  # the original error is what the caller needs to see
            log.error("store.rollback_failed", error=str(e))

    def _compaction_target(self, rv: int) -> int | None:
        """Prune in batches (a tenth of the log) so most writes pay for no DELETE."""
        slack = max(1, self._max_changes // 10)
        if rv - self._compacted > self._max_changes + slack:
            return rv - self._max_changes
        return None

    def _prune_if_due(self) -> None:
        """On open: apply a smaller `max_changes` than the file was written with."""
        target = self._compaction_target(self._rv)
        if target is None:
            return
        db = self._require_db()
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM changes WHERE rv <= ?", (target,))
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('compacted', ?)", (target,))
        db.execute("COMMIT")
        self._compacted = target

    def _publish(self, change: Change) -> None:
        for sub in list(self._subs.get(change.key, ())):
            sub.push(change)


def _rv_of(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0
