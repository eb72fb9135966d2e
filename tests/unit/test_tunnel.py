"""The tunnel protocol without sockets: frame codec, handshake, authenticated records, credit."""

from __future__ import annotations

import errno
import random

import pytest

from podnet import tunnel as t
from podnet.auth import derive_key
from podnet.tunnel import (
    Credit,
    Data,
    Dgram,
    Fin,
    Open,
    OpenFail,
    OpenOk,
    Ping,
    Pong,
    ReplayGuard,
    Rst,
    Session,
    SessionKeys,
    TunnelError,
    Writable,
    decode_frames,
    encode_frame,
)

KEY = derive_key(b"cluster-secret-0123456789", "tunnel")
OTHER_KEY = derive_key(b"some-other-secret-98765", "tunnel")
NOW = 1_800_000_000.0
SRC, DST = ("10.244.1.2", 40000), ("10.244.2.3", 8080)

FRAMES: list[t.Frame] = [
    Open(1, t.TCP, SRC, DST, "abc123-1", 262144),
    OpenOk(1, 65536),
    OpenFail(3, errno.ECONNREFUSED),
    Data(1, b"hello world"),
    Credit(1, 131072),
    Fin(1),
    Rst(5, errno.ECONNRESET),
    Dgram(SRC, ("10.244.2.3", 53), "flow-9", b"\x00\x01query"),
    Dgram(SRC, DST, "", b""),
    Ping("10.244.1.2", "10.244.2.3", 7, 1, bytes(56)),
    Pong("10.244.2.3", "10.244.1.2", 7, 1, b"pay"),
]


def keys_pair() -> tuple[SessionKeys, SessionKeys]:
    hello_raw, hello = t.make_hello(KEY, "node-1", "node-2", now=NOW)
    accepted = t.accept_hello(KEY, hello_raw, me="node-2", now=NOW, guard=ReplayGuard())
    welcome_raw, acceptor = t.make_welcome(KEY, accepted, now=NOW)
    dialer = t.accept_welcome(KEY, welcome_raw, hello, now=NOW)
    return dialer, acceptor


def session_pair(window: int = t.WINDOW) -> tuple[Session, Session]:
    dialer, acceptor = keys_pair()
    return Session(dialer, dialer=True, window=window), \
        Session(acceptor, dialer=False, window=window)


def carry(sender: Session, receiver: Session) -> list[t.Event]:
    """Move every queued record from sender to receiver; what the receiver must act on."""
    events: list[t.Event] = []
    while (record := sender.take_output()) is not None:
        events.extend(receiver.receive(record))
    return events


def open_stream(a: Session, b: Session) -> int:
    sid = a.open(SRC, DST, "flow-1")
    [opened] = carry(a, b)
    assert isinstance(opened, Open) and opened.sid == sid
    b.accept(sid)
    [ok] = carry(b, a)
    assert isinstance(ok, OpenOk)
    return sid


# -- frame codec


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_every_frame_type_round_trips(frame: t.Frame) -> None:
    assert decode_frames(encode_frame(frame)) == [frame]


def test_a_record_body_carries_many_frames_in_order() -> None:
    body = b"".join(encode_frame(f) for f in FRAMES)
    assert decode_frames(body) == FRAMES


def test_every_truncation_is_a_tunnel_error() -> None:
    body = b"".join(encode_frame(f) for f in FRAMES)
    boundaries = set()
    offset = 0
    for frame in FRAMES:
        offset += len(encode_frame(frame))
        boundaries.add(offset)
    for cut in range(len(body)):
        if cut in boundaries:
            assert decode_frames(body[:cut]) == FRAMES[:len([b for b in boundaries if b <= cut])]
            continue
        with pytest.raises(TunnelError):
            decode_frames(body[:cut])


