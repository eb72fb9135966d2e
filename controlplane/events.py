"""Recording Kubernetes Events from control plane components."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog

from controlplane.api import Api
from podnet.apierrors import ApiError
from podnet.resources import BY_KIND

log = structlog.get_logger()
EVENTS = BY_KIND["Event"]


async def record(api: Api, obj: dict[str, Any], kind: str, reason: str, message: str,
                 component: str) -> None:
    meta = obj.get("metadata", {})
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    namespace = meta.get("namespace") or "default"
    body = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
        "involvedObject": {"kind": obj.get("kind", ""), "apiVersion": obj.get("apiVersion", "v1"),
                           "name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
                           "uid": meta.get("uid", "")},
        "reason": reason, "message": message, "type": kind,
        "source": {"component": component}, "reportingComponent": component,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }
    try:
        await api.create(EVENTS, namespace, body, field_validation="Ignore")
    except ApiError as e:
        log.debug("event.unrecorded", reason=reason, error=str(e))
