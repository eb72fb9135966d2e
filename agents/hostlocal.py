"""Pod IP allocation from this node's podCIDR, like the host-local IPAM plugin.

The network address, the first host address (the node's gateway, `.1`) and the broadcast
address are never handed out. An IPv6 podCIDR (a /64 on dual-stack nodes) is handled alike:
`::`, `::1` (the gateway) and the last address are never handed out; a dual-stack node keeps
one allocator per podCIDR. A pod that comes back (agent or cluster restart) asks for its
old IP first, so its address survives a restart when it is still free.
"""

from __future__ import annotations

import ipaddress


class PoolExhausted(Exception):
    pass


class HostLocalIpam:
    def __init__(self, pod_cidr: str) -> None:
        self.network: ipaddress.IPv4Network | ipaddress.IPv6Network = \
            ipaddress.ip_network(pod_cidr)
        self.family = self.network.version
        self.gateway = str(self.network.network_address + 1)
        self._free_from = int(self.network.network_address) + 2
        self._last = int(self.network.broadcast_address) - 1
        self._used: dict[str, str] = {}  # ip -> owner (pod uid)
        self._next = self._free_from

    def allocate(self, owner: str, prefer: str | None = None) -> str:
        for ip, who in self._used.items():
            if who == owner:
                return ip
        if prefer and self._usable(prefer) and prefer not in self._used:
            self._used[prefer] = owner
            return prefer
        size = self._last - self._free_from + 1
        for i in range(size):
            # Round-robin from the last allocation, as host-local does, so a freed IP is not
            # handed to the next pod at once (stale connections would reach the wrong pod).
            value = self._free_from + (self._next - self._free_from + i) % size
            candidate = str(ipaddress.IPv4Address(value) if self.family == 4
                            else ipaddress.IPv6Address(value))
            if candidate not in self._used:
                self._used[candidate] = owner
                self._next = value + 1
                return candidate
        raise PoolExhausted(f"no free pod IP left in {self.network}")

    def release(self, ip: str) -> None:
        self._used.pop(ip, None)

    def release_owner(self, owner: str) -> None:
        """Whatever `owner` holds (a dual-stack pod whose other family's pool ran out)."""
        for ip in [ip for ip, who in self._used.items() if who == owner]:
            del self._used[ip]

    def _usable(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if addr.version != self.family or str(addr) != ip:
            return False        # one spelling per address: the table is keyed by it
        return self._free_from <= int(addr) <= self._last

    def __len__(self) -> int:
        return len(self._used)
