"""ControllerRevisions: every pod template a StatefulSet or DaemonSet has run, kept as an
`apps/v1 ControllerRevision`, as Kubernetes keeps them.

A revision is named `<owner>-<hash of the template>`, labelled with the template's labels and
`controller.kubernetes.io/hash`, owned by its StatefulSet or DaemonSet (so the garbage
collector removes it with its owner) and numbered: the newest template holds the highest
`revision` (going back to an old template renumbers that old revision, as `kubectl rollout
undo` expects). Its `data` is the strategic merge patch that restores the template
(`{"spec": {"template": {..., "$patch": "replace"}}}`), which is what `kubectl rollout undo`
applies and `kubectl rollout history` reads.

The StatefulSet controller also reads the current revision's template back from here: a pod
below the `partition` that is recreated during a staged update gets the old template again.

Revisions beyond `revisionHistoryLimit` that no pod and no status names are deleted, oldest
first.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

from controlplane.workloads import Obj, _d, _int, _Writer, controller_uid, owner_ref
from podnet.apierrors import ApiError
from podnet.resources import BY_KIND

CONTROLLER_REVISIONS = BY_KIND["ControllerRevision"]
HASH_LABEL = "controller.kubernetes.io/hash"


def revision_data(template: Obj) -> dict[str, Any]:
    return {"spec": {"template": {**copy.deepcopy(dict(template)), "$patch": "replace"}}}


def template_of(revision: Obj) -> dict[str, Any]:
    template = dict(_d(_d(_d(revision.get("data")).get("spec")).get("template")))
    template.pop("$patch", None)
    return template


def owned_revisions(writer: _Writer, owner: Obj) -> list[Obj]:
    meta = _d(owner.get("metadata"))
    uid, ns = str(meta.get("uid")), meta.get("namespace")
    return [r for r in writer.store.scan(CONTROLLER_REVISIONS)
            if r["metadata"].get("namespace") == ns and controller_uid(r) == uid]


async def ensure_revision(writer: _Writer, owner: Obj, kind: str, name: str, hash_: str,
                          template: Obj) -> Obj | None:
    """The revision `name` of `owner`'s current `template`, created or renumbered so that it
    is the newest; None if it could not be written (logged; the next pass retries)."""
    meta = _d(owner.get("metadata"))
    ns = str(meta.get("namespace"))
    owned = owned_revisions(writer, owner)
    top = max((_int(r.get("revision")) for r in owned), default=0)
    mine = next((r for r in owned if r["metadata"].get("name") == name), None)
    if mine is not None:
        if _int(mine.get("revision")) < top:
            if not await writer._patch(CONTROLLER_REVISIONS, ns, name, {"revision": top + 1}):
                return None
            return writer.store.peek(CONTROLLER_REVISIONS, ns, name)
        return mine
    taken = writer.store.peek(CONTROLLER_REVISIONS, ns, name)
    if taken is not None and controller_uid(taken) is None:
        # Orphaned (`kubectl delete sts --cascade=orphan`): adopt it, as Kubernetes does.
        if await writer._patch(CONTROLLER_REVISIONS, ns, name, {"metadata": {
                "ownerReferences": [owner_ref(owner, kind, "apps/v1")]}}):
            return await ensure_revision(writer, owner, kind, name, hash_, template)
        return None
    if taken is not None:
        # The name is taken by a revision that is not ours (an owner of the same name being
        # collected, or a hand-made object): no history this pass, and no retry storm.
        writer.log.debug("revision.name_taken", namespace=ns, name=name)
        return None
    labels = {**dict(_d(_d(template.get("metadata")).get("labels"))), HASH_LABEL: hash_}
    body = {"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         "ownerReferences": [owner_ref(owner, kind, "apps/v1")]},
            "data": revision_data(template), "revision": top + 1}
    try:
        created, _ = await writer.api.create(CONTROLLER_REVISIONS, ns, body,
                                             field_validation="Ignore")
    except ApiError as e:
        writer._failed("create", CONTROLLER_REVISIONS, ns, name, e)
        return None
    writer.log.info("revision.created", namespace=ns, name=name, revision=top + 1)
    return created


async def prune_revisions(writer: _Writer, owner: Obj, keep: Collection[str]) -> None:
    """Delete the oldest revisions beyond `revisionHistoryLimit`, never one named in `keep`."""
    limit = max(0, _int(_d(owner.get("spec")).get("revisionHistoryLimit"), 10))
    ns = str(_d(owner.get("metadata")).get("namespace"))
    idle = sorted((r for r in owned_revisions(writer, owner)
                   if r["metadata"].get("name") not in keep),
                  key=lambda r: _int(r.get("revision")))
    for r in idle[:max(0, len(idle) - limit)]:
        await writer._delete(CONTROLLER_REVISIONS, ns, str(r["metadata"]["name"]),
                             str(r["metadata"].get("uid")))
