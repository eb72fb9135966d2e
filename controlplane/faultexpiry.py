"""NetworkFault expiry: `spec.duration` becomes `status.expiresAt`, and an expired fault is
deleted (the agents see the deletion through their watch and restore the link exactly).

The clock starts when the spec is written: each new `metadata.generation` (a create, or a
`podnet fault add` / `kubectl apply` that changes the spec) gets `expiresAt` = now + duration,
recorded with the generation it belongs to (`status.observedGeneration`), so re-adding a fault
restarts its clock and a status a client sent along is replaced. A fault with no duration (or
`0s`) gets no `expiresAt` and stays until deleted. Expiry is checked when the control plane
starts too, so a fault that expired while it was down is deleted at once.

`plan()` is the pure decision; `FaultExpiry` is the reconciler that applies it and wakes up
at the next expiry (not only on the periodic resync), so a 30s fault lives 30-31s.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controlplane.api import Api, now_utc, parse_time, rfc3339
from controlplane.reconcile import Reconciler
from podnet.api.fault_rules import DurationError, parse_go_duration
from podnet.apierrors import ApiError
from podnet.resources import BY_KIND

FAULTS = BY_KIND["NetworkFault"]


@dataclass
class Plan:
    """What one pass does: new statuses by fault name, the faults to delete (name, uid), and
    when the earliest remaining expiry falls (None: none pending)."""

    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    expired: list[tuple[str, str]] = field(default_factory=list)
    next_expiry: datetime | None = None


def _duration_s(spec: Any) -> float:
    text = spec.get("duration") if isinstance(spec, dict) else None
    if not isinstance(text, str):
        return 0.0
    try:
        return max(0.0, parse_go_duration(text))
    except DurationError:
        return 0.0  # validation refuses these; an old stored one just never expires


def expires_at(now: datetime, duration_s: float) -> str:
    """RFC 3339 seconds, rounded up: a fault never ends before its duration has passed."""
    when = now + timedelta(seconds=duration_s)
    if when.microsecond:
        when = when.replace(microsecond=0) + timedelta(seconds=1)
    return rfc3339(when)


def plan(faults: list[Mapping[str, Any]], now: datetime) -> Plan:
    out = Plan()
    for fault in faults:
        meta = fault.get("metadata") or {}
        name, uid = str(meta.get("name") or ""), str(meta.get("uid") or "")
        generation = meta.get("generation") or 1
        raw = fault.get("status")
        status: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if status.get("observedGeneration") != generation:
            new: dict[str, Any] = {"observedGeneration": generation}
            seconds = _duration_s(fault.get("spec"))
            if seconds > 0:
                new["expiresAt"] = expires_at(now, seconds)
            out.statuses[name] = new
            when = parse_time(new.get("expiresAt"))
        else:
            when = parse_time(status.get("expiresAt"))
        if when is None:
            continue
        if when <= now:
            out.expired.append((name, uid))
        elif out.next_expiry is None or when < out.next_expiry:
            out.next_expiry = when
    return out


class FaultExpiry(Reconciler):
    name = "faultexpiry"
    watches = (FAULTS,)
    resync_s = 5.0

    def __init__(self, api: Api) -> None:
        super().__init__(api)
        self._timer: asyncio.TimerHandle | None = None

    async def reconcile(self) -> None:
        now = now_utc()
        todo = plan(list(self.store.scan(FAULTS)), now)
        for name, status in todo.statuses.items():
            try:
                current = self.api.get(FAULTS, None, name)
                await self.api.update(FAULTS, None, name, {**current, "status": status},
                                      subresource="status")
            except ApiError as e:   # deleted or changed meanwhile: the next pass sees it
                self.log.info("faultexpiry.status_skipped", fault=name, reason=str(e))
                continue
            self.log.info("faultexpiry.scheduled", fault=name,
                          expires_at=status.get("expiresAt"))
        for name, uid in todo.expired:
            try:
                await self.api.delete(FAULTS, None, name, uid=uid)
            except ApiError as e:   # already deleted, or replaced by a new fault of that name
                self.log.info("faultexpiry.delete_skipped", fault=name, reason=str(e))
                continue
            self.log.info("faultexpiry.expired", fault=name)
        self._wake_at(todo.next_expiry, now)

    def _wake_at(self, when: datetime | None, now: datetime) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is None:
            return
        delay = max(0.0, (when - now).total_seconds())
        if math.isfinite(delay) and delay < self.resync_s:
            self._timer = asyncio.get_running_loop().call_later(delay, self.kick.set)

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            if self._timer is not None:
                self._timer.cancel()
