"""Scheduling decisions, as plain functions (no I/O): which node should a pod run on?

Filters like kube-scheduler's: the node must be Ready, schedulable (or the pod tolerates
`node.kubernetes.io/unschedulable`, as DaemonSet pods do), match `spec.nodeSelector` and the
required node affinity (`matchExpressions` on labels, `matchFields` on `metadata.name`: how a
DaemonSet pins its pods) and, when set, `spec.nodeName`. Scoring spreads: the node with the
fewest pods wins, ties broken by name so decisions are reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Decision:
    node: str | None
    reason: str = ""     # why no node fits, in kube-scheduler's words


def node_ready(node: Mapping[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def allocatable_pods(node: Mapping[str, Any]) -> int | None:
    """`status.allocatable.pods` (an agent sets it to the IPs its podCIDR holds)."""
    value = ((node.get("status") or {}).get("allocatable") or {}).get("pods")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


_UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"


def tolerates_unschedulable(spec: Mapping[str, Any]) -> bool:
    tolerations = spec.get("tolerations")
    for tol in tolerations if isinstance(tolerations, list) else []:
        if not isinstance(tol, Mapping) or tol.get("effect") not in (None, "", "NoSchedule"):
            continue
        if tol.get("operator") == "Exists" and tol.get("key") in (None, "",
                                                                  _UNSCHEDULABLE_TAINT):
            return True
        if tol.get("key") == _UNSCHEDULABLE_TAINT:
            return True
    return False


def _requirement_matches(req: Any, values_of: Mapping[str, str]) -> bool:
    if not isinstance(req, Mapping):
        return False
    key, op = req.get("key"), req.get("operator")
    raw = req.get("values")
    values = [str(v) for v in raw] if isinstance(raw, list) else []
    present = key in values_of
    value = values_of.get(str(key), "")
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and len(values) == 1:
        try:
            have, bound = int(value), int(values[0])
        except ValueError:
            return False
        return have > bound if op == "Gt" else have < bound
    return False


def node_affinity_matches(spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """The pod's requiredDuringSchedulingIgnoredDuringExecution node affinity: any one term
    (all of its expressions and fields) must match; no terms means any node."""
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}) \
        if isinstance(spec.get("affinity"), Mapping) else {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") \
        if isinstance(affinity, Mapping) else None
    if not isinstance(required, Mapping):
        return True
    raw_terms = required.get("nodeSelectorTerms")
    terms = [t for t in raw_terms if isinstance(t, Mapping)] \
        if isinstance(raw_terms, list) else []
    if not terms:
        return True
    meta = node.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    fields = {"metadata.name": str(meta.get("name") or "")}
    for term in terms:
        exprs, flds = term.get("matchExpressions"), term.get("matchFields")
        exprs = exprs if isinstance(exprs, list) else []
        flds = flds if isinstance(flds, list) else []
        if not exprs and not flds:
            continue  # an empty term matches nothing, as in Kubernetes
        if all(_requirement_matches(e, labels) for e in exprs) and \
                all(_requirement_matches(f, fields) for f in flds):
            return True
    return False


def choose_node(pod: Mapping[str, Any], nodes: list[Mapping[str, Any]],
                load: Mapping[str, int]) -> Decision:
    spec = pod.get("spec") or {}
    selector: Mapping[str, str] = spec.get("nodeSelector") or {}
    not_ready = unschedulable = mismatched = full = 0
    fits: list[str] = []
    for node in nodes:
        name = node["metadata"]["name"]
        labels = node["metadata"].get("labels") or {}
        capacity = allocatable_pods(node)
        if not node_ready(node):
            not_ready += 1
        elif (node.get("spec") or {}).get("unschedulable") and \
                not tolerates_unschedulable(spec):
            unschedulable += 1
        elif any(labels.get(k) != v for k, v in selector.items()) or \
                not node_affinity_matches(spec, node):
            mismatched += 1
        elif capacity is not None and load.get(name, 0) >= capacity:
            full += 1
        else:
            fits.append(name)
    if fits:
        return Decision(min(fits, key=lambda n: (load.get(n, 0), n)))
    parts = []
    if not_ready:
        parts.append(f"{not_ready} node(s) had untolerated taint "
                     "{node.kubernetes.io/not-ready: }")
    if unschedulable:
        parts.append(f"{unschedulable} node(s) were unschedulable")
    if mismatched:
        parts.append(f"{mismatched} node(s) didn't match Pod's node affinity/selector")
    if full:
        parts.append(f"{full} Too many pods")
    detail = (" " + ", ".join(parts) + ".") if parts else ""
    return Decision(None, f"0/{len(nodes)} nodes are available:{detail}")
