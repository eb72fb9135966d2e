"""Node IPAM: one podCIDR per Node, carved from the cluster CIDR (kube-controller-manager's
node IPAM controller, range allocator). It runs as admission, so a Node is never stored
without its podCIDR and two Nodes can never get the same one.

What is in use is read from the stored Nodes at each allocation, never cached: a create that
is rejected afterwards (name taken, dry run) cannot leak a subnet, and a deleted Node's subnet
is free again as soon as the Node is gone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from podnet.apierrors import ApiError
from podnet.resources import Resource

Nodes = Callable[[], Iterable[Mapping[str, Any]]]


class NodeIpam:
    def __init__(self, cluster_cidr: str, node_mask: int, nodes: Nodes) -> None:
        self.cluster = ipaddress.IPv4Network(cluster_cidr)
        self.node_mask = node_mask
        self.nodes = nodes

    def used(self) -> dict[str, str]:
        """podCIDR -> node name, for every stored Node."""
        out = {}
        for node in self.nodes():
            cidr = (node.get("spec") or {}).get("podCIDR")
            if cidr:
                out[str(cidr)] = str(node["metadata"]["name"])
        return out

    def allocate(self, name: str, used: Mapping[str, str]) -> str:
        # A node named like `node-3` gets the 3rd subnet (10.244.3.0/24) when it is free, so
        # under `podnet up` the addresses read the same every time, whatever order agents
        # register in. Any other name takes the first free subnet.
        index = _trailing_number(name)
        if index:
            preferred = self._nth(index)
            if preferred is not None and preferred not in used:
                return preferred
        for subnet in self.cluster.subnets(new_prefix=self.node_mask):
            # Skip the first subnet: 10.244.0.0/24 reads like "the network itself" to
            # learners, and real clusters usually number nodes from .1.
            if subnet.network_address == self.cluster.network_address:
                continue
            if str(subnet) not in used:
                return str(subnet)
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
            used = self.used()
            cidr = spec.get("podCIDR")
            if cidr and used.get(cidr, name) != name:
                raise ApiError(409, "Conflict", f"podCIDR {cidr} is already used by node "
                                                f"{used[cidr]}")
            if not cidr:
                cidr = self.allocate(name, used)
            spec["podCIDR"] = cidr
            spec["podCIDRs"] = [cidr]
        elif op == "UPDATE" and old is not None:
            kept = (old.get("spec") or {}).get("podCIDR")
            if kept and not spec.get("podCIDR"):
                spec["podCIDR"] = kept
                spec["podCIDRs"] = [kept]


def _trailing_number(name: str) -> int | None:
    head, _, tail = name.rpartition("-")
    return int(tail) if head and tail.isdigit() and len(tail) <= 5 else None