def test_random_garbage_only_ever_raises_tunnel_error() -> None:
    rng = random.Random(1234)
    valid = [encode_frame(f) for f in FRAMES]
    for _ in range(20000):
        choice = rng.random()
        if choice < 0.4:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
        else:
            # Mutate a valid frame: the shape checks, not the MAC, must catch these.
            buf = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                buf[rng.randrange(len(buf))] = rng.getrandbits(8)
            data = bytes(buf)
        try:
            decode_frames(data)
        except TunnelError as exc:
            assert exc.reason
        # A mutation may still be a valid frame; anything else must be TunnelError.


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "empty record"),
    (bytes([99]) + bytes(8), "unknown"),
    (t._HDR.pack(t.DATA, 0, 1) + b"x", "bad DATA frame"),
    (t._HDR.pack(t.DATA, 1, 0), "bad DATA frame"),
    (t._HDR.pack(t.DATA, 1, t.MAX_DATA + 1) + bytes(t.MAX_DATA + 1), "bad DATA frame"),
    (t._HDR.pack(t.CREDIT, 1, 4) + bytes(4), "bad CREDIT amount"),
    (t._HDR.pack(t.CREDIT, 1, 3) + bytes(3), "bad CREDIT frame"),
    (t._HDR.pack(t.FIN, 1, 1) + b"x", "bad FIN frame"),
    (t._HDR.pack(t.RST, 1, 2) + bytes(2), "bad errno"),
    (t._HDR.pack(t.FIN, 0, 0), "without a stream id"),
    (t._HDR.pack(t.PING, 1, 12) + bytes(12), "with a stream id"),
    (t._HDR.pack(t.OPEN_OK, 1, 4) + t._U32.pack(t.MAX_WINDOW + 1), "bad OPEN_OK credit"),
])
def test_malformed_frames_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(TunnelError, match=reason):
        decode_frames(raw)


def test_open_fields_are_checked() -> None:
    good = encode_frame(Open(1, t.TCP, SRC, DST, "f", 1024))
    body = bytearray(good[t._HDR.size:])
    udp = bytes([17]) + bytes(body[1:])
    with pytest.raises(TunnelError, match="unsupported protocol"):
        decode_frames(t._HDR.pack(t.OPEN, 1, len(udp)) + udp)
    zero_port = bytearray(body)
    zero_port[11:13] = b"\x00\x00"      # destination port
    with pytest.raises(TunnelError, match="bad destination port"):
        decode_frames(t._HDR.pack(t.OPEN, 1, len(zero_port)) + bytes(zero_port))
    bad_flow = t._OPEN.pack(t.TCP, bytes(4), 1, bytes(4), 2, 1024, 2) + b"\xff\xfe"
    with pytest.raises(TunnelError, match="not ASCII"):
        decode_frames(t._HDR.pack(t.OPEN, 1, len(bad_flow)) + bad_flow)
    long_flow = t._OPEN.pack(t.TCP, bytes(4), 1, bytes(4), 2, 1024, 3) + b"ab"
    with pytest.raises(TunnelError, match="bad OPEN frame length"):
        decode_frames(t._HDR.pack(t.OPEN, 1, len(long_flow)) + long_flow)


def test_encoding_refuses_what_decoding_would_reject() -> None:
    with pytest.raises(TunnelError, match="bad IPv4 address"):
        encode_frame(Open(1, t.TCP, ("not-an-ip", 1), DST, "f", 1))
    with pytest.raises(TunnelError, match="flow id too long"):
        encode_frame(Open(1, t.TCP, SRC, DST, "f" * (t.MAX_FLOW + 1), 1))


# -- handshake


def test_handshake_gives_both_sides_matching_direction_keys() -> None:
    dialer, acceptor = keys_pair()
    assert dialer.send_small == acceptor.recv_small
    assert dialer.send_large == acceptor.recv_large
    assert dialer.recv_small == acceptor.send_small
    assert dialer.send_small != dialer.recv_small


def test_hello_under_another_secret_is_refused() -> None:
    raw, _ = t.make_hello(OTHER_KEY, "node-1", "node-2", now=NOW)
    with pytest.raises(TunnelError, match="bad handshake MAC"):
        t.accept_hello(KEY, raw, me="node-2", now=NOW, guard=ReplayGuard())


