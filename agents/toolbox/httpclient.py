"""A minimal HTTP/1.1 client for curl and wget: URL parsing, request bytes, response parsing.

Bodies may be delimited by Content-Length, chunked transfer coding or the end of the stream.
Errors carry curl's exit code and wording; wget maps them to its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_HEAD_BYTES = 100 * 1024  # curl refuses larger response headers too
READ_BYTES = 65536


class UrlError(ValueError):
    """A URL curl would reject with exit 3."""


class UnsupportedScheme(ValueError):
    def __init__(self, scheme: str) -> None:
        super().__init__(scheme)
        self.scheme = scheme


class HttpError(Exception):
    """A broken or truncated response; `code` is curl's exit code for it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Url:
    scheme: str
    host: str
    port: int
    target: str  # path and query, as sent on the request line

    @property
    def authority(self) -> str:
        """host[:port] for the Host header: the port only when it is not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if DEFAULT_PORTS.get(self.scheme) == self.port else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.target}"


def parse_url(text: str) -> Url:
    """Parse an http URL; like curl, a URL without a scheme means http."""
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
    except ValueError as e:
        raise UrlError("Malformed input to a URL function") from e
    scheme = parts.scheme.lower()
    if scheme != "http":
        raise UnsupportedScheme(scheme)
    if any(c.isspace() for c in text):
        raise UrlError("Malformed input to a URL function")
    try:
        port = parts.port
    except ValueError:
        raise UrlError("Port number was not a decimal number between 0 and 65535") from None
    host = parts.hostname
    if not host:
        raise UrlError("No host part in the URL")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Url(scheme, host, port if port is not None else DEFAULT_PORTS[scheme], target)


def build_request(method: str, url: Url, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"{method} {url.target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    head: bytes  # status line, headers and the blank line, exactly as received

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def chunked(self) -> bool:
        coding = self.header("transfer-encoding") or ""
        return coding.lower().split(",")[-1].strip() == "chunked"

    @property
    def content_length(self) -> int | None:
        value = self.header("content-length")
        if value is None or not value.strip().isdigit():
            return None
        return int(value)


@dataclass
class Progress:
    """Bytes of body received so far, for timeout messages and progress meters."""

    received: int = 0
    expected: int | None = None


async def _read_one_head(reader: asyncio.StreamReader) -> Response:
    first = await reader.readline()
    if not first:
        raise HttpError(52, "Empty reply from server")
    parts = first.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HttpError(1, "Received HTTP/0.9 when not allowed")
    raw = bytearray(first)
    headers: list[tuple[str, str]] = []
    while True:
        line = await reader.readline()
        raw += line
        if len(raw) > MAX_HEAD_BYTES:
            raise HttpError(100, "Too large response headers")
        if not line:
            raise HttpError(52, "Empty reply from server")  # closed inside the headers
        if line in (b"\r\n", b"\n"):
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    reason = parts[2] if len(parts) > 2 else ""
    return Response(parts[0], int(parts[1]), reason, headers, bytes(raw))


async def read_head(reader: asyncio.StreamReader) -> Response:
    """The final response head; interim 1xx responses (100 Continue) are skipped."""
    while True:
        response = await _read_one_head(reader)
        if not 100 <= response.status < 200 or response.status == 101:
            return response


def has_body(method: str, status: int) -> bool:
    return method != "HEAD" and status not in (204, 304) and not 100 <= status < 200


Sink = Callable[[bytes], Awaitable[None]]


async def read_body(reader: asyncio.StreamReader, response: Response, sink: Sink,
                    progress: Progress) -> None:
    """Stream the body to `sink` in the framing the response announced."""
    if response.chunked:
        await _read_chunked(reader, sink, progress)
        return
    length = response.content_length
    progress.expected = length
    while length is None or progress.received < length:
        want = READ_BYTES if length is None else min(READ_BYTES, length - progress.received)
        data = await reader.read(want)
        if not data:
            if length is None:
                return
            raise HttpError(18, f"transfer closed with {length - progress.received} bytes "
                                "remaining to read")
        progress.received += len(data)
        await sink(data)


async def _read_chunked(reader: asyncio.StreamReader, sink: Sink, progress: Progress) -> None:
    while True:
        line = await reader.readline()
        size_text = line.split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpError(56, "Illegal or missing hexadecimal sequence in chunked-encoding"
                            ) from None
        if size == 0:
            # Trailer fields, then the blank line that ends the message.
            while await reader.readline() not in (b"\r\n", b"\n", b""):
                pass
            return
        while size:
            data = await reader.read(min(READ_BYTES, size))
            if not data:
                raise HttpError(18, "transfer closed with outstanding read data remaining")
            size -= len(data)
            progress.received += len(data)
            await sink(data)
        if await reader.readline() not in (b"\r\n", b"\n"):
            raise HttpError(56, "Malformed encoding found in chunked-encoding")
