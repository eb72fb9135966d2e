"""The gossip wire format: typed messages, strict validation, signing and replay protection.

No I/O: `seal()` turns a message into bytes, `Verifier.open()` turns bytes back into a message
or raises `GossipError(reason)`. The HTTP adapter (`agents/cni/gossip.py`) carries the bytes.

Frame (one HTTP body, request or response)::

    <64 hex chars: HMAC-SHA256 of BODY under derive_key(secret, "gossip")> "." BODY

    BODY = {"v": 1, "type": "ping", "from": "node-1", "to": "node-2", "ts": 1712345678.123,
            "nonce": "<32 hex>", "re": null | "<nonce of the request this answers>",
            "msg": {...}}

The MAC covers the exact body bytes, so nothing is re-serialised before it is checked, and it
is checked (in constant time) before the body is even parsed: garbage without the key costs one
HMAC. Then, in order: the JSON and envelope schema, freshness (`ts` within the clock-skew
window; older is "stale", later is "future"), the receiver (`to` names this node, or is "" for
the first contact with a seed known only by address, so a message captured on its way to one
node is not accepted by another), the replay cache (each nonce once within the window; the
window bounds the cache), and finally the message's own schema. Replies carry `re` = the
request's nonce, so a captured reply cannot answer a different request.

Messages (`msg` by `type`):

| type            | fields                                         | answered by       |
|-----------------|------------------------------------------------|-------------------|
| ping            | target, view (the prober's [inc, counter, state] of the target, or null) | ack |
| ping-req        | target, address, view                          | ack or nack       |
| ack             | entry (the target's own entry, fresh)          |                   |
| nack            | target                                         |                   |
| push-pull       | digest [[node, inc, counter, state], ...], entries | push-pull-reply |
| push-pull-reply | entries (what the requester lacks), wants [node, ...] |            |
| updates         | entries (batched broadcasts)                   | HTTP 204, no body |
| push            | entries (the `wants` of a push-pull-reply)     | HTTP 204, no body |

An entry is {"node", "pod_cidr", "address", "incarnation", "counter", "state"}, plus
"pod_cidrs" (every podCIDR, primary first, one per family) only on a dual-stack node: a
single-stack entry is byte for byte what it always was.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import ipaddress
import json
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any

from podnet.names import dns1123_label_error

VERSION = 1
STATES = ("alive", "suspect", "dead")
MAX_FRAME_BYTES = 1 << 20      # 4096 entries of ~150 bytes fit with room; more is an attack
MAX_LIST = 4096                # entries, digest rows or wants in one message
MAX_INT = (1 << 63) - 1        # incarnations start at wall-clock ms (~1.7e12): far below
MAC_HEX = 64
NONCE_HEX = 32
_HEX = re.compile(r"^[0-9a-f]+$")
_HOST_LABEL = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")

# Reasons (the `reason` of a GossipError): short, stable, loggable codes.
TOO_LARGE = "too-large"
TRUNCATED = "truncated"
BAD_MAC = "bad-mac"
MALFORMED = "malformed"
STALE = "stale"
FUTURE = "future"
REPLAYED = "replayed"
WRONG_RECEIVER = "wrong-receiver"
WRONG_REPLY = "wrong-reply"
WRONG_TYPE = "wrong-type"
CACHE_FULL = "replay-cache-full"

_STATUS = {TOO_LARGE: 413, BAD_MAC: 401, STALE: 401, FUTURE: 401, REPLAYED: 401,
           WRONG_RECEIVER: 401, WRONG_REPLY: 401, CACHE_FULL: 503}


class GossipError(Exception):
    """A rejected frame. `reason` is one of the codes above; `detail` says what exactly."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    @property
    def http_status(self) -> int:
        return _STATUS.get(self.reason, 400)


