"""Pod network stacks with virtual transports: no OS sockets, no kernel.

One `NodeNetwork` per agent process; one `PodNet` per pod, shared by the pod's containers (so
`127.0.0.1:P` reaches a sibling container's listener). `PodNet` mirrors the asyncio calls that
code makes (`open_connection`, `start_server`, `create_connection`, `create_server`,
`create_datagram_endpoint`, `getaddrinfo`), so asyncio code and libraries that take an asyncio
transport (StreamReader/StreamWriter, aiohttp's server) run unchanged over it.

IPv6 (dual-stack clusters): a pod has an address per family (`PodNet.ips`, primary first) and
`::1`; `0.0.0.0` and `::` are separate wildcards (as asyncio binds them, `::` with
IPV6_V6ONLY), and `host=None` listens on both when the pod has an IPv6 address. Everything
IPv4 goes through the same code as before: the family is told by a `:` in the address.

A stream is two `VirtualStreamTransport` ends. Each end is the asyncio transport of its own
protocol and, through the small `StreamPeer` interface, the thing the other end writes into. That
interface is the seam for other nodes: a tunnel implements `StreamPeer` for a remote end and plugs
in as `NodeNetwork.remote` (outbound) and via `accept_stream`/`deliver_datagram` (inbound).

NetworkPolicy plugs in as `NodeNetwork.policy` (agents/policy.py): asked once per connect and
per new UDP flow where traffic leaves a pod of this node (egress, and ingress too when the
destination is here) and where it arrives from elsewhere (`accept_stream`, `deliver_datagram`).
A denied connect is dropped (it waits, as for a lost SYN, until the caller gives up) or, with
`reject`, refused; a denied datagram is dropped.

Failure semantics follow the kernel: no route -> EHOSTUNREACH, nobody listening -> ECONNREFUSED,
peer gone -> ECONNRESET. Backpressure is real: bytes wait in the writer's buffer while the peer's
reader is paused, so `drain()` blocks at the high-water mark and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import ipaddress
import itertools
import os
import random
import socket
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple, NoReturn, Protocol, TypeVar, cast

import structlog

from podnet.addresses import address as _fmt

Address = tuple[str, int]
LocalAddr = tuple[str | None, int]      # a bind address: None/"" means all of the pod's addresses
AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[str, int]]
# A name lookup for names that are not IP literals, `localhost` or the pod's hostname. Cluster DNS
# plugs in here; it gets the name as the application gave it (search lists are its business).
Resolver = Callable[[str], Awaitable[Sequence[str]]]
ClientConnectedCallback = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]

_P = TypeVar("_P", bound=asyncio.BaseProtocol)

ANY = "0.0.0.0"
LOOPBACK = "127.0.0.1"
ANY6 = "::"
LOOPBACK6 = "::1"
EPHEMERAL_FIRST, EPHEMERAL_LAST = 32768, 60999     # Linux ip_local_port_range defaults
STREAM_LIMIT = 2**16                               # asyncio.streams default reader limit
HIGH_WATER = 2**16                                 # asyncio's default transport write buffer
DGRAM_RCVBUF = 212992                              # Linux net.core.rmem_default
DGRAM_OVERHEAD = 256                               # per-datagram cost, so tiny floods are bounded
MAX_DGRAM_FLOWS = 256                              # per UDP socket: flow ids kept, by destination
# How long a connect that a NetworkPolicy dropped waits before it fails (ETIMEDOUT), as an
# unanswered SYN does on Linux (tcp_syn_retries=6: about 127 s). Callers' own timeouts fire
# long before; this only bounds what an abandoned connect can hold.
DROP_TIMEOUT_S = 127.0

# Logged once per flow and decision (route, refusal, close), never per chunk: see DESIGN §9.
_log = structlog.get_logger()
# Set by code that owns a multi-connection exchange (a DNS lookup), so every connection and
# datagram flow it starts carries the exchange's one flow id instead of a fresh one.
current_flow: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "podnet_flow", default=None)


def unreachable() -> OSError:
    return OSError(errno.EHOSTUNREACH, "No route to host")


def refused() -> ConnectionRefusedError:
    return ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


def reset() -> ConnectionResetError:
    return ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")


class PolicyDropped(OSError):
    """A NetworkPolicy dropped this connection attempt: no answer, like a dropped SYN. The
    caller that gets it waits (`dropped()`) or, across a tunnel, leaves the OPEN unanswered."""

    def __init__(self) -> None:
        super().__init__(errno.ETIMEDOUT, "Connection timed out")


async def dropped() -> NoReturn:
    """Wait as a dropped SYN's sender does, then fail with ETIMEDOUT."""
    await asyncio.sleep(DROP_TIMEOUT_S)
    raise TimeoutError(errno.ETIMEDOUT, "Connection timed out")


def _in_use() -> OSError:
    return OSError(errno.EADDRINUSE, "Address already in use")


def _not_available() -> OSError:
    return OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")


def _no_name() -> socket.gaierror:
    return socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def _no_network() -> OSError:
    return OSError(errno.ENETUNREACH, "Network is unreachable")


def _literal(host: str) -> str | None:
    """The dotted quad for an IPv4 literal or `localhost`, the canonical form of an IPv6
    literal (also `[v6]`); None for anything needing a lookup."""
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return LOOPBACK
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    if ":" not in host:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        addr = ipaddress.IPv6Address(host)
    except ValueError:
        return None
    return None if addr.scope_id else str(addr)


def _is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == LOOPBACK6


def _wildcard(ip: str) -> str:
    """The wildcard bind address of `ip`'s family."""
    return ANY6 if ":" in ip else ANY


# --------------------------------------------------------------------------------------------
# The seam between stream ends (local, or a tunnel's stand-in for a remote one)


class StreamPeer(Protocol):
    """One end of a stream as the other end sees it.

    The other end pushes data into it and is told, via `wake()`, when it may push again. A tunnel
    implements this for an end that lives on another node (data frames, credit-based flow
    control, FIN/RST frames); the local implementation is `VirtualStreamTransport`.
    """

    def ready(self) -> bool:
        """True when this end takes data now (connected, and its reader is not paused)."""

    def deliver(self, data: bytes) -> None:
        """Bytes from the other end, in order. Only called while `ready()`."""

    def deliver_eof(self) -> None:
        """The other end half-closed (write_eof): no more data will come."""

    def hang_up(self, exc: Exception | None) -> None:
        """The other end is gone: None for an orderly close (EOF, then connection_lost(None)),
        an exception (a reset) otherwise. Nothing is called on this end afterwards."""

    def wake(self) -> None:
        """This end's partner became ready again: resume pushing what is buffered."""


class RemoteDelivery(Protocol):
    """How a `NodeNetwork` reaches addresses off this node (the tunnel layer fills this in)."""

    async def open_stream(self, src: Address, dst: Address, local: StreamPeer,
                          flow: str) -> StreamPeer:
        """Connect `src` to `dst` on another node. `local` receives what the remote end sends;
        return the stand-in for the remote end that `local` writes into. Raise
        OSError(EHOSTUNREACH) without a route, ConnectionRefusedError if nobody listens.
        `flow` is the connection's flow id, to be carried to the far side."""

    def send_datagram(self, src: Address, dst: Address, data: bytes, flow: str) -> None:
        """Send one datagram toward `dst`; raise OSError(EHOSTUNREACH) without a route."""


