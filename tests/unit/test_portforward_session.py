"""The port-forward server session (podnet/wire/portforward.py), driven with SPDY frames as
kubectl sends them, without sockets."""

from __future__ import annotations

from typing import Any

from podnet.wire import portforward as pf
from podnet.wire import spdy
from podnet.wire.spdy import (
    DataFrame,
    GoAway,
    GoAwayStatus,
    Ping,
    RstStatus,
    RstStream,
    SettingId,
    Settings,
    SynReply,
    SynStream,
    WindowUpdate,
)


class Client:
    """kubectl's side: its own header compressor, and a decoder for what the server says."""

    def __init__(self, session: pf.PortForwardSession | None = None) -> None:
        self.session = session or pf.PortForwardSession()
        self.compressor = spdy.HeaderCompressor()
        self.decoder = spdy.FrameDecoder()

    def send(self, *frames: spdy.Frame) -> list[pf.Event]:
        return self.session.receive(spdy.encode_all(frames, self.compressor))

    def received(self) -> list[Any]:
        frames = self.decoder.feed(self.session.take_output())
        merged: list[Any] = []
        for f in frames:     # data frames may come in pieces
            if (isinstance(f, DataFrame) and merged and isinstance(merged[-1], DataFrame)
                    and merged[-1].stream_id == f.stream_id and not merged[-1].fin and f.data):
                merged[-1] = DataFrame(f.stream_id, merged[-1].data + f.data, f.fin)
            else:
                merged.append(f)
        return merged

    def open_pair(self, request: str, port: str = "8080", first: int = 1) -> pf.PairReady:
        events = self.send(
            SynStream(first, {"streamtype": "error", "port": port, "requestid": request}),
            DataFrame(first, b"", fin=True),
            SynStream(first + 2, {"streamtype": "data", "port": port, "requestid": request}))
        assert self.received() == [SynReply(first, {}), SynReply(first + 2, {})]
        ready = [e for e in events if isinstance(e, pf.PairReady)]
        assert len(ready) == 1
        return ready[0]


def test_a_pair_as_kubectl_opens_it() -> None:
    client = Client()
    pair = client.open_pair("0")
    assert pair == pf.PairReady("0", 8080, "8080", data_stream=3, error_stream=1)
    events = client.send(DataFrame(3, b"GET / HTTP/1.1\r\n\r\n"))
    assert events == [pf.Data(3, b"GET / HTTP/1.1\r\n\r\n")]


def test_the_server_ends_a_pair_data_first_then_error() -> None:
    client = Client()
    client.open_pair("0")
    assert client.session.send(3, b"HTTP/1.1 200 OK\r\n\r\n") == 19
    client.session.end(3)
    client.session.end(1)
    assert client.received() == [DataFrame(3, b"HTTP/1.1 200 OK\r\n\r\n"),
                                 DataFrame(3, b"", fin=True), DataFrame(1, b"", fin=True)]
    assert client.session.open_streams == 1       # the data stream: kubectl may still send
    assert client.send(RstStream(3, RstStatus.CANCEL)) == [
        pf.Reset(3, RstStatus.CANCEL, "the client reset stream 3 (status 5)")]
    assert client.session.open_streams == 0


def test_an_error_is_text_on_the_error_stream() -> None:
    client = Client()
    client.open_pair("0", port="81")
    message = b"error forwarding port 81 to pod echo, uid u: connection refused"
    client.session.send(1, message)
    client.session.end(3)
    client.session.end(1)
    assert client.received() == [DataFrame(1, message), DataFrame(3, b"", fin=True),
                                 DataFrame(1, b"", fin=True)]
    # The session goes on: the next connection works.
    assert client.open_pair("1", first=5).data_stream == 7


def test_old_clients_without_request_id_pair_by_stream_id() -> None:
    client = Client()
    events = client.send(SynStream(1, {"streamtype": "error", "port": "80"}),
                         SynStream(3, {"streamtype": "data", "port": "80"}))
    assert [e for e in events if isinstance(e, pf.PairReady)] == [
        pf.PairReady("1", 80, "80", data_stream=3, error_stream=1)]


def test_bad_port_is_reported_not_guessed() -> None:
    client = Client()
    pair = client.open_pair("0", port="http")
    assert pair.port is None and pair.port_text == "http"


def test_streams_with_bad_headers_are_refused() -> None:
    client = Client()
    events = client.send(SynStream(1, {"streamtype": "stdin", "port": "80"}))
    assert events == [pf.Refused(1, "stream 1 has streamType 'stdin' (expected 'error' or "
                                    "'data')")]
    assert client.received() == [RstStream(1, RstStatus.REFUSED_STREAM)]
    client.send(SynStream(3, {"streamtype": "error", "requestid": "9"}))
    events = client.send(SynStream(5, {"streamtype": "error", "requestid": "9"}))
    assert isinstance(events[0], pf.Refused) and "already has a error stream" in events[0].reason


