"""Running a process's long-lived tasks until a stop signal, the same way in every process.

Every task is named and owned here. A task that ends on its own is a failure (they are all
meant to run until stopped): it is logged with its error, the others are cancelled, and
`TaskDied` tells the process to exit non-zero, so a supervisor (`podnet up`, docker, systemd)
sees it, rather than a process that looks alive with a dead component.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from podnet import eventloop


class TaskDied(Exception):
    """A component's task ended on its own."""


async def run_until_stopped(stop: asyncio.Event, tasks: list[asyncio.Task[Any]],
                            log: Any, process: str) -> None:
    stopper = asyncio.create_task(stop.wait(), name="stop-signal")
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    died = [t for t in done if t is not stopper]
    for task in died:
        error = None if task.cancelled() else task.exception()
        log.error(f"{process}.task_died", task=task.get_name(), error=repr(error))
    for task in [stopper, *tasks]:
        task.cancel()
    await asyncio.gather(stopper, *tasks, return_exceptions=True)
    log.info(f"{process}.stopping")
    if died:
        raise TaskDied(", ".join(t.get_name() for t in died))


def run_process(process: str, run: Callable[[asyncio.Event], Awaitable[None]],
                user_errors: tuple[type[Exception], ...]) -> int:
    """Run a process's `run(stop)` on the fast loop until SIGINT/SIGTERM; returns its exit
    code: 0 when stopped, 2 with one line for an error the user can fix (`user_errors`: bad
    settings, a wrong secret), 1 when a component died."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run(stop)

    try:
        eventloop.run(main())
    except user_errors as e:
        print(f"podnet {process}: {e}", file=sys.stderr)
        return 2
    except TaskDied as e:
        print(f"podnet {process}: stopped because a component failed: {e} (see the log)",
              file=sys.stderr)
        return 1
    return 0