class PolicyHook(Protocol):
    """NetworkPolicy enforcement (agents/policy.py `Enforcer`), asked once per connection and
    once per new UDP flow; True lets it pass. `egress`: judge the source pod's egress here;
    `ingress`: judge the destination pod's ingress here."""

    reject: bool        # refuse denied connects at once (ECONNREFUSED) instead of dropping

    def stream(self, src: Address, dst: Address, flow: str, *, egress: bool,
               ingress: bool) -> bool: ...

    def datagram(self, src: Address, dst: Address, flow: str, *, egress: bool,
                 ingress: bool) -> bool: ...


class FaultHook(Protocol):
    """Network faults (agents/faults.py `FaultEngine`). `active` is False while no fault is in
    force: then nothing else is asked and the data path is as without the hook."""

    active: bool

    def stream(self, src: Address, dst: Address, flow: str) -> FaultLinkHook | None: ...

    def datagram(self, src: Address, dst: Address, data: bytes, flow: str,
                 send: Callable[[Address, Address, bytes, str], None], *,
                 arriving: bool = False) -> bool: ...


class FaultLinkHook(Protocol):
    """The faults of one TCP stream: lanes that stand between its two ends."""

    def connect_delay_s(self) -> float | None: ...

    async def connect(self, unroutable: Callable[[], bool] | None = None) -> None: ...

    def inbound(self, target: StreamPeer) -> StreamPeer: ...

    def outbound(self, target: StreamPeer) -> StreamPeer: ...


class RemoteRoutes(Protocol):
    """Optional for a `RemoteDelivery`: whether it has a route toward `ip` right now."""

    def has_route(self, ip: str) -> bool: ...


class RemoteEcho(Protocol):
    """Optional for a `RemoteDelivery`: an ICMP echo to a pod on another node (ping)."""

    async def ping(self, src: str, dst: str, ident: int, seq: int, payload: bytes) -> None:
        """Return when `dst` has echoed; raise OSError(EHOSTUNREACH) without a route."""


# --------------------------------------------------------------------------------------------
# Streams