def test_replayed_hello_is_refused() -> None:
    guard = ReplayGuard()
    raw, _ = t.make_hello(KEY, "node-1", "node-2", now=NOW)
    t.accept_hello(KEY, raw, me="node-2", now=NOW, guard=guard)
    with pytest.raises(TunnelError, match="replayed handshake"):
        t.accept_hello(KEY, raw, me="node-2", now=NOW + 1, guard=guard)


@pytest.mark.parametrize("skew", [-t.MAX_SKEW_S - 1, t.MAX_SKEW_S + 1])
def test_stale_hello_is_refused(skew: float) -> None:
    raw, _ = t.make_hello(KEY, "node-1", "node-2", now=NOW + skew)
    with pytest.raises(TunnelError, match="stale handshake"):
        t.accept_hello(KEY, raw, me="node-2", now=NOW, guard=ReplayGuard())


def test_replay_guard_forgets_nonces_once_they_would_be_stale_anyway() -> None:
    guard = ReplayGuard()
    raw, _ = t.make_hello(KEY, "node-1", "node-2", now=NOW)
    t.accept_hello(KEY, raw, me="node-2", now=NOW, guard=guard)
    later = NOW + 3 * t.MAX_SKEW_S
    fresh, _ = t.make_hello(KEY, "node-1", "node-2", now=later)
    t.accept_hello(KEY, fresh, me="node-2", now=later, guard=guard)
    assert len(guard) == 1
    with pytest.raises(TunnelError, match="stale handshake"):     # the old one still fails
        t.accept_hello(KEY, raw, me="node-2", now=later, guard=guard)


def test_hello_for_another_node_is_refused() -> None:
    raw, _ = t.make_hello(KEY, "node-1", "node-3", now=NOW)
    with pytest.raises(TunnelError, match="another node"):
        t.accept_hello(KEY, raw, me="node-2", now=NOW, guard=ReplayGuard())


def test_old_welcome_does_not_answer_a_new_hello() -> None:
    raw1, _ = t.make_hello(KEY, "node-1", "node-2", now=NOW)
    guard = ReplayGuard()
    welcome1, _ = t.make_welcome(KEY, t.accept_hello(KEY, raw1, me="node-2", now=NOW,
                                                     guard=guard), now=NOW)
    _, hello2 = t.make_hello(KEY, "node-1", "node-2", now=NOW)
    with pytest.raises(TunnelError, match="bad handshake MAC"):
        t.accept_welcome(KEY, welcome1, hello2, now=NOW)


def test_welcome_from_the_wrong_node_is_refused() -> None:
    _, hello = t.make_hello(KEY, "node-1", "node-2", now=NOW)
    impostor = t.Handshake(t.HELLO, hello.ts_ms, hello.nonce, "node-1", "node-3")
    welcome, _ = t.make_welcome(KEY, impostor, now=NOW)
    with pytest.raises(TunnelError, match="wrong node"):
        t.accept_welcome(KEY, welcome, hello, now=NOW)


def test_every_truncated_or_altered_handshake_is_a_tunnel_error() -> None:
    raw, _ = t.make_hello(KEY, "node-1", "node-2", now=NOW)
    for cut in range(len(raw)):
        with pytest.raises(TunnelError):
            t.accept_hello(KEY, raw[:cut], me="node-2", now=NOW, guard=ReplayGuard())
    for pos in range(len(raw)):
        altered = bytearray(raw)
        altered[pos] ^= 0x40
        with pytest.raises(TunnelError):
            t.accept_hello(KEY, bytes(altered), me="node-2", now=NOW, guard=ReplayGuard())
    with pytest.raises(TunnelError):
        t.accept_hello(KEY, raw + b"x", me="node-2", now=NOW, guard=ReplayGuard())


# -- records


def test_records_flow_both_ways() -> None:
    a, b = session_pair()
    sid = open_stream(a, b)
    a.send(sid, b"ping")
    assert carry(a, b) == [Data(sid, b"ping")]
    b.send(sid, b"pong")
    assert carry(b, a) == [Data(sid, b"pong")]


