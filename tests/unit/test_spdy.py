"""SPDY/3.1 framing (podnet/wire/spdy.py): round trips, bytes kubectl really sent, and refusal of
every kind of malformed input with a SpdyError (never another exception, never unbounded)."""

from __future__ import annotations

import hashlib
import random
import struct
import zlib

import pytest

from podnet.wire import spdy
from podnet.wire.spdy import (
    DataFrame,
    FrameDecoder,
    GoAway,
    HeaderCompressor,
    HeadersFrame,
    Ping,
    ProtocolError,
    RstStatus,
    RstStream,
    SettingId,
    Settings,
    StreamError,
    SynReply,
    SynStream,
    UnknownFrame,
    WindowUpdate,
)

# What kubectl 1.32.4 sent through the WebSocket tunnel for one forwarded connection (captured
# from the real binary): SYN_STREAM 1 (error), FIN on 1, SYN_STREAM 3 (data), the request on 3,
# RST_STREAM 3 CANCEL. Its header blocks come from Go's compress/zlib with the SPDY dictionary.
KUBECTL_FRAMES = bytes.fromhex(
    "800300010000003e0000000100000000000078f9e3c6a7c202253a060606ce2248fc6482d22da30138e595"
    "14a526e6420b17d65450d0430aea22709eb030b03000000000ffff0000000101000000800300010000001c"
    "00000003000000000000826a46550a2a8712b1a844b302000000ffff0000000300000012474554202f2048"
    "5454502f312e300d0a0d0a80030003000000080000000300000005")


def control(kind: int, flags: int, payload: bytes, version: int = 3) -> bytes:
    """A control frame built by hand, independently of the encoder."""
    return struct.pack("!HHI", 0x8000 | version, kind, (flags << 24) | len(payload)) + payload


def block(*pairs: tuple[bytes, bytes]) -> bytes:
    out = struct.pack("!I", len(pairs))
    for name, value in pairs:
        out += struct.pack("!I", len(name)) + name + struct.pack("!I", len(value)) + value
    return out


