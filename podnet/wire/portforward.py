"""The server side of Kubernetes' port-forward protocol (`portforward.k8s.io`) over SPDY/3.1,
as a state machine without I/O: bytes from the client in, events and bytes for the client out.

For every local TCP connection, kubectl opens two streams, each with a SYN_STREAM carrying
`streamtype: error|data`, `port: <remote port>` and `requestid: <n>` (clients too old to send
`requestid` are paired by stream id, error = data - 2, as kubelet does). The server answers each
SYN_STREAM with a SYN_REPLY at once and, once both streams of a request are there, reports a
`PairReady`: the caller then connects to the pod's port and copies bytes between that
connection and the data stream. A failure is reported as text on the error stream; kubectl
prints it as `an error occurred forwarding L -> R: <text>`. The server ends a pair by FIN on the
data stream, then FIN on the error stream (kubectl waits for the error stream's end after the
data stream's before it closes the local connection).

Flow control (SPDY/3.1): the session sends WINDOW_UPDATEs for the stream and for the session as
the caller reports bytes consumed (`consumed()`), half a window at a time. On the sending side it
keeps the peer's windows, and enforces them once the peer has shown that it does flow control at
all (a SETTINGS frame or any WINDOW_UPDATE). kubectl's SPDY library (moby/spdystream) does
neither: it never sends WINDOW_UPDATE and never waits for one, so with kubectl a strict window
would stall every download at 64 KiB, and a strict receive window would reset every upload past
64 KiB. With such a peer the transport's own backpressure (TCP, WebSocket) is what slows a
writer, and the caller keeps memory bounded by not reading while a stream's buffer is full.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from podnet.wire import spdy
from podnet.wire.spdy import GoAwayStatus, RstStatus

PROTOCOL = "portforward.k8s.io"
WEBSOCKET_PROTOCOL = "SPDY/3.1+" + PROTOCOL   # kubectl 1.31+: SPDY frames inside a WebSocket
STREAM_TYPE, PORT, REQUEST_ID = "streamtype", "port", "requestid"
ERROR, DATA = "error", "data"
MAX_DATA_FRAME = 32 * 1024     # what we put in one DATA frame (spdystream reads any size)
MAX_STREAMS = 1000             # open streams per session; more are refused (REFUSED_STREAM)


# ---------------------------------------------------------------------- events

@dataclass(frozen=True)
class PairReady:
    """Both streams of one forwarded connection are open: connect to `port` and relay."""

    request_id: str
    port: int | None          # None when the header is missing or not a port number
    port_text: str
    data_stream: int
    error_stream: int


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes


@dataclass(frozen=True)
class RemoteEnd:
    """The client will send nothing more on this stream (FIN)."""

    stream_id: int


@dataclass(frozen=True)
class Reset:
    """The stream is gone (RST_STREAM either way, or a stream error): stop using it."""

    stream_id: int
    status: int
    reason: str


@dataclass(frozen=True)
class WindowOpen:
    """The peer opened its window for `stream_id` (0: the session): blocked senders may go on."""

    stream_id: int


@dataclass(frozen=True)
class Refused:
    """A stream refused before it became part of a pair (bad headers, too many streams)."""

    stream_id: int
    reason: str


@dataclass(frozen=True)
class Closed:
    """The session is over (GOAWAY received, or the client broke the protocol)."""

    reason: str
    error: bool


Event = PairReady | Data | RemoteEnd | Reset | WindowOpen | Refused | Closed


# ---------------------------------------------------------------------- session

@dataclass
class _Stream:
    stream_id: int
    kind: str
    request_id: str
    port_text: str
    send_window: int
    recv_window: int
    remote_open: bool = True
    local_open: bool = True
    unacked: int = 0           # bytes consumed and not yet given back by a WINDOW_UPDATE


@dataclass
class _Pending:
    data: int | None = None
    error: int | None = None
    port_text: str = ""


@dataclass
class PortForwardSession:
    """One client's SPDY session (we are the server: client streams have odd ids)."""

    recv_window_size: int = spdy.DEFAULT_WINDOW
    strict_receive_window: bool = False
    _out: list[bytes] = field(default_factory=list)
    _compressor: spdy.HeaderCompressor = field(default_factory=spdy.HeaderCompressor)
    _decoder: spdy.FrameDecoder = field(default_factory=spdy.FrameDecoder)
    _streams: dict[int, _Stream] = field(default_factory=dict)
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _last_id: int = 0
    _peer_initial_window: int = spdy.DEFAULT_WINDOW
    _send_session_window: int = spdy.DEFAULT_WINDOW
    _recv_session_window: int = spdy.DEFAULT_WINDOW
    _session_unacked: int = 0
    enforce_send_window: bool = False
    overrun_bytes: int = 0     # received beyond the window we advertised (lenient mode)
    closed: bool = False

    # -- input

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes from the client; returns what happened, in order."""
        if self.closed:
            return []
        events: list[Event] = []
        try:
            items = self._decoder.feed(data)
        except spdy.ProtocolError as e:
            return [self._fail(str(e), e.status)]
        for item in items:
            if self.closed:
                break
            try:
                if isinstance(item, spdy.StreamError):
                    raise item
                self._frame(item, events)
            except spdy.StreamError as e:
                self._reset(e.stream_id, e.status)
                events.append(Reset(e.stream_id, e.status, str(e)))
            except spdy.ProtocolError as e:
                events.append(self._fail(str(e), e.status))
        return events

    def _frame(self, frame: spdy.Frame, events: list[Event]) -> None:
        if isinstance(frame, spdy.DataFrame):
            self._data(frame, events)
        elif isinstance(frame, spdy.SynStream):
            self._syn_stream(frame, events)
        elif isinstance(frame, spdy.RstStream):
            stream = self._streams.pop(frame.stream_id, None)
            if stream is not None:
                self._forget_pending(stream)
                events.append(Reset(frame.stream_id, frame.status,
                                    f"the client reset stream {frame.stream_id} "
                                    f"(status {frame.status})"))
        elif isinstance(frame, spdy.Settings):
            self._settings(frame, events)
        elif isinstance(frame, spdy.Ping):
            if frame.ping_id % 2 == 1:      # the client's ping: echo it; even ids would be ours
                self._out.append(spdy.encode(frame))
        elif isinstance(frame, spdy.GoAway):
            self.closed = True
            events.append(Closed(f"the client said GOAWAY (status {frame.status})",
                                 error=frame.status != GoAwayStatus.OK))
        elif isinstance(frame, spdy.WindowUpdate):
            self._window_update(frame, events)
        elif isinstance(frame, spdy.HeadersFrame):
            stream = self._streams.get(frame.stream_id)
            if stream is None:
                raise spdy.StreamError(frame.stream_id, RstStatus.INVALID_STREAM,
                                       f"HEADERS for stream {frame.stream_id}, which is not open")
            if frame.fin:
                self._remote_end(stream, events)
        elif isinstance(frame, spdy.SynReply):
            raise spdy.StreamError(frame.stream_id, RstStatus.INVALID_STREAM,
                                   f"SYN_REPLY for stream {frame.stream_id}: this server opens "
                                   "no streams")
        # UnknownFrame: ignored, as the spec says.

    def _syn_stream(self, frame: spdy.SynStream, events: list[Event]) -> None:
        sid = frame.stream_id
        if sid % 2 == 0:
            raise spdy.ProtocolError(f"SYN_STREAM with even stream id {sid} from the client")
        if sid <= self._last_id:
            raise spdy.ProtocolError(f"SYN_STREAM for stream {sid} after stream {self._last_id}"
                                     " (ids must increase)")
        self._last_id = sid
        kind = frame.headers.get(STREAM_TYPE, "")
        port_text = frame.headers.get(PORT, "")
        if kind not in (ERROR, DATA):
            self._refuse(sid, f"stream {sid} has streamType {kind!r} (expected 'error' or "
                              "'data')", events)
            return
        if len(self._streams) >= MAX_STREAMS:
            self._refuse(sid, f"more than {MAX_STREAMS} open streams", events)
            return
        request_id = frame.headers.get(REQUEST_ID, "")
        if not request_id:   # old clients: the error stream's id names the pair
            request_id = str(sid if kind == ERROR else sid - 2)
        pending = self._pending.setdefault(request_id, _Pending())
        if getattr(pending, kind) is not None:
            if not any((pending.data, pending.error)):
                del self._pending[request_id]
            self._refuse(sid, f"request {request_id} already has a {kind} stream", events)
            return
        stream = _Stream(sid, kind, request_id, port_text, self._peer_initial_window,
                         self.recv_window_size)
        self._streams[sid] = stream
        self._out.append(spdy.encode(spdy.SynReply(sid, {}), self._compressor))
        if frame.unidirectional:
            stream.local_open = False
        setattr(pending, kind, sid)
        if kind == DATA or not pending.port_text:
            pending.port_text = port_text
        if frame.fin:
            self._remote_end(stream, events)
        if pending.data is not None and pending.error is not None:
            del self._pending[request_id]
            text = pending.port_text
            port = int(text) if text.isdigit() and 0 < int(text) < 65536 else None
            events.append(PairReady(request_id, port, text, pending.data, pending.error))

    def _refuse(self, sid: int, reason: str, events: list[Event]) -> None:
        self._out.append(spdy.encode(spdy.RstStream(sid, RstStatus.REFUSED_STREAM)))
        events.append(Refused(sid, reason))

    def _data(self, frame: spdy.DataFrame, events: list[Event]) -> None:
        size = len(frame.data)
        self._recv_session_window -= size
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            if frame.stream_id > self._last_id:
                # The spec makes this a stream error, but no client gets here by mistake: it
                # is what bytes that are not SPDY at all look like (b"GET " is stream
                # 0x47455420). Say so and stop, rather than swallow megabytes as "data".
                raise spdy.ProtocolError(f"data for stream {frame.stream_id}, which was never "
                                         "opened (is the client speaking SPDY/3.1?)")
            # Data still in flight for a stream we closed is expected; give its window back.
            self._session_unacked += size
            self._ack_session()
            return
        if not stream.remote_open:
            raise spdy.StreamError(frame.stream_id, RstStatus.STREAM_ALREADY_CLOSED,
                                   f"data on stream {frame.stream_id} after its FIN")
        stream.recv_window -= size
        if stream.recv_window < 0 or self._recv_session_window < 0:
            over = max(-stream.recv_window, -self._recv_session_window)
            self.overrun_bytes = max(self.overrun_bytes, over)
            if self.strict_receive_window:
                raise spdy.StreamError(frame.stream_id, RstStatus.FLOW_CONTROL_ERROR,
                                       f"stream {frame.stream_id} overran its window by "
                                       f"{over} bytes")
        if size:
            events.append(Data(frame.stream_id, frame.data))
        if frame.fin:
            self._remote_end(stream, events)

    def _remote_end(self, stream: _Stream, events: list[Event]) -> None:
        stream.remote_open = False
        events.append(RemoteEnd(stream.stream_id))
        self._maybe_forget(stream)

    def _settings(self, frame: spdy.Settings, events: list[Event]) -> None:
        self.enforce_send_window = True
        value = frame.get(spdy.SettingId.INITIAL_WINDOW_SIZE)
        if value is None:
            return
        if value > spdy.MAX_WINDOW:
            raise spdy.ProtocolError(f"SETTINGS_INITIAL_WINDOW_SIZE {value} exceeds 2^31-1")
        delta = value - self._peer_initial_window
        self._peer_initial_window = value
        for stream in self._streams.values():   # windows may go negative (spec §2.6.8)
            stream.send_window += delta
        if delta > 0:
            events.append(WindowOpen(0))

    def _window_update(self, frame: spdy.WindowUpdate, events: list[Event]) -> None:
        self.enforce_send_window = True
        if frame.stream_id == 0:
            if self._send_session_window + frame.delta > spdy.MAX_WINDOW:
                raise spdy.ProtocolError("the session window grew past 2^31-1")
            self._send_session_window += frame.delta
            events.append(WindowOpen(0))
            return
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            return      # a stream that just closed
        if stream.send_window + frame.delta > spdy.MAX_WINDOW:
            raise spdy.StreamError(frame.stream_id, RstStatus.FLOW_CONTROL_ERROR,
                                   f"the window of stream {frame.stream_id} grew past 2^31-1")
        stream.send_window += frame.delta
        events.append(WindowOpen(frame.stream_id))

    # -- output

    def take_output(self) -> bytes:
        """Bytes due to the client (frames queued by receive() and the send calls)."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def send_window(self, stream_id: int) -> int | None:
        """How many bytes `send()` would take now; None when windows are not enforced."""
        stream = self._streams.get(stream_id)
        if stream is None or not stream.local_open:
            return 0
        if not self.enforce_send_window:
            return None
        return max(0, min(stream.send_window, self._send_session_window))

    def send(self, stream_id: int, data: bytes) -> int:
        """Queue as much of `data` as the windows allow; returns how many bytes were taken
        (0 for a stream that is gone or ended on our side)."""
        window = self.send_window(stream_id)
        size = len(data) if window is None else min(window, len(data))
        if self.closed or size == 0:
            return 0
        stream = self._streams[stream_id]
        stream.send_window -= size
        self._send_session_window -= size
        for at in range(0, size, MAX_DATA_FRAME):
            self._out.append(spdy.encode_data(stream_id, data[at:min(size, at + MAX_DATA_FRAME)]))
        return size

    def end(self, stream_id: int) -> None:
        """Half-close our side of a stream (an empty DATA frame with FIN)."""
        stream = self._streams.get(stream_id)
        if stream is None or not stream.local_open or self.closed:
            return
        stream.local_open = False
        self._out.append(spdy.encode_data(stream_id, b"", fin=True))
        self._maybe_forget(stream)

    def reset(self, stream_id: int, status: RstStatus = RstStatus.CANCEL) -> None:
        if stream_id in self._streams:
            self._reset(stream_id, status)

    def consumed(self, stream_id: int, size: int) -> None:
        """The caller has passed `size` received bytes on: give the client that window back."""
        self._session_unacked += size
        self._ack_session()
        stream = self._streams.get(stream_id)
        if stream is None or not stream.remote_open:
            return
        stream.unacked += size
        if stream.unacked >= self.recv_window_size // 2:
            self._out.append(spdy.encode(spdy.WindowUpdate(stream_id, stream.unacked)))
            stream.recv_window += stream.unacked
            stream.unacked = 0

    def close(self, status: GoAwayStatus = GoAwayStatus.OK) -> None:
        """Say GOAWAY; the caller closes the transport after sending the output."""
        if not self.closed:
            self.closed = True
            self._out.append(spdy.encode(spdy.GoAway(self._last_id, status)))

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    # -- internals

    def _ack_session(self) -> None:
        if self._session_unacked >= spdy.DEFAULT_WINDOW // 2 and not self.closed:
            self._out.append(spdy.encode(spdy.WindowUpdate(0, self._session_unacked)))
            self._recv_session_window += self._session_unacked
            self._session_unacked = 0

    def _reset(self, stream_id: int, status: int) -> None:
        self._out.append(spdy.encode(spdy.RstStream(stream_id, status)))
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            self._forget_pending(stream)

    def _forget_pending(self, stream: _Stream) -> None:
        pending = self._pending.get(stream.request_id)
        if pending is not None and stream.stream_id in (pending.data, pending.error):
            del self._pending[stream.request_id]

    def _maybe_forget(self, stream: _Stream) -> None:
        if not stream.remote_open and not stream.local_open:
            self._streams.pop(stream.stream_id, None)

    def _fail(self, reason: str, status: GoAwayStatus) -> Closed:
        self.close(status)
        return Closed(reason, error=True)
