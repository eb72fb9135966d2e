"""The API's business logic, without HTTP.

The HTTP layer (`controlplane.apiserver`) and the in-process controllers (scheduler, node
IPAM, node lifecycle) both call `Api`, so every write takes the same path: type and namespace
checks -> validation and defaulting -> server-owned fields -> admission -> durable store write
-> watch events. Errors are `ApiError`s that the HTTP layer answers as `Status` objects.

Kubernetes semantics kept here, because kubectl depends on them:
- create stamps uid, creationTimestamp, generation; `generateName` gets 5 random characters;
- update with a stale `metadata.resourceVersion` is a 409 Conflict; without one it is
  unconditional; an update that changes nothing writes nothing (no rv bump, no watch event);
- the `status` subresource changes only `.status`, the main resource never changes `.status`;
- pods bound to a Ready node are deleted gracefully (deletionTimestamp, then the agent deletes
  with grace 0); namespaces are drained by a background finalizer, then removed;
- a watch from rv N replays the change log after N (410 Expired when N was pruned); a watch
  from ""/"0" starts with synthetic ADDED events; selectors turn modifications into
  ADDED/DELETED when an object starts/stops matching.

Every method body runs without awaiting between its read and its store write, so each call is
atomic with respect to the others on the event loop.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import copy
import functools
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

import structlog
import yaml

from controlplane import store as st
from controlplane.store import Store
from podnet import apierrors
from podnet.apierrors import ApiError
from podnet.patch import (
    PatchError,
    apply_patch,
    json_merge_patch,
    json_patch,
    strategic_merge_patch,
)
from podnet.resources import BY_KIND, RESOURCES, Resource
from podnet.selectors import FieldSelector, LabelSelector, SelectorError
from podnet.validation import validate

log = structlog.get_logger()

NAMESPACES = BY_KIND["Namespace"]
NODES = BY_KIND["Node"]
PODS = BY_KIND["Pod"]
EVENTS = BY_KIND["Event"]

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
FIELD_VALIDATION = ("Strict", "Warn", "Ignore")
DEFAULT_GRACE_S = 30

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (MERGE_PATCH, STRATEGIC_PATCH, JSON_PATCH, APPLY_PATCH)

# Kubernetes' generateName alphabet: no vowels (no accidental words) and no look-alikes.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# Metadata the server owns: a client's copy of these is ignored on update.
_SERVER_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                "generation", "namespace", "name")


class Admission(Protocol):
    def admit(self, op: str, res: Resource, obj: dict[str, Any],
              old: dict[str, Any] | None) -> None:
        """op is "CREATE" | "UPDATE" | "DELETE"; may mutate obj; raises ApiError to reject."""


# ---------------------------------------------------------------------- small helpers

def now_utc() -> datetime:
    return datetime.now(UTC)


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def node_is_ready(node: Mapping[str, Any] | None) -> bool:
    if not node:
        return False
    for cond in (node.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _forbidden(res: Resource, name: str, why: str) -> ApiError:
    return ApiError(403, "Forbidden", f'{res.plural} "{name}" is forbidden: {why}',
                    {"name": name, "kind": res.plural})


def _internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", message)


def _expired_status(message: str) -> dict[str, Any]:
    return ApiError(410, "Expired", message).status()


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if not isinstance(meta, dict):
        raise apierrors.bad_request("metadata must be an object")
    return meta


def _spec_part(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Everything a change to which bumps metadata.generation."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("resourceVersion", None)
    meta.pop("managedFields", None)
    out["metadata"] = meta
    return out


def _qos_class(pod: Mapping[str, Any]) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    resources = [c.get("resources") or {} for c in containers if isinstance(c, dict)]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        limits = r.get("limits") or {}
        requests = r.get("requests") or limits  # requests default to limits
        if not all(limits.get(k) and limits.get(k) == requests.get(k)
                   for k in ("cpu", "memory")):
            return "Burstable"
    return "Guaranteed"


class _Filter:
    """Namespace + label selector + field selector, as one predicate on stored objects."""

    def __init__(self, res: Resource, namespace: str | None, label_selector: str,
                 field_selector: str) -> None:
        try:
            self.labels = LabelSelector.parse(label_selector or "")
            self.fields = FieldSelector.parse(field_selector or "", res.field_selectors)
        except SelectorError as e:
            raise apierrors.bad_request(str(e)) from None
        self.namespace = namespace or None

    def __call__(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels") or {}) and self.fields.matches(obj)


# ---------------------------------------------------------------------- watch stream

class WatchStream:
    """An async iterator of watch events (`{"type":..., "object":...}`).

    It subscribes to the store and takes its snapshot (or change-log replay) on the first
    `__anext__`, with no await in between, so no write can fall in a gap. `__anext__` is
    cancel-safe (it can be wrapped in `asyncio.wait_for`), and the stream ends when the
    store closes the subscription (the watcher fell too far behind: re-list).
    """

    def __init__(self, store: Store, res: Resource, flt: _Filter,
                 resource_version: int | None) -> None:
        self._store = store
        self._res = res
        self._filter = flt
        self._from_rv = resource_version
        self._sub: st.Subscription | None = None
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._done = False
        self.last_rv = 0  # the newest rv this stream has seen (for BOOKMARK events)

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._sub is None and not self._done:
            self._start()
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._done or self._sub is None:
                raise StopAsyncIteration
            change = await self._sub.get()
            if change is None:
                self._done = True
                continue
            self._accept(change)

    @property
    def idle(self) -> bool:
        """No event is buffered: everything up to the store's rv has been delivered."""
        return not self._pending and (self._sub is None or len(self._sub) == 0)

    def _start(self) -> None:
        self._sub = self._store.subscribe(self._res)
        if self._from_rv is None:
            items, rv = self._store.list(self._res, self._filter.namespace, self._filter)
            self._pending.extend({"type": st.ADDED, "object": o} for o in items)
            self.last_rv = rv
            return
        try:
            changes = self._store.changes_since(self._res, self._from_rv)
        except st.Expired as e:
            self._pending.append({"type": "ERROR", "object": _expired_status(str(e))})
            self.close()
            return
        self.last_rv = self._from_rv
        for change in changes:
            self._accept(change)

    def _accept(self, change: st.Change) -> None:
        if change.rv <= self.last_rv:
            return  # already delivered by the snapshot or the replay
        self.last_rv = change.rv
        # Shared decodings: events are only serialized downstream, never mutated.
        obj = cast(dict[str, Any], change.shared_object())
        now = self._filter(obj)
        if change.type == st.MODIFIED:
            prev = change.shared_previous()
            was = self._filter(prev) if prev is not None else now
            if was and not now:
                self._pending.append({"type": st.DELETED, "object": obj})
            elif now and not was:
                self._pending.append({"type": st.ADDED, "object": obj})
            elif now:
                self._pending.append({"type": st.MODIFIED, "object": obj})
        elif now:
            self._pending.append({"type": change.type, "object": obj})

    def close(self) -> None:
        self._done = True
        if self._sub is not None:
            self._sub.close()

    async def aclose(self) -> None:
        self.close()