def _feed_buffered(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    """Copy `data` into a BufferedProtocol's buffers, as asyncio's transports do."""
    view = memoryview(data)
    while view:
        buf = memoryview(protocol.get_buffer(len(view))).cast("B")
        n = min(len(buf), len(view))
        if not n:
            raise RuntimeError("get_buffer() returned an empty buffer")
        buf[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


class VirtualStreamTransport(asyncio.Transport):
    """One end of a virtual TCP connection.

    Writes are queued and pushed to the peer from a `call_soon` callback, never synchronously
    from `write()`: protocols are not re-entered, and a burst of writes is delivered as one chunk.
    While the peer is not ready the bytes stay here, counted by `get_write_buffer_size()`, so the
    usual pause_writing/resume_writing flow control applies.
    """

    __slots__ = (
        "_closing",
        "_connected",
        "_eof_received",
        "_eof_sent",
        "_eof_wanted",
        "_flow",
        "_flush_scheduled",
        "_high",
        "_loop",
        "_lost",
        "_low",
        "_on_data",
        "_on_eof",
        "_origin",
        "_out",
        "_out_size",
        "_own_port",
        "_peer",
        "_peername",
        "_pod",
        "_protocol",
        "_reading_paused",
        "_received",
        "_sent",
        "_server",
        "_sockname",
        "_started",
        "_writing_paused",
    )

    def __init__(self, pod: PodNet, sockname: Address, peername: Address, *,
                 server: VirtualServer | None = None, own_port: int | None = None,
                 flow: str = "", origin: bool = False) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._pod = pod
        self._sockname = sockname
        self._peername = peername
        self._server = server
        self._own_port = own_port           # an ephemeral/bound port this end releases when lost
        self._protocol: asyncio.BaseProtocol | None = None
        self._on_data: Callable[[bytes], None] = _discard
        self._on_eof: Callable[[], bool | None] = _no_keep_open
        self._peer: StreamPeer | None = None
        self._out: list[bytes] = []
        self._out_size = 0
        self._high, self._low = HIGH_WATER, HIGH_WATER // 4
        self._writing_paused = False
        self._reading_paused = False
        self._flush_scheduled = False
        self._connected = False             # protocol.connection_made() has run
        self._eof_wanted = False            # write_eof() was called
        self._eof_sent = False
        self._eof_received = False
        self._closing = False               # close()/abort() called, or the peer hung up
        self._lost = False                  # connection_lost() is scheduled; the end is dead
        self._flow = flow
        self._origin = origin               # this end opened the flow: it logs flow.closed
        self._sent = self._received = 0     # byte counts for flow.closed (counted, not logged)
        self._started = time.monotonic()
        pod._ends.add(self)

    def __repr__(self) -> str:
        state = "lost" if self._lost else "closing" if self._closing else "open"
        return (f"<VirtualStreamTransport {self._sockname[0]}:{self._sockname[1]} -> "
                f"{self._peername[0]}:{self._peername[1]} {state}>")

    # -- asyncio.BaseTransport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        if name == "sockname":
            return self._sockname
        if name == "flow":
            return self._flow or default
        return default      # "socket", "sslcontext", ...: there is no OS socket and no TLS

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._schedule_flush()      # buffered bytes go first; the flush then hangs up

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        # Bound methods picked once: the per-chunk path then costs one call.
        if isinstance(protocol, asyncio.BufferedProtocol):
            buffered = protocol
            self._on_data = lambda data: _feed_buffered(buffered, data)
            self._on_eof = buffered.eof_received
        else:
            plain = cast(asyncio.Protocol, protocol)
            self._on_data = plain.data_received
            self._on_eof = plain.eof_received

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    # -- asyncio.ReadTransport

    def is_reading(self) -> bool:
        return not self._reading_paused and not self._closing

    def pause_reading(self) -> None:
        if not self._closing:
            self._reading_paused = True

    def resume_reading(self) -> None:
        if self._reading_paused and not self._closing:
            self._reading_paused = False
            if self._peer is not None:
                self._peer.wake()

    # -- asyncio.WriteTransport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if type(data) is not bytes:
            if not isinstance(data, bytes | bytearray | memoryview):
                raise TypeError(f"data argument must be a bytes-like object, "
                                f"not {type(data).__name__!r}")
            data = bytes(data)      # the caller may reuse its buffer
        if self._eof_wanted:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data or self._closing:
            return                  # asyncio drops writes on a closing transport too
        self._out.append(data)
        self._out_size += len(data)
        self._sent += len(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        if self._out_size > self._high and not self._writing_paused:
            self._writing_paused = True
            self._call_protocol("pause_writing")

    def write_eof(self) -> None:
        if self._closing or self._eof_wanted:
            return
        self._eof_wanted = True
        self._schedule_flush()

    def can_write_eof(self) -> bool:
        return True

    def abort(self) -> None:
        self._abort(None)

    def get_write_buffer_size(self) -> int:
        return self._out_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        if self._out_size > high and not self._writing_paused:
            self._writing_paused = True
            self._call_protocol("pause_writing")
        self._maybe_resume_writing()

    # -- StreamPeer: what the other end calls

    def ready(self) -> bool:
        return self._connected and not self._reading_paused

    def deliver(self, data: bytes) -> None:
        if self._closing:
            return          # a closed socket discards what still arrives
        self._received += len(data)
        try:
            self._on_data(data)
        except Exception as exc:
            self._fatal(exc, "data_received")

    def deliver_eof(self) -> None:
        if self._eof_received or self._closing:
            return
        self._eof_received = True
        try:
            keep_open = self._on_eof()
        except Exception as exc:
            self._fatal(exc, "eof_received")
            return
        if not keep_open:
            self.close()    # asyncio's rule: a falsy eof_received() closes the transport

    def hang_up(self, exc: Exception | None) -> None:
        self._peer = None
        if exc is None and self._connected and not self._closing and not self._eof_received:
            self._eof_received = True
            try:
                self._on_eof()
            except Exception as error:
                self._fatal(error, "eof_received")
                return
        self._lose(exc)

    def wake(self) -> None:
        if self._peer is not None:
            self._schedule_flush()

    def _splice(self, link: FaultLinkHook) -> bool:
        """Put a fault's lanes into this open connection (a fault that came after it was
        opened): between us and our partner both ways. False when not possible or done."""
        peer = self._peer
        if peer is None or self._lost:
            return False
        if isinstance(peer, VirtualStreamTransport):
            if peer._peer is not self:
                return False
            peer._peer = link.inbound(self)
        elif getattr(peer, "local", None) is self:      # a tunnel's end (podnet/tunnelnet.py)
            cast(Any, peer).local = link.inbound(self)
        else:
            return False        # a lane already, or something we do not know how to enter
        self._peer = link.outbound(peer)
        return True

    # -- internals

    def _start(self, protocol: asyncio.BaseProtocol, *, now: bool) -> None:
        """Attach the protocol and run connection_made (now, or from the loop for accepts)."""
        self.set_protocol(protocol)
        if now:
            self._made()
        else:
            self._loop.call_soon(self._made)

    def _made(self) -> None:
        assert self._protocol is not None
        self._protocol.connection_made(self)
        self._connected = True
        if self._peer is not None:
            self._peer.wake()       # it may have held data back until we were connected

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        peer = self._peer
        if peer is None or not peer.ready():
            return      # wake() brings us back; EOF and FIN wait behind the data like in TCP
        if self._out:
            out = self._out
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self._out_size = 0
            peer.deliver(data)
            if self._peer is None:
                return          # the peer hung up, or we were reset, while handling the data
            if not peer.ready():
                self._maybe_resume_writing()
                return          # it paused reading: EOF/FIN wait for its wake()
        if self._eof_wanted and not self._eof_sent:
            self._eof_sent = True
            peer.deliver_eof()
            if self._peer is None:
                return
        if self._closing and not self._lost:
            self._peer = None
            self._lose(None)
            peer.hang_up(None)
            return
        self._maybe_resume_writing()

    def _maybe_resume_writing(self) -> None:
        if self._writing_paused and self._out_size <= self._low:
            self._writing_paused = False
            self._call_protocol("resume_writing")

    def _call_protocol(self, method: str) -> None:
        try:
            getattr(self._protocol, method)()
        except Exception as exc:
            self._loop.call_exception_handler({
                "message": f"protocol.{method}() failed", "exception": exc,
                "transport": self, "protocol": self._protocol})

    def _fatal(self, exc: Exception, where: str) -> None:
        self._loop.call_exception_handler({
            "message": f"Fatal error: protocol.{where}() call failed.", "exception": exc,
            "transport": self, "protocol": self._protocol})
        self._abort(exc)

    def _abort(self, exc: Exception | None) -> None:
        """Drop everything; the peer sees a reset, our protocol connection_lost(exc)."""
        if self._lost:
            return
        peer, self._peer = self._peer, None
        self._lose(exc)
        if peer is not None:
            peer.hang_up(reset())

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = self._closing = True
        self._peer = None
        self._out.clear()
        self._out_size = 0
        self._pod._forget_end(self)
        if self._server is not None:
            self._server._forget(self)
        if self._origin:
            pod = self._pod
            _log.info("flow.closed", flow=self._flow, pod=pod.pod, namespace=pod.namespace,
                      src=_fmt(self._sockname), dst=_fmt(self._peername), proto="tcp",
                      verdict="reset" if exc is not None else "closed",
                      bytes_sent=self._sent, bytes_received=self._received,
                      duration_s=round(time.monotonic() - self._started, 6))
        if self._protocol is not None:
            # Scheduled, so it runs after a pending connection_made and outside the caller.
            self._loop.call_soon(self._protocol.connection_lost, exc)


def _discard(data: bytes) -> None:
    pass


def _no_keep_open() -> None:
    return None


# --------------------------------------------------------------------------------------------
# Servers


class VirtualSocket:
    """Stands in for an entry of `asyncio.Server.sockets` (there is no OS socket), enough for
    the common `server.sockets[0].getsockname()` idiom."""

    family = socket.AF_INET

    def __init__(self, sockname: Address, kind: socket.SocketKind) -> None:
        self._sockname = sockname
        self.type = kind
        if ":" in sockname[0]:
            self.family = socket.AF_INET6

    def __repr__(self) -> str:
        return f"<VirtualSocket {self._sockname[0]}:{self._sockname[1]}>"

    def getsockname(self) -> Address:
        return self._sockname

    def fileno(self) -> int:
        return -1


class VirtualServer(asyncio.AbstractServer):
    """A listening stream server in a pod, with `asyncio.Server`'s behaviour (3.12+:
    `wait_closed()` also waits for the connections it accepted)."""

    def __init__(self, pod: PodNet, factory: Callable[[], asyncio.BaseProtocol],
                 bindings: list[Address], *, serving: bool) -> None:
        self._loop = asyncio.get_running_loop()
        self._pod = pod
        self._factory = factory
        self._bindings = bindings
        self._serving = serving
        self._closed = False
        self._ends: set[VirtualStreamTransport] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._forever: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        where = ", ".join(f"{h}:{p}" for h, p in self._bindings)
        return f"<VirtualServer {self._pod.ip} [{where}]{' closed' if self._closed else ''}>"

    @property
    def sockets(self) -> tuple[VirtualSocket, ...]:
        if self._closed:
            return ()
        return tuple(VirtualSocket(b, socket.SOCK_STREAM) for b in self._bindings)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname" and self._bindings:
            return self._bindings[0]
        if name == "socknames":
            return list(self._bindings)
        return default

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving and not self._closed

    async def start_serving(self) -> None:
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        self._serving = True

    async def serve_forever(self) -> None:
        if self._forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        self._serving = True
        self._forever = self._loop.create_future()
        try:
            await self._forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._forever = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._serving = False
        self._pod._unbind_server(self)
        if self._forever is not None and not self._forever.done():
            self._forever.cancel()
        self._wake_waiters()

    def close_clients(self) -> None:
        for end in list(self._ends):
            end.close()

    def abort_clients(self) -> None:
        for end in list(self._ends):
            end.abort()

    async def wait_closed(self) -> None:
        if self._closed and not self._ends:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    def _accept(self, src: Address, dst: Address, peer: StreamPeer,
                flow: str = "") -> VirtualStreamTransport:
        end = VirtualStreamTransport(self._pod, dst, src, server=self, flow=flow)
        end._peer = peer
        self._ends.add(end)
        try:
            protocol = self._factory()
        except Exception as exc:
            # asyncio logs a failing factory and drops the connection; the client sees a reset.
            self._loop.call_exception_handler({
                "message": "protocol factory failed", "exception": exc, "server": self})
            end._peer = None
            end._lose(exc)
            raise reset() from exc
        end._start(protocol, now=False)
        return end

    def _forget(self, end: VirtualStreamTransport) -> None:
        self._ends.discard(end)
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        if self._closed and not self._ends:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters.clear()


# --------------------------------------------------------------------------------------------
# Datagrams


class VirtualDatagramTransport(asyncio.DatagramTransport):
    """A UDP socket in a pod: bound to a port, optionally connected to one remote address."""

    def __init__(self, pod: PodNet, sockname: Address, remote: Address | None,
                 protocol: asyncio.DatagramProtocol) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._pod = pod
        self._sockname = sockname
        self._remote = remote
        self._protocol = protocol
        self._queue: deque[tuple[bytes, Address]] = deque()
        self._queued = 0
        self._drain_scheduled = False
        self._closing = False
        self.dropped = 0        # datagrams dropped because the receive queue was full
        # destination -> [flow id, datagrams sent, bytes sent]: a flow per peer, logged at its
        # first datagram and when the socket closes, counted (not logged) in between.
        self._flows: dict[Address, list[Any]] = {}
        self._started = time.monotonic()

    def __repr__(self) -> str:
        return f"<VirtualDatagramTransport {self._sockname[0]}:{self._sockname[1]}>"

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._sockname
        if name == "peername":
            return self._remote if self._remote is not None else default
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._queue.clear()
        self._queued = 0
        self._log_flows()
        self._pod._unbind_udp(self)
        self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = cast(asyncio.DatagramProtocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def get_write_buffer_size(self) -> int:
        return 0                # a send is handed over at once, like a datagram socket

    def sendto(self, data: bytes | bytearray | memoryview,  # type: ignore[override]
               addr: Address | None = None) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if self._remote is not None:
            if addr not in (None, self._remote):
                raise ValueError(f"Invalid address: must be None or {self._remote}")
            addr = self._remote
        if self._closing:
            return
        if addr is None:
            self._error(OSError(errno.EDESTADDRREQ, "Destination address required"))
            return
        dst_ip = _literal(addr[0]) or (self._pod.ip if addr[0] == self._pod.hostname else None)
        if dst_ip is None:
            self._error(_no_name())     # a name needs an (async) lookup first
            return
        src_ip = self._sockname[0]
        if ":" in dst_ip or ":" in src_ip:
            src_ip, dst_ip = self._sendto6(src_ip, dst_ip)
            if not src_ip:
                return
        dst = (LOOPBACK if dst_ip == ANY else dst_ip, int(addr[1]))
        if src_ip == ANY:
            src_ip = LOOPBACK if _is_loopback(dst[0]) else self._pod.ip4 or ""
            if not src_ip:
                self._error(_no_network())
                return
        elif src_ip == LOOPBACK and not _is_loopback(dst[0]) and dst[0] != self._pod.ip4:
            self._error(OSError(errno.EINVAL, "Invalid argument"))
            return
        src = (src_ip, self._sockname[1])
        entry = self._flows.get(dst)
        if entry is None:
            entry = self._new_flow(src, dst)
        entry[1] += 1
        entry[2] += len(data)
        try:
            self._pod._send_datagram(src, dst, bytes(data), entry[0])
        except ConnectionRefusedError as exc:
            # Like ICMP port-unreachable: only a connected socket hears about it.
            if self._remote is not None:
                self._error(exc)
        except OSError as exc:
            self._error(exc)

    def _sendto6(self, src_ip: str, dst_ip: str) -> tuple[str, str]:
        """Source and destination of a send that involves IPv6 ("" source: an error was
        reported). A socket is of one family: `::`-bound ones send to IPv6 only, `0.0.0.0`
        ones to IPv4 only (asyncio's sockets are AF_INET6 with IPV6_V6ONLY, or AF_INET)."""
        if ":" not in src_ip or ":" not in dst_ip:
            self._error(OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol"))
            return "", dst_ip
        if dst_ip == ANY6:
            dst_ip = LOOPBACK6
        if src_ip == ANY6:
            src_ip = LOOPBACK6 if dst_ip == LOOPBACK6 else self._pod.ip6 or ""
            if not src_ip:
                self._error(_no_network())
        elif src_ip == LOOPBACK6 and dst_ip not in (LOOPBACK6, self._pod.ip6):
            self._error(OSError(errno.EINVAL, "Invalid argument"))
            return "", dst_ip
        return src_ip, dst_ip

    def _new_flow(self, src: Address, dst: Address) -> list[Any]:
        if len(self._flows) >= MAX_DGRAM_FLOWS:
            self._log_flows()       # a socket spraying many peers: keep memory bounded
            self._flows.clear()
        flow = current_flow.get() or self._pod.new_flow()
        pod = self._pod
        _log.info("flow.route", **pod._where(flow, src, dst, "udp"),
                  route=pod._node.route_kind(pod, dst[0]), verdict="sent")
        entry: list[Any] = [flow, 0, 0]
        self._flows[dst] = entry
        return entry

    def _log_flows(self) -> None:
        duration = round(time.monotonic() - self._started, 6)
        for dst, (flow, datagrams, size) in self._flows.items():
            _log.info("flow.closed", **self._pod._where(flow, self._sockname, dst, "udp"),
                      verdict="closed", datagrams_sent=datagrams, bytes_sent=size,
                      duration_s=duration)

    def _error(self, exc: OSError) -> None:
        self._loop.call_soon(self._report, exc)

    def _report(self, exc: OSError) -> None:
        if not self._closing:
            self._protocol.error_received(exc)

    def _receive(self, data: bytes, src: Address) -> None:
        if self._closing or (self._remote is not None and src != self._remote):
            return          # a connected UDP socket only hears from its peer
        cost = len(data) + DGRAM_OVERHEAD
        if self._queued + cost > DGRAM_RCVBUF:
            self.dropped += 1
            return
        self._queue.append((data, src))
        self._queued += cost
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        # Only what is queued now: datagrams sent from inside the callbacks wait a turn.
        for _ in range(len(self._queue)):
            if self._closing:
                return
            data, src = self._queue.popleft()
            self._queued -= len(data) + DGRAM_OVERHEAD
            try:
                self._protocol.datagram_received(data, src)
            except Exception as exc:
                self._loop.call_exception_handler({
                    "message": "Fatal error: protocol.datagram_received() call failed.",
                    "exception": exc, "transport": self, "protocol": self._protocol})
                self.close()
                return


# --------------------------------------------------------------------------------------------
# The pod's stack


class Listener(NamedTuple):
    proto: str      # "tcp" | "udp"
    host: str
    port: int


class Connection(NamedTuple):
    proto: str
    local: Address
    remote: Address
    state: str      # "ESTAB" | "CLOSING"


class PodNet:
    """A pod's network stack: what a container gets as `ctx.net`."""

    def __init__(self, node: NodeNetwork, ip: str, *, pod: str, namespace: str,
                 hostname: str, ips: Sequence[str] = ()) -> None:
        self.ip = ip            # the primary family's address (status.podIP)
        self.ips: tuple[str, ...] = tuple(ips) or (ip,)     # every address, primary first
        self.ip4: str | None = next((a for a in self.ips if ":" not in a), None)
        self.ip6: str | None = next((a for a in self.ips if ":" in a), None)
        self.pod = pod
        self.namespace = namespace
        self.hostname = hostname
        self.node = node.node_name
        self.resolver: Resolver | None = None
        self._node = node
        self._attached = True
        self._servers: dict[Address, VirtualServer] = {}
        self._udp: dict[Address, VirtualDatagramTransport] = {}
        self._ends: set[VirtualStreamTransport] = set()
        self._tcp_ports: Counter[int] = Counter()
        self._udp_ports: Counter[int] = Counter()
        # Start where the pod's address points in the range, so pods do not all pick alike.
        self._next_port = EPHEMERAL_FIRST + int(ipaddress.ip_address(ip)) % (
            EPHEMERAL_LAST - EPHEMERAL_FIRST + 1)

    def __repr__(self) -> str:
        return f"<PodNet {self.namespace}/{self.pod} {self.ip}>"

    def prefixlen(self, ip: str) -> int:
        """The prefix length of the node's podCIDR that holds `ip` (`ip addr`'s /24, /64)."""
        cidr = self._node.pod_cidr6 if ":" in ip else self._node.pod_cidr
        return cidr.prefixlen if cidr is not None else (64 if ":" in ip else 24)

    # -- views for tools (ss, netstat)

    def listeners(self) -> list[Listener]:
        tcp = [Listener("tcp", host, port) for host, port in self._servers]
        udp = [Listener("udp", host, port) for host, port in self._udp]
        return sorted(tcp + udp, key=lambda item: (item.proto, item.port, item.host))

    def connections(self) -> list[Connection]:
        return sorted(Connection("tcp", e._sockname, e._peername,
                                 "CLOSING" if e._closing else "ESTAB") for e in self._ends)

    # -- names

    async def getaddrinfo(self, host: str | None, port: int | str | None, *, family: int = 0,
                          type: int = 0, proto: int = 0, flags: int = 0) -> list[AddrInfo]:
        """`loop.getaddrinfo` for this pod; names beyond localhost and the pod's hostname go
        to `self.resolver`. IPv6 results carry (host, port) sockaddrs, as IPv4 ones do."""
        if family not in (socket.AF_UNSPEC, socket.AF_INET, socket.AF_INET6):
            raise socket.gaierror(socket.EAI_FAMILY, "ai_family not supported")
        kinds = [(socket.SOCK_STREAM, socket.IPPROTO_TCP), (socket.SOCK_DGRAM, socket.IPPROTO_UDP),
                 (socket.SOCK_RAW, 0)]
        kinds = [(k, p) for k, p in kinds if type in (0, k) and proto in (0, p)]
        if not kinds:
            raise socket.gaierror(socket.EAI_SOCKTYPE, "ai_socktype not supported")
        port_number = _service_port(port, kinds[0][0])
        ips = await self._lookup(host, flags, family)
        infos: list[AddrInfo] = [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, kind, p, "", (ip, port_number))
            for ip in ips for kind, p in kinds]
        if flags & socket.AI_CANONNAME and host:
            family_, kind, p, _, sockaddr = infos[0]
            infos[0] = (family_, kind, p, host, sockaddr)
        return infos

    async def _lookup(self, host: str | None, flags: int, family: int = 0) -> list[str]:
        v6 = family == socket.AF_INET6
        if host is None or host == "":
            if v6:
                return [ANY6 if flags & socket.AI_PASSIVE else LOOPBACK6]
            return [ANY if flags & socket.AI_PASSIVE else LOOPBACK]
        ip = _literal(host)
        if ip is not None:
            if v6 and ip == LOOPBACK and ":" not in host and not host[:1].isdigit():
                return [LOOPBACK6]      # localhost: /etc/hosts has ::1 for it too
            if family and (":" in ip) != v6:
                raise socket.gaierror(socket.EAI_ADDRFAMILY,
                                      "Address family for hostname not supported")
            return [ip]
        if ":" in host:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if flags & socket.AI_NUMERICHOST:
            raise _no_name()
        if host.rstrip(".").lower() == self.hostname.lower():
            ips = list(self.ips)
        elif self.resolver is None:
            raise _no_name()
        else:
            ips = [str(ipaddress.ip_address(a)) for a in await self.resolver(host)]
        if family:
            ips = [a for a in ips if (":" in a) == v6]
        if not ips:
            raise _no_name()
        return ips

    async def _resolve(self, host: str | None, port: int, kind: socket.SocketKind) -> list[str]:
        if host is not None:
            ip = _literal(host)
            if ip is not None:
                return [ip]         # the common case skips the getaddrinfo machinery
        return [info[4][0] for info in await self.getaddrinfo(host, port, type=kind)]

    async def _bind_address(self, host: str | None) -> str:
        if host is None or host in ("", ANY):
            return ANY
        if host in (ANY6, "[::]"):
            return ANY6
        ip = (await self._resolve(host, 0, socket.SOCK_STREAM))[0]
        if _is_loopback(ip):
            return LOOPBACK6 if ip == LOOPBACK6 else LOOPBACK
        if ip not in (ANY, ANY6) and ip not in self.ips:
            raise _not_available()
        return ip

    # -- streams

    async def open_connection(self, host: str | None, port: int, *, limit: int = STREAM_LIMIT,
                              local_addr: LocalAddr | None = None,
                              ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await self.create_connection(lambda: protocol, host, port,
                                                    local_addr=local_addr)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def start_server(self, client_connected_cb: ClientConnectedCallback,
                           host: str | Sequence[str] | None = None, port: int | None = None, *,
                           limit: int = STREAM_LIMIT, backlog: int = 100,
                           start_serving: bool = True, reuse_address: bool | None = None,
                           reuse_port: bool | None = None) -> VirtualServer:
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.StreamReaderProtocol:
            reader = asyncio.StreamReader(limit=limit, loop=loop)
            return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

        return await self.create_server(factory, host, port, backlog=backlog,
                                        start_serving=start_serving)

    async def create_connection(self, protocol_factory: Callable[[], _P], host: str | None,
                                port: int, *, local_addr: LocalAddr | None = None,
                                ) -> tuple[asyncio.Transport, _P]:
        self._check_attached()
        errors: list[OSError] = []
        for ip in await self._resolve(host, port, socket.SOCK_STREAM):
            try:
                return await self._connect(protocol_factory, ip, int(port), local_addr)
            except OSError as exc:
                errors.append(exc)
        raise errors[0]

    async def _connect(self, protocol_factory: Callable[[], _P], ip: str, port: int,
                       local_addr: LocalAddr | None) -> tuple[asyncio.Transport, _P]:
        if ":" in ip:
            here = ip in (LOOPBACK6, ANY6) or ip == self.ip6
            dst = (LOOPBACK6 if ip == ANY6 else ip, port)
            src_ip = LOOPBACK6 if dst[0] == LOOPBACK6 else self.ip6 or ""
        else:
            here = _is_loopback(ip) or ip in (ANY, self.ip4)    # Linux connects 0.0.0.0 locally
            dst = (LOOPBACK if ip == ANY else ip, port)
            src_ip = LOOPBACK if _is_loopback(dst[0]) else self.ip4 or ""
        if not src_ip:
            raise _no_network()     # no address (so no route) of that family in this pod
        src_port = 0
        if local_addr is not None:
            bound = await self._bind_address(local_addr[0])
            if bound not in (ANY, ANY6) and (":" in bound) != (":" in ip):
                raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
            src_ip = src_ip if bound in (ANY, ANY6) else bound
            src_port = int(local_addr[1])
            if src_port and self._tcp_ports[src_port]:
                raise _in_use()
        if (src_ip == LOOPBACK or src_ip == LOOPBACK6) and not here:
            raise OSError(errno.EINVAL, "Invalid argument")     # loopback never leaves the pod
        if not src_port:
            src_port = self._ephemeral(self._tcp_ports)
        self._tcp_ports[src_port] += 1
        flow = current_flow.get() or self._node.new_flow()
        end = VirtualStreamTransport(self, (src_ip, src_port), dst, own_port=src_port,
                                     flow=flow, origin=True)
        try:
            try:
                if here:
                    _log.info("flow.route", **self._where(flow, end._sockname, dst, "tcp"),
                              route="pod-local", verdict="local")
                    peer: StreamPeer = self._accept(end._sockname, dst, end, flow)
                else:
                    peer = await self._node._open_stream(end._sockname, dst, end, flow,
                                                         self)
            except OSError as exc:
                self._log_failure(exc, flow, end._sockname, dst, "tcp")
                end._origin = False     # refused or unreachable: no flow.closed to follow
                raise
            if end._lost:
                raise reset()       # the remote end went away while we were connecting
            end._peer = peer
            protocol = protocol_factory()
        except BaseException:
            end._abort(None)
            raise
        end._start(protocol, now=True)
        return end, protocol

    def _accept(self, src: Address, dst: Address, peer: StreamPeer,
                flow: str = "") -> VirtualStreamTransport:
        server = self._servers.get(dst) or self._servers.get((_wildcard(dst[0]), dst[1]))
        if server is None or not server.is_serving():
            raise refused()
        end = server._accept(src, dst, peer, flow)
        # Logged where the connection lands, so a cross-node trace shows the receiving pod.
        _log.info("flow.delivered", **self._where(flow, src, dst, "tcp"), verdict="accepted")
        return end

    def _where(self, flow: str, src: Address, dst: Address, proto: str) -> dict[str, str]:
        """The fields every traffic event of this pod carries."""
        return {"flow": flow, "pod": self.pod, "namespace": self.namespace, "src": _fmt(src),
                "dst": _fmt(dst), "proto": proto}

    def _log_failure(self, exc: OSError, flow: str, src: Address, dst: Address,
                     proto: str) -> None:
        """The verdict of a connect or send that failed, logged once at the source."""
        code = exc.errno
        event = ("flow.refused" if code == errno.ECONNREFUSED else
                 "flow.unreachable" if code in (errno.EHOSTUNREACH, errno.ENETUNREACH) else
                 "flow.failed")
        verdict = errno.errorcode.get(code, "error") if code is not None else "error"
        _log.info(event, **self._where(flow, src, dst, proto), verdict=verdict,
                  reason=exc.strerror or str(exc))

    def new_flow(self) -> str:
        """A flow id for an exchange this pod starts (see `current_flow`)."""
        return self._node.new_flow()

    async def create_server(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                            host: str | Sequence[str] | None = None, port: int | None = None, *,
                            backlog: int = 100, start_serving: bool = True,
                            reuse_address: bool | None = None, reuse_port: bool | None = None,
                            ssl: None = None) -> VirtualServer:
        """Listen on `host:port` (`backlog` is accepted for compatibility: accepts are
        immediate). Port 0/None picks an ephemeral port."""
        self._check_attached()
        if ssl is not None:
            raise NotImplementedError("TLS is not emulated")
        hosts: Iterable[str | None] = [host] if host is None or isinstance(host, str) else host
        addrs = list(dict.fromkeys([await self._bind_address(h) for h in hosts]))
        if self.ip6 is not None and host in (None, ""):
            addrs.append(ANY6)  # asyncio binds every family's wildcard for host=None
        for wildcard in (ANY, ANY6):
            if wildcard in addrs and any(a != wildcard and _wildcard(a) == wildcard
                                         for a in addrs):
                raise _in_use()     # the wildcard already covers its family's addresses
        number = int(port or 0)
        if not number:
            number = self._ephemeral(self._tcp_ports)
        for addr in addrs:
            _check_free(self._servers, addr, number)
        server = VirtualServer(self, protocol_factory, [(a, number) for a in addrs],
                               serving=start_serving)
        for binding in server._bindings:
            self._servers[binding] = server
            self._tcp_ports[number] += 1
        return server

    def _unbind_server(self, server: VirtualServer) -> None:
        for binding in server._bindings:
            if self._servers.get(binding) is server:
                del self._servers[binding]
                self._tcp_ports[binding[1]] -= 1

    def _forget_end(self, end: VirtualStreamTransport) -> None:
        self._ends.discard(end)
        if end._own_port is not None:
            self._tcp_ports[end._own_port] -= 1
            end._own_port = None

    # -- ICMP echo

    async def ping(self, dst: str, *, seq: int, payload_bytes: int = 56, timeout_s: float,
                   ident: int | None = None) -> float:
        """One echo request to the IP `dst`; the round-trip time in seconds.

        This node's pods (and the pod itself) answer at once; others through the tunnel layer.
        Raises OSError(EHOSTUNREACH) without a route, ENETUNREACH without an address of the
        target's family, TimeoutError when no reply came in time.
        """
        self._check_attached()
        target = _literal(dst)
        if target is None:
            raise _no_name()
        source = self.ip6 if ":" in target else self.ip4
        if source is None:
            raise _no_network()
        if ident is None:
            ident = random.getrandbits(16)
        start = time.perf_counter()
        async with asyncio.timeout(timeout_s):
            if _is_loopback(target) or target in (ANY, ANY6) or \
                    self._node.pod(target) is not None:
                await asyncio.sleep(0)      # answered inside this agent (0.0.0.0 is local)
            else:
                echo = cast(RemoteEcho | None, getattr(self._node.remote, "ping", None) and
                            self._node.remote)
                if echo is None or self._node.is_local(target):
                    raise unreachable()
                await echo.ping(source, target, ident, seq, bytes(payload_bytes))
        return time.perf_counter() - start

    def echo_ttl(self, dst: str) -> int:
        """The TTL an echo reply from `dst` arrives with: 64 from this node, 63 across one hop
        (the other node's agent routes it, like a node's kernel between the pod and the wire)."""
        target = _literal(dst) or dst
        return 64 if _is_loopback(target) or self._node.pod(target) is not None else 63

    # -- datagrams

    async def create_datagram_endpoint(
            self, protocol_factory: Callable[[], _P],
            local_addr: LocalAddr | None = None, remote_addr: Address | None = None, *,
            family: int = 0, proto: int = 0, flags: int = 0, reuse_port: bool | None = None,
            allow_broadcast: bool | None = None,
    ) -> tuple[asyncio.DatagramTransport, _P]:
        self._check_attached()
        remote: Address | None = None
        if remote_addr is not None:
            rip = (await self._resolve(remote_addr[0], remote_addr[1], socket.SOCK_DGRAM))[0]
            remote = (LOOPBACK if rip == ANY else LOOPBACK6 if rip == ANY6 else rip,
                      int(remote_addr[1]))
        addr, number = ANY6 if family == socket.AF_INET6 else ANY, 0
        if local_addr is not None:
            addr, number = await self._bind_address(local_addr[0]), int(local_addr[1])
        if remote is not None and ":" in remote[0]:
            if addr not in (ANY, ANY6) and ":" not in addr:
                raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
            if addr in (ANY, ANY6):
                addr = LOOPBACK6 if remote[0] == LOOPBACK6 else self.ip6 or ""
                if not addr:
                    raise _no_network()
        elif addr == ANY and remote is not None:
            # A connected socket is bound to the source address its route picks.
            addr = LOOPBACK if _is_loopback(remote[0]) else self.ip4 or ""
            if not addr:
                raise _no_network()
        if not number:
            number = self._ephemeral(self._udp_ports)
        _check_free(self._udp, addr, number)
        protocol = protocol_factory()
        transport = VirtualDatagramTransport(self, (addr, number), remote,
                                             cast(asyncio.DatagramProtocol, protocol))
        self._udp[(addr, number)] = transport
        self._udp_ports[number] += 1
        protocol.connection_made(transport)
        return transport, protocol

    def _unbind_udp(self, transport: VirtualDatagramTransport) -> None:
        if self._udp.get(transport._sockname) is transport:
            del self._udp[transport._sockname]
            self._udp_ports[transport._sockname[1]] -= 1

    def _send_datagram(self, src: Address, dst: Address, data: bytes, flow: str = "") -> None:
        if _is_loopback(dst[0]) or dst[0] == self.ip or dst[0] == self.ip6:
            self._deliver_datagram(src, dst, data)
        else:
            self._node._send_datagram(src, dst, data, flow)

    def _deliver_datagram(self, src: Address, dst: Address, data: bytes) -> None:
        endpoint = self._udp.get(dst) or self._udp.get((ANY6 if ":" in dst[0] else ANY, dst[1]))
        if endpoint is None:
            raise refused()
        endpoint._receive(data, src)

    # -- lifecycle

    def _ephemeral(self, used: Counter[int]) -> int:
        span = EPHEMERAL_LAST - EPHEMERAL_FIRST + 1
        for _ in range(span):
            port = self._next_port
            self._next_port = port + 1 if port < EPHEMERAL_LAST else EPHEMERAL_FIRST
            if not used[port]:
                return port
        raise _not_available()

    def _check_attached(self) -> None:
        if not self._attached:
            raise OSError(errno.ENETDOWN, "Network is down")

    def _shutdown(self) -> None:
        """The pod is gone: stop listening, reset its connections, close its UDP sockets."""
        self._attached = False
        for server in list(self._servers.values()):
            server.close()
        for end in list(self._ends):
            end._abort(None)
        for endpoint in list(self._udp.values()):
            endpoint.close()


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _v6_network(cidrs: Iterable[str]) -> ipaddress.IPv6Network | None:
    return next((n for n in map(ipaddress.ip_network, cidrs)
                 if isinstance(n, ipaddress.IPv6Network)), None)


def _check_free(table: dict[Address, Any], addr: str, port: int) -> None:
    if addr == ANY or addr == ANY6:
        v6 = addr == ANY6       # the wildcards of the two families do not clash
        clash = any(bound_port == port and (":" in bound) == v6 for bound, bound_port in table)
    else:
        clash = (addr, port) in table or (_wildcard(addr), port) in table
    if clash:
        raise _in_use()


def _service_port(port: int | str | None, kind: socket.SocketKind) -> int:
    if port is None:
        return 0
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    try:
        return socket.getservbyname(port, "udp" if kind == socket.SOCK_DGRAM else "tcp")
    except OSError:
        raise socket.gaierror(socket.EAI_SERVICE, "Servname not supported for ai_socktype") \
            from None


# --------------------------------------------------------------------------------------------
# The node


class NodeNetwork:
    """All pod stacks of one agent process, and the routing between them.

    Destinations on this node are delivered in process. Anything else goes to `remote` (the
    tunnel layer) when one is set; without it, or inside this node's podCIDR with no pod at that
    address, the answer is EHOSTUNREACH at once.
    """

    def __init__(self, node_name: str, pod_cidr: str, cluster_cidr: str = "10.244.0.0/16", *,
                 pod_cidrs: Sequence[str] = (), cluster_cidrs: Sequence[str] = ()) -> None:
        self.node_name = node_name
        # The primary family's (either, on a single-stack IPv6 cluster); IPv6 ones apart, so
        # an IPv4 address is checked exactly as before.
        self.pod_cidr: IPNetwork = ipaddress.ip_network(pod_cidr)
        self.cluster_cidr: IPNetwork = ipaddress.ip_network(cluster_cidr)
        self.pod_cidr6 = _v6_network([pod_cidr, *pod_cidrs])
        self.cluster_cidr6 = _v6_network([cluster_cidr, *cluster_cidrs])
        # The node's IPv6 side of the pod network (`ip -6 route`'s default via).
        self.gateway6 = str(self.pod_cidr6.network_address + 1) if self.pod_cidr6 else None
        self.remote: RemoteDelivery | None = None
        # This node's own side of the pod network (a bridge's address: the first of the
        # podCIDR). Datagrams to it go to `host_datagrams` when set: the replies of the UDP
        # flows the node's NodePort listeners translated to it (agents/nodeports.py).
        self.gateway = str(self.pod_cidr.network_address + 1)
        self.host_datagrams: Callable[[Address, Address, bytes], None] | None = None
        # NetworkPolicy: None lets everything pass (no enforcement wired in).
        self.policy: PolicyHook | None = None
        # Network faults: None, or inactive, leaves traffic untouched.
        self.faults: FaultHook | None = None
        self._pods: dict[str, PodNet] = {}
        # Flow ids: unique across the cluster's processes without coordination, and cheap
        # (a counter); the prefix tells which process started the flow.
        self._flow_prefix = os.urandom(3).hex()
        self._flows = itertools.count(1)

    def splice_faults(self, faults: FaultHook) -> int:
        """Faults changed: the open connections this node's pods opened that now cross a
        fault get its lanes (new ones get them at connect). Returns how many."""
        spliced = 0
        for net in list(self._pods.values()):
            for end in list(net._ends):
                if not end._origin or end._lost:
                    continue
                link = faults.stream(end._sockname, end._peername, end._flow)
                if link is not None and end._splice(link):
                    spliced += 1
        return spliced

    def new_flow(self) -> str:
        return f"{self._flow_prefix}-{next(self._flows):x}"

    def route_kind(self, pod: PodNet, ip: str) -> str:
        """How a packet from `pod` to `ip` leaves, for the flow.route event."""
        if _is_loopback(ip) or ip in (ANY, ANY6) or ip in pod.ips:
            return "pod-local"
        if ip in self._pods:
            return "node-local"
        if ip == self.gateway and self.host_datagrams is not None:
            return "node-gateway"
        if self.remote is not None and not self.is_local(ip):
            return "tunnel"
        return "none"

    def __repr__(self) -> str:
        return f"<NodeNetwork {self.node_name} {self.pod_cidr} pods={len(self._pods)}>"

    def attach(self, pod_ip: str, *, pod: str, namespace: str, hostname: str,
               ips: Sequence[str] = ()) -> PodNet:
        """A pod's stack at `pod_ip` (its primary address) and, dual-stack, `ips` (every
        address, primary first, at most one per family)."""
        addrs = [ipaddress.ip_address(a) for a in (ips or [pod_ip])]
        if str(addrs[0]) != str(ipaddress.ip_address(pod_ip)):
            raise ValueError(f"{pod_ip} must be the first of the pod's addresses")
        if len({a.version for a in addrs}) != len(addrs):
            raise ValueError("a pod has at most one address per family")
        for ip in addrs:
            cidr = self.pod_cidr6 if ip.version == 6 and self.pod_cidr.version == 4 \
                else self.pod_cidr
            if cidr is None or ip not in cidr:
                raise ValueError(f"{ip} is outside this node's podCIDR {cidr}")
            if str(ip) in self._pods:
                raise ValueError(f"{ip} is already attached to {self._pods[str(ip)]!r}")
        net = PodNet(self, str(addrs[0]), pod=pod, namespace=namespace, hostname=hostname,
                     ips=[str(a) for a in addrs])
        for ip_ in net.ips:
            self._pods[ip_] = net
        return net

    def detach(self, pod_ip: str) -> None:
        net = self._pods.pop(pod_ip, None)
        if net is not None:
            for ip in net.ips:
                if self._pods.get(ip) is net:
                    del self._pods[ip]
            net._shutdown()

    def pod(self, ip: str) -> PodNet | None:
        return self._pods.get(ip)

    def pods(self) -> list[PodNet]:
        # A dual-stack pod is in the table under each of its addresses: listed once.
        return list(dict.fromkeys(self._pods.values()))

    def is_local(self, ip: str) -> bool:
        """True when `ip` belongs to this node's podCIDR (whether or not a pod has it)."""
        try:
            return ipaddress.IPv4Address(ip) in self.pod_cidr
        except ValueError:
            pass
        addr = ipaddress.IPv6Address(ip)
        return addr in self.pod_cidr or (self.pod_cidr6 is not None and addr in self.pod_cidr6)

    # -- inbound seam: a tunnel hands traffic for this node's pods to these

    def accept_stream(self, src: Address, dst: Address, peer: StreamPeer,
                      flow: str = "", *, judge_egress: bool = False) -> StreamPeer:
        """Connect `peer` (an end elsewhere) to the listener at `dst`; returns the new end here.
        Raises EHOSTUNREACH or ECONNREFUSED like a kernel would, and `PolicyDropped` when a
        NetworkPolicy drops it (ingress; also the source's egress with `judge_egress`, for
        streams whose source agent could not know the endpoint: the ClusterIP proxy's)."""
        net = self._pods.get(dst[0])
        if net is None:
            raise unreachable()
        policy = self.policy
        if policy is not None and not policy.stream(src, dst, flow, egress=judge_egress,
                                                    ingress=True):
            raise refused() if policy.reject else PolicyDropped()
        faults = self.faults
        if judge_egress and faults is not None and faults.active:
            # a stream the ClusterIP proxy brings in: only here are both pods known, so the
            # faults between them act here (the client's agent matched the Service's)
            link = faults.stream(src, dst, flow)
            if link is not None:
                if link.connect_delay_s() is None:
                    raise PolicyDropped()       # partitioned: the OPEN stays unanswered
                back = link.inbound(peer)
                return link.outbound(net._accept(src, dst, back, flow))
        return net._accept(src, dst, peer, flow)

    def deliver_datagram(self, src: Address, dst: Address, data: bytes, flow: str = "") -> None:
        """Hand a datagram to the UDP socket at `dst`; raises EHOSTUNREACH/ECONNREFUSED. One
        that a NetworkPolicy denies is dropped (refused with --policy-reject)."""
        net = self._pods.get(dst[0])
        if net is None:
            if dst[0] == self.gateway and self.host_datagrams is not None:
                self.host_datagrams(src, dst, data)
                return
            raise unreachable()
        policy = self.policy
        if policy is not None and not policy.datagram(src, dst, flow, egress=False,
                                                      ingress=True):
            if policy.reject:
                raise refused()
            return
        faults = self.faults
        if faults is not None and faults.active and faults.datagram(
                src, dst, data, flow, self._deliver_late, arriving=True):
            return
        net._deliver_datagram(src, dst, data)

    def _deliver_late(self, src: Address, dst: Address, data: bytes, flow: str) -> None:
        net = self._pods.get(dst[0])
        if net is None:
            raise unreachable()
        net._deliver_datagram(src, dst, data)

    # -- routing for this node's pods

    async def _open_stream(self, src: Address, dst: Address, peer: StreamPeer, flow: str,
                           source: PodNet) -> StreamPeer:
        net = self._pods.get(dst[0])
        policy = self.policy
        if policy is not None and not policy.stream(src, dst, flow, egress=True,
                                                    ingress=net is not None):
            if policy.reject:
                raise refused()
            await dropped()
        faults = self.faults
        if faults is not None and faults.active:
            if self._unroutable(dst[0]):
                raise unreachable()     # the sender's routing comes before any fault on the wire
            link = faults.stream(src, dst, flow)
            if link is not None:
                # the handshake's round trip; waits out a partition (or its route's end)
                await link.connect(lambda: self._unroutable(dst[0]))
                back = link.inbound(peer)
                return link.outbound(await self._route_stream(src, dst, back, flow, source))
        return await self._route_stream(src, dst, peer, flow, source)

    async def _route_stream(self, src: Address, dst: Address, peer: StreamPeer, flow: str,
                            source: PodNet) -> StreamPeer:
        net = self._pods.get(dst[0])
        if net is not None:
            _log.info("flow.route", **source._where(flow, src, dst, "tcp"), route="node-local",
                      to_pod=f"{net.namespace}/{net.pod}", verdict="local")
            return net._accept(src, dst, peer, flow)
        if self.remote is not None and not self.is_local(dst[0]):
            # The tunnel layer logs its own flow.route: it knows which node and route.
            return await self.remote.open_stream(src, dst, peer, flow)
        _log.info("flow.route", **source._where(flow, src, dst, "tcp"), route="none",
                  verdict="EHOSTUNREACH")
        raise unreachable()

    def _send_datagram(self, src: Address, dst: Address, data: bytes, flow: str = "") -> None:
        net = self._pods.get(dst[0])
        policy = self.policy
        if policy is not None and not policy.datagram(src, dst, flow, egress=True,
                                                      ingress=net is not None):
            if policy.reject:
                raise refused()     # like ICMP port-unreachable: a connected socket hears it
            return
        faults = self.faults
        if faults is not None and faults.active:
            if self._unroutable(dst[0]):
                raise unreachable()     # the sender's routing comes before any fault on the wire
            if faults.datagram(src, dst, data, flow, self._route_datagram):
                return
        self._route_datagram(src, dst, data, flow)

    def _unroutable(self, ip: str) -> bool:
        """No way out toward `ip`: as a kernel says EHOSTUNREACH before a packet reaches the
        wire, a destination with no route (a node's withdrawn by gossip, say, under a node
        partition) fails at once rather than being dropped by a fault further on."""
        if ip in self._pods or (ip == self.gateway and self.host_datagrams is not None):
            return False
        if self.remote is None or self.is_local(ip):
            return True
        routes = cast(RemoteRoutes | None, getattr(self.remote, "has_route", None)
                      and self.remote)
        return routes is not None and not routes.has_route(ip)

    def _route_datagram(self, src: Address, dst: Address, data: bytes, flow: str) -> None:
        net = self._pods.get(dst[0])
        if net is not None:
            net._deliver_datagram(src, dst, data)
        elif dst[0] == self.gateway and self.host_datagrams is not None:
            self.host_datagrams(src, dst, data)
        elif self.remote is not None and not self.is_local(dst[0]):
            self.remote.send_datagram(src, dst, data, flow)
        else:
            raise unreachable()
