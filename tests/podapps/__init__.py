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
