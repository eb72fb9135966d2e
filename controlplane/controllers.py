"""Control plane loops: the scheduler and the node lifecycle controller.

Both are in-process clients of `Api` (the same code path as HTTP requests: validation,
admission, durability, watch events). Each is one named task owned by `Controllers`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import structlog

from controlplane import events
from controlplane.api import Api
from controlplane.scheduling import choose_node, node_ready
from podnet.apierrors import ApiError
from podnet.resources import BY_KIND

log = structlog.get_logger()
PODS, NODES = BY_KIND["Pod"], BY_KIND["Node"]


class Scheduler:
    """Binds unscheduled pods to nodes whenever pods or nodes change.

    It listens to the store's own change feed (in process: no copies, no JSON), and a pass
    reads the stored objects without copying them, so a pass over 1,000 pods costs well under
    a millisecond plus one write per binding. A periodic pass backs up the feed.
    """

    RESYNC_S = 5.0

    def __init__(self, api: Api) -> None:
        self.api = api
        self.kick = asyncio.Event()
        self._unschedulable: dict[str, str] = {}  # pod uid -> last reason reported
        self.log = log.bind(component="scheduler")

    async def _follow(self, res: Any) -> None:
        """Kick on every change to `res`; re-subscribe if the feed is ever cut off."""
        while True:
            sub = self.api.store.subscribe(res)
            try:
                while await sub.get() is not None:
                    self.kick.set()
            finally:
                sub.close()
            self.log.info("scheduler.feed_restarted", resource=res.plural)
            self.kick.set()  # we may have missed changes: look at everything again

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.RESYNC_S)
            self.kick.set()

    async def run(self) -> None:
        helpers = [asyncio.create_task(self._follow(PODS), name="scheduler-feed-pods"),
                   asyncio.create_task(self._follow(NODES), name="scheduler-feed-nodes"),
                   asyncio.create_task(self._resync(), name="scheduler-resync")]
        self.kick.set()
        try:
            while True:
                await self.kick.wait()
                self.kick.clear()
                await asyncio.sleep(0.005)  # let a burst of creations coalesce into one pass
                self.kick.clear()
                try:
                    await self.schedule_pending()
                except Exception:  # a bad object must not stop scheduling for everyone
                    self.log.exception("scheduler.pass_failed")
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def schedule_pending(self) -> None:
        store = self.api.store
        pods = store.scan(PODS)
        pending = [p for p in pods if not (p.get("spec") or {}).get("nodeName")
                   and not p["metadata"].get("deletionTimestamp")]
        if not pending:
            self._unschedulable.clear()
            return
        nodes = store.scan(NODES)
        load = Counter(p["spec"].get("nodeName") for p in pods
                       if (p.get("spec") or {}).get("nodeName")
                       and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))
        waiting = {p["metadata"]["uid"] for p in pending}
        for uid in list(self._unschedulable):
            if uid not in waiting:
                del self._unschedulable[uid]
        # Decide for every pending pod first (oldest first), then bind them all at once:
        # concurrent binds share the store's group commits instead of one fsync each.
        binds = []
        for pod in sorted(pending, key=lambda p: str(p["metadata"].get("creationTimestamp"))):
            decision = choose_node(pod, nodes, load)
            if decision.node is None:
                await self._report_unschedulable(dict(pod), decision.reason)
                continue
            load[decision.node] += 1
            binds.append(self._bind(dict(pod), decision.node))
        await asyncio.gather(*binds)

    async def _bind(self, pod: dict[str, Any], node: str) -> None:
        meta = pod["metadata"]
        try:
            await self.api.bind(meta["namespace"], meta["name"], node, uid=meta["uid"])
        except ApiError as e:
            self.log.info("scheduler.bind_failed", pod=meta["name"], error=str(e))
            self.kick.set()  # try again on the next pass, with fresh state
            return
        self._unschedulable.pop(meta["uid"], None)
        self.log.info("scheduler.bound", pod=meta["name"], namespace=meta["namespace"],
                      node=node)
        await events.record(self.api, pod, "Normal", "Scheduled",
                            f"Successfully assigned {meta['namespace']}/{meta['name']} "
                            f"to {node}", "default-scheduler")

    async def _report_unschedulable(self, pod: dict[str, Any], reason: str) -> None:
        meta = pod["metadata"]
        if self._unschedulable.get(meta["uid"]) == reason:
            return
        self._unschedulable[meta["uid"]] = reason
        self.log.info("scheduler.unschedulable", pod=meta["name"], reason=reason)
        status = {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": reason, "lastProbeTime": None,
            "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]}
        try:
            await self.api.patch(PODS, meta["namespace"], meta["name"],
                                 _json({"status": status}), "application/merge-patch+json",
                                 subresource="status")
        except ApiError as e:
            self.log.debug("scheduler.status_failed", error=str(e))
        await events.record(self.api, pod, "Warning", "FailedScheduling", reason,
                            "default-scheduler")


class NodeLifecycle:
    """Marks nodes NotReady when their agent stops heartbeating (and their pods not Ready).

    Silence is measured on this process's monotonic clock from the last time a node's
    `lastHeartbeatTime` changed, so clock skew between machines cannot fake liveness.
    """

    def __init__(self, api: Api, grace_s: float, period_s: float) -> None:
        self.api = api
        self.grace_s = grace_s
        self.period_s = period_s
        self.seen: dict[str, tuple[str, float]] = {}  # node -> (heartbeat stamp, when seen)
        self.log = log.bind(component="node-lifecycle")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            try:
                await self.check(time.monotonic())
            except Exception:  # keep watching the other nodes
                self.log.exception("node_lifecycle.check_failed")

    async def check(self, now: float) -> None:
        nodes = self.api.list(NODES)["items"]
        present = {n["metadata"]["name"] for n in nodes}
        for name in list(self.seen):
            if name not in present:
                del self.seen[name]
        for node in nodes:
            name = node["metadata"]["name"]
            ready = _ready_condition(node)
            stamp = str((ready or {}).get("lastHeartbeatTime", ""))
            previous = self.seen.get(name)
            if previous is None or previous[0] != stamp:
                self.seen[name] = (stamp, now)
                continue
            if node_ready(node) and now - previous[1] > self.grace_s:
                await self.mark_unknown(node)

    async def mark_unknown(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ready = dict(_ready_condition(node) or {"type": "Ready"})
        ready.update(status="Unknown", reason="NodeStatusUnknown",
                     message="Kubelet stopped posting node status.", lastTransitionTime=stamp)
        conditions = [c for c in node.get("status", {}).get("conditions", [])
                      if c.get("type") != "Ready"] + [ready]
        try:
            await self.api.patch(NODES, None, name, _json({"status": {"conditions": conditions}}),
                                 "application/merge-patch+json", subresource="status")
        except ApiError as e:
            self.log.warning("node.mark_unknown_failed", node=name, error=str(e))
            return
        self.log.warning("node.not_ready", node=name, silent_s=self.grace_s)
        await events.record(self.api, node, "Normal", "NodeNotReady",
                            f"Node {name} status is now: NodeNotReady", "node-controller")
        for pod in self.api.list(PODS, field_selector=f"spec.nodeName={name}")["items"]:
            await self._mark_pod_not_ready(pod, stamp)

    async def _mark_pod_not_ready(self, pod: dict[str, Any], stamp: str) -> None:
        meta = pod["metadata"]
        conditions = [dict(c) for c in (pod.get("status") or {}).get("conditions") or []]
        changed = False
        for cond in conditions:
            if cond.get("type") in ("Ready", "ContainersReady") and cond.get("status") == "True":
                cond.update(status="False", reason="NodeNotReady", lastTransitionTime=stamp)
                changed = True
        if not changed:
            return
        try:
            await self.api.patch(PODS, meta["namespace"], meta["name"],
                                 _json({"status": {"conditions": conditions}}),
                                 "application/merge-patch+json", subresource="status")
        except ApiError as e:
            self.log.debug("pod.mark_not_ready_failed", pod=meta["name"], error=str(e))


def _ready_condition(node: dict[str, Any]) -> dict[str, Any] | None:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return None


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()
