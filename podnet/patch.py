"""Patches as the Kubernetes API server applies them. No I/O.

* `json_merge_patch`: RFC 7386 (`kubectl label/annotate`, `kubectl patch --type merge`).
* `strategic_merge_patch`: what `kubectl apply` (client side) and `kubectl patch` send by
  default. Lists merge by a per-kind merge key (the `patchMergeKey` tags of the Go types, kept
  here as a path table) and the `$patch`, `$setElementOrder/`, `$deleteFromPrimitiveList/` and
  `$retainKeys` directives are executed, never stored.
* `json_patch`: RFC 6902 operations with RFC 6901 pointers.
* `apply_patch`: server-side apply, approximated as a merge of the fields present (keyed lists
  merged by key, other lists replaced). It is never "replace the object", because kubectl's
  second `kubectl-last-applied` apply carries only metadata.

Every function returns a new value and never mutates its arguments. Failures raise
`PatchError`, answered as 422 (or 400 for a malformed body).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = [
    "PatchError",
    "apply_patch",
    "json_merge_patch",
    "json_patch",
    "merge_key",
    "strategic_merge_patch",
]


class PatchError(ValueError):
    """A patch that cannot be applied (malformed, failed `test`, missing path...)."""


# --- RFC 7386 --------------------------------------------------------------------------------

def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, `null` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


# --- merge keys ------------------------------------------------------------------------------

# A path names a field by its map keys from the object root; list elements add no step, so
# ("spec", "containers", "ports") is the ports list inside any container.
Path = tuple[str, ...]
PRIMITIVE = "<primitive>"  # a list of scalars merged as a set (finalizers, podCIDRs)

_POD_SPEC: dict[Path, str] = {
    ("containers",): "name",
    ("initContainers",): "name",
    ("ephemeralContainers",): "name",
    ("volumes",): "name",
    ("imagePullSecrets",): "name",
    ("hostAliases",): "ip",
}
_CONTAINER: dict[Path, str] = {
    ("ports",): "containerPort",
    ("env",): "name",
    ("volumeMounts",): "mountPath",
    ("volumeDevices",): "devicePath",
}
_COMMON: dict[Path, str] = {
    ("metadata", "ownerReferences"): "uid",
    ("metadata", "finalizers"): PRIMITIVE,
    ("status", "conditions"): "type",
}


def _pod_spec_at(prefix: Path) -> dict[Path, str]:
    """Merge keys of a pod spec found at `prefix` (Pod: spec; workloads: spec.template.spec)."""
    table = {prefix + path: key for path, key in _POD_SPEC.items()}
    for containers in ("containers", "initContainers", "ephemeralContainers"):
        for path, key in _CONTAINER.items():
            table[(*prefix, containers, *path)] = key
    return table


_TEMPLATE = ("spec", "template")
_WORKLOAD = {
    **_COMMON,
    **_pod_spec_at((*_TEMPLATE, "spec")),
    (*_TEMPLATE, "metadata", "ownerReferences"): "uid",
    (*_TEMPLATE, "metadata", "finalizers"): PRIMITIVE,
}

MERGE_KEYS: dict[str, dict[Path, str]] = {
    "Pod": {**_COMMON, **_pod_spec_at(("spec",)),
            ("status", "podIPs"): "ip", ("status", "hostIPs"): "ip"},
    "Node": {**_COMMON, ("spec", "podCIDRs"): PRIMITIVE, ("status", "addresses"): "type"},
    "Namespace": dict(_COMMON),
    "Service": {**_COMMON, ("spec", "ports"): "port"},
    "Endpoints": dict(_COMMON),       # subsets are replaced whole
    "EndpointSlice": dict(_COMMON),   # endpoints and ports are atomic lists
    "Event": dict(_COMMON),
    "ConfigMap": dict(_COMMON),
    "Deployment": _WORKLOAD,
    "ReplicaSet": _WORKLOAD,
    "StatefulSet": _WORKLOAD,
    "DaemonSet": _WORKLOAD,
    "Job": _WORKLOAD,
}


def merge_key(kind: str, path: Path) -> str | None:
    """The merge key of the list at `path` in `kind` (PRIMITIVE for a set of scalars)."""
    return MERGE_KEYS.get(kind, _COMMON).get(path)


# --- strategic merge patch -------------------------------------------------------------------

_PATCH = "$patch"
_RETAIN = "$retainKeys"
_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def _is_directive(key: Any) -> bool:
    return isinstance(key, str) and key.startswith("$")


def _strip(value: Any) -> Any:
    """A deep copy with directive keys and `$patch` list elements removed, nulls dropped.

    Used where a patch value lands on nothing (a new key or list element): there is nothing to
    delete or reorder, so directives simply vanish.
    """
    if isinstance(value, dict):
        if value.get(_PATCH) == "delete":
            return None
        out_map = {}
        for k, v in value.items():
            if _is_directive(k):
                continue
            cleaned = _strip(v)
            if cleaned is not None:
                out_map[k] = cleaned
        return out_map
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, dict) and _PATCH in item:
                if item[_PATCH] in ("delete", "replace") or set(item) == {_PATCH}:
                    continue
            out.append(_strip(item))
        return out
    return value


def _check_directives(patch: dict[str, Any]) -> None:
    for key in patch:
        if not _is_directive(key):
            continue
        if key in (_PATCH, _RETAIN) or key.startswith((_ORDER, _DELETE_PRIMITIVE)):
            continue
        raise PatchError(f"unknown patch directive {key!r}")


def _smp_map(original: dict[str, Any], patch: dict[str, Any], kind: str,
             path: Path) -> dict[str, Any]:
    _check_directives(patch)
    directive = patch.get(_PATCH)
    if directive is not None:
        if directive == "replace":
            return dict(_strip(patch))
        if directive == "delete":
            return {}
        if directive != "merge":
            raise PatchError(f"unknown patch type: {directive!r} in map at "
                             f"{'.'.join(path) or '<root>'}")
    result = copy.deepcopy(original)
    if _RETAIN in patch:
        retain = patch[_RETAIN]
        if not isinstance(retain, list) or not all(isinstance(k, str) for k in retain):
            raise PatchError("$retainKeys must be a list of strings")
        for key, value in patch.items():
            if not _is_directive(key) and value is not None and key not in retain:
                raise PatchError(f"$retainKeys does not list the patched field {key!r}")
        result = {k: v for k, v in result.items() if k in retain}
    orders: dict[str, Any] = {}
    for key, value in patch.items():
        if not isinstance(key, str):
            raise PatchError("patch keys must be strings")
        if key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE):]
            if not isinstance(value, list):
                raise PatchError(f"{key} must be a list")
            current = result.get(field)
            if isinstance(current, list):
                result[field] = [v for v in current if v not in value]
        elif key.startswith(_ORDER):
            if not isinstance(value, list):
                raise PatchError(f"{key} must be a list")
            orders[key[len(_ORDER):]] = value
    for key, value in patch.items():
        if _is_directive(key):
            continue
        sub = (*path, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _smp_map(result[key], value, kind, sub)
        elif isinstance(value, dict):
            result[key] = _smp_map({}, value, kind, sub)
        elif isinstance(value, list):
            current = result.get(key)
            result[key] = _smp_list(current if isinstance(current, list) else [], value,
                                    kind, sub)
        else:
            result[key] = value
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _reorder(result[field], order, merge_key(kind, (*path, field)))
    return result


def _smp_list(original: list[Any], patch: list[Any], kind: str, path: Path) -> list[Any]:
    key = merge_key(kind, path)
    where = ".".join(path)
    if any(isinstance(p, dict) and p.get(_PATCH) == "replace" for p in patch):
        # `{"$patch": "replace"}` as an element: the rest of the patch list is the new list.
        return [_strip(p) for p in patch
                if not (isinstance(p, dict) and p.get(_PATCH) == "replace")]
    if key is None:
        return list(_strip(patch))
    if key == PRIMITIVE:
        result = copy.deepcopy(original)
        for item in patch:
            if isinstance(item, (dict, list)):
                raise PatchError(f"{where}: expected a list of scalars")
            if item not in result:
                result.append(item)
        return result
    result = copy.deepcopy(original)
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"{where}: list elements must be objects with merge key {key!r}")
        directive = item.get(_PATCH)
        if key not in item:
            raise PatchError(f"{where}: map does not contain declared merge key: {key}")
        index = next((i for i, cur in enumerate(result)
                      if isinstance(cur, dict) and cur.get(key) == item[key]), None)
        if directive == "delete":
            result = [cur for cur in result
                      if not (isinstance(cur, dict) and cur.get(key) == item[key])]
        elif directive not in (None, "merge"):
            raise PatchError(f"{where}: unknown patch type: {directive!r}")
        elif index is None:
            result.append(_smp_map({}, item, kind, path))
        else:
            result[index] = _smp_map(result[index], item, kind, path)
    return result


def _reorder(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """Apply `$setElementOrder`: listed elements first in that order, the others after."""
    def ident(item: Any) -> Any:
        if key is None or key == PRIMITIVE:
            return item
        return item.get(key) if isinstance(item, dict) else item

    wanted = [ident(o) for o in order]
    placed: list[Any] = []
    rest = list(items)
    for w in wanted:
        for i, item in enumerate(rest):
            if ident(item) == w:
                placed.append(rest.pop(i))
                break
    return placed + rest


def strategic_merge_patch(target: Any, patch: Any, kind: str) -> Any:
    """Apply a strategic merge patch (application/strategic-merge-patch+json) to `target`."""
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    base = target if isinstance(target, dict) else {}
    return _smp_map(base, patch, kind, ())


# --- RFC 6902 --------------------------------------------------------------------------------

def _pointer(text: Any) -> list[str]:
    if not isinstance(text, str):
        raise PatchError(f"JSON pointer must be a string, got {text!r}")
    if text == "":
        return []
    if not text.startswith("/"):
        raise PatchError(f"JSON pointer {text!r} must start with '/'")
    parts = text[1:].split("/")
    for part in parts:
        stripped = part.replace("~0", "").replace("~1", "")
        if "~" in stripped:
            raise PatchError(f"JSON pointer {text!r} has an invalid '~' escape")
    return [p.replace("~1", "/").replace("~0", "~") for p in parts]


def _index(token: str, length: int, *, allow_end: bool, where: str) -> int:
    if token == "-" and allow_end:
        return length
    if not token.isdigit() or (len(token) > 1 and token[0] == "0") or not token.isascii():
        raise PatchError(f"{where}: invalid array index {token!r}")
    index = int(token)
    if index > length or (index == length and not allow_end):
        raise PatchError(f"{where}: array index {index} out of range")
    return index


def _parent(doc: Any, tokens: list[str], where: str) -> Any:
    cur = doc
    for token in tokens[:-1]:
        if isinstance(cur, dict):
            if token not in cur:
                raise PatchError(f"{where}: path not found")
            cur = cur[token]
        elif isinstance(cur, list):
            cur = cur[_index(token, len(cur), allow_end=False, where=where)]
        else:
            raise PatchError(f"{where}: path not found")
    return cur


def _get(doc: Any, tokens: list[str], where: str) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens, where)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"{where}: path not found")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(last, len(parent), allow_end=False, where=where)]
    raise PatchError(f"{where}: path not found")


def _remove(doc: Any, tokens: list[str], where: str) -> tuple[Any, Any]:
    """Remove the value at tokens; returns (new document, removed value)."""
    if not tokens:
        raise PatchError(f"{where}: cannot remove the whole document")
    parent = _parent(doc, tokens, where)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"{where}: path not found")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(last, len(parent), allow_end=False, where=where))
    raise PatchError(f"{where}: path not found")


def _add(doc: Any, tokens: list[str], value: Any, where: str) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens, where)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), allow_end=True, where=where), value)
    else:
        raise PatchError(f"{where}: path not found")
    return doc


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike Python's ==, true is not 1, but 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 (application/json-patch+json). All or nothing: any failure raises PatchError."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for n, op in enumerate(operations):
        if not isinstance(op, dict):
            raise PatchError(f"operation {n}: must be an object")
        name = op.get("op")
        if "path" not in op:
            raise PatchError(f"operation {n}: missing 'path'")
        tokens = _pointer(op["path"])
        where = f"operation {n} ({name} {op['path']})"
        if name in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"{where}: missing 'value'")
        if name == "add":
            doc = _add(doc, tokens, copy.deepcopy(op["value"]), where)
        elif name == "remove":
            doc, _ = _remove(doc, tokens, where)
        elif name == "replace":
            _get(doc, tokens, where)  # must exist
            if tokens:
                doc, _ = _remove(doc, tokens, where)
            doc = _add(doc, tokens, copy.deepcopy(op["value"]), where)
        elif name in ("move", "copy"):
            if "from" not in op:
                raise PatchError(f"{where}: missing 'from'")
            source = _pointer(op["from"])
            if name == "move":
                if source == tokens:
                    _get(doc, source, where)  # a no-op move still needs its source
                    continue
                if len(tokens) > len(source) and tokens[:len(source)] == source:
                    raise PatchError(f"{where}: cannot move a value into one of its children")
                doc, value = _remove(doc, source, where)
            else:
                value = copy.deepcopy(_get(doc, source, where))
            doc = _add(doc, tokens, value, where)
        elif name == "test":
            if not _json_equal(_get(doc, tokens, where), op["value"]):
                raise PatchError(f"{where}: test failed")
        else:
            raise PatchError(f"operation {n}: unknown op {name!r}")
    return doc


# --- server-side apply (approximation) -------------------------------------------------------

def _apply_value(current: Any, applied: Any, kind: str, path: Path) -> Any:
    if isinstance(applied, dict):
        base = current if isinstance(current, dict) else {}
        result = copy.deepcopy(base)
        for key, value in applied.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = _apply_value(base.get(key), value, kind, (*path, key))
        return result
    if isinstance(applied, list):
        key = merge_key(kind, path)
        base_list = current if isinstance(current, list) else []
        if key is None:
            return _strip_nulls(applied)
        if key == PRIMITIVE:
            merged = copy.deepcopy(base_list)
            merged.extend(v for v in applied if v not in merged)
            return merged
        merged = copy.deepcopy(base_list)
        for item in applied:
            if not isinstance(item, dict) or key not in item:
                raise PatchError(f"{'.'.join(path)}: every element needs the key {key!r}")
            index = next((i for i, cur in enumerate(merged)
                          if isinstance(cur, dict) and cur.get(key) == item[key]), None)
            if index is None:
                merged.append(_apply_value(None, item, kind, path))
            else:
                merged[index] = _apply_value(merged[index], item, kind, path)
        return merged
    return applied


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def apply_patch(target: Any | None, patch: Any, kind: str) -> Any:
    """Server-side apply (application/apply-patch+yaml), approximated.

    The fields present in `patch` are merged into `target` (None when the object does not
    exist yet): maps deep-merge, keyed lists merge element by key, other lists are replaced,
    and an explicit null removes a field. Fields absent from the patch are kept.
    """
    if not isinstance(patch, dict):
        raise PatchError("an apply patch must be an object")
    return _apply_value(target if isinstance(target, dict) else {}, patch, kind, ())
