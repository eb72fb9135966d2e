"""Scheduling decisions, as plain functions (no I/O): which node should a pod run on?

Filters like kube-scheduler's: the node must be Ready, schedulable, match `spec.nodeSelector`
and, when set, `spec.nodeName`. Scoring spreads: the node with the fewest pods wins, ties
broken by name so decisions are reproducible.
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
        elif (node.get("spec") or {}).get("unschedulable"):
            unschedulable += 1
        elif any(labels.get(k) != v for k, v in selector.items()):
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
