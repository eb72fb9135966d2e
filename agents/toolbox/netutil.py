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


async def resolve(net: PodNet, host: str, port: int) -> str:
    """The first IPv4 address for `host`, through the pod's resolver.

    Raises `socket.gaierror` like libc when the name does not resolve.
    """
    if is_ip_literal(host):
        return host
    infos = await net.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_STREAM)
    for info in infos:
        address = info[4][0]
        if isinstance(address, str):
            return address
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


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
