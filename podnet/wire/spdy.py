"""SPDY/3.1 framing: frames to bytes and back, and the zlib header-block compression. No I/O.

kubectl's `port-forward` speaks SPDY/3.1 (draft 3.1 of the Chromium SPDY spec), either over a
plain HTTP upgrade or tunnelled inside a WebSocket; Go's `moby/spdystream` is the peer. Every
frame starts with 8 bytes:

    control: |1| version (15) | type (16) |      data: |0| stream id (31)     |
             | flags (8) |   length (24)  |            | flags (8) | length (24) |

Control types: SYN_STREAM 1, SYN_REPLY 2, RST_STREAM 3, SETTINGS 4, PING 6, GOAWAY 7, HEADERS 8,
WINDOW_UPDATE 9; any other type is skipped, as the spec requires. Name/value header blocks
(SYN_STREAM, SYN_REPLY, HEADERS) are `count, (len, name, len, value)*` with 32-bit big-endian
lengths, compressed by one zlib stream per direction for the whole session (sync-flushed after
every block) that starts from the SPDY/3 preset dictionary. So a header block can only be decoded
in order, and a session must feed every block to its decompressor even when it refuses the frame.

`FrameDecoder` is incremental and bounded: it holds at most one control frame (`max_control_bytes`)
and hands data frame payloads out as they arrive, so a 16 MiB data frame never sits in memory.
Malformed input raises `ProtocolError` (the session is unusable: answer GOAWAY and close) or
`StreamError` (one stream is bad: answer RST_STREAM and carry on); never anything else.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

VERSION = 3
MAX_LENGTH = 0xFFFFFF              # the 24-bit length field
MAX_STREAM_ID = 0x7FFFFFFF
MAX_WINDOW = 0x7FFFFFFF
DEFAULT_WINDOW = 64 * 1024         # initial stream and session windows (SPDY/3.1 §2.6.8)
MAX_CONTROL_BYTES = 64 * 1024      # a control frame bigger than this is refused
MAX_HEADER_BLOCK_BYTES = 64 * 1024  # decompressed name/value block
MAX_HEADER_PAIRS = 256

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_CLEAR_SETTINGS = 0x01

_HEAD = struct.Struct("!II")


class FrameType(IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SettingId(IntEnum):
    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


# The SPDY/3 header compression dictionary (spec §2.6.10.1): length-prefixed common header
# names and values, then a run of status codes, reasons, dates and media types. Go's spdystream
# (kubectl's side) uses it without a trailing NUL; zlib checks it by Adler-32, so one byte off
# and no header block decodes.
_DICTIONARY_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
    "cache-control", "connection", "content-base", "content-encoding", "content-language",
    "content-length", "content-location", "content-md5", "content-range", "content-type", "date",
    "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since",
    "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
    "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent",
    "vary", "via", "warning", "www-authenticate", "method", "get", "status", "200 OK",
    "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin",
)
_DICTIONARY_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00"
    " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack("!I", len(w)) + w.encode() for w in _DICTIONARY_WORDS) + \
    _DICTIONARY_TAIL.encode()


# ---------------------------------------------------------------------- errors

class SpdyError(Exception):
    """Base of the errors a peer's bytes can cause."""


