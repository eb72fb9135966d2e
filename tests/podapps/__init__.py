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