# --- messages ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One member's data as its owner versioned it (plus the sender's view of its state)."""
    node: str
    pod_cidr: str
    address: str
    incarnation: int
    counter: int
    state: str
    # Every podCIDR, primary (== pod_cidr) first, on a dual-stack node; () on a single-stack
    # one (one spelling per entry, so equal entries compare equal).
    pod_cidrs: tuple[str, ...] = ()

    @property
    def cidrs(self) -> tuple[str, ...]:
        return self.pod_cidrs or (self.pod_cidr,)


@dataclass(frozen=True)
class Digest:
    """An entry's version without its data: enough to tell who lacks what."""
    node: str
    incarnation: int
    counter: int
    state: str


@dataclass(frozen=True)
class View:
    """The sender's view of the receiver's version, so a wrongly suspected node refutes at once."""
    incarnation: int
    counter: int
    state: str


@dataclass(frozen=True)
class Ping:
    target: str
    view: View | None = None


@dataclass(frozen=True)
class PingReq:
    target: str
    address: str
    view: View | None = None


@dataclass(frozen=True)
class Ack:
    entry: Entry


@dataclass(frozen=True)
class Nack:
    target: str


@dataclass(frozen=True)
class PushPull:
    digest: tuple[Digest, ...]
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True)
class PushPullReply:
    entries: tuple[Entry, ...]
    wants: tuple[str, ...] = ()


@dataclass(frozen=True)
class Updates:
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class Push:
    """The second half of a push-pull: kept apart from `updates` because anti-entropy can
    carry stale views, which the receiver merges more cautiously (dead as suspect)."""
    entries: tuple[Entry, ...]


Message = Ping | PingReq | Ack | Nack | PushPull | PushPullReply | Updates | Push

TYPE_OF: dict[type[Any], str] = {
    Ping: "ping", PingReq: "ping-req", Ack: "ack", Nack: "nack", PushPull: "push-pull",
    PushPullReply: "push-pull-reply", Updates: "updates", Push: "push",
}
REQUEST_TYPES = ("ping", "ping-req", "push-pull", "updates", "push")


@dataclass(frozen=True)
class Envelope:
    """A verified frame: who sent it, when, its nonce, and the message."""
    sender: str
    receiver: str
    ts: float
    nonce: str
    re: str | None
    message: Message

    @property
    def type(self) -> str:
        return TYPE_OF[type(self.message)]


# --- encoding ---------------------------------------------------------------------------

def _entry_json(e: Entry) -> dict[str, Any]:
    out = {"node": e.node, "pod_cidr": e.pod_cidr, "address": e.address,
           "incarnation": e.incarnation, "counter": e.counter, "state": e.state}
    if e.pod_cidrs:
        out["pod_cidrs"] = list(e.pod_cidrs)
    return out


def _view_json(v: View | None) -> list[Any] | None:
    return None if v is None else [v.incarnation, v.counter, v.state]


def _msg_json(m: Message) -> dict[str, Any]:
    if isinstance(m, Ping):
        return {"target": m.target, "view": _view_json(m.view)}
    if isinstance(m, PingReq):
        return {"target": m.target, "address": m.address, "view": _view_json(m.view)}
    if isinstance(m, Ack):
        return {"entry": _entry_json(m.entry)}
    if isinstance(m, Nack):
        return {"target": m.target}
    if isinstance(m, PushPull):
        return {"digest": [[d.node, d.incarnation, d.counter, d.state] for d in m.digest],
                "entries": [_entry_json(e) for e in m.entries]}
    if isinstance(m, PushPullReply):
        return {"entries": [_entry_json(e) for e in m.entries], "wants": list(m.wants)}
    return {"entries": [_entry_json(e) for e in m.entries]}  # Updates, Push


