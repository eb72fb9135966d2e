"""What every toolbox command gets: the pod it runs in (`ExecTarget`) and its process (`Proc`)."""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.netstack import PodNet

# Where /usr/bin/curl and friends would live; `/opt/curl` is "not found" like in a real image.
PATH_DIRS = ("/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin")


@dataclass
class ExecTarget:
    """One container of one pod, as the agent hands it to exec."""

    net: PodNet
    pod: str
    namespace: str
    node: str
    pod_ip: str
    hostname: str
    env: dict[str, str] = field(default_factory=dict)
    # The container's virtual filesystem: absolute path -> text ("/etc/resolv.conf", ...).
    files: dict[str, str] = field(default_factory=dict)
    # (destination, the rest of the `ip route` line), in the order `ip route` prints them.
    routes: list[tuple[str, str]] = field(default_factory=list)
    # The working directory relative paths start from (`cd` in the shell changes its own copy).
    cwd: str = "/"
    # The programs the container's image holds beyond the toolbox (`nginx`, `agnhost`), by
    # file name, so a script can start them: `sh -c "... && nginx -g 'daemon off;'"`.
    programs: dict[str, Command] = field(default_factory=dict)


class Output:
    """A command's stdout or stderr: synchronous `write(str | bytes)` like a file."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self._sink = sink

    def write(self, data: str | bytes) -> None:
        if data:
            self._sink(data.encode() if isinstance(data, str) else bytes(data))


async def _no_drain() -> None:
    return None


class Proc:
    """One running toolbox command.

    `stdin` is None when the session has no stdin (reads then see EOF at once, like
    `/dev/null`). `tty` is true when the client asked for a terminal (curl then hides its
    progress meter, as it does when its output is a terminal). Commands that may write a lot
    call `await proc.drain()` between writes so a slow client slows them down instead of
    growing the output buffer.
    """

    def __init__(self, target: ExecTarget, argv: list[str], *,
                 stdin: asyncio.StreamReader | None,
                 stdout: Callable[[bytes], None], stderr: Callable[[bytes], None],
                 tty: bool = False,
                 drain: Callable[[], Awaitable[None]] | None = None) -> None:
        self.target = target
        self.argv = argv
        self.stdin = stdin
        self.stdout = Output(stdout)
        self.stderr = Output(stderr)
        self.tty = tty
        self._drain = drain or _no_drain

    async def drain(self) -> None:
        await self._drain()

    async def read_stdin(self, limit: int = 65536) -> bytes:
        """Up to `limit` bytes of stdin; b"" at EOF."""
        if self.stdin is None:
            return b""
        return await self.stdin.read(limit)


# `async def cmd(proc, argv) -> exit code`; argv[0] is the command's own name.
Command = Callable[[Proc, list[str]], Awaitable[int]]


def abspath(path: str, cwd: str = "/") -> str:
    """A path in the virtual filesystem; relative paths start at `cwd` (`/`, a container's
    usual working directory, unless the shell changed it)."""
    return posixpath.normpath(posixpath.join(cwd or "/", path)).replace("//", "/")
