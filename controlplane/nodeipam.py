"""Node IPAM: one podCIDR per Node, carved from the cluster CIDR (kube-controller-manager's
node IPAM controller, range allocator). It runs as admission, so a Node is never stored
without its podCIDR and two Nodes can never get the same one.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from podnet.apierrors import ApiError
from podnet.resources import Resource


class NodeIpam:
    def __init__(self, cluster_cidr: str, node_mask: int,
                 existing: list[dict[str, Any]]) -> None:
        self.cluster = ipaddress.IPv4Network(cluster_cidr)
        self.node_mask = node_mask
        self.used: dict[str, str] = {}  # cidr -> node name
        for node in existing:
            cidr = (node.get("spec") or {}).get("podCIDR")
            if cidr:
                self.used[cidr] = node["metadata"]["name"]

    def allocate(self, name: str) -> str:
        # A node named like `node-3` gets the 3rd subnet (10.244.3.0/24) when it is free, so
        # under `podnet up` the addresses read the same every time, whatever order agents
        # register in. Any other name takes the first free subnet.
        index = _trailing_number(name)
        if index:
            preferred = self._nth(index)
            if preferred is not None and preferred not in self.used:
                self.used[preferred] = name
                return preferred
        for subnet in self.cluster.subnets(new_prefix=self.node_mask):
            cidr = str(subnet)
            # Skip the first subnet: 10.244.0.0/24 reads like "the network itself" to
            # learners, and real clusters usually number nodes from .1.
            if subnet.network_address == self.cluster.network_address:
                continue
            if cidr not in self.used:
                self.used[cidr] = name
                return cidr
        raise ApiError(422, "Invalid", f"no podCIDR left in {self.cluster} for node {name}")

    def _nth(self, index: int) -> str | None:
        size = 2 ** (self.node_mask - self.cluster.prefixlen)
        if not 0 < index < size:
            return None
        step = 2 ** (32 - self.node_mask)
        return f"{self.cluster.network_address + index * step}/{self.node_mask}"

    def admit(self, op: str, res: Resource, obj: dict[str, Any],
              old: dict[str, Any] | None) -> None:
        if res.kind != "Node":
            return
        name = obj.get("metadata", {}).get("name", "")
        spec = obj.setdefault("spec", {})
        if op == "CREATE":
            cidr = spec.get("podCIDR")
            if cidr and self.used.get(cidr, name) != name:
                raise ApiError(409, "Conflict", f"podCIDR {cidr} is already used by node "
                                                f"{self.used[cidr]}")
            if not cidr:
                cidr = self.allocate(name)
            self.used[cidr] = name
            spec["podCIDR"] = cidr
            spec["podCIDRs"] = [cidr]
        elif op == "UPDATE" and old is not None:
            kept = (old.get("spec") or {}).get("podCIDR")
            if kept and not spec.get("podCIDR"):
                spec["podCIDR"] = kept
                spec["podCIDRs"] = [kept]
        elif op == "DELETE":
            cidr = spec.get("podCIDR")
            if cidr and self.used.get(cidr) == name:
                del self.used[cidr]


def _trailing_number(name: str) -> int | None:
    head, _, tail = name.rpartition("-")
    return int(tail) if head and tail.isdigit() and len(tail) <= 5 else None
