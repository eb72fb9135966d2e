"""Pod IP allocation from this node's podCIDR, like the host-local IPAM plugin.

The network address, the first host address (the node's gateway, `.1`) and the broadcast
address are never handed out. A pod that comes back (agent or cluster restart) asks for its
old IP first, so its address survives a restart when it is still free.
"""

from __future__ import annotations

import ipaddress


class PoolExhausted(Exception):
    pass


class HostLocalIpam:
    def __init__(self, pod_cidr: str) -> None:
        self.network = ipaddress.IPv4Network(pod_cidr)
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
            candidate = str(ipaddress.IPv4Address(
                self._free_from + (self._next - self._free_from + i) % size))
            if candidate not in self._used:
                self._used[candidate] = owner
                self._next = int(ipaddress.IPv4Address(candidate)) + 1
                return candidate
        raise PoolExhausted(f"no free pod IP left in {self.network}")

    def release(self, ip: str) -> None:
        self._used.pop(ip, None)

    def _usable(self, ip: str) -> bool:
        try:
            value = int(ipaddress.IPv4Address(ip))
        except ValueError:
            return False
        return self._free_from <= value <= self._last

    def __len__(self) -> int:
        return len(self._used)
