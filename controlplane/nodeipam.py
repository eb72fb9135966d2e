"""Node IPAM: one podCIDR per Node and per IP family, carved from the cluster CIDRs
(kube-controller-manager's node IPAM controller, range allocator). It runs as admission, so
a Node is never stored without its podCIDRs and two Nodes can never get the same one.

A dual-stack cluster has two cluster CIDRs (primary first): every Node gets one podCIDR from
each, `spec.podCIDRs` in the same order and `spec.podCIDR` the primary one. An IPv4-only
cluster works exactly as before (one /24, `podCIDRs` = `[podCIDR]`).

What is in use is read from the stored Nodes at each allocation, never cached: a create that
is rejected afterwards (name taken, dry run) cannot leak a subnet, and a deleted Node's subnet
is free again as soon as the Node is gone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from podnet.apierrors import ApiError
from podnet.resources import Resource

Nodes = Callable[[], Iterable[Mapping[str, Any]]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NodeIpam:
    def __init__(self, cluster_cidrs: str | Sequence[str], node_mask: int, nodes: Nodes,
                 node_mask_v6: int = 64) -> None:
        cidrs = [cluster_cidrs] if isinstance(cluster_cidrs, str) else list(cluster_cidrs)
        self.clusters: list[Network] = [ipaddress.ip_network(c) for c in cidrs]
        self.masks = {4: node_mask, 6: node_mask_v6}
        self.nodes = nodes

    @property
    def cluster(self) -> Network:
        """The primary cluster CIDR."""
        return self.clusters[0]

    @property
    def node_mask(self) -> int:
        return self.masks[self.cluster.version]

    def used(self) -> dict[str, str]:
        """podCIDR -> node name, every family, for every stored Node."""
        out = {}
        for node in self.nodes():
            spec = node.get("spec") or {}
            cidrs = [spec.get("podCIDR"), *(spec.get("podCIDRs") or [])]
            for cidr in cidrs:
                if isinstance(cidr, str) and cidr:
                    out[_canonical(cidr)] = str(node["metadata"]["name"])
        return out

    def allocate(self, name: str, used: Mapping[str, str],
                 cluster: Network | None = None) -> str:
        """A free podCIDR for `name` from `cluster` (default: the primary)."""
        cluster = cluster or self.cluster
        mask = self.masks[cluster.version]
        # A node named like `node-3` gets the 3rd subnet (10.244.3.0/24, fd00:10:244:3::/64)
        # when it is free, so under `podnet up` the addresses read the same every time,
        # whatever order agents register in. Any other name takes the first free subnet.
        index = _trailing_number(name)
        if index:
            preferred = _nth(cluster, mask, index)
            if preferred is not None and preferred not in used:
                return preferred
        # Skip the first subnet: 10.244.0.0/24 reads like "the network itself" to learners,
        # and real clusters usually number nodes from .1. Settings cap an IPv6 split at 16
        # bits, so this walk stays short.
        for i in range(1, 2 ** (mask - cluster.prefixlen)):
            subnet = _nth(cluster, mask, i)
            if subnet is not None and subnet not in used:
                return subnet
        raise ApiError(422, "Invalid", f"no podCIDR left in {cluster} for node {name}")

    def _family_of(self, cidr: str) -> int | None:
        try:
            return ipaddress.ip_network(cidr, strict=False).version
        except ValueError:
            return None  # validation has already rejected it with its own message

    def _complete(self, name: str, given: list[str], used: Mapping[str, str]) -> list[str]:
        """`given` (kept as is) plus one new podCIDR for each cluster family it lacks, in
        the cluster's family order (primary first); given ones of other families last."""
        by_family = {self._family_of(c): c for c in given}
        out = []
        for cluster in self.clusters:
            cidr = by_family.pop(cluster.version, None)
            out.append(cidr if cidr is not None else self.allocate(name, used, cluster))
        return out + [c for c in given if c not in out]

    def admit(self, op: str, res: Resource, obj: dict[str, Any],
              old: dict[str, Any] | None) -> None:
        if res.kind != "Node":
            return
        name = obj.get("metadata", {}).get("name", "")
        spec = obj.setdefault("spec", {})
        if op == "CREATE":
            used = self.used()
            given = [c for c in [spec.get("podCIDR"), *(spec.get("podCIDRs") or [])]
                     if isinstance(c, str) and c]
            given = list(dict.fromkeys(given))
            for cidr in given:
                holder = used.get(_canonical(cidr), name)
                if holder != name:
                    raise ApiError(409, "Conflict", f"podCIDR {cidr} is already used by node "
                                                    f"{holder}")
            cidrs = self._complete(name, given, used)
            if spec.get("podCIDR") and cidrs[0] != spec["podCIDR"]:
                # A podCIDR given alone names the node's primary, whatever its family.
                cidrs.remove(spec["podCIDR"])
                cidrs.insert(0, spec["podCIDR"])
            spec["podCIDR"] = cidrs[0]
            spec["podCIDRs"] = cidrs
        elif op == "UPDATE" and old is not None:
            old_spec = old.get("spec") or {}
            kept = old_spec.get("podCIDR")
            if kept and not spec.get("podCIDR"):
                spec["podCIDR"] = kept
                spec["podCIDRs"] = list(old_spec.get("podCIDRs") or [kept])
            if spec.get("podCIDR") and len(self.clusters) > len(spec.get("podCIDRs") or []):
                # A Node stored before the cluster went dual-stack gets the family it lacks
                # at its next write (the agent's registration): its existing podCIDR is kept,
                # so its pods keep their addresses.
                current = list(spec.get("podCIDRs") or [spec["podCIDR"]])
                have = {self._family_of(c) for c in current}
                used = self.used()
                for cluster in self.clusters:
                    if cluster.version not in have:
                        current.append(self.allocate(name, used, cluster))
                spec["podCIDRs"] = current


def _nth(cluster: Network, mask: int, index: int) -> str | None:
    size = 2 ** (mask - cluster.prefixlen)
    if not 0 < index < size:
        return None
    step = 2 ** (cluster.max_prefixlen - mask)
    return f"{cluster.network_address + index * step}/{mask}"


def _canonical(cidr: str) -> str:
    """One spelling per network (fd00:10:244:1:0::/64 and fd00:10:244:1::/64 are one)."""
    try:
        return str(ipaddress.ip_network(cidr, strict=False))
    except ValueError:
        return cidr


def _trailing_number(name: str) -> int | None:
    head, _, tail = name.rpartition("-")
    return int(tail) if head and tail.isdigit() and len(tail) <= 5 else None
