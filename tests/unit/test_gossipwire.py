"""The gossip wire format: round trips, schema, signatures, freshness and replays."""

from __future__ import annotations

import json
import random

import pytest

from podnet import gossipwire as gw
from podnet.auth import derive_key
from podnet.gossipwire import (
    Ack,
    Digest,
    Entry,
    GossipError,
    Nack,
    Ping,
    PingReq,
    Push,
    PushPull,
    PushPullReply,
    Updates,
    Verifier,
    View,
    seal,
)

KEY = derive_key(b"unit-test-secret-0123456789abcdef", "gossip")
NOW = 1_750_000_000.0
E1 = Entry("node-1", "10.244.1.0/24", "127.0.0.1:7001", 1_750_000_000_000, 0, "alive")
E2 = Entry("node-2", "10.244.2.0/24", "agent-2.lab.example:7002", 5, 3, "suspect")

MESSAGES = [
    Ping("node-2"),
    Ping("node-2", View(7, 1, "suspect")),
    PingReq("node-3", "127.0.0.1:9", View(1, 0, "alive")),
    Ack(E1),
    Nack("node-3"),
    PushPull((Digest("node-1", 1, 0, "alive"), Digest("node-9", 2, 5, "dead")), (E1,)),
    PushPullReply((E1, E2), ("node-4",)),
    Updates((E1, E2)),
    Push((E2,)),
]


def verifier(node: str = "node-2", skew_s: float = 30.0, capacity: int = 1000) -> Verifier:
    return Verifier(KEY, node, max_clock_skew_s=skew_s, replay_capacity=capacity)


def sign_body(body: dict[str, object] | bytes, key: bytes = KEY) -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return gw.mac_of(key, raw).encode() + b"." + raw


def body_of(message: gw.Message, **over: object) -> dict[str, object]:
    frame, _ = seal(message, key=KEY, sender="node-1", receiver="node-2", now=NOW)
    body: dict[str, object] = json.loads(frame[65:])
    body.update(over)
    return body


def reason(frame: bytes, v: Verifier | None = None, *, now: float = NOW,
           expect: tuple[str, ...] | None = None, re: str | None = None) -> str:
    with pytest.raises(GossipError) as e:
        (v or verifier()).open(frame, now=now, expect=expect, re=re)
    return e.value.reason


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg: gw.Message) -> None:
    frame, nonce = seal(msg, key=KEY, sender="node-1", receiver="node-2", now=NOW)
    env = verifier().open(frame, now=NOW + 1)
    assert (env.message, env.sender, env.receiver, env.nonce, env.re) == \
        (msg, "node-1", "node-2", nonce, None)
    assert env.type == gw.TYPE_OF[type(msg)]


