"""Running a process's main coroutine on the fastest event loop available.

uvloop roughly doubles socket-heavy rates on these machines (see docs/benchmarks.md), so the
control plane and the agents use it when it is installed (`pip install podnet[fast]`, which
`make` does). `PODNET_LOOP=asyncio` forces the standard loop, e.g. to compare the two.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if os.environ.get("PODNET_LOOP", "auto") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name() -> str:
    return "uvloop" if loop_factory() is not None else "asyncio"


def run(main: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main)