@pytest.mark.parametrize("size", [10, t.SMALL_RECORD + 1, 200_000])
def test_small_and_large_records_verify(size: int) -> None:
    a, b = session_pair()
    sid = open_stream(a, b)
    a.send(sid, bytes(size))
    assert b"".join(e.data for e in carry(a, b) if isinstance(e, Data)) == bytes(size)


def test_forged_record_kills_the_session() -> None:
    a, b = session_pair()
    sid = open_stream(a, b)
    a.send(sid, b"data")
    record = bytearray(a.take_output() or b"")
    record[12] ^= 1
    with pytest.raises(TunnelError, match="bad record MAC"):
        b.receive(bytes(record))
    assert b.dead == "bad record MAC"
    a.send(sid, b"more")
    with pytest.raises(TunnelError):    # nothing is accepted after a failure
        b.receive(a.take_output() or b"")


def test_replayed_record_fails() -> None:
    a, b = session_pair()
    sid = open_stream(a, b)
    a.send(sid, b"once")
    record = a.take_output() or b""
    b.receive(record)
    with pytest.raises(TunnelError, match="bad record MAC"):
        b.receive(record)


def test_reordered_records_fail() -> None:
    a, b = session_pair()
    sid = open_stream(a, b)
    a.send(sid, b"first")
    first = a.take_output() or b""
    a.send(sid, b"second")
    second = a.take_output() or b""
    with pytest.raises(TunnelError, match="bad record MAC"):
        b.receive(second)
    assert first


def test_dropped_then_injected_record_fails() -> None:
    a, b = session_pair()
    sid = open_stream(a, b)
    a.send(sid, b"dropped")
    dropped = a.take_output() or b""
    a.send(sid, b"next")
    next_record = a.take_output() or b""
    with pytest.raises(TunnelError, match="bad record MAC"):
        b.receive(next_record)
    assert dropped


def test_reflected_record_fails() -> None:
    a, b = session_pair()
    sid = open_stream(a, b)
    a.send(sid, b"to b")
    with pytest.raises(TunnelError, match="bad record MAC"):
        a.receive(a.take_output() or b"")


def test_record_from_another_session_fails() -> None:
    a, _ = session_pair()
    _, b2 = session_pair()
    a.open(SRC, DST, "f")
    with pytest.raises(TunnelError, match="bad record MAC"):
        b2.receive(a.take_output() or b"")


@pytest.mark.parametrize("record", [b"", bytes(t.TAG), bytes(t.MAX_RECORD + t.TAG + 1)])
def test_truncated_or_oversized_record_fails(record: bytes) -> None:
    _, b = session_pair()
    with pytest.raises(TunnelError, match=r"truncated record|oversized record"):
        b.receive(record)


# -- streams and credit


