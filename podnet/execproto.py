"""The exec channel protocol (`v5.channel.k8s.io` / `v4.channel.k8s.io`), without I/O.

kubectl, the Python client, the control plane relay, the agent and `podnet exec` all speak it
over one WebSocket carrying binary messages only. Every message is one channel id byte and a
payload:

    0 stdin   client -> server
    1 stdout  server -> client
    2 stderr  server -> client (tty sessions merge stderr into stdout)
    3 error   server -> client: exactly one JSON `Status` that says how the command ended
    4 resize  client -> server: `{"Width":W,"Height":H}` per message (tty only)
  255 close   client -> server, v5 only: payload is the one channel being half-closed
              (`FF 00` = stdin reached EOF)

The session ends with the channel-3 Status and a normal close (1000). kubectl takes its own exit
code from the Status: Success -> 0, `NonZeroExitCode` -> the code in `details.causes`, any other
Failure -> 1 after printing `error: <message>`.
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any

PROTOCOL_V5 = "v5.channel.k8s.io"
PROTOCOL_V4 = "v4.channel.k8s.io"
# Best first: a server picks the first one it shares with the client. v5 adds the CLOSE signal,
# without which a command reading stdin never sees EOF.
PROTOCOLS = (PROTOCOL_V5, PROTOCOL_V4)


class Channel(IntEnum):
    STDIN = 0
    STDOUT = 1
    STDERR = 2
    ERROR = 3
    RESIZE = 4
    CLOSE = 255


def encode(channel: int, data: bytes | str = b"") -> bytes:
    """One WebSocket message: the channel byte followed by `data` (str is sent as UTF-8)."""
    ch = Channel(channel)  # raises ValueError for an id the protocol does not define
    payload = data.encode() if isinstance(data, str) else bytes(data)
    return bytes([ch]) + payload


def decode(message: bytes) -> tuple[Channel, bytes]:
    """Split one WebSocket message into its channel and payload.

    Raises ValueError for an empty message or a channel id the protocol does not define.
    """
    if not message:
        raise ValueError("empty exec message: every message starts with a channel id byte")
    try:
        channel = Channel(message[0])
    except ValueError:
        raise ValueError(f"unknown exec channel {message[0]} (known: "
                         + ", ".join(str(int(c)) for c in Channel) + ")") from None
    return channel, bytes(message[1:])


def close_signal(channel: int = Channel.STDIN) -> bytes:
    """The v5 half-close message for `channel` (`FF 00` closes stdin)."""
    return encode(Channel.CLOSE, bytes([Channel(channel)]))


def closed_channel(payload: bytes) -> Channel:
    """The channel a CLOSE message's payload names."""
    if len(payload) != 1:
        raise ValueError(f"exec close signal must name one channel, got {len(payload)} bytes")
    return decode(payload)[0]


def decode_resize(payload: bytes) -> tuple[int, int]:
    """(width, height) from a resize message's JSON payload."""
    try:
        size = json.loads(payload)
        width, height = int(size["Width"]), int(size["Height"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"malformed exec resize message {payload[:80]!r}") from e
    return width, height


# --- the channel-3 Status ---------------------------------------------------------------------

NON_ZERO_EXIT = "NonZeroExitCode"


def status_success() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def status_for_exit(code: int, argv: list[str]) -> dict[str, Any]:
    """The Status the kubelet sends when `argv` exited with `code`.

    The message formats argv like Go's `%v` of a []string (`[sh -c exit 3]`), as the kubelet
    does, so kubectl users see the same text.
    """
    if not 0 <= code <= 255:
        raise ValueError(f"exit code {code} is outside 0..255")
    if code == 0:
        return status_success()
    return {
        "metadata": {},
        "status": "Failure",
        "message": (f"command terminated with non-zero exit code: error executing command "
                    f"[{' '.join(argv)}], exit code {code}"),
        "reason": NON_ZERO_EXIT,
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def status_failure(message: str, reason: str = "InternalError") -> dict[str, Any]:
    """A Failure that is not an exit code (kubectl prints `error: <message>` and exits 1)."""
    return {"metadata": {}, "status": "Failure", "message": message, "reason": reason}


def encode_status(status: dict[str, Any]) -> bytes:
    return encode(Channel.ERROR, json.dumps(status, separators=(",", ":")))


def exit_code_from_status(status: dict[str, Any]) -> int:
    """The exit code kubectl would exit with for this channel-3 Status.

    Raises ValueError where kubectl reports "error stream protocol error": a NonZeroExitCode
    Failure without a usable ExitCode cause, or a status that is neither Success nor Failure.
    """
    state = status.get("status")
    if state == "Success":
        return 0
    if state != "Failure":
        raise ValueError(f"error stream protocol error: unknown status {state!r}")
    if status.get("reason") != NON_ZERO_EXIT:
        return 1
    details = status.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    for cause in causes if isinstance(causes, list) else []:
        if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
            try:
                code = int(cause.get("message", ""))
            except ValueError:
                break
            if 0 <= code <= 255:
                return code
            break
    raise ValueError("error stream protocol error: NonZeroExitCode without a valid ExitCode cause")
