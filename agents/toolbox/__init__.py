"""The toolbox: commands that run inside a pod's network stack for `kubectl exec`/`podnet exec`.

Each command is `async def cmd(proc: Proc, argv: list[str]) -> int`: it reads `proc.stdin`,
writes `proc.stdout`/`proc.stderr`, reaches the network only through `proc.target.net` (the
pod's `PodNet`), and returns the exit code the real tool would. Output shapes and messages are
the real tools' (curl 7.88, GNU wget, BusyBox nc, iproute2, coreutils, dash), so what a learner
sees here is what a real cluster would show.

`run_command` is the entry point exec uses; see `registry` for adding a command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from agents.toolbox.core import Command, ExecTarget, Output, Proc
from agents.toolbox.registry import COMMANDS
from agents.toolbox.shell import dispatch

__all__ = ["COMMANDS", "Command", "ExecTarget", "Output", "Proc", "run_command"]


async def run_command(target: ExecTarget, argv: list[str],
                      stdin: asyncio.StreamReader | None,
                      stdout: Callable[[bytes], None], stderr: Callable[[bytes], None], *,
                      tty: bool = False,
                      drain: Callable[[], Awaitable[None]] | None = None) -> int:
    """Run argv in `target` and return its exit code (127 when no such command).

    argv may be a toolbox command (`curl ...`, `/usr/bin/curl ...`) or a shell (`sh -c "..."`).
    `drain`, when given, is awaited by commands between large writes so that the caller can
    apply backpressure to them.
    """
    proc = Proc(target, argv, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty, drain=drain)
    return await dispatch(proc, argv)
