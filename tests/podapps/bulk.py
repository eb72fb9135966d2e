"""`py:podapps.bulk:serve [PORT]`: a TCP server for moving bulk bytes (port-forward tests).

One command line per connection:
- `DOWN N\\n`: the server sends N bytes of `pattern(N)` and closes.
- `UP\\n`: the server reads to EOF (the client half-closes), then answers `<count> <sha256>\\n`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

CHUNK = 64 * 1024


def pattern(size: int) -> bytes:
    """Deterministic bytes that do not repeat, so a lost or reordered chunk is caught."""
    return random.Random(size).randbytes(size)


async def serve(ctx: Any) -> None:
    port = int(ctx.args[0]) if ctx.args else 9000

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            words = (await reader.readline()).split()
            if words[:1] == [b"DOWN"] and len(words) == 2 and words[1].isdigit():
                data = pattern(int(words[1]))
                for at in range(0, len(data), CHUNK):
                    writer.write(data[at:at + CHUNK])
                    await writer.drain()
            elif words == [b"UP"]:
                digest, total = hashlib.sha256(), 0
                while chunk := await reader.read(CHUNK):
                    digest.update(chunk)
                    total += len(chunk)
                writer.write(f"{total} {digest.hexdigest()}\n".encode())
                await writer.drain()
            else:
                writer.write(b"ERR expected DOWN N or UP\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    await ctx.net.start_server(handle, port=port)
    ctx.stdout.write(f"bulk listening on {port}\n")
    await asyncio.Event().wait()
