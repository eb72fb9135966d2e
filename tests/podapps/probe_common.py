"""What the probe pods (`faults_probe`, `netpol_probe`) share: a UDP protocol that answers
every datagram to its sender, how a connection attempt is reported, and the plain HTTP/1.1
control server on the pod's own loopback
(never reachable from outside the pod, so neither a fault nor a NetworkPolicy applies to it),
through which a test asks the pod to measure or probe from inside.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

CONTROL_PORT = 8080

# The request line's words (`GET /path?query HTTP/1.1`) -> (status line, body).
ControlHandler = Callable[[list[str]], Awaitable[tuple[str, bytes]]]


def udp_answerer(answer: Callable[[bytes], bytes]) -> type[asyncio.DatagramProtocol]:
    """A datagram protocol that sends `answer(datagram)` back to each datagram's sender."""

    class Answer(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            with contextlib.suppress(OSError):
                self.transport.sendto(answer(data), addr)   # type: ignore[attr-defined]

    return Answer


async def outcome(attempt: Awaitable[str]) -> str:
    """What a connection attempt came to: its own answer, or why there was none (`refused`,
    `timeout`, `error-<errno>`)."""
    try:
        return await attempt
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"error-{exc.errno}"


async def serve_control(ctx: Any, handle: ControlHandler, port: int = CONTROL_PORT) -> None:
    """Serve one request per connection on 127.0.0.1:`port`: the request line goes to
    `handle`, the headers are read and ignored, the answer is sent and the connection closed."""

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = (await reader.readline()).decode(errors="replace").split()
            while (await reader.readline()).strip():
                pass                                        # headers: not needed
            status, body = await handle(request)
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                         .encode() + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    await ctx.net.start_server(control, host="127.0.0.1", port=port)
