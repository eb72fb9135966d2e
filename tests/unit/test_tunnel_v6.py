"""IPv6 addresses in tunnel frames: their own frame types, IPv4 frames unchanged to the byte."""

from __future__ import annotations

import random

import pytest

from podnet import tunnel as t
from podnet.auth import derive_key
from podnet.tunnel import Dgram, Open, Ping, Pong, TunnelError, decode_frames, encode_frame

NOW = 1_800_000_000.0
SRC6, DST6 = ("fd00:10:244:1::2", 40000), ("fd00:10:244:2::3", 8080)

V6_FRAMES: list[t.Frame] = [
    Open(1, t.TCP, SRC6, DST6, "abc123-1", 262144),
    Dgram(SRC6, ("fd00:10:96::a", 53), "flow-9", b"\x00\x01query"),
    Dgram(SRC6, DST6, "", b""),
    Ping("fd00:10:244:1::2", "fd00:10:244:2::3", 7, 1, bytes(56)),
    Pong("fd00:10:244:2::3", "fd00:10:244:1::2", 7, 1, b"pay"),
]

# The IPv4 encodings as they were before IPv6 existed: a v4 peer of an older build reads them.
V4_PINNED: list[tuple[t.Frame, str]] = [
    (Open(1, t.TCP, ("10.244.1.2", 40000), ("10.244.2.3", 8080), "abc-1", 262144),
     "010000000100000017060af401029c400af402031f9000040000056162632d31"),
    (Dgram(("10.244.1.2", 40000), ("10.244.2.3", 53), "f9", b"q"),
     "0800000000000000100af401029c400af40203003502663971"),
    (Ping("10.244.1.2", "10.244.2.3", 7, 1, b"p"),
     "09000000000000000d0af401020af402030007000170"),
    (Pong("10.244.2.3", "10.244.1.2", 7, 1, b""),
     "0a000000000000000c0af402030af4010200070001"),
]


@pytest.mark.parametrize(("frame", "wire"), V4_PINNED, ids=lambda v: type(v).__name__)
def test_ipv4_frames_keep_their_exact_encoding(frame: t.Frame, wire: str) -> None:
    assert encode_frame(frame).hex() == wire
    assert decode_frames(bytes.fromhex(wire)) == [frame]


@pytest.mark.parametrize("frame", V6_FRAMES, ids=lambda f: type(f).__name__)
def test_ipv6_frames_round_trip(frame: t.Frame) -> None:
    raw = encode_frame(frame)
    assert raw[0] in (t.OPEN6, t.DGRAM6, t.PING6, t.PONG6)
    assert decode_frames(raw) == [frame]


def test_ipv6_addresses_come_back_in_canonical_form() -> None:
    frame = Dgram(("fd00:0010:0244:0001:0000:0000:0000:0002", 1), ("::1", 2), "", b"")
    [got] = decode_frames(encode_frame(frame))
    assert isinstance(got, Dgram)
    assert got.src == ("fd00:10:244:1::2", 1) and got.dst == ("::1", 2)


def test_a_record_mixes_both_families() -> None:
    frames: list[t.Frame] = [V4_PINNED[0][0], *V6_FRAMES, V4_PINNED[1][0]]
    assert decode_frames(b"".join(encode_frame(f) for f in frames)) == frames


def test_every_truncation_of_v6_frames_is_a_tunnel_error() -> None:
    for frame in V6_FRAMES:
        raw = encode_frame(frame)
        for cut in range(1, len(raw)):
            with pytest.raises(TunnelError):
                decode_frames(raw[:cut])


def test_random_mutations_of_v6_frames_only_raise_tunnel_error() -> None:
    rng = random.Random(66)
    valid = [encode_frame(f) for f in V6_FRAMES]
    for _ in range(10000):
        buf = bytearray(rng.choice(valid))
        for _ in range(rng.randrange(1, 4)):
            buf[rng.randrange(len(buf))] = rng.getrandbits(8)
        try:
            decode_frames(bytes(buf))
        except TunnelError as exc:
            assert exc.reason


@pytest.mark.parametrize(("raw", "reason"), [
    (t._HDR.pack(t.OPEN6, 0, t._OPEN6.size) + bytes(t._OPEN6.size), "without a stream id"),
    (t._HDR.pack(t.DGRAM6, 1, t._ADDR26.size) + bytes(t._ADDR26.size), "with a stream id"),
    (t._HDR.pack(t.PING6, 0, 8) + bytes(8), "bad PING6 frame length"),
    (t._HDR.pack(t.OPEN6, 1, 10) + bytes(10), "truncated OPEN6"),
    (t._HDR.pack(t.OPEN6, 1, t._OPEN6.size)
     + t._OPEN6.pack(17, bytes(16), 1, bytes(16), 2, 1024, 0), "unsupported protocol"),
    (t._HDR.pack(t.OPEN6, 1, t._OPEN6.size)
     + t._OPEN6.pack(t.TCP, bytes(16), 1, bytes(16), 0, 1024, 0), "bad destination port"),
    (t._HDR.pack(t.OPEN6, 1, t._OPEN6.size + 1)
     + t._OPEN6.pack(t.TCP, bytes(16), 1, bytes(16), 2, 1024, 2) + b"a", "bad OPEN6 frame length"),
    (t._HDR.pack(t.DGRAM6, 0, t._ADDR26.size)
     + t._ADDR26.pack(bytes(16), 1, bytes(16), 2, 5), "bad DGRAM6 frame length"),
    (t._HDR.pack(15, 0, 0), "unknown frame type"),
])
def test_malformed_v6_frames_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(TunnelError, match=reason):
        decode_frames(raw)


def test_encoding_refuses_a_bad_v6_address_or_mixed_families() -> None:
    with pytest.raises(TunnelError, match="bad IPv6 address"):
        encode_frame(Open(1, t.TCP, ("fd00::zz", 1), DST6, "f", 1))
    with pytest.raises(TunnelError, match="bad IPv6 address"):
        encode_frame(Dgram(SRC6, ("10.244.2.3", 53), "f", b""))
    with pytest.raises(TunnelError, match="bad IPv4 address"):
        encode_frame(Ping("10.244.1.2", "fd00::1", 1, 1, b""))


def _sessions() -> tuple[t.Session, t.Session]:
    key = derive_key(b"cluster-secret-0123456789", "tunnel")
    hello_raw, hello = t.make_hello(key, "node-1", "node-2", now=NOW)
    accepted = t.accept_hello(key, hello_raw, me="node-2", now=NOW, guard=t.ReplayGuard())
    welcome_raw, acceptor = t.make_welcome(key, accepted, now=NOW)
    dialer = t.accept_welcome(key, welcome_raw, hello, now=NOW)
    return t.Session(dialer, dialer=True), t.Session(acceptor, dialer=False)


def carry(sender: t.Session, receiver: t.Session) -> list[t.Event]:
    events: list[t.Event] = []
    while (record := sender.take_output()) is not None:
        events.extend(receiver.receive(record))
    return events


def test_a_session_carries_v6_streams_and_datagrams() -> None:
    a, b = _sessions()
    sid = a.open(SRC6, DST6, "flow-6")
    [opened] = carry(a, b)
    assert isinstance(opened, Open) and (opened.src, opened.dst) == (SRC6, DST6)
    b.accept(sid)
    carry(b, a)
    a.send(sid, b"over v6")
    [data] = carry(a, b)
    assert isinstance(data, t.Data) and bytes(data.data) == b"over v6"
    assert a.datagram(SRC6, DST6, "f", b"udp6")
    [dgram] = carry(a, b)
    assert dgram == Dgram(SRC6, DST6, "f", b"udp6")
