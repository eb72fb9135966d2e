"""A terminal's line discipline for `kubectl exec -it POD -- sh`, where no kernel pty exists.

kubectl puts the user's terminal in raw mode and sends keystrokes as typed: Enter is `\\r`,
nothing is echoed, Backspace is DEL. A real pty would cook that input for the shell; `Terminal`
does the same (canonical mode with ECHO, ICRNL, ERASE, KILL, INTR, EOF, and ONLCR on output):

- printable input is echoed and collected; Enter (`\\r` or `\\n`) echoes `\\r\\n` and hands the
  line to the shell; Backspace/DEL erases a character, Ctrl-U the line;
- Ctrl-C echoes `^C`, drops the line and calls `interrupt` (the shell cancels the command in
  the foreground, as SIGINT would); Ctrl-D on an empty line is end of input;
- escape sequences (arrow keys) are swallowed; there is no history or line editing.
- output `\\n` becomes `\\r\\n`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

MAX_LINE_BYTES = 4096  # a pty's canonical-mode line limit


class Terminal:
    def __init__(self, raw: asyncio.StreamReader, echo: Callable[[bytes], None]) -> None:
        self.raw = raw
        self.echo = echo
        self.cooked = asyncio.StreamReader()
        self.line = bytearray()
        self.interrupt: Callable[[], None] = lambda: None
        self._escape = 0  # bytes of an escape sequence still to skip

    @staticmethod
    def output(data: bytes) -> bytes:
        return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    async def pump(self) -> None:
        """Cook the raw input until it ends; then the shell sees end of input."""
        try:
            while chunk := await self.raw.read(4096):
                for byte in chunk:
                    if not self.key(byte):
                        return
        finally:
            if not self.cooked.at_eof():
                self.cooked.feed_eof()

    def key(self, byte: int) -> bool:
        """Handle one input byte; False at end of input (Ctrl-D on an empty line)."""
        if self._escape:
            # ESC [ params final: skip until the final byte (0x40-0x7e) after the '['.
            self._escape = 0 if (self._escape > 1 and 0x40 <= byte <= 0x7E) else self._escape + 1
            return True
        if byte == 0x1B:
            self._escape = 1
        elif byte in (0x0D, 0x0A):
            self.echo(b"\r\n")
            self.cooked.feed_data(bytes(self.line) + b"\n")
            self.line.clear()
        elif byte in (0x7F, 0x08):
            if self.line:
                # Drop one UTF-8 character: its continuation bytes, then its lead byte.
                while self.line and 0x80 <= self.line[-1] < 0xC0:
                    self.line.pop()
                if self.line:
                    self.line.pop()
                self.echo(b"\b \b")
        elif byte == 0x15:
            self.echo(b"\b \b" * len(self.line.decode("utf-8", "replace")))
            self.line.clear()
        elif byte == 0x03:
            self.echo(b"^C\r\n")
            self.line.clear()
            self.interrupt()
        elif byte == 0x04:
            if not self.line:
                return False
            self.cooked.feed_data(bytes(self.line))
            self.line.clear()
        elif byte >= 0x20 or byte == 0x09:
            if len(self.line) < MAX_LINE_BYTES:
                self.line.append(byte)
                self.echo(bytes([byte]))
        return True