def test_sender_stops_at_the_window_and_resumes_on_credit() -> None:
    window = 64 * 1024
    a, b = session_pair(window)
    sid = open_stream(a, b)
    a.send(sid, bytes(window + 1000))
    assert a.credit(sid) == 0
    assert a.pending_bytes(sid) == 1000
    assert not a.can_send(sid)
    delivered = [e for e in carry(a, b) if isinstance(e, Data)]
    assert sum(len(e.data) for e in delivered) == window
    b.consumed(sid, window // 2 - 1)
    assert b.take_output() is None             # credit goes back in half-window batches
    b.consumed(sid, 1)
    events = carry(b, a)
    assert events == [Writable(sid)]
    assert a.pending_bytes(sid) == 0
    assert a.credit(sid) == window // 2 - 1000
    assert a.can_send(sid)
    rest = [e for e in carry(a, b) if isinstance(e, Data)]
    assert sum(len(e.data) for e in rest) == 1000


def test_a_peer_that_exceeds_its_window_ends_the_session() -> None:
    window = 1024
    a, b = session_pair(window)
    sid = open_stream(a, b)
    a._streams[sid].credit = 10 * window        # a misbehaving (but authentic) peer
    a.send(sid, bytes(2 * window))
    with pytest.raises(TunnelError, match="flow control window exceeded"):
        carry(a, b)


def test_fin_waits_behind_queued_data_and_both_fins_forget_the_stream() -> None:
    window = 4096
    a, b = session_pair(window)
    sid = open_stream(a, b)
    a.send(sid, bytes(window + 10))
    a.finish(sid)
    first = carry(a, b)
    assert not any(isinstance(e, Fin) for e in first)
    b.consumed(sid, window)
    carry(b, a)
    rest = carry(a, b)
    assert isinstance(rest[-1], Fin)
    assert a.has_stream(sid) and b.has_stream(sid)      # half-closed: b may still send
    b.send(sid, b"answer")
    b.finish(sid)
    assert carry(b, a) == [Data(sid, b"answer"), Fin(sid)]
    assert not a.has_stream(sid) and not b.has_stream(sid)
    assert len(a) == len(b) == 0


def test_reset_forgets_the_stream_on_both_sides_and_late_frames_are_ignored() -> None:
    a, b = session_pair()
    sid = open_stream(a, b)
    b.send(sid, b"in flight")
    a.reset(sid, errno.ECONNRESET)
    assert carry(a, b) == [Rst(sid, errno.ECONNRESET)]
    assert carry(b, a) == []            # DATA for a stream a already reset is dropped
    assert not a.has_stream(sid) and not b.has_stream(sid)


def test_refused_open() -> None:
    a, b = session_pair()
    sid = a.open(SRC, DST, "f")
    carry(a, b)
    b.refuse(sid, errno.ECONNREFUSED)
    assert carry(b, a) == [OpenFail(sid, errno.ECONNREFUSED)]
    assert not a.has_stream(sid)


def test_stream_ids_follow_the_roles_and_never_repeat() -> None:
    a, b = session_pair()
    first, second = a.open(SRC, DST, "f"), a.open(SRC, DST, "g")
    assert (first, second) == (1, 3)
    assert b.open(DST, SRC, "h") == 2
    carry(a, b)
    bad = encode_frame(Open(1, t.TCP, SRC, DST, "again", 1024))
    with pytest.raises(TunnelError, match="bad stream id"):
        _inject(b, a, bad)


def _inject(receiver: Session, sender: Session, frame: bytes) -> None:
    """Seal `frame` as `sender`'s next record (so only the protocol rule can reject it)."""
    sender._out.append(frame)
    sender._out_size += len(frame)
    receiver.receive(sender.take_output() or b"")


def test_unexpected_open_ok_ends_the_session() -> None:
    a, b = session_pair()
    sid = open_stream(a, b)
    with pytest.raises(TunnelError, match="unexpected OPEN_OK"):
        _inject(a, b, encode_frame(OpenOk(sid, 1024)))


def test_data_after_fin_ends_the_session() -> None:
    a, b = session_pair()
    sid = open_stream(a, b)
    a.finish(sid)
    carry(a, b)
    with pytest.raises(TunnelError, match="DATA after FIN"):
        _inject(b, a, encode_frame(Data(sid, b"late")))


def test_large_output_is_split_into_records_at_frame_boundaries() -> None:
    a, b = session_pair(t.MAX_WINDOW)
    sids = [open_stream(a, b) for _ in range(4)]
    payloads = {sid: random.Random(sid).randbytes(300_000) for sid in sids}
    for sid, payload in payloads.items():
        a.send(sid, payload)
    records = []
    while (record := a.take_output()) is not None:
        assert len(record) <= t.MAX_RECORD + t.TAG
        records.append(record)
    assert len(records) > 1
    got: dict[int, bytearray] = {sid: bytearray() for sid in sids}
    for record in records:
        for event in b.receive(record):
            assert isinstance(event, Data)
            got[event.sid] += event.data
    assert got == payloads


def test_datagrams_are_dropped_not_queued_without_bound() -> None:
    a, _ = session_pair()
    sent = sum(a.datagram(SRC, DST, "f", bytes(60000)) for _ in range(100))
    assert 0 < sent < 100
    assert a.output_size <= t.DGRAM_BACKLOG + 70000
    assert not a.datagram(SRC, DST, "f", bytes(t.MAX_DGRAM + 1))
