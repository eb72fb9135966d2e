"""The exec channel protocol: framing and the channel-3 Status, as kubectl reads them."""

from __future__ import annotations

import json

import pytest

from podnet import execproto
from podnet.execproto import Channel


def test_encode_decode_round_trip() -> None:
    message = execproto.encode(Channel.STDIN, b"input-data\n")
    assert message == bytes.fromhex("00696e7075742d646174610a")  # kubectl.md's wire example
    assert execproto.decode(message) == (Channel.STDIN, b"input-data\n")
    assert execproto.encode(Channel.STDOUT, "hé") == b"\x01" + "hé".encode()
    assert execproto.decode(b"\x02") == (Channel.STDERR, b"")


def test_close_signal_is_ff_00() -> None:
    assert execproto.close_signal() == b"\xff\x00"
    channel, payload = execproto.decode(b"\xff\x00")
    assert channel == Channel.CLOSE
    assert execproto.closed_channel(payload) == Channel.STDIN


@pytest.mark.parametrize("message, error", [
    (b"", "empty exec message"),
    (b"\x07abc", "unknown exec channel 7"),
])
def test_decode_rejects_bad_messages(message: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        execproto.decode(message)


def test_encode_rejects_unknown_channel() -> None:
    with pytest.raises(ValueError):
        execproto.encode(9, b"x")


def test_resize_payload() -> None:
    assert execproto.decode_resize(b'{"Width":100,"Height":30}\n') == (100, 30)
    with pytest.raises(ValueError, match="malformed exec resize"):
        execproto.decode_resize(b"{}")


def test_success_status() -> None:
    assert execproto.status_for_exit(0, ["true"]) == {"metadata": {}, "status": "Success"}


def test_non_zero_exit_status_matches_the_kubelet() -> None:
    assert execproto.status_for_exit(3, ["false"]) == {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: error executing command "
                   "[false], exit code 3",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
    }
    status = execproto.status_for_exit(7, ["sh", "-c", "exit 7"])
    assert "[sh -c exit 7], exit code 7" in status["message"]


def test_exit_code_out_of_range() -> None:
    with pytest.raises(ValueError):
        execproto.status_for_exit(256, ["x"])


def test_status_is_sent_on_channel_3() -> None:
    message = execproto.encode_status(execproto.status_for_exit(2, ["ls"]))
    channel, payload = execproto.decode(message)
    assert channel == Channel.ERROR
    assert json.loads(payload)["reason"] == "NonZeroExitCode"


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_exit_code_round_trip(code: int) -> None:
    assert execproto.exit_code_from_status(execproto.status_for_exit(code, ["x"])) == code


def test_other_failures_exit_1() -> None:
    failure = execproto.status_failure('container not found ("zzz")')
    assert failure == {"metadata": {}, "status": "Failure",
                       "message": 'container not found ("zzz")', "reason": "InternalError"}
    assert execproto.exit_code_from_status(failure) == 1


@pytest.mark.parametrize("status", [
    {"status": "Failure", "reason": "NonZeroExitCode"},
    {"status": "Failure", "reason": "NonZeroExitCode",
     "details": {"causes": [{"reason": "ExitCode", "message": "x"}]}},
    {"status": "Failure", "reason": "NonZeroExitCode",
     "details": {"causes": [{"reason": "ExitCode", "message": "300"}]}},
    {"status": "Weird"},
])
def test_protocol_errors(status: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="error stream protocol error"):
        execproto.exit_code_from_status(status)


def test_subprotocols_prefer_v5() -> None:
    assert execproto.PROTOCOLS == ("v5.channel.k8s.io", "v4.channel.k8s.io")
