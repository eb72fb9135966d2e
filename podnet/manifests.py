"""Reading Kubernetes YAML manifests and applying them through the API (for `podnet up -f`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from podnet.apierrors import ApiError
from podnet.client import ApiClient
from podnet.resources import RESOURCES, Resource


class ManifestError(Exception):
    pass


def load_manifests(path: Path) -> list[dict[str, Any]]:
    """Every object in a YAML file (multi-document, `kind: List` flattened)."""
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except OSError as e:
        raise ManifestError(f"{path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ManifestError(f"{path}: not valid YAML: {e}") from None
    objects: list[dict[str, Any]] = []
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"{path}: each document must be a mapping, got "
                                f"{type(doc).__name__}")
        if doc.get("kind") == "List" or str(doc.get("kind", "")).endswith("List"):
            objects.extend(i for i in doc.get("items") or [] if isinstance(i, dict))
        else:
            objects.append(doc)
    return objects


def resource_for(obj: dict[str, Any]) -> Resource:
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    for res in RESOURCES:
        if res.kind == kind and res.api_version == api_version:
            return res
    raise ManifestError(f"unknown kind {kind!r} in apiVersion {api_version!r}")


async def apply(api: ApiClient, obj: dict[str, Any], default_namespace: str = "default") -> str:
    """Create the object, or merge it into the existing one; returns kubectl's verb."""
    res = resource_for(obj)
    name = (obj.get("metadata") or {}).get("name")
    namespace = ((obj.get("metadata") or {}).get("namespace") or default_namespace
                 if res.namespaced else None)
    label = f"{res.singular}/{name}"
    try:
        # Strict, like kubectl's default validation: an unknown field is an error, not lost.
        await api.create(res, namespace, obj, field_validation="Strict")
        return f"{label} created"
    except ApiError as e:
        if e.code != 409 or not name:
            raise ManifestError(f"{label}: {e}") from None
    try:
        await api.patch(res, namespace, name, obj, field_validation="Strict")
    except ApiError as e:
        raise ManifestError(f"{label}: {e}") from None
    return f"{label} configured"
