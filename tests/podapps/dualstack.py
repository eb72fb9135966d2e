"""Pod programs for the dual-stack tests: a UDP echo on `::` (IPv6 only, as asyncio's AF_INET6
sockets are V6ONLY)."""

from __future__ import annotations

import asyncio
from typing import Any


async def udp_echo6(ctx: Any) -> None:
    """Answers every UDP datagram to [::]:9000 with `echo:<payload> from [<ip>]:<port>`."""

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(b"echo:" + data + f" from [{addr[0]}]:{addr[1]}".encode(), addr)

    transport, _ = await ctx.net.create_datagram_endpoint(Echo, local_addr=("::", 9000))
    try:
        await asyncio.Event().wait()
    finally:
        transport.close()