class ProtocolError(SpdyError):
    """The session cannot go on: send GOAWAY with `status` and close."""

    def __init__(self, message: str, status: GoAwayStatus = GoAwayStatus.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.status = status


class StreamError(SpdyError):
    """One stream is broken: send RST_STREAM(`stream_id`, `status`); the session goes on."""

    def __init__(self, stream_id: int, status: RstStatus, message: str) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.status = status


# ---------------------------------------------------------------------- frames

Headers = Mapping[str, str]   # lower-case name -> value (several values are joined by NUL)


@dataclass(frozen=True)
class DataFrame:
    """Data for a stream. The decoder may split one frame into several of these (only the last
    carries `fin`); flow control counts bytes, so the split is invisible to a session."""

    stream_id: int
    data: bytes = b""
    fin: bool = False


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    associated_to: int = 0
    priority: int = 0
    slot: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    entries: tuple[tuple[int, int, int], ...] = ()   # (flags, id, value)
    clear: bool = False

    def get(self, setting: SettingId) -> int | None:
        for _, ident, value in self.entries:
            if ident == setting:
                return value
        return None


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int      # 0: the session window (SPDY/3.1)
    delta: int


@dataclass(frozen=True)
class UnknownFrame:
    """A control frame of a type this version does not define (skipped, per the spec)."""

    frame_type: int
    flags: int
    length: int


Frame = (DataFrame | SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame
         | WindowUpdate | UnknownFrame)


# ---------------------------------------------------------------------- header blocks

def pack_headers(headers: Headers) -> bytes:
    """The uncompressed name/value block. Names must be non-empty, lower case, unique."""
    out = [struct.pack("!I", len(headers))]
    for name, value in headers.items():
        if not name or name != name.lower():
            raise ValueError(f"SPDY header names must be non-empty and lower case: {name!r}")
        raw_name, raw_value = name.encode("latin-1"), value.encode("latin-1")
        out.append(struct.pack("!I", len(raw_name)) + raw_name)
        out.append(struct.pack("!I", len(raw_value)) + raw_value)
    return b"".join(out)


def unpack_headers(block: bytes, stream_id: int) -> dict[str, str]:
    """Parse a decompressed name/value block; a malformed one is a stream error
    (PROTOCOL_ERROR), as the spec says."""

    def bad(why: str) -> StreamError:
        return StreamError(stream_id, RstStatus.PROTOCOL_ERROR,
                           f"bad header block on stream {stream_id}: {why}")

    if len(block) < 4:
        raise bad("shorter than its pair count")
    (count,) = struct.unpack_from("!I", block)
    if count > MAX_HEADER_PAIRS:
        raise bad(f"{count} pairs (at most {MAX_HEADER_PAIRS})")
    pos, headers = 4, {}
    for _ in range(count):
        strings = []
        for what in ("name", "value"):
            if pos + 4 > len(block):
                raise bad(f"truncated {what} length")
            (size,) = struct.unpack_from("!I", block, pos)
            pos += 4
            if pos + size > len(block):
                raise bad(f"{what} of {size} bytes runs past the block")
            strings.append(block[pos:pos + size].decode("latin-1"))
            pos += size
        name, value = strings
        if not name:
            raise bad("empty header name")
        if name != name.lower():
            raise bad(f"header name {name!r} is not lower case")
        if name in headers:
            raise bad(f"duplicate header {name!r}")
        headers[name] = value
    if pos != len(block):
        raise bad(f"{len(block) - pos} bytes after the last pair")
    return headers


class HeaderCompressor:
    """The sending side's zlib stream (one per session and direction)."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8,
                                   zlib.Z_DEFAULT_STRATEGY, zdict=DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        return self._z.compress(pack_headers(headers)) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """The receiving side's zlib stream. Output is bounded: a block that inflates past
    `max_bytes` (a zip bomb, or garbage) ends the session, since the shared stream cannot
    resynchronise after a block is skipped."""

    def __init__(self, max_bytes: int = MAX_HEADER_BLOCK_BYTES) -> None:
        self._z = zlib.decompressobj(zdict=DICTIONARY)
        self._max = max_bytes

    def decompress(self, data: bytes) -> bytes:
        try:
            out = self._z.decompress(data, self._max + 1)
        except zlib.error as e:
            raise ProtocolError(f"header block does not decompress with the SPDY/3 "
                                f"dictionary: {e}") from None
        if len(out) > self._max or self._z.unconsumed_tail:
            raise ProtocolError(f"header block inflates past {self._max} bytes")
        return out


# ---------------------------------------------------------------------- encoding

def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"control frame payload of {len(payload)} bytes is too long")
    return _HEAD.pack(0x80000000 | (VERSION << 16) | frame_type,
                      (flags << 24) | len(payload)) + payload


def _check_id(stream_id: int, *, zero_ok: bool = False) -> int:
    if not (0 if zero_ok else 1) <= stream_id <= MAX_STREAM_ID:
        raise ValueError(f"stream id {stream_id} out of range")
    return stream_id


def encode_data(stream_id: int, data: bytes = b"", fin: bool = False) -> bytes:
    if len(data) > MAX_LENGTH:
        raise ValueError(f"data frame of {len(data)} bytes is too long (split it)")
    return _HEAD.pack(_check_id(stream_id), ((FLAG_FIN if fin else 0) << 24) | len(data)) + data


def encode(frame: Frame, compressor: HeaderCompressor | None = None) -> bytes:
    """The bytes of one frame. Frames with header blocks need the session's compressor."""
    if isinstance(frame, DataFrame):
        return encode_data(frame.stream_id, frame.data, frame.fin)
    if isinstance(frame, SynStream | SynReply | HeadersFrame):
        if compressor is None:
            raise ValueError(f"{type(frame).__name__} needs the session's HeaderCompressor")
        block = compressor.compress(frame.headers)
        fin = FLAG_FIN if frame.fin else 0
        if isinstance(frame, SynStream):
            if not 0 <= frame.priority <= 7 or not 0 <= frame.slot <= 255:
                raise ValueError("priority is 0..7 and slot 0..255")
            flags = fin | (FLAG_UNIDIRECTIONAL if frame.unidirectional else 0)
            head = struct.pack("!IIBB", _check_id(frame.stream_id),
                               _check_id(frame.associated_to, zero_ok=True),
                               frame.priority << 5, frame.slot)
            return _control(FrameType.SYN_STREAM, flags, head + block)
        kind = FrameType.SYN_REPLY if isinstance(frame, SynReply) else FrameType.HEADERS
        return _control(kind, fin, struct.pack("!I", _check_id(frame.stream_id)) + block)
    if isinstance(frame, RstStream):
        return _control(FrameType.RST_STREAM, 0,
                        struct.pack("!II", _check_id(frame.stream_id), frame.status))
    if isinstance(frame, Settings):
        body = b"".join(struct.pack("!II", (flags << 24) | ident, value)
                        for flags, ident, value in frame.entries)
        return _control(FrameType.SETTINGS, FLAG_CLEAR_SETTINGS if frame.clear else 0,
                        struct.pack("!I", len(frame.entries)) + body)
    if isinstance(frame, Ping):
        return _control(FrameType.PING, 0, struct.pack("!I", frame.ping_id))
    if isinstance(frame, GoAway):
        return _control(FrameType.GOAWAY, 0, struct.pack(
            "!II", _check_id(frame.last_good_stream_id, zero_ok=True), frame.status))
    if isinstance(frame, WindowUpdate):
        if not 1 <= frame.delta <= MAX_WINDOW:
            raise ValueError(f"window delta {frame.delta} out of range 1..{MAX_WINDOW}")
        return _control(FrameType.WINDOW_UPDATE, 0, struct.pack(
            "!II", _check_id(frame.stream_id, zero_ok=True), frame.delta))
    raise ValueError(f"cannot encode {frame!r}")


# ---------------------------------------------------------------------- decoding

# Control frames whose length the spec fixes, and the minimum of the variable ones.
_FIXED_LENGTH = {FrameType.RST_STREAM: 8, FrameType.PING: 4, FrameType.GOAWAY: 8,
                 FrameType.WINDOW_UPDATE: 8}
_MIN_LENGTH = {FrameType.SYN_STREAM: 10, FrameType.SYN_REPLY: 4, FrameType.HEADERS: 4,
               FrameType.SETTINGS: 4}


class FrameDecoder:
    """Bytes in, frames out, for one direction of one session.

    `feed()` may be given any slicing of the byte stream. After it raises ProtocolError the
    decoder refuses further input.
    """

    def __init__(self, decompressor: HeaderDecompressor | None = None, *,
                 max_control_bytes: int = MAX_CONTROL_BYTES) -> None:
        self._headers = decompressor or HeaderDecompressor()
        self._max_control = max_control_bytes
        self._buf = bytearray()
        self._data_left = 0             # payload bytes still due for the current data frame
        self._data_stream = 0
        self._data_fin = False
        self._skip_left = 0             # bytes of an unknown control frame still to skip
        self._failed: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete (bounded by the control frame limit)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | StreamError]:
        """The frames completed by `data`, in order, with a StreamError in place of each frame
        that was bad for one stream only. Raises ProtocolError when the session is broken."""
        if self._failed is not None:
            raise ProtocolError(f"the session already failed: {self._failed}")
        self._buf += data
        out: list[Frame | StreamError] = []
        while True:
            try:
                frame = self._next()
            except StreamError as e:
                out.append(e)
                continue
            except ProtocolError as e:
                self._failed = str(e)
                raise
            if frame is None:
                return out
            out.append(frame)

    def _next(self) -> Frame | None:
        if self._skip_left:
            self._next_skip()
            if self._skip_left:
                return None
        if self._data_left:
            return self._data_piece()
        if len(self._buf) < 8:
            return None
        first, second = _HEAD.unpack_from(self._buf)
        flags, length = second >> 24, second & MAX_LENGTH
        if not first & 0x80000000:
            stream_id = first & MAX_STREAM_ID
            if stream_id == 0:
                raise ProtocolError("data frame for stream 0")
            del self._buf[:8]
            self._data_stream, self._data_left, self._data_fin = (
                stream_id, length, bool(flags & FLAG_FIN))
            if length == 0:
                return DataFrame(stream_id, b"", self._data_fin)
            return self._data_piece()
        version, frame_type = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise ProtocolError(f"unsupported SPDY version {version} (this server speaks "
                                f"SPDY/3.1)")
        if frame_type not in FrameType.__members__.values():
            # Unknown control frames are ignored (spec §2.2.1); skip without buffering.
            del self._buf[:8]
            self._skip_left = length
            self._next_skip()
            return UnknownFrame(frame_type, flags, length)
        kind = FrameType(frame_type)
        fixed = _FIXED_LENGTH.get(kind)
        if fixed is not None and length != fixed:
            raise ProtocolError(f"{kind.name} frame with length {length} (must be {fixed})")
        if length < _MIN_LENGTH.get(kind, 0):
            raise ProtocolError(f"{kind.name} frame with length {length} (at least "
                                f"{_MIN_LENGTH[kind]})")
        if length > self._max_control:
            raise ProtocolError(f"{kind.name} frame of {length} bytes (at most "
                                f"{self._max_control})")
        if len(self._buf) < 8 + length:
            return None
        payload = bytes(self._buf[8:8 + length])
        del self._buf[:8 + length]
        return self._control(kind, flags, payload)

    def _next_skip(self) -> None:
        n = min(self._skip_left, len(self._buf))
        del self._buf[:n]
        self._skip_left -= n

    def _data_piece(self) -> DataFrame | None:
        if not self._buf:
            return None
        n = min(self._data_left, len(self._buf))
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        self._data_left -= n
        return DataFrame(self._data_stream, chunk, self._data_fin and not self._data_left)

    def _control(self, kind: FrameType, flags: int, p: bytes) -> Frame:
        if kind in (FrameType.SYN_STREAM, FrameType.SYN_REPLY, FrameType.HEADERS):
            return self._with_headers(kind, flags, p)
        if kind == FrameType.RST_STREAM:
            stream_id, status = struct.unpack("!II", p)
            stream_id &= MAX_STREAM_ID
            if stream_id == 0:
                raise ProtocolError("RST_STREAM for stream 0")
            if status == 0:
                raise ProtocolError(f"RST_STREAM for stream {stream_id} with status 0")
            return RstStream(stream_id, status)
        if kind == FrameType.SETTINGS:
            (count,) = struct.unpack_from("!I", p)
            if len(p) != 4 + 8 * count:
                raise ProtocolError(f"SETTINGS frame of {len(p)} bytes does not hold the "
                                    f"{count} entries it announces")
            entries = []
            for i in range(count):
                head, value = struct.unpack_from("!II", p, 4 + 8 * i)
                entries.append((head >> 24, head & 0xFFFFFF, value))
            return Settings(tuple(entries), bool(flags & FLAG_CLEAR_SETTINGS))
        if kind == FrameType.PING:
            return Ping(struct.unpack("!I", p)[0])
        if kind == FrameType.GOAWAY:
            last, status = struct.unpack("!II", p)
            return GoAway(last & MAX_STREAM_ID, status)
        # WINDOW_UPDATE
        stream_id, delta = struct.unpack("!II", p)
        stream_id, delta = stream_id & MAX_STREAM_ID, delta & MAX_WINDOW
        if delta == 0:
            if stream_id == 0:
                raise ProtocolError("WINDOW_UPDATE for the session with delta 0")
            raise StreamError(stream_id, RstStatus.PROTOCOL_ERROR,
                              f"WINDOW_UPDATE for stream {stream_id} with delta 0")
        return WindowUpdate(stream_id, delta)

    def _with_headers(self, kind: FrameType, flags: int, p: bytes) -> Frame:
        if kind == FrameType.SYN_STREAM:
            stream_id, assoc, pri, slot = struct.unpack_from("!IIBB", p)
            block_at = 10
        else:
            (stream_id,) = struct.unpack_from("!I", p)
            assoc = pri = slot = 0
            block_at = 4
        stream_id &= MAX_STREAM_ID
        # Inflate first, whatever happens next: the zlib stream is shared by every block.
        raw = self._headers.decompress(p[block_at:])
        if stream_id == 0:
            raise ProtocolError(f"{kind.name} for stream 0")
        headers = unpack_headers(raw, stream_id)
        fin = bool(flags & FLAG_FIN)
        if kind == FrameType.SYN_STREAM:
            return SynStream(stream_id, headers, assoc & MAX_STREAM_ID, pri >> 5, slot, fin,
                             bool(flags & FLAG_UNIDIRECTIONAL))
        if kind == FrameType.SYN_REPLY:
            return SynReply(stream_id, headers, fin)
        return HeadersFrame(stream_id, headers, fin)


def encode_all(frames: Iterable[Frame], compressor: HeaderCompressor | None = None) -> bytes:
    return b"".join(encode(f, compressor) for f in frames)
