"""Addresses, as podnet writes and reads them.

A socket address in logs and messages is `ip:port`, and `[ip]:port` for IPv6 (RFC 3986's form,
the one curl and ss print), so an IPv6 address reads as one word and the port is always what
follows the last colon. A dual-stack list of CIDRs is checked once, here, for every reader."""

from __future__ import annotations

import ipaddress


def hostport(ip: str, port: int | str) -> str:
    """`10.244.1.2:8080`, `[fd00:10:244:1::2]:8080`."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def address(addr: tuple[str, int]) -> str:
    """A socket address (host, port) as `hostport` writes it."""
    return hostport(addr[0], addr[1])


def host_of(text: str) -> str:
    """The host of a `hostport` text (`[v6]:port` or `v4:port`); the text itself when it
    has no port."""
    if text.startswith("["):
        return text[1:].partition("]")[0]
    host, sep, port = text.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else text


def cidr_families(primary: str, listed: object) -> list[str]:
    """A dual-stack list of CIDRs (Node spec.podCIDRs, cluster-info clusterCIDRs or
    serviceCIDRs), checked: `primary` first, at most one per family, each a valid network.
    Anything else (absent on an older control plane, or malformed) means `[primary]`."""
    if not isinstance(listed, list) or not 1 <= len(listed) <= 2 or listed[0] != primary \
            or not all(isinstance(c, str) for c in listed):
        return [primary]
    try:
        nets = [ipaddress.ip_network(c) for c in listed]
    except ValueError:
        return [primary]
    if len({n.version for n in nets}) != len(nets):
        return [primary]
    return [str(c) for c in listed]
