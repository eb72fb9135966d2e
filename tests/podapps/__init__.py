"""User images for tests: `image: py:podapps:<function>` (tests/ is on the agents' path)."""

from __future__ import annotations

import asyncio
from typing import Any


async def crash(ctx: Any) -> None:
    """Prints a line, then fails: exercises restartPolicy and CrashLoopBackOff."""
    ctx.stdout.write(f"crashing in {ctx.pod.name}\n")
    raise RuntimeError("boom")


async def hello(ctx: Any) -> None:
    """Prints its args and one env var, then idles."""
    ctx.stdout.write(f"hello {' '.join(ctx.args)} from {ctx.pod.ip} "
                     f"GREETING={ctx.env.get('GREETING')} POD_IP={ctx.env.get('MY_POD_IP')}\n")
    await asyncio.Event().wait()


async def finish(ctx: Any) -> None:
    """Exits successfully at once: a pod that Succeeds under restartPolicy Never."""
    ctx.stdout.write("done\n")


def not_async(ctx: Any) -> None:
    """Not a coroutine function: must be refused with a clear image error."""


async def stubborn(ctx: Any) -> None:
    """Ignores cancellation for args[0] seconds (default 30), like an app with a slow shutdown
    hook that swallows the first signal, then returns normally. Logs `stubborn.*` events to
    the agent's JSON log so tests can see what it did after its pod was deleted."""
    hold_s = float(ctx.args[0]) if ctx.args else 30.0
    ctx.stdout.write(f"stubborn {ctx.pod.name} started\n")
    ctx.log.info("stubborn.started")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        ctx.log.info("stubborn.ignoring_cancel", hold_s=hold_s)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + hold_s
    while (left := deadline - loop.time()) > 0:
        try:
            await asyncio.sleep(left)
        except asyncio.CancelledError:
            ctx.log.info("stubborn.ignoring_cancel_again")
    ctx.log.info("stubborn.returned")


async def udp_echo(ctx: Any) -> None:
    """Answers every UDP datagram on port 9000 with `echo:<payload> from <sender ip:port>`."""

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(b"echo:" + data + f" from {addr[0]}:{addr[1]}".encode(), addr)

    transport, _ = await ctx.net.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 9000))
    try:
        await asyncio.Event().wait()
    finally:
        transport.close()


async def udp_probe(ctx: Any) -> None:
    """Sends `hello-N` to args[0]:9000 every 0.2 s and prints each reply (kubectl logs)."""
    replies: asyncio.Queue[bytes] = asyncio.Queue()

    class Probe(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            replies.put_nowait(data)

    transport, _ = await ctx.net.create_datagram_endpoint(Probe, remote_addr=(ctx.args[0], 9000))
    try:
        for n in range(1000):
            transport.sendto(f"hello-{n}".encode())
            try:
                ctx.stdout.write((await asyncio.wait_for(replies.get(), 1.0)).decode() + "\n")
            except TimeoutError:
                ctx.stdout.write(f"timeout {n}\n")
            await asyncio.sleep(0.2)
    finally:
        transport.close()


async def http_prober(ctx: Any) -> None:
    """GETs http://args[0]:8080/ every 0.2 s and logs each outcome to the agent's JSON log
    (`probe.ok` / `probe.failed`), which tests read even while the control plane is down."""
    n = 0
    while True:
        n += 1
        try:
            reader, writer = await asyncio.wait_for(
                ctx.net.open_connection(ctx.args[0], 8080), 2.0)
            writer.write(b"GET /probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 2.0)
            writer.close()
            ok = data.startswith(b"HTTP/1.1 200")
            ctx.log.info("probe.ok" if ok else "probe.failed", n=n, status=data[:12].decode())
        except (OSError, TimeoutError) as e:
            ctx.log.info("probe.failed", n=n, error=f"{type(e).__name__}: {e}")
        await asyncio.sleep(0.2)
