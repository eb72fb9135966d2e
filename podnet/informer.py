"""List-then-watch of one resource, kept as a local cache: what client-go's informers do.

An agent follows several resources this way (its pods, every Node, later Services and
EndpointSlices); each is one `Informer`: list, hand the whole list to `on_list`, then watch from
the list's resourceVersion and hand each change to `on_event`. Any break (the control plane
restarting, a 410 Expired, a stream cut) ends in a fresh list after a short back-off, so a
missed event is repaired by the next list, never lost. A handler that raises is logged and the
informer goes on: one bad object must not stop the node from following the rest.

`items` is the cache (by namespace and name) as of the last event handled; `synced` is set once
the first list has been handled, so a caller can wait until it has seen the whole picture.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from podnet.apierrors import ApiError
from podnet.client import ApiClient, ApiUnavailable
from podnet.resources import Resource

log = structlog.get_logger()

ListHandler = Callable[[list[dict[str, Any]]], Awaitable[None]]
EventHandler = Callable[[str, dict[str, Any]], Awaitable[None]]
Key = tuple[str, str]

RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


async def _ignore_list(items: list[dict[str, Any]]) -> None:
    return None


async def _ignore_event(kind: str, obj: dict[str, Any]) -> None:
    return None


class Informer:
    """Follows one resource (optionally one namespace, field and label selector) forever."""

    def __init__(self, api: ApiClient, res: Resource, *, namespace: str | None = None,
                 field_selector: str = "", label_selector: str = "",
                 on_list: ListHandler | None = None,
                 on_event: EventHandler | None = None) -> None:
        self.api = api
        self.res = res
        self.namespace = namespace
        self.field_selector = field_selector
        self.label_selector = label_selector
        self.on_list = on_list or _ignore_list
        self.on_event = on_event or _ignore_event
        self.items: dict[Key, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.log = log.bind(resource=res.plural)

    async def run(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            try:
                await self._list_and_watch()
                delay = RETRY_FIRST_S  # a watch that ended normally: list again at once
                continue
            except (ApiUnavailable, ApiError) as e:
                self.log.warning("informer.watch_failed", error=str(e), retry_s=delay)
            except Exception:  # never let the informer die: the node would go blind
                self.log.exception("informer.crashed", retry_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _list_and_watch(self) -> None:
        listed = await self.api.list(self.res, self.namespace,
                                     field_selector=self.field_selector,
                                     label_selector=self.label_selector)
        items = [i for i in listed.get("items") or [] if isinstance(i, dict)]
        self.items = {key_of(i): i for i in items}
        await self._guard("list", self.on_list(items))
        self.synced.set()
        rv = str((listed.get("metadata") or {}).get("resourceVersion") or "")
        async for event in self.api.watch(self.res, self.namespace, resource_version=rv,
                                          field_selector=self.field_selector,
                                          label_selector=self.label_selector):
            kind, obj = event.get("type"), event.get("object")
            if kind == "ERROR":
                message = obj.get("message") if isinstance(obj, dict) else obj
                self.log.info("informer.watch_expired", status=message)
                return
            if kind not in ("ADDED", "MODIFIED", "DELETED") or not isinstance(obj, dict):
                continue  # BOOKMARK, or something this informer does not understand
            if kind == "DELETED":
                self.items.pop(key_of(obj), None)
            else:
                self.items[key_of(obj)] = obj
            await self._guard(kind, self.on_event(kind, obj))

    async def _guard(self, what: str, handling: Awaitable[None]) -> None:
        try:
            await handling
        except Exception:  # one bad object must not stop the rest from being followed
            self.log.exception("informer.handler_failed", event=what)