# ---------------------------------------------------------------------- the API


_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def _acknowledged_when_durable(method: _F) -> _F:
    """Return a write's result only once the store has committed it (group commit)."""

    @functools.wraps(method)
    async def wrapper(self: Api, *args: Any, **kwargs: Any) -> Any:
        result = await method(self, *args, **kwargs)
        try:
            await self.store.durable()
        except st.StoreError as e:
            raise _internal(f"storage error: {e}") from e
        return result

    return cast(_F, wrapper)


class Api:
    """See the module docstring. `start()` runs the namespace finalizer and the event
    pruner; `close()` stops them. Also usable as `async with Api(store) as api:`."""

    def __init__(self, store: Store, *, admission: Sequence[Admission] = (),
                 event_ttl_s: float = 3600.0, finalizer_period_s: float = 1.0,
                 event_prune_period_s: float = 60.0) -> None:
        self.store = store
        self._admission: list[Admission] = list(admission)
        self._event_ttl_s = event_ttl_s
        self._finalizer_period_s = finalizer_period_s
        self._event_prune_period_s = event_prune_period_s
        self._tasks: list[asyncio.Task[None]] = []
        self._namespace_kick = asyncio.Event()

    def add_admission(self, a: Admission) -> None:
        self._admission.append(a)

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._run_forever(self._finalize_namespaces,
                                                  self._finalizer_period_s, self._namespace_kick),
                                name="api-namespace-finalizer"),
            asyncio.create_task(self._run_forever(self._prune_events,
                                                  self._event_prune_period_s, None),
                                name="api-event-pruner"),
        ]

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> Api:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def _run_forever(self, step: Callable[[], Any], period_s: float,
                           kick: asyncio.Event | None) -> None:
        """Run `step` every period (or as soon as `kick` is set); a failing step is logged
        and retried next period, so one bad object cannot stop the loop."""
        while True:
            if kick is None:
                await asyncio.sleep(period_s)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(kick.wait(), period_s)
                kick.clear()
            try:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
            except (ApiError, st.StoreError) as e:
                log.error("api.maintenance_failed", step=getattr(step, "__name__", "?"),
                          error=str(e))
            except Exception:  # a bug must not stop namespace cleanup for good: log, retry
                log.exception("api.maintenance_crashed", step=getattr(step, "__name__", "?"))

    def bootstrap(self) -> None:
        """Make sure the system namespaces exist (idempotent)."""
        for name in SYSTEM_NAMESPACES:
            if self.store.peek(NAMESPACES, None, name) is not None:
                continue
            obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": name,
                                                "labels": {"kubernetes.io/metadata.name": name}}}
            self._stamp_new(NAMESPACES, obj)
            self._store_write(self.store.create, NAMESPACES, obj)
            log.info("api.namespace_bootstrapped", namespace=name)

    # -------------------------------------------------------------- reads

    @staticmethod
    def resource(res: Resource | str) -> Resource:
        """A Resource, also from its plural ("pods") or kind ("Pod")."""
        if isinstance(res, Resource):
            return res
        for r in RESOURCES:
            if res in (r.plural, r.kind, f"{r.plural}.{r.group}"):
                return r
        raise apierrors.ApiError(404, "NotFound", f'the server doesn\'t have a resource type '
                                 f'"{res}"')

    def get(self, res: Resource | str, namespace: str | None, name: str) -> dict[str, Any]:
        r = self.resource(res)
        obj = self.store.get(r, self._ns(r, namespace), name)
        if obj is None:
            raise apierrors.not_found(r.plural, name, r.group)
        return obj

    def list(self, res: Resource | str, namespace: str | None = None, *,
             label_selector: str = "", field_selector: str = "") -> dict[str, Any]:
        r = self.resource(res)
        flt = _Filter(r, namespace if r.namespaced else None, label_selector, field_selector)
        items, rv = self.store.list(r, flt.namespace, flt)
        return {"kind": r.list_kind, "apiVersion": r.api_version,
                "metadata": {"resourceVersion": str(rv)}, "items": items}

    def watch(self, res: Resource | str, namespace: str | None, *,
              resource_version: str | None, label_selector: str = "",
              field_selector: str = "") -> WatchStream:
        """Events for `res` (see the module docstring). Bad selectors or a malformed
        resourceVersion raise ApiError 400 here, before any event is produced."""
        r = self.resource(res)
        flt = _Filter(r, namespace if r.namespaced else None, label_selector, field_selector)
        start: int | None = None
        if resource_version not in (None, "", "0"):
            try:
                start = int(str(resource_version))
            except ValueError:
                raise apierrors.bad_request(
                    f'invalid resource version "{resource_version}"') from None
            if start < 0:
                raise apierrors.bad_request(f'invalid resource version "{resource_version}"')
        return WatchStream(self.store, r, flt, start)

    # -------------------------------------------------------------- create

    @_acknowledged_when_durable
    async def create(self, res: Resource | str, namespace: str | None, obj: dict[str, Any], *,
                     field_validation: str = "Strict", dry_run: bool = False,
                     ) -> tuple[dict[str, Any], builtins.list[str]]:
        r = self.resource(res)
        return self._create(r, namespace, copy.deepcopy(obj), field_validation, dry_run)

    def _create(self, r: Resource, namespace: str | None, obj: dict[str, Any],
                field_validation: str, dry_run: bool) -> tuple[dict[str, Any], builtins.list[str]]:
        self._check_type(r, obj)
        meta = _meta(obj)
        ns = self._body_namespace(r, namespace, meta)
        if not meta.get("name") and isinstance(meta.get("generateName"), str):
            meta["name"] = self._generate_name(r, ns, meta["generateName"])
        name = str(meta.get("name") or "")
        if r.namespaced:
            self._require_open_namespace(r, ns, name)
        obj, warnings = self._validate(r, obj, None, field_validation)
        self._stamp_new(r, obj)
        self._admit("CREATE", r, obj, None)
        if self.store.peek(r, ns, name) is not None:
            raise apierrors.already_exists(r.plural, name)
        if dry_run:
            return obj, warnings
        created = self._store_write(self.store.create, r, obj)
        log.debug("api.created", resource=r.plural, namespace=ns, name=name,
                  rv=created["metadata"]["resourceVersion"])
        if r is NAMESPACES:
            self._namespace_kick.set()
        return created, warnings

    def _generate_name(self, r: Resource, ns: str, prefix: str) -> str:
        for _ in range(16):
            name = prefix + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
            if self.store.peek(r, ns, name) is None:
                return name
        # Kubernetes answers a generated-name clash with a retryable 409 as well.
        raise ApiError(409, "AlreadyExists",
                       f"could not generate a unique name from {prefix!r}; try again")

    def _stamp_new(self, r: Resource, obj: dict[str, Any]) -> None:
        """Server-owned fields of a new object."""
        meta = _meta(obj)
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion",
                    "managedFields"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339(now_utc())
        meta["generation"] = 1
        if r is PODS:
            # Like kube-apiserver: a new pod's status is the server's, not the client's.
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj)}
        elif r is NAMESPACES:
            obj["status"] = {"phase": "Active"}
            spec = obj.setdefault("spec", {})
            if isinstance(spec, dict):
                spec.setdefault("finalizers", ["kubernetes"])
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name")

    # -------------------------------------------------------------- update / patch

    @_acknowledged_when_durable
    async def update(self, res: Resource | str, namespace: str | None, name: str,
                     obj: dict[str, Any], *, subresource: str | None = None,
                     field_validation: str = "Strict", dry_run: bool = False,
                     ) -> tuple[dict[str, Any], builtins.list[str]]:
        r = self.resource(res)
        obj = copy.deepcopy(obj)
        self._check_type(r, obj)
        meta = _meta(obj)
        ns = self._body_namespace(r, namespace, meta)
        if meta.get("name") and meta["name"] != name:
            raise apierrors.bad_request(f"the name of the object ({meta['name']}) does not "
                                        f"match the name on the URL ({name})")
        meta["name"] = name
        return self._update(r, ns, name, obj, subresource, field_validation, dry_run)

    @_acknowledged_when_durable
    async def patch(self, res: Resource | str, namespace: str | None, name: str, body: bytes,
                    content_type: str, *, subresource: str | None = None,
                    field_validation: str = "Strict", dry_run: bool = False,
                    field_manager: str = "") -> tuple[dict[str, Any], builtins.list[str], bool]:
        r = self.resource(res)
        ns = self._ns(r, namespace)
        ctype = content_type.split(";", 1)[0].strip().lower()
        if ctype not in PATCH_TYPES:
            raise apierrors.unsupported_media_type(content_type)
        doc = _parse_patch(body, ctype)
        old = self.store.get(r, ns, name)
        if old is None:
            if ctype != APPLY_PATCH or subresource is not None:
                raise apierrors.not_found(r.plural, name, r.group)
            return (*self._apply_create(r, ns, name, doc, field_validation, dry_run), True)
        try:
            patched = _apply(ctype, old, doc, r.kind)
        except PatchError as e:  # well-formed, but cannot be applied to this object
            raise ApiError(422, "Invalid", f'{r.kind} "{name}" is invalid: {e}',
                           {"name": name, "kind": r.kind}) from None
        if not isinstance(patched, dict):
            raise ApiError(422, "Invalid", f'{r.kind} "{name}" is invalid: the patch did not '
                           f"produce an object")
        self._check_type(r, patched)
        meta = _meta(patched)
        if meta.get("name") != name or (r.namespaced and meta.get("namespace") != ns):
            raise apierrors.bad_request("a patch may not change metadata.name or "
                                        "metadata.namespace")
        obj, warnings = self._update(r, ns, name, patched, subresource, field_validation,
                                     dry_run)
        log.debug("api.patched", resource=r.plural, namespace=ns, name=name, patch=ctype,
                  field_manager=field_manager)
        return obj, warnings, False

    def _apply_create(self, r: Resource, ns: str, name: str, doc: Any, field_validation: str,
                      dry_run: bool) -> tuple[dict[str, Any], builtins.list[str]]:
        """Server-side apply of an object that does not exist yet: a create."""
        try:
            obj = apply_patch(None, doc, r.kind)
        except PatchError as e:
            raise apierrors.bad_request(str(e)) from None
        if not isinstance(obj, dict):
            raise apierrors.bad_request("an apply patch must be an object")
        meta = _meta(obj)
        if meta.get("name") not in (None, "", name):
            raise apierrors.bad_request(f"the name of the object ({meta['name']}) does not "
                                        f"match the name on the URL ({name})")
        meta["name"] = name
        return self._create(r, ns or None, obj, field_validation, dry_run)

    def _update(self, r: Resource, ns: str, name: str, obj: dict[str, Any],
                subresource: str | None, field_validation: str, dry_run: bool,
                ) -> tuple[dict[str, Any], builtins.list[str]]:
        if subresource not in (None, "status") or (
                subresource == "status" and "status" not in r.subresources):
            raise apierrors.not_found(f"{r.plural}/{subresource}", name, r.group)
        old = self.store.get(r, ns, name)
        if old is None:
            raise apierrors.not_found(r.plural, name, r.group)
        wanted_rv = _meta(obj).get("resourceVersion")
        if wanted_rv and str(wanted_rv) != old["metadata"].get("resourceVersion"):
            raise apierrors.conflict(r.plural, name, "the object has been modified; please "
                                     "apply your changes to the latest version and try again")
        new = self._merge_server_fields(r, old, obj, subresource)
        new, warnings = self._validate(r, new, old, field_validation)
        self._admit("UPDATE", r, new, old)
        if _comparable(new) == _comparable(old):
            return old, warnings  # a no-op: no write, no rv bump, no watch event
        if _spec_part(new) != _spec_part(old):
            new["metadata"]["generation"] = int(old["metadata"].get("generation") or 1) + 1
        if dry_run:
            return new, warnings
        updated = self._store_write(
            self.store.update, r, new, old["metadata"].get("resourceVersion"))
        log.debug("api.updated", resource=r.plural, namespace=ns, name=name,
                  subresource=subresource, rv=updated["metadata"]["resourceVersion"])
        return updated, warnings

    @staticmethod
    def _merge_server_fields(r: Resource, old: dict[str, Any], obj: dict[str, Any],
                             subresource: str | None) -> dict[str, Any]:
        """The object to store: the client's, with the server's metadata, and with `.status`
        (main resource) or everything but `.status` (status subresource) from `old`."""
        if subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = copy.deepcopy(obj.get("status") or {})
            # Labels and annotations may change through status too (as in Kubernetes), but a
            # status body that omits them keeps them: status writers rarely send metadata.
            for key in ("labels", "annotations"):
                if key in obj.get("metadata", {}):
                    new["metadata"][key] = copy.deepcopy(obj["metadata"][key])
            return new
        new = obj
        meta = _meta(new)
        for key in _SERVER_META:
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
            else:
                meta.pop(key, None)
        if "status" in r.subresources:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        return new

    # -------------------------------------------------------------- binding

    @_acknowledged_when_durable
    async def bind(self, namespace: str, name: str, node_name: str, *,
                   uid: str | None = None, dry_run: bool = False) -> dict[str, Any]:
        """The `pods/binding` subresource: set spec.nodeName once (409 if already bound)."""
        if not node_name:
            raise ApiError(422, "Invalid", f'Binding "{name}" is invalid: target.name: '
                           "Required value")
        pod = self.store.get(PODS, namespace, name)
        if pod is None:
            raise apierrors.not_found(PODS.plural, name)
        self._check_uid(PODS, pod, uid)
        spec = pod.setdefault("spec", {})
        if spec.get("nodeName"):
            raise apierrors.conflict("pods/binding", name, f"pod {name} is already assigned "
                                     f'to node "{spec["nodeName"]}"')
        if pod["metadata"].get("deletionTimestamp"):
            raise apierrors.conflict("pods/binding", name,
                                     f"pod {name} is being deleted, cannot be assigned to a host")
        old = copy.deepcopy(pod)
        spec["nodeName"] = node_name
        _set_condition(pod, {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                             "lastTransitionTime": rfc3339(now_utc())})
        self._admit("UPDATE", PODS, pod, old)
        if dry_run:
            return pod
        bound = self._store_write(
            self.store.update, PODS, pod, old["metadata"].get("resourceVersion"))
        log.debug("api.bound", namespace=namespace, pod=name, node=node_name)
        return bound

    # -------------------------------------------------------------- scale

    def get_scale(self, res: Resource | str, namespace: str | None,
                  name: str) -> dict[str, Any]:
        """The `scale` subresource: an autoscaling/v1 Scale view of a workload's replicas."""
        r = self._scalable(res)
        return _scale_of(self.get(r, namespace, name))

    @_acknowledged_when_durable
    async def update_scale(self, res: Resource | str, namespace: str | None, name: str,
                           scale: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        return self._set_scale(self._scalable(res), namespace, name, scale, dry_run)

    @_acknowledged_when_durable
    async def patch_scale(self, res: Resource | str, namespace: str | None, name: str,
                          body: bytes, content_type: str, *,
                          dry_run: bool = False) -> dict[str, Any]:
        """`kubectl scale` sends a merge patch `{"spec":{"replicas":N}}` here."""
        r = self._scalable(res)
        ctype = content_type.split(";", 1)[0].strip().lower()
        if ctype not in PATCH_TYPES or ctype == APPLY_PATCH:
            raise apierrors.unsupported_media_type(content_type)
        current = _scale_of(self.get(r, namespace, name))
        try:
            patched = _apply(ctype, current, _parse_patch(body, ctype), "Scale")
        except PatchError as e:
            raise ApiError(422, "Invalid", f'Scale "{name}" is invalid: {e}',
                           {"name": name, "kind": "Scale"}) from None
        if not isinstance(patched, dict):
            raise apierrors.bad_request("the patch did not produce a Scale object")
        return self._set_scale(r, namespace, name, patched, dry_run)

    def _scalable(self, res: Resource | str) -> Resource:
        r = self.resource(res)
        if "scale" not in r.subresources:
            raise apierrors.not_found(f"{r.plural}/scale", "", r.group)
        return r

    def _set_scale(self, r: Resource, namespace: str | None, name: str, scale: Any,
                   dry_run: bool) -> dict[str, Any]:
        if not isinstance(scale, dict):
            raise apierrors.bad_request("the body must be a Scale object")
        replicas = (scale.get("spec") or {}).get("replicas") if isinstance(
            scale.get("spec"), dict) else None
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise apierrors.invalid("Scale", name, [apierrors.FieldError(
                "spec.replicas", "Invalid value", "must be greater than or equal to 0",
                replicas)])
        ns = self._ns(r, namespace)
        obj = self.get(r, ns, name)
        wanted_rv = (scale.get("metadata") or {}).get("resourceVersion") if isinstance(
            scale.get("metadata"), dict) else None
        if wanted_rv:
            obj["metadata"]["resourceVersion"] = str(wanted_rv)
        obj.setdefault("spec", {})["replicas"] = replicas
        updated, _ = self._update(r, ns, name, obj, None, "Ignore", dry_run)
        log.debug("api.scaled", resource=r.plural, namespace=ns, name=name, replicas=replicas)
        return _scale_of(updated)

    # -------------------------------------------------------------- delete

    @_acknowledged_when_durable
    async def delete(self, res: Resource | str, namespace: str | None, name: str, *,
                     grace_period_seconds: int | None = None, uid: str | None = None,
                     dry_run: bool = False, propagation: str | None = None) -> dict[str, Any]:
        """`propagation` is DeleteOptions.propagationPolicy: "Orphan" leaves the dependents
        (their ownerReferences to this object are removed first, as Kubernetes' garbage
        collector does); "Background" (the default) and "Foreground" let the garbage
        collector delete them after the owner is gone."""
        r = self.resource(res)
        ns = self._ns(r, namespace)
        obj = self.store.get(r, ns, name)
        if obj is None:
            raise apierrors.not_found(r.plural, name, r.group)
        self._check_uid(r, obj, uid)
        if grace_period_seconds is not None and grace_period_seconds < 0:
            raise apierrors.bad_request("gracePeriodSeconds must be >= 0")
        if propagation not in (None, "Orphan", "Background", "Foreground"):
            raise ApiError(422, "Invalid", f'propagationPolicy: Unsupported value: '
                           f'"{propagation}": supported values: "Foreground", "Background", '
                           '"Orphan"')
        if propagation == "Orphan" and not dry_run and r is not NAMESPACES:
            self._orphan_dependents(str(obj["metadata"].get("uid")), ns)
        if r is NAMESPACES:
            return self._delete_namespace(obj, dry_run)
        if r is PODS:
            grace = self._pod_grace(obj, grace_period_seconds)
            if grace > 0:
                return self._terminate_pod(obj, grace, dry_run)
        self._admit("DELETE", r, obj, obj)
        if dry_run:
            return obj
        gone = self._store_write(self.store.delete, r, ns, name)
        log.debug("api.deleted", resource=r.plural, namespace=ns, name=name)
        return gone

    def _orphan_dependents(self, owner_uid: str, ns: str) -> None:
        def owned(obj: Mapping[str, Any]) -> bool:
            refs = (obj.get("metadata") or {}).get("ownerReferences") or []
            return any(isinstance(ref, dict) and ref.get("uid") == owner_uid for ref in refs)

        for r in RESOURCES:
            if r.namespaced and not ns:
                continue
            for dep in self.store.list(r, ns if r.namespaced else None, owned)[0]:
                refs = dep["metadata"].get("ownerReferences") or []
                kept = [ref for ref in refs
                        if not (isinstance(ref, dict) and ref.get("uid") == owner_uid)]
                if len(kept) == len(refs):
                    continue
                rv = dep["metadata"].get("resourceVersion")
                if kept:
                    dep["metadata"]["ownerReferences"] = kept
                else:
                    dep["metadata"].pop("ownerReferences", None)
                self._store_write(self.store.update, r, dep, rv)
                log.debug("api.orphaned", resource=r.plural, namespace=ns,
                          name=dep["metadata"].get("name"), owner_uid=owner_uid)

    def _pod_grace(self, pod: Mapping[str, Any], requested: int | None) -> int:
        """Seconds of graceful termination; 0 when no running agent would act on it."""
        spec = pod.get("spec") or {}
        node_name = spec.get("nodeName")
        if not node_name or not node_is_ready(self.store.peek(NODES, None, str(node_name))):
            return 0
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return 0
        if requested is not None:
            return requested
        grace = spec.get("terminationGracePeriodSeconds")
        return int(grace) if isinstance(grace, int) and grace >= 0 else DEFAULT_GRACE_S

    def _terminate_pod(self, pod: dict[str, Any], grace: int, dry_run: bool) -> dict[str, Any]:
        meta = pod["metadata"]
        deadline = now_utc() + timedelta(seconds=grace)
        current = parse_time(meta.get("deletionTimestamp"))
        if current is not None and current <= deadline:
            return pod  # already terminating at least this soon
        old = copy.deepcopy(pod)
        meta["deletionTimestamp"] = rfc3339(deadline)
        meta["deletionGracePeriodSeconds"] = grace
        self._admit("DELETE", PODS, pod, old)
        if dry_run:
            return pod
        updated = self._store_write(
            self.store.update, PODS, pod, old["metadata"].get("resourceVersion"))
        log.debug("api.pod_terminating", namespace=meta.get("namespace"), name=meta.get("name"),
                  grace_s=grace)
        return updated

    def _delete_namespace(self, ns_obj: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        name = ns_obj["metadata"]["name"]
        if name in PROTECTED_NAMESPACES:
            raise _forbidden(NAMESPACES, name, "this namespace may not be deleted")
        if ns_obj["metadata"].get("deletionTimestamp"):
            return ns_obj
        old = copy.deepcopy(ns_obj)
        ns_obj["metadata"]["deletionTimestamp"] = rfc3339(now_utc())
        ns_obj["metadata"]["deletionGracePeriodSeconds"] = 0
        ns_obj.setdefault("status", {})["phase"] = "Terminating"
        self._admit("DELETE", NAMESPACES, ns_obj, old)
        if dry_run:
            return ns_obj
        updated = self._store_write(
            self.store.update, NAMESPACES, ns_obj, old["metadata"]["resourceVersion"])
        log.info("api.namespace_terminating", namespace=name)
        self._namespace_kick.set()
        return updated

    # -------------------------------------------------------------- maintenance

    async def _finalize_namespaces(self) -> None:
        """Drain terminating namespaces; remove each once it holds no objects."""
        terminating = [o["metadata"]["name"] for o in self.store.list(NAMESPACES)[0]
                       if o["metadata"].get("deletionTimestamp")]
        for ns in terminating:
            remaining = 0
            for r in RESOURCES:
                if not r.namespaced:
                    continue
                for obj in self.store.list(r, ns)[0]:
                    remaining += 1
                    await self._drain_one(r, ns, obj)
            if remaining == 0 and self.store.peek(NAMESPACES, None, ns) is not None:
                self._store_write(self.store.delete, NAMESPACES, None, ns)
                log.info("api.namespace_removed", namespace=ns)

    async def _drain_one(self, r: Resource, ns: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        # A terminating pod is left to its agent, unless no live agent can finish it.
        if obj["metadata"].get("deletionTimestamp") and self._pod_grace(obj, None) > 0:
            return
        try:
            await self.delete(r, ns, name)
        except ApiError as e:
            if e.code != 404:
                log.warning("api.namespace_drain_failed", namespace=ns, resource=r.plural,
                            name=name, error=str(e))

    def _prune_events(self) -> None:
        cutoff = now_utc() - timedelta(seconds=self._event_ttl_s)
        for ev in self.store.list(EVENTS)[0]:
            when = (parse_time(ev.get("lastTimestamp")) or parse_time(ev.get("eventTime"))
                    or parse_time(ev["metadata"].get("creationTimestamp")))
            if when is not None and when < cutoff:
                meta = ev["metadata"]
                self._store_write(self.store.delete, EVENTS, meta.get("namespace"), meta["name"])

    # -------------------------------------------------------------- shared checks

    @staticmethod
    def _ns(r: Resource, namespace: str | None) -> str:
        if not r.namespaced:
            return ""
        if not namespace:
            raise apierrors.bad_request(f"{r.plural} are namespaced: a namespace is required")
        return namespace

    @staticmethod
    def _body_namespace(r: Resource, namespace: str | None, meta: dict[str, Any]) -> str:
        """The namespace a written object lives in; the body may repeat the URL's, never
        contradict it (like Kubernetes)."""
        if not r.namespaced:
            meta.pop("namespace", None)
            return ""
        body_ns = meta.get("namespace")
        if namespace and body_ns and body_ns != namespace:
            raise apierrors.bad_request("the namespace of the provided object does not match "
                                        "the namespace sent on the request")
        ns = namespace or body_ns or "default"
        meta["namespace"] = ns
        return str(ns)

    @staticmethod
    def _check_type(r: Resource, obj: dict[str, Any]) -> None:
        if not isinstance(obj, dict):
            raise apierrors.bad_request(f"the body must be a {r.kind} object")
        api_version = obj.setdefault("apiVersion", r.api_version)
        kind = obj.setdefault("kind", r.kind)
        if api_version != r.api_version:
            raise apierrors.bad_request(f"the API version in the data ({api_version}) does not "
                                        f"match the expected API version ({r.api_version})")
        if kind != r.kind:
            raise apierrors.bad_request(f"the kind in the data ({kind}) does not match the "
                                        f"expected kind ({r.kind}) for {r.plural}")

    def _require_open_namespace(self, r: Resource, ns: str, name: str) -> None:
        ns_obj = self.store.peek(NAMESPACES, None, ns)
        if ns_obj is None:
            raise apierrors.not_found("namespaces", ns)
        if (ns_obj.get("metadata") or {}).get("deletionTimestamp"):
            raise _forbidden(r, name, f"unable to create new content in namespace {ns} "
                             "because it is being terminated")

    @staticmethod
    def _check_uid(r: Resource, obj: Mapping[str, Any], uid: str | None) -> None:
        actual = (obj.get("metadata") or {}).get("uid")
        if uid and uid != actual:
            raise apierrors.conflict(r.plural, str(obj["metadata"].get("name")),
                                     f"Precondition failed: UID in precondition: {uid}, "
                                     f"UID in object meta: {actual}")

    @staticmethod
    def _validate(r: Resource, obj: dict[str, Any], old: dict[str, Any] | None,
                  field_validation: str) -> tuple[dict[str, Any], builtins.list[str]]:
        if field_validation not in FIELD_VALIDATION:
            raise apierrors.bad_request(f'fieldValidation "{field_validation}" is not one of '
                                        + ", ".join(FIELD_VALIDATION))
        # Strict unknown fields are among result.errors: answered as a 422 that names each
        # field's path with the rest of the object's errors (the real API server stops at a
        # 400 "strict decoding error" first; one answer with every problem teaches better).
        result = validate(r.kind, obj, old=old, field_validation=field_validation)
        if result.errors:
            name = str((obj.get("metadata") or {}).get("name") or "")
            raise apierrors.invalid(r.kind, name, result.errors)
        return result.obj, list(result.warnings)

    def _admit(self, op: str, r: Resource, obj: dict[str, Any],
               old: dict[str, Any] | None) -> None:
        for hook in self._admission:
            hook.admit(op, r, obj, old)

    @staticmethod
    def _store_write(write: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        try:
            return write(*args)
        except st.StoreError as e:
            raise _internal(f"storage error: {e}") from e
        except st.ObjectExists as e:
            raise ApiError(409, "AlreadyExists", f"already exists: {e}") from e
        except st.ObjectNotFound as e:
            raise ApiError(404, "NotFound", f"not found: {e}") from e
        except st.VersionConflict as e:
            raise ApiError(409, "Conflict", f"the object has been modified: {e}") from e


def _scale_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    try:
        selector = str(LabelSelector.from_spec(spec.get("selector") or {}))
    except SelectorError:
        selector = ""
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": spec.get("replicas", 1)},
            "status": {"replicas": status.get("replicas", 0), "selector": selector}}


def _set_condition(obj: dict[str, Any], cond: dict[str, Any]) -> None:
    status = obj.setdefault("status", {})
    conds = [c for c in status.get("conditions") or [] if c.get("type") != cond["type"]]
    status["conditions"] = [*conds, cond]


def _parse_patch(body: bytes, ctype: str) -> Any:
    try:
        if ctype == APPLY_PATCH:
            return yaml.safe_load(body.decode("utf-8"))
        return json.loads(body)
    except RecursionError:
        raise apierrors.bad_request("error decoding patch: nested too deeply") from None
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise apierrors.bad_request(f"error decoding patch: {e}") from None


def _apply(ctype: str, old: dict[str, Any], doc: Any, kind: str) -> Any:
    if ctype == MERGE_PATCH:
        return json_merge_patch(old, doc)
    if ctype == STRATEGIC_PATCH:
        return strategic_merge_patch(old, doc, kind)
    if ctype == JSON_PATCH:
        return json_patch(old, doc)
    return apply_patch(old, doc, kind)