def test_forged_altered_and_truncated_frames_fail_the_mac() -> None:
    frame, _ = seal(Updates((E1,)), key=KEY, sender="node-1", receiver="node-2", now=NOW)
    other = derive_key(b"another-secret-0123456789abcdef", "gossip")
    forged, _ = seal(Updates((E1,)), key=other, sender="node-1", receiver="node-2", now=NOW)
    assert reason(forged) == gw.BAD_MAC
    altered = frame.replace(b"10.244.1.0", b"10.244.7.0")
    assert reason(altered) == gw.BAD_MAC
    for cut in (len(frame) - 1, len(frame) // 2, 70):
        assert reason(frame[:cut]) == gw.BAD_MAC
    assert reason(frame[:10]) == gw.TRUNCATED
    assert reason(b"") == gw.TRUNCATED
    # The gossip key is not the secret, nor another protocol's key.
    assert reason(sign_body(frame[65:], derive_key(b"unit-test-secret-0123456789abcdef",
                                                   "tunnel"))) == gw.BAD_MAC


def test_garbage_only_ever_raises_gossip_error() -> None:
    rng = random.Random(7)
    frame, _ = seal(PushPull((Digest("node-1", 1, 0, "alive"),), (E1,)), key=KEY,
                    sender="node-1", receiver="node-2", now=NOW)
    body = frame[65:]
    for _ in range(2000):
        kind = rng.randrange(3)
        if kind == 0:
            junk = rng.randbytes(rng.randrange(0, 300))
        else:
            data = bytearray(body)
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            # kind 1: mutated and unsigned; kind 2: mutated and signed, as by a buggy peer
            junk = frame[:65] + bytes(data) if kind == 1 else sign_body(bytes(data))
        try:
            verifier().open(junk, now=NOW)
        except GossipError:
            pass


@pytest.mark.parametrize("body, detail", [
    (b"not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[" * 100_000, "not JSON"),
    (b"[]", "frame"),
    (b'{"v":1,"v":1}', "duplicate"),
])
def test_signed_garbage_is_malformed(body: bytes, detail: str) -> None:
    with pytest.raises(GossipError) as e:
        verifier().open(sign_body(body), now=NOW)
    assert e.value.reason == gw.MALFORMED and detail in e.value.detail


BAD_ENTRIES = [
    {**gw._entry_json(E1), "extra": 1},
    {k: v for k, v in gw._entry_json(E1).items() if k != "state"},
    {**gw._entry_json(E1), "node": "Node_1"},
    {**gw._entry_json(E1), "node": "x" * 64},
    {**gw._entry_json(E1), "pod_cidr": "10.244.1.5/24"},     # host bits set
    {**gw._entry_json(E1), "pod_cidr": "10.244.1.0/33"},
    {**gw._entry_json(E1), "pod_cidr": "fd00::1/64"},          # host bits set (v6 is fine)
    {**gw._entry_json(E1), "address": "127.0.0.1"},           # no port
    {**gw._entry_json(E1), "address": "127.0.0.1:0"},
    {**gw._entry_json(E1), "address": "127.0.0.1:65536"},
    {**gw._entry_json(E1), "address": "999.1.1.1:80"},
    {**gw._entry_json(E1), "address": "bad host:80"},
    {**gw._entry_json(E1), "address": "[zz::1]:80"},
    {**gw._entry_json(E1), "incarnation": -1},
    {**gw._entry_json(E1), "incarnation": 2**63},
    {**gw._entry_json(E1), "incarnation": True},
    {**gw._entry_json(E1), "incarnation": 1.5},
    {**gw._entry_json(E1), "counter": "1"},
    {**gw._entry_json(E1), "state": "zombie"},
    [1, 2, 3],
]


@pytest.mark.parametrize("entry", BAD_ENTRIES)
def test_bad_entries_are_malformed(entry: object) -> None:
    frame = sign_body(body_of(Updates((E1,)), msg={"entries": [entry]}))
    assert reason(frame) == gw.MALFORMED


@pytest.mark.parametrize("over", [
    {"v": 2}, {"v": True}, {"type": "gossip"}, {"type": "ack"},  # ack as a request: wrong type
    {"from": ""}, {"to": "NODE"}, {"ts": "now"}, {"ts": True}, {"nonce": "abc"},
    {"nonce": "G" * 32}, {"re": 5}, {"msg": {"entries": [], "more": []}},
    {"msg": {"entries": [gw._entry_json(E1)] * (gw.MAX_LIST + 1)}},
])
def test_bad_envelopes_are_rejected(over: dict[str, object]) -> None:
    frame = sign_body(body_of(Updates((E1,)), **over))
    assert reason(frame, expect=("updates",)) in (gw.MALFORMED, gw.WRONG_TYPE)


def test_nan_and_bad_digests_and_views_are_malformed() -> None:
    assert reason(sign_body(json.dumps(body_of(Ping("node-2"))).replace(
        str(NOW), "NaN").encode())) == gw.MALFORMED
    for digest in ([["node-1", 1, 0]], [["node-1", 1, 0, "alive", 9]], [[1, 1, 0, "alive"]],
                   "node-1"):
        frame = sign_body(body_of(PushPull(()), msg={"digest": digest, "entries": []}))
        assert reason(frame) == gw.MALFORMED
    for view in ([1, 0], [1, 0, "up"], {"incarnation": 1}):
        frame = sign_body(body_of(Ping("node-2"), msg={"target": "node-2", "view": view}))
        assert reason(frame) == gw.MALFORMED


def test_too_large_frames_are_rejected_before_any_work() -> None:
    assert reason(b"x" * (gw.MAX_FRAME_BYTES + 1)) == gw.TOO_LARGE


def test_stale_future_and_replayed_frames_are_rejected() -> None:
    v = verifier(skew_s=30)
    frame, _ = seal(Ping("node-2"), key=KEY, sender="node-1", receiver="node-2", now=NOW)
    v.open(frame, now=NOW + 29)
    assert reason(frame, v) == gw.REPLAYED
    assert reason(frame, verifier(skew_s=30), now=NOW + 31) == gw.STALE
    early, _ = seal(Ping("node-2"), key=KEY, sender="node-1", receiver="node-2", now=NOW + 31)
    assert reason(early, v) == gw.FUTURE
    # A replay after the window is still refused (as stale), though its nonce is forgotten.
    with pytest.raises(GossipError) as e:
        v.open(frame, now=NOW + 100)
    assert e.value.reason == gw.STALE
    assert len(v.replays) == 0


def test_frames_for_another_node_are_refused_and_seed_contact_is_allowed() -> None:
    other, _ = seal(Ping("node-3"), key=KEY, sender="node-1", receiver="node-3", now=NOW)
    assert reason(other) == gw.WRONG_RECEIVER
    seed, _ = seal(PushPull(()), key=KEY, sender="node-1", receiver="", now=NOW)
    assert verifier().open(seed, now=NOW).receiver == ""


def test_replies_must_answer_their_request() -> None:
    _, asked = seal(Ping("node-2"), key=KEY, sender="node-1", receiver="node-2", now=NOW)
    reply, _ = seal(Ack(E2), key=KEY, sender="node-2", receiver="node-1", now=NOW, re=asked)
    v1 = verifier("node-1")
    assert reason(reply, v1, expect=("ack",), re="0" * 32) == gw.WRONG_REPLY
    assert reason(reply, v1, expect=("ack",)) == gw.WRONG_REPLY          # a request quoting re
    assert reason(reply, v1, expect=("push-pull-reply",), re=asked) == gw.WRONG_TYPE
    assert v1.open(reply, now=NOW, expect=("ack",), re=asked).message == Ack(E2)
    assert reason(reply, v1, expect=("ack",), re=asked) == gw.REPLAYED


def test_replay_cache_is_bounded_and_fails_closed() -> None:
    v = verifier(skew_s=10, capacity=3)
    for i in range(3):
        frame, _ = seal(Ping("node-2"), key=KEY, sender="node-1", receiver="node-2",
                        now=NOW + i)
        v.open(frame, now=NOW + i)
    full, _ = seal(Ping("node-2"), key=KEY, sender="node-1", receiver="node-2", now=NOW + 3)
    assert reason(full, v, now=NOW + 3) == gw.CACHE_FULL
    # Once the first nonces are past the window they make room.
    later, _ = seal(Ping("node-2"), key=KEY, sender="node-1", receiver="node-2", now=NOW + 12)
    v.open(later, now=NOW + 12)


def test_http_statuses() -> None:
    assert GossipError(gw.BAD_MAC).http_status == 401
    assert GossipError(gw.TOO_LARGE).http_status == 413
    assert GossipError(gw.MALFORMED, "x").http_status == 400
    assert str(GossipError(gw.MALFORMED, "x")) == "malformed: x"


@pytest.mark.parametrize("address, ok", [
    ("127.0.0.1:1", True), ("agent-1:7000", True), ("a.b-c.example:65535", True),
    ("[::1]:80", True), ("127.0.0.1", False), (":80", False), ("a:b", False),
    ("1.2.3:80", False), ("-a:80", False), ("a..b:80", False), ("a:٣", False),
])
def test_addresses(address: str, ok: bool) -> None:
    assert gw.valid_address(address) is ok