def mac_of(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def seal(message: Message, *, key: bytes, sender: str, receiver: str, now: float,
         re: str | None = None, nonce: str | None = None) -> tuple[bytes, str]:
    """The signed frame for `message` and its nonce (a reply must quote it as `re`).

    `receiver` is the destination's node name, or "" when only its address is known."""
    nonce = nonce or secrets.token_hex(NONCE_HEX // 2)
    body = json.dumps({"v": VERSION, "type": TYPE_OF[type(message)], "from": sender,
                       "to": receiver, "ts": now, "nonce": nonce, "re": re,
                       "msg": _msg_json(message)},
                      separators=(",", ":"), allow_nan=False).encode()
    return mac_of(key, body).encode() + b"." + body, nonce


# --- validation -------------------------------------------------------------------------

def _bad(detail: str) -> GossipError:
    return GossipError(MALFORMED, detail)


def _obj(value: Any, where: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"{where}: expected an object")
    if set(value) != set(keys):
        missing = sorted(set(keys) - set(value))
        extra = sorted(set(value) - set(keys))
        raise _bad(f"{where}: " + (f"missing {missing}" if missing else f"unknown {extra}"))
    return value


def _list(value: Any, where: str, limit: int = MAX_LIST) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(f"{where}: expected a list")
    if len(value) > limit:
        raise _bad(f"{where}: {len(value)} items, at most {limit}")
    return value


def _int(value: Any, where: str) -> int:
    # bool is an int in Python; on the wire `true` is not a number.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INT:
        raise _bad(f"{where}: expected an integer 0..2^63-1")
    return value


def _node(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _bad(f"{where}: expected a node name")
    if err := dns1123_label_error(value):
        raise _bad(f"{where}: {err[:120]}")
    return value


def _state(value: Any, where: str) -> str:
    if value not in STATES:
        raise _bad(f"{where}: expected one of {', '.join(STATES)}")
    return str(value)


def _cidr(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > 43:
        raise _bad(f"{where}: expected an IPv4 or IPv6 CIDR")
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise _bad(f"{where}: {value!r} is not an IPv4 or IPv6 network") from None
    if str(net) != value:  # one spelling per network, so equal routes compare equal
        raise _bad(f"{where}: write {value!r} as {net}")
    return value


def _cidrs(value: Any, where: str, primary: str) -> tuple[str, ...]:
    """A dual-stack node's podCIDRs: two, of different families, the first the primary."""
    items = _list(value, where, limit=2)
    if len(items) != 2:
        raise _bad(f"{where}: expected two podCIDRs (one per family)")
    cidrs = tuple(_cidr(c, f"{where}[{i}]") for i, c in enumerate(items))
    if cidrs[0] != primary:
        raise _bad(f"{where}: the first must be pod_cidr {primary}")
    if ipaddress.ip_network(cidrs[0]).version == ipaddress.ip_network(cidrs[1]).version:
        raise _bad(f"{where}: expected one IPv4 and one IPv6 podCIDR")
    return cidrs


def valid_address(value: str) -> bool:
    """Whether `value` is host:port with an IPv4 literal, a DNS name or [IPv6] and a port."""
    if len(value) > 261:
        return False
    host, sep, port = value.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) <= 65535:
        return False
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        pass
    if host.replace(".", "").isdigit():  # looks like a broken IPv4 literal, not a name
        return False
    labels = host.split(".")
    return 0 < len(host) <= 253 and all(
        len(label) <= 63 and _HOST_LABEL.match(label) for label in labels)


def _address(value: Any, where: str) -> str:
    if not isinstance(value, str) or not valid_address(value):
        raise _bad(f"{where}: expected host:port")
    return value


_ENTRY_KEYS = ("node", "pod_cidr", "address", "incarnation", "counter", "state")
_ENTRY_KEYS_DUAL = (*_ENTRY_KEYS, "pod_cidrs")


def _entry(value: Any, where: str) -> Entry:
    dual = isinstance(value, dict) and "pod_cidrs" in value
    o = _obj(value, where, _ENTRY_KEYS_DUAL if dual else _ENTRY_KEYS)
    primary = _cidr(o["pod_cidr"], f"{where}.pod_cidr")
    return Entry(_node(o["node"], f"{where}.node"), primary,
                 _address(o["address"], f"{where}.address"),
                 _int(o["incarnation"], f"{where}.incarnation"),
                 _int(o["counter"], f"{where}.counter"), _state(o["state"], f"{where}.state"),
                 _cidrs(o["pod_cidrs"], f"{where}.pod_cidrs", primary) if dual else ())


def _entries(value: Any, where: str) -> tuple[Entry, ...]:
    return tuple(_entry(e, f"{where}[{i}]") for i, e in enumerate(_list(value, where)))


def _view(value: Any, where: str) -> View | None:
    if value is None:
        return None
    row = _list(value, where, 3)
    if len(row) != 3:
        raise _bad(f"{where}: expected [incarnation, counter, state]")
    return View(_int(row[0], f"{where}[0]"), _int(row[1], f"{where}[1]"),
                _state(row[2], f"{where}[2]"))


def _digest(value: Any, where: str) -> tuple[Digest, ...]:
    out = []
    for i, raw in enumerate(_list(value, where)):
        row = _list(raw, f"{where}[{i}]", 4)
        if len(row) != 4:
            raise _bad(f"{where}[{i}]: expected [node, incarnation, counter, state]")
        out.append(Digest(_node(row[0], f"{where}[{i}][0]"), _int(row[1], f"{where}[{i}][1]"),
                          _int(row[2], f"{where}[{i}][2]"), _state(row[3], f"{where}[{i}][3]")))
    return tuple(out)


def _message(kind: str, value: Any) -> Message:
    if kind == "ping":
        o = _obj(value, "msg", ("target", "view"))
        return Ping(_node(o["target"], "msg.target"), _view(o["view"], "msg.view"))
    if kind == "ping-req":
        o = _obj(value, "msg", ("target", "address", "view"))
        return PingReq(_node(o["target"], "msg.target"), _address(o["address"], "msg.address"),
                       _view(o["view"], "msg.view"))
    if kind == "ack":
        return Ack(_entry(_obj(value, "msg", ("entry",))["entry"], "msg.entry"))
    if kind == "nack":
        return Nack(_node(_obj(value, "msg", ("target",))["target"], "msg.target"))
    if kind == "push-pull":
        o = _obj(value, "msg", ("digest", "entries"))
        return PushPull(_digest(o["digest"], "msg.digest"), _entries(o["entries"], "msg.entries"))
    if kind == "push-pull-reply":
        o = _obj(value, "msg", ("entries", "wants"))
        wants = tuple(_node(n, f"msg.wants[{i}]")
                      for i, n in enumerate(_list(o["wants"], "msg.wants")))
        return PushPullReply(_entries(o["entries"], "msg.entries"), wants)
    if kind == "updates":
        return Updates(_entries(_obj(value, "msg", ("entries",))["entries"], "msg.entries"))
    if kind == "push":
        return Push(_entries(_obj(value, "msg", ("entries",))["entries"], "msg.entries"))
    raise _bad(f"type: unknown message type {kind[:40]!r}")


def _no_constants(name: str) -> Any:
    raise _bad(f"{name} is not a number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:  # two readers could disagree on which one counts
            raise _bad(f"duplicate key {k[:40]!r}")
        out[k] = v
    return out


def parse(frame: bytes, key: bytes) -> Envelope:
    """Check the MAC and the schema of `frame` (no freshness or replay check: see Verifier)."""
    if len(frame) > MAX_FRAME_BYTES:
        raise GossipError(TOO_LARGE, f"{len(frame)} bytes, at most {MAX_FRAME_BYTES}")
    if len(frame) < MAC_HEX + 3:
        raise GossipError(TRUNCATED, f"{len(frame)} bytes is shorter than any frame")
    mac, dot, body = frame[:MAC_HEX], frame[MAC_HEX:MAC_HEX + 1], frame[MAC_HEX + 1:]
    if dot != b".":
        raise _bad("expected <mac>.<body>")
    if not hmac.compare_digest(mac, mac_of(key, body).encode()):
        raise GossipError(BAD_MAC, "signature does not match (forged, altered or truncated, "
                                   "or signed with another cluster secret)")
    try:
        raw = json.loads(body.decode("utf-8"), parse_constant=_no_constants,
                         object_pairs_hook=_no_duplicates)
    except GossipError:
        raise
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise _bad(f"not JSON: {str(e)[:80]}") from None
    o = _obj(raw, "frame", ("v", "type", "from", "to", "ts", "nonce", "re", "msg"))
    if o["v"] != VERSION or isinstance(o["v"], bool):
        raise _bad(f"v: unsupported version {str(o['v'])[:20]}")
    kind = o["type"]
    if not isinstance(kind, str) or kind not in TYPE_OF.values():
        raise _bad(f"type: unknown message type {str(kind)[:40]!r}")
    sender = _node(o["from"], "from")
    receiver = o["to"]
    if receiver != "":
        receiver = _node(receiver, "to")
    ts = o["ts"]
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts):
        raise _bad("ts: expected a number")
    nonce = _hex(o["nonce"], "nonce")
    re_ = None if o["re"] is None else _hex(o["re"], "re")
    return Envelope(sender, receiver, float(ts), nonce, re_, _message(kind, o["msg"]))


def _hex(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) != NONCE_HEX or not _HEX.match(value):
        raise _bad(f"{where}: expected {NONCE_HEX} lower-case hex digits")
    return value


class ReplayCache:
    """Nonces seen within the freshness window; each expires when its frame turns stale."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._seen: set[str] = set()
        self._expiry: list[tuple[float, str]] = []  # heap, earliest first

    def __len__(self) -> int:
        return len(self._seen)

    def expire(self, now: float) -> None:
        """Forget nonces whose frames are stale by now (the freshness check refuses them)."""
        while self._expiry and self._expiry[0][0] < now:
            self._seen.discard(heapq.heappop(self._expiry)[1])

    def add(self, nonce: str, expires: float, now: float) -> None:
        """Record `nonce`; GossipError if it was seen (or if the cache cannot hold it)."""
        self.expire(now)
        if nonce in self._seen:
            raise GossipError(REPLAYED, "this nonce was already accepted")
        if len(self._seen) >= self.capacity:
            # Failing closed: evicting a live nonce would let its frame be replayed.
            raise GossipError(CACHE_FULL, f"{self.capacity} fresh nonces already held")
        self._seen.add(nonce)
        heapq.heappush(self._expiry, (expires, nonce))


class Verifier:
    """Opens frames for one node: MAC, schema, freshness, receiver and replay checks."""

    def __init__(self, key: bytes, node: str, *, max_clock_skew_s: float,
                 replay_capacity: int = 200_000) -> None:
        self.key = key
        self.node = node
        self.max_clock_skew_s = max_clock_skew_s
        self.replays = ReplayCache(replay_capacity)

    def open(self, frame: bytes, *, now: float, expect: tuple[str, ...] | None = None,
             re: str | None = None) -> Envelope:
        """The verified envelope of `frame`, or GossipError.

        `expect`: the message types acceptable here; `re`: for a reply, the nonce of the
        request it must answer (None for requests, which must not quote one)."""
        self.replays.expire(now)
        try:
            env = parse(frame, self.key)
        except GossipError:
            raise
        except Exception as e:  # the promise: garbage never raises anything but GossipError
            raise _bad(f"{type(e).__name__}") from None
        if env.ts < now - self.max_clock_skew_s:
            raise GossipError(STALE, f"sent {now - env.ts:.1f}s ago, window "
                                     f"{self.max_clock_skew_s}s")
        if env.ts > now + self.max_clock_skew_s:
            raise GossipError(FUTURE, f"sent {env.ts - now:.1f}s in the future, window "
                                      f"{self.max_clock_skew_s}s")
        if env.receiver not in ("", self.node):
            raise GossipError(WRONG_RECEIVER, f"addressed to {env.receiver}")
        if expect is not None and env.type not in expect:
            raise GossipError(WRONG_TYPE, f"{env.type} where {'/'.join(expect)} belongs")
        if env.re != re:
            raise GossipError(WRONG_REPLY, "does not answer this request" if re else
                                           "a request must not quote a nonce")
        self.replays.add(env.nonce, env.ts + self.max_clock_skew_s, now)
        return env
