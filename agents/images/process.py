"""A container's main process: the programs an emulated image holds, and its toolbox.

An emulated image is a small table (`Emulated`): its ENTRYPOINT and CMD, and the programs it
ships, by file name (`nginx`, `agnhost`, `docker-entrypoint.sh`). The container's argv
(`entrypoint.container_argv`) names the program to run; anything else runs through the
toolbox (`sh -c ...`, `sleep 3600`, `wget ...`) when the image has a shell, or fails as
runc does when it has none (exit 128, "executable file not found in $PATH").
"""

from __future__ import annotations

import codecs
import dataclasses
import posixpath
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from agents.images import ContainerContext, StartError
from agents.images.entrypoint import container_argv
from agents.toolbox import run_command
from agents.toolbox.core import Command, Proc

# `async def program(ctx, argv) -> exit code`; argv[0] is how the program was named.
Program = Callable[[ContainerContext, list[str]], Awaitable[int | None]]

EXIT_NOT_FOUND = 128    # runc's status when it cannot start the process


class LogWriter:
    """Bytes from a toolbox command into the container log, decoded across writes."""

    def __init__(self, ctx: ContainerContext) -> None:
        self._ctx = ctx
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def write(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            self._ctx.stdout.write(text)


def _as_command(ctx: ContainerContext, program: Program) -> Command:
    async def command(proc: Proc, argv: list[str]) -> int:
        code = await program(ctx, argv)
        return 0 if code is None else code

    return command


async def run_tool(ctx: ContainerContext, argv: list[str],
                   programs: Mapping[str, Program] | None = None) -> int:
    """Run argv through the toolbox in this container, output into its log (no stdin, as
    for a container started without `stdin: true`). `programs`, the image's own, can be
    started from a script too."""
    if ctx.target is None:
        ctx.stdout.write(f"exec: {argv[0]!r}: this container has no toolbox\n")
        return EXIT_NOT_FOUND
    target = ctx.target
    if programs:    # the same pod files and network; only the main process sees these
        target = dataclasses.replace(target, programs={
            name: _as_command(ctx, program) for name, program in programs.items()})
    out, err = LogWriter(ctx), LogWriter(ctx)
    return await run_command(target, argv, None, out.write, err.write)


@dataclass(frozen=True)
class Emulated:
    """One emulated image."""

    about: str                              # one line for the README and error messages
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    programs: Mapping[str, Program] = field(default_factory=dict)
    shell: bool = True                      # the image has /bin/sh and the usual tools


async def run_program(image: Emulated, ctx: ContainerContext, argv: list[str]) -> int:
    """Run argv in `image`: one of its programs, else the toolbox, else runc's error."""
    if not argv:
        raise StartError("failed to create containerd task: no command specified: unknown")
    program = image.programs.get(posixpath.basename(argv[0]))
    if program is not None:
        code = await program(ctx, argv)
        return 0 if code is None else code
    if image.shell:
        return await run_tool(ctx, argv, image.programs)
    raise StartError("failed to create containerd task: failed to create shim task: OCI runtime "
                     "create failed: runc create failed: unable to start container process: "
                     f'exec: "{argv[0]}": executable file not found in $PATH: unknown')


def runner(image: Emulated) -> Callable[[ContainerContext], Awaitable[int]]:
    """The container coroutine for `image`: its ENTRYPOINT/CMD under the pod's command/args."""

    async def run(ctx: ContainerContext) -> int:
        argv = container_argv(image.entrypoint, image.cmd, ctx.command, ctx.args)
        return await run_program(image, ctx, argv)

    return run