def test_dictionary_is_the_spdy3_one() -> None:
    # 1423 bytes, no trailing NUL, as moby/spdystream (kubectl's side) uses it.
    assert len(spdy.DICTIONARY) == 1423
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b",*,enq=0.")
    assert hashlib.sha256(spdy.DICTIONARY).hexdigest() == (
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02")


def test_decodes_what_kubectl_sent() -> None:
    frames = FrameDecoder().feed(KUBECTL_FRAMES)
    assert frames == [
        SynStream(1, {"requestid": "0", "streamtype": "error", "port": "8080"}),
        DataFrame(1, b"", fin=True),
        SynStream(3, {"streamtype": "data", "port": "8080", "requestid": "0"}),
        DataFrame(3, b"GET / HTTP/1.0\r\n\r\n"),
        RstStream(3, RstStatus.CANCEL),
    ]


def test_decodes_kubectl_bytes_in_any_slicing() -> None:
    whole = FrameDecoder().feed(KUBECTL_FRAMES)
    for size in (1, 2, 3, 7, 64):
        decoder = FrameDecoder()
        pieces: list[object] = []
        for at in range(0, len(KUBECTL_FRAMES), size):
            pieces += decoder.feed(KUBECTL_FRAMES[at:at + size])
        merged = merge_data(pieces)
        assert merged == whole, size
        assert decoder.buffered == 0


def merge_data(frames: list[object]) -> list[object]:
    """Join the pieces the decoder hands out for one data frame."""
    out: list[object] = []
    for f in frames:
        if (isinstance(f, DataFrame) and out and isinstance(out[-1], DataFrame)
                and out[-1].stream_id == f.stream_id and not out[-1].fin and f.data):
            out[-1] = DataFrame(f.stream_id, out[-1].data + f.data, f.fin)
        else:
            out.append(f)
    return out


def test_decodes_header_blocks_from_plain_zlib_with_the_dictionary() -> None:
    # A peer's compressor, built with zlib directly: one stream across two frames, each block
    # sync-flushed, as the spec requires.
    z = zlib.compressobj(9, zlib.DEFLATED, 11, 9, zlib.Z_DEFAULT_STRATEGY, zdict=spdy.DICTIONARY)
    first = z.compress(block((b"streamtype", b"data"), (b"port", b"80"))) + z.flush(
        zlib.Z_SYNC_FLUSH)
    second = z.compress(block((b"status", b"200 OK"), (b"version", b"HTTP/1.1"))) + z.flush(
        zlib.Z_SYNC_FLUSH)
    wire = (control(1, 0x01, struct.pack("!IIBB", 5, 0, 0x60, 0) + first)
            + control(8, 0, struct.pack("!I", 5) + second))
    assert FrameDecoder().feed(wire) == [
        SynStream(5, {"streamtype": "data", "port": "80"}, priority=3, fin=True),
        HeadersFrame(5, {"status": "200 OK", "version": "HTTP/1.1"}),
    ]


def test_round_trip_of_every_frame_type() -> None:
    frames: list[spdy.Frame] = [
        SynStream(1, {"streamtype": "error", "port": "80", "requestid": "0"}, priority=7,
                  slot=2, associated_to=0, fin=False, unidirectional=True),
        SynReply(1, {}),
        SynReply(3, {"a": "b\x00c"}, fin=True),
        DataFrame(1, b"hello"),
        DataFrame(1, b"", fin=True),
        RstStream(3, RstStatus.FLOW_CONTROL_ERROR),
        Settings(((0, SettingId.INITIAL_WINDOW_SIZE, 1 << 20), (1, 4, 100)), clear=True),
        Ping(7),
        GoAway(9, spdy.GoAwayStatus.INTERNAL_ERROR),
        HeadersFrame(5, {"x": "y"}, fin=True),
        WindowUpdate(0, 12345),
        WindowUpdate(5, spdy.MAX_WINDOW),
    ]
    compressor = HeaderCompressor()
    wire = spdy.encode_all(frames, compressor)
    assert FrameDecoder().feed(wire) == frames


def test_encoded_bytes_match_the_spec_layout() -> None:
    assert spdy.encode(Ping(0x01020304)) == bytes.fromhex("8003000600000004" "01020304")
    assert spdy.encode(RstStream(3, 5)) == bytes.fromhex("8003000300000008" "00000003 00000005")
    assert spdy.encode(WindowUpdate(1, 0x8000)) == bytes.fromhex(
        "8003000900000008" "00000001" "00008000")
    assert spdy.encode(GoAway(7, 0)) == bytes.fromhex("8003000700000008" "00000007" "00000000")
    assert spdy.encode_data(3, b"ab", fin=True) == bytes.fromhex("00000003" "01000002" "6162")
    settings = spdy.encode(Settings(((0, SettingId.INITIAL_WINDOW_SIZE, 65536),)))
    assert settings == bytes.fromhex("800300040000000c" "00000001" "00000007" "00010000")


def test_compressor_output_inflates_with_plain_zlib() -> None:
    compressor = HeaderCompressor()
    frame = spdy.encode(SynReply(1, {"streamtype": "data"}), compressor)
    z = zlib.decompressobj(zdict=spdy.DICTIONARY)
    assert z.decompress(frame[12:]) == block((b"streamtype", b"data"))


def test_encoder_refuses_what_it_cannot_send() -> None:
    with pytest.raises(ValueError, match="lower case"):
        spdy.encode(SynReply(1, {"Port": "80"}), HeaderCompressor())
    with pytest.raises(ValueError, match="HeaderCompressor"):
        spdy.encode(SynReply(1, {}))
    with pytest.raises(ValueError, match="out of range"):
        spdy.encode(WindowUpdate(1, 0))
    with pytest.raises(ValueError, match="stream id"):
        spdy.encode_data(0, b"x")


def test_data_frames_are_handed_out_as_they_arrive() -> None:
    payload = bytes(range(256)) * 4096            # 1 MiB in one frame
    wire = spdy.encode_data(9, payload, fin=True)
    decoder = FrameDecoder()
    pieces: list[object] = []
    for at in range(0, len(wire), 10_000):
        pieces += decoder.feed(wire[at:at + 10_000])
        assert decoder.buffered <= 10_000         # never the whole frame
    assert all(isinstance(p, DataFrame) and p.stream_id == 9 for p in pieces)
    assert [p.fin for p in pieces if isinstance(p, DataFrame)].count(True) == 1
    assert merge_data(pieces) == [DataFrame(9, payload, fin=True)]


def test_unknown_control_frames_are_skipped() -> None:
    noop = control(5, 0, b"")                       # SPDY/2's NOOP
    credential = control(10, 0, b"z" * 300)         # SPDY/3's CREDENTIAL, gone in 3.1
    wire = noop + credential + spdy.encode(Ping(1))
    decoder = FrameDecoder()
    got: list[object] = []
    for at in range(0, len(wire), 50):
        got += decoder.feed(wire[at:at + 50])
    assert got == [UnknownFrame(5, 0, 0), UnknownFrame(10, 0, 300), Ping(1)]


@pytest.mark.parametrize("wire, message", [
    (control(6, 0, b"\0\0\0\1", version=2), "unsupported SPDY version 2"),
    (control(3, 0, b"\0\0\0\1\0\0\0"), "RST_STREAM frame with length 7"),
    (control(3, 0, b"\0\0\0\0\0\0\0\1"), "RST_STREAM for stream 0"),
    (control(3, 0, b"\0\0\0\1\0\0\0\0"), "with status 0"),
    (control(6, 0, b"\0\0\0\1\0"), "PING frame with length 5"),
    (control(7, 0, b"\0\0\0\1"), "GOAWAY frame with length 4"),
    (control(4, 0, b"\0\0\0\2" + b"\0" * 8), "does not hold the 2 entries"),
    (control(1, 0, b"\0\0\0\1\0\0\0\0\0"), "SYN_STREAM frame with length 9"),
    (control(9, 0, b"\0\0\0\0\0\0\0\0"), "session with delta 0"),
    (b"\x00\x00\x00\x00\x00\x00\x00\x01x", "data frame for stream 0"),
    (control(1, 0, b"\0\0\0\1\0\0\0\0\0\0" + b"not zlib at all"), "does not decompress"),
    (control(2, 0, b"\0" * 70_000), "at most 65536"),
])
def test_session_errors(wire: bytes, message: str) -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match=message):
        decoder.feed(wire)
    with pytest.raises(ProtocolError, match="already failed"):
        decoder.feed(spdy.encode(Ping(1)))


