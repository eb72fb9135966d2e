"""What a container prints: a bounded, followable buffer per container (`kubectl logs`)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True)
class LogLine:
    ts: float      # seconds since the epoch
    text: str      # one line, with its trailing newline


class ContainerLog:
    """A ring buffer of lines; the oldest go first once `max_bytes` is exceeded.

    `write()` is what `ctx.stdout.write` calls, so a container can print partial lines; a
    line becomes visible when its newline arrives (as with a real container's stdout).
    """

    def __init__(self, max_bytes: int = 1 << 20) -> None:
        self.max_bytes = max_bytes
        self.lines: deque[LogLine] = deque()
        self.size = 0
        self.total = 0                 # lines ever written: followers track their position
        self._partial = ""
        self._changed = asyncio.Event()
        self.closed = False

    # The file-like surface a container sees as ctx.stdout.
    def write(self, text: str) -> int:
        if not isinstance(text, str):
            text = str(text)
        data = self._partial + text
        *complete, self._partial = data.split("\n")
        now = time.time()
        for line in complete:
            self._append(LogLine(now, line + "\n"))
        if len(self._partial) > 64 * 1024:  # a runaway line without newline: cut it
            self._append(LogLine(now, self._partial + "\n"))
            self._partial = ""
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def _append(self, line: LogLine) -> None:
        self.lines.append(line)
        self.size += len(line.text)
        self.total += 1
        while self.size > self.max_bytes and self.lines:
            self.size -= len(self.lines.popleft().text)
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        if self._partial:
            self._append(LogLine(time.time(), self._partial + "\n"))
            self._partial = ""
        self.closed = True
        self._changed.set()

    def snapshot(self, *, tail: int | None = None, since_ts: float | None = None) -> list[LogLine]:
        lines = list(self.lines)
        if since_ts is not None:
            lines = [ln for ln in lines if ln.ts >= since_ts]
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        return lines

    async def follow(self, *, tail: int | None = None,
                     since_ts: float | None = None) -> AsyncIterator[LogLine]:
        """Yield the selected history, then new lines until the log is closed."""
        for line in self.snapshot(tail=tail, since_ts=since_ts):
            yield line
        seen = self.total
        while not self.closed:
            changed = self._changed
            await changed.wait()
            new = self.total - seen
            if new > 0:
                for line in list(self.lines)[-min(new, len(self.lines)):]:
                    yield line
            seen = self.total