def test_stream_ids_must_be_odd_and_increasing() -> None:
    client = Client()
    client.open_pair("0", first=5)
    events = client.send(SynStream(3, {"streamtype": "data", "requestid": "1"}))
    assert isinstance(events[0], pf.Closed) and events[0].error
    assert "ids must increase" in events[0].reason
    assert client.received() == [GoAway(7, GoAwayStatus.PROTOCOL_ERROR)]
    assert client.session.closed and client.send(Ping(1)) == []

    client = Client()
    events = client.send(SynStream(2, {"streamtype": "data"}))
    assert isinstance(events[0], pf.Closed) and "even stream id" in events[0].reason


def test_pings_are_answered() -> None:
    client = Client()
    assert client.send(Ping(1), Ping(2)) == []
    assert client.received() == [Ping(1)]      # an even id would be an answer to our own ping


def test_goaway_from_the_client_ends_the_session() -> None:
    client = Client()
    events = client.send(GoAway(0))
    assert events == [pf.Closed("the client said GOAWAY (status 0)", error=False)]
    assert client.session.closed


def test_data_for_unknown_or_finished_streams() -> None:
    client = Client()
    client.open_pair("0")
    client.send(DataFrame(3, b"", fin=True))
    events = client.send(DataFrame(3, b"more"))        # after its FIN
    assert isinstance(events[0], pf.Reset)
    assert events[0].status == RstStatus.STREAM_ALREADY_CLOSED
    assert client.received()[-1] == RstStream(3, RstStatus.STREAM_ALREADY_CLOSED)
    client.send(RstStream(1, RstStatus.CANCEL))
    assert client.send(DataFrame(1, b"late")) == []    # in flight when the stream closed
    events = client.send(DataFrame(9, b"x"))          # never opened: not SPDY at all
    assert isinstance(events[0], pf.Closed) and "never opened" in events[0].reason


def test_window_updates_are_sent_as_data_is_consumed() -> None:
    client = Client()
    client.open_pair("0")
    chunk = b"x" * 10_000
    for _ in range(4):
        client.send(DataFrame(3, chunk))
        client.session.consumed(3, len(chunk))
    # Half a window (32 KiB) consumed: the stream's and the session's windows come back.
    assert client.received() == [WindowUpdate(0, 40_000), WindowUpdate(3, 40_000)]


def test_a_peer_without_flow_control_is_not_held_to_windows() -> None:
    # kubectl never sends WINDOW_UPDATE: holding it to 64 KiB would stall every download.
    client = Client()
    client.open_pair("0")
    assert client.session.send_window(3) is None
    assert client.session.send(3, b"y" * 200_000) == 200_000
    # It does not wait for ours either: overruns are tolerated, and counted.
    client.send(DataFrame(3, b"z" * 100_000))
    assert client.session.overrun_bytes == 100_000 - spdy.DEFAULT_WINDOW


def test_a_flow_controlling_peer_is_held_to_its_windows() -> None:
    client = Client()
    events = client.send(Settings(((0, SettingId.INITIAL_WINDOW_SIZE, 1000),)))
    assert events == [] and client.session.enforce_send_window
    client.open_pair("0")
    assert client.session.send_window(3) == 1000
    assert client.session.send(3, b"a" * 5000) == 1000
    assert client.session.send(3, b"a" * 4000) == 0      # a slow reader stops the writer
    assert client.send(WindowUpdate(3, 1500)) == [pf.WindowOpen(3)]
    assert client.session.send(3, b"a" * 4000) == 1500
    data = [f for f in client.received() if isinstance(f, DataFrame)]
    assert sum(len(f.data) for f in data) == 2500


def test_the_session_window_limits_all_streams() -> None:
    client = Client()
    client.send(Settings(((0, SettingId.INITIAL_WINDOW_SIZE, 1 << 20),)))
    client.open_pair("0")
    client.open_pair("1", first=5)
    assert client.session.send(3, b"a" * 50_000) == 50_000
    assert client.session.send(7, b"b" * 50_000) == spdy.DEFAULT_WINDOW - 50_000
    assert client.send(WindowUpdate(0, 10)) == [pf.WindowOpen(0)]
    assert client.session.send_window(7) == 10


def test_a_window_past_two_to_the_31_resets_the_stream() -> None:
    client = Client()
    client.open_pair("0")
    events = client.send(WindowUpdate(3, spdy.MAX_WINDOW))
    assert isinstance(events[0], pf.Reset)
    assert events[0].status == RstStatus.FLOW_CONTROL_ERROR


def test_strict_receive_window() -> None:
    client = Client(pf.PortForwardSession(strict_receive_window=True))
    client.open_pair("0")
    events = client.send(DataFrame(3, b"z" * (spdy.DEFAULT_WINDOW + 1)))
    assert any(isinstance(e, pf.Reset) and e.status == RstStatus.FLOW_CONTROL_ERROR
               for e in events)


def test_garbage_closes_the_session_with_goaway() -> None:
    client = Client()
    events = client.session.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(events) == 1 and isinstance(events[0], pf.Closed) and events[0].error
    assert "is the client speaking SPDY/3.1?" in events[0].reason
    assert client.received() == [GoAway(0, GoAwayStatus.PROTOCOL_ERROR)]
