"""The loop every in-process controller runs: follow the store, coalesce, reconcile.

A controller says which resources it watches and how to reconcile; this loop wakes it on any
change to those (through the store's own in-process change feed: no copies, no JSON), lets a
burst of changes settle for a few milliseconds so it becomes one pass, and also wakes it
periodically, so a change missed for any reason (a feed cut off after falling behind, a
failed write) is repaired within one resync period. A pass that raises is logged and retried
on the next wake-up: one bad object must never stop a controller for everyone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from controlplane.api import Api
from podnet.resources import Resource

log = structlog.get_logger()


class Reconciler:
    """Subclasses set `name` and `watches` and implement `reconcile()`."""

    name = "reconciler"
    watches: Sequence[Resource] = ()
    resync_s = 5.0
    coalesce_s = 0.005

    def __init__(self, api: Api) -> None:
        self.api = api
        self.store = api.store
        self.kick = asyncio.Event()
        self.log = log.bind(component=self.name)

    async def reconcile(self) -> None:
        raise NotImplementedError

    async def _follow(self, res: Resource) -> None:
        while True:
            sub = self.store.subscribe(res)
            try:
                while await sub.get() is not None:
                    self.kick.set()
            finally:
                sub.close()
            # The feed closes when it fell too far behind: changes may have been missed.
            self.log.info(f"{self.name}.feed_restarted", resource=res.plural)
            self.kick.set()

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync_s)
            self.kick.set()

    async def run(self) -> None:
        helpers = [asyncio.create_task(self._follow(res), name=f"{self.name}-feed-{res.plural}")
                   for res in self.watches]
        helpers.append(asyncio.create_task(self._resync(), name=f"{self.name}-resync"))
        self.kick.set()
        try:
            while True:
                await self.kick.wait()
                self.kick.clear()
                await asyncio.sleep(self.coalesce_s)
                self.kick.clear()
                try:
                    await self.reconcile()
                except Exception:  # logged; the next change or resync tries again
                    self.log.exception(f"{self.name}.pass_failed")
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