def test_oversized_control_frame_is_refused_from_its_header() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="SYN_REPLY frame of 1000000 bytes"):
        decoder.feed(struct.pack("!HHI", 0x8003, 2, 1_000_000))   # 8 bytes, no payload yet


def bad_block(raw: bytes, stream_id: int = 1) -> bytes:
    z = zlib.compressobj(zdict=spdy.DICTIONARY)
    return control(2, 0, struct.pack("!I", stream_id) + z.compress(raw)
                   + z.flush(zlib.Z_SYNC_FLUSH))


@pytest.mark.parametrize("raw, message", [
    (block((b"Port", b"80")), "not lower case"),
    (block((b"port", b"80"), (b"port", b"81")), "duplicate header"),
    (block((b"", b"80")), "empty header name"),
    (b"\0\0", "shorter than its pair count"),
    (struct.pack("!I", 1) + struct.pack("!I", 50) + b"port", "runs past the block"),
    (block((b"a", b"b")) + b"junk", "bytes after the last pair"),
    (struct.pack("!I", 100_000), "100000 pairs"),
])
def test_stream_errors_in_header_blocks(raw: bytes, message: str) -> None:
    # The bad frame costs only its stream: the next frame still decodes.
    got = FrameDecoder().feed(bad_block(raw) + spdy.encode(Ping(3)))
    assert isinstance(got[0], StreamError)
    assert got[0].stream_id == 1 and got[0].status == RstStatus.PROTOCOL_ERROR
    assert message in str(got[0])
    assert got[1:] == [Ping(3)]


def test_window_update_with_zero_delta_is_a_stream_error() -> None:
    got = FrameDecoder().feed(control(9, 0, struct.pack("!II", 3, 0)))
    assert isinstance(got[0], StreamError) and got[0].stream_id == 3


def test_header_bomb_is_refused() -> None:
    z = zlib.compressobj(zdict=spdy.DICTIONARY)
    bomb = z.compress(block((b"x", b"a" * 1_000_000))) + z.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < spdy.MAX_CONTROL_BYTES      # small on the wire, huge inflated
    with pytest.raises(ProtocolError, match="inflates past"):
        FrameDecoder().feed(control(2, 0, struct.pack("!I", 1) + bomb))


def test_garbage_only_ever_raises_spdy_errors() -> None:
    rng = random.Random(8)
    valid = KUBECTL_FRAMES + spdy.encode(Ping(5))
    for _ in range(400):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 8)):      # flip bytes of a valid stream...
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:                  # ...or send plain noise
            data = bytearray(rng.randbytes(rng.randint(1, 300)))
        decoder, step = FrameDecoder(), rng.randint(1, 40)
        try:
            for at in range(0, len(data), step):
                decoder.feed(bytes(data[at:at + step]))
        except ProtocolError:
            pass
        assert decoder.buffered <= spdy.MAX_CONTROL_BYTES + 40
