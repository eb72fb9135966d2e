"""Running a process's long-lived tasks until a stop signal, the same way in every process.

Every task is named and owned here. A task that ends on its own is a failure (they are all
meant to run until stopped): it is logged with its error, the others are cancelled, and
`TaskDied` tells the process to exit non-zero, so a supervisor (`podnet up`, docker, systemd)
sees it, rather than a process that looks alive with a dead component.
"""

from __future__ import annotations

import asyncio
from typing import Any


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
