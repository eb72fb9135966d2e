"""Name resolution and connecting through a pod's network stack, shared by curl, wget and nc."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.netstack import PodNet


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def resolve(net: PodNet, host: str, port: int, family: int = socket.AF_UNSPEC) -> str:
    """The first address for `host` of `family` (`-4`/`-6`; AF_UNSPEC: the pod's primary
    family first, IPv4 only in a pod without IPv6), through the pod's resolver.

    Raises `socket.gaierror` like libc when the name does not resolve (or a literal is not
    of the family asked for).
    """
    if is_ip_literal(host):
        if family and (":" in host) != (family == socket.AF_INET6):
            raise socket.gaierror(socket.EAI_ADDRFAMILY, "Address family for hostname not "
                                  "supported")
        return host
    if family == socket.AF_UNSPEC and net.ip6 is None:
        family = socket.AF_INET     # as before IPv6: an A lookup only
    infos = await net.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    for info in infos:
        address = info[4][0]
        if isinstance(address, str):
            return address
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def family_of(ipv4: bool, ipv6: bool) -> int:
    """The address family that `-4` / `-6` ask for (the last one given wins in curl; here
    -6 wins when both are given, the unusual case)."""
    return socket.AF_INET6 if ipv6 else socket.AF_INET if ipv4 else socket.AF_UNSPEC


def strerror(exc: OSError) -> str:
    """The kernel's text for a connect failure ("Connection refused", "No route to host")."""
    if isinstance(exc, TimeoutError):
        return os.strerror(errno.ETIMEDOUT)
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    """Close a stream whose peer may already be gone; a reset at close is not an error here."""
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass
