"""The cluster DNS server: the store followed in process, answers over UDP and TCP.

One `DnsServer` per control plane. It keeps a `ClusterDnsIndex` current from the store's own
change feed (first a full `scan`, then every Service/EndpointSlice/Pod/Namespace write as it
commits), so a changed Service is in DNS as soon as its write is durable. Two doors lead to the
same engine:

- a real port on the host (`dig @127.0.0.1 -p PORT`): an asyncio datagram endpoint and a stream
  server (RFC 1035 2-byte length framing, several queries per connection);
- the emulated network: the ClusterIP proxy hands datagrams and streams addressed to
  10.96.0.10:53 to `DnsServer.query(data, transport)` (one DNS message in, one out).

Speed: parsing and rendering with dnspython costs ~150 us a query, too slow for a busy cluster,
so encoded replies are cached per exact query bytes (minus the 2-byte ID, which is patched
into the cached reply). The query bytes include the name's case, flags and EDNS options, so
a cached reply is exactly what the engine would build again. The cache is dropped whenever
the index changes, so it never serves stale data.

With `--dns-upstream`, names outside the cluster are relayed to it, and an ExternalName
Service's CNAME to a name outside the zone is followed through it: the upstream's records for
the target are appended after the CNAME (CoreDNS's behaviour), then the reply is fitted to
the client's UDP size (TC, so the client asks again over TCP, where it gets everything). The
upstream is asked over UDP first and over TCP when it truncates. What it answers, for a
relayed name or a chased target, is kept as CoreDNS's `cache 30` keeps it (cache.py: its own
TTL, at most 30 s, served with its age taken off); a cached answer is given to a client as a
reply to its own query (its ID, question spelling, RD and EDNS).

Garbage never stops the server: a message dnspython cannot parse gets FORMERR when its header
is readable and is dropped otherwise; either way one rate-limited log line says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import struct
import time
from collections.abc import Mapping
from typing import Any, cast

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import structlog

from controlplane.dns.cache import UpstreamCache
from controlplane.dns.records import (
    DEFAULT_DNS_IP,
    ClusterDnsIndex,
    append_chased,
    fit_udp,
    udp_limit,
)
from podnet.resources import BY_KIND

log = structlog.get_logger()

MAX_UDP_PAYLOAD = 4096        # our EDNS payload size and the cap on the client's
MAX_CACHE_ENTRIES = 50_000    # distinct query spellings; the cache is dropped when full
TCP_IDLE_S = 10.0             # RFC 7766 suggests closing idle client connections after ~10 s
UPSTREAM_TIMEOUT_S = 2.0
UPSTREAM_ATTEMPTS = 2
HEADER = struct.Struct("!HH")  # the ID and flags words at the start of the DNS header
HEADER_BYTES = 12

FOLLOWED = ("Namespace", "Service", "EndpointSlice", "Pod")


class _Forward:
    """The reply needs the upstream. Without `response`: the query is for a name outside
    the cluster, relayed as it is. With it: our answer ends in a CNAME to `target` outside
    the zone (an ExternalName Service); the upstream's answer for it is appended."""

    def __init__(self, query: dns.message.Message | None = None,
                 response: dns.message.Message | None = None,
                 target: dns.name.Name | None = None) -> None:
        self.query, self.response, self.target = query, response, target


class RateLimitedLog:
    """At most `burst` lines per `window_s`; then one line saying how many were suppressed.
    A flood of garbage must not turn into a flood of log lines."""

    def __init__(self, burst: int = 10, window_s: float = 10.0) -> None:
        self.burst, self.window_s = burst, window_s
        self._start, self._count, self._suppressed = 0.0, 0, 0
        self.log = log.bind(component="dns")

    def warning(self, event: str, **kw: Any) -> None:
        now = time.monotonic()
        if now - self._start > self.window_s:
            if self._suppressed:
                self.log.warning("dns.log_suppressed", lines=self._suppressed,
                                 window_s=self.window_s)
            self._start, self._count, self._suppressed = now, 0, 0
        self._count += 1
        if self._count > self.burst:
            self._suppressed += 1
            return
        self.log.warning(event, **kw)


class DnsEngine:
    """Wire in, wire out, for one `ClusterDnsIndex`. No sockets."""

    def __init__(self, index: ClusterDnsIndex, *, max_udp: int = MAX_UDP_PAYLOAD,
                 upstream: tuple[str, int] | None = None) -> None:
        self.index = index
        self.max_udp = max_udp
        self.upstream = upstream
        self.bad = RateLimitedLog()
        self._cache: dict[bytes, bytes] = {}
        self._cache_generation = -1
        self.upstream_answers = UpstreamCache()
        self.stats = {"queries": 0, "cache_hits": 0, "formerr": 0, "dropped": 0,
                      "forwarded": 0, "chased": 0}

    def handle_wire(self, data: bytes, transport: str) -> bytes | None:
        """The reply to one DNS message from cluster state only (names outside the cluster
        are not answered when an upstream is configured, and an ExternalName CNAME is not
        followed; `query` does both).
        None means: drop it (unreadable header, or not a query)."""
        out = self._route(data, transport)
        if isinstance(out, _Forward):
            if out.response is None or out.query is None:
                return None
            # No I/O here: an ExternalName CNAME outside the zone is answered alone.
            if transport == "udp":
                fit_udp(out.query, out.response, self.max_udp)
            return out.response.to_wire(max_size=65535)
        return out

    async def query(self, data: bytes, transport: str) -> bytes | None:
        """Like `handle_wire`, but names outside the cluster go to the upstream when one is
        configured, and ExternalName CNAMEs are followed through it. The entry point for
        queries arriving over the emulated network and over TCP."""
        out = self._route(data, transport)
        if isinstance(out, _Forward):
            return await self.resolve(out, data, transport)
        return out

    async def resolve(self, pending: _Forward, data: bytes, transport: str) -> bytes | None:
        """Finish a reply that needs the upstream (see `_Forward`)."""
        if pending.response is None or pending.query is None or pending.target is None:
            return await self.forward(data, transport, pending.query)
        query, response, target = pending.query, pending.response, pending.target
        rdtype = query.question[0].rdtype
        reply = self.upstream_answers.get(target, rdtype)
        if reply is None:
            reply = await self._chase(target, rdtype)
            if reply is not None:
                self.upstream_answers.put(target, rdtype, reply)
        if reply is not None:
            append_chased(response, target, reply)
        if transport == "udp":
            fit_udp(query, response, self.max_udp)
        return response.to_wire(max_size=65535)

    async def _chase(self, target: dns.name.Name,
                     rdtype: dns.rdatatype.RdataType) -> dns.message.Message | None:
        """The upstream's answer for `target` (UDP, then TCP when it truncates); None when
        it gave none we can use."""
        ask = dns.message.make_query(target, rdtype)
        wire = await self._ask(ask.to_wire(), "udp")
        try:
            reply = dns.message.from_wire(wire) if wire is not None else None
            if reply is not None and reply.flags & dns.flags.TC:
                # The upstream's answer did not fit a datagram: ask again over TCP.
                wire = await self._ask(ask.to_wire(), "tcp")
                reply = dns.message.from_wire(wire) if wire is not None else None
        except Exception as e:  # an upstream's garbage costs the chase, not the reply
            self.bad.warning("dns.upstream_garbage", upstream=self.upstream, error=repr(e))
            return None
        return reply if reply is not None and reply.id == ask.id else None

    def _route(self, data: bytes, transport: str) -> bytes | _Forward | None:
        self.stats["queries"] += 1
        index = self.index
        if self._cache_generation != index.generation:
            self._cache.clear()
            self._cache_generation = index.generation
        key = (b"t" if transport == "tcp" else b"u") + data[2:]
        cached = self._cache.get(key)
        if cached is not None:
            self.stats["cache_hits"] += 1
            return data[:2] + cached
        try:
            query = dns.message.from_wire(data)
        except Exception as e:  # dnspython raises many types for garbage; all mean malformed
            return self._malformed(data, transport, e)
        if query.flags & dns.flags.QR:
            self.stats["dropped"] += 1
            self.bad.warning("dns.dropped", reason="a response, not a query",
                             transport=transport)
            return None  # answering responses invites reflection loops
        if (self.upstream is not None and len(query.question) == 1
                and query.opcode() == dns.opcode.QUERY
                and not index.is_authoritative(query.question[0].name)):
            self.stats["forwarded"] += 1
            return _Forward(query)
        try:
            response, chase = index.answer_to_chase(query, max_udp=self.max_udp)
            if chase is not None and self.upstream is not None:
                # Not in this cache: the upstream's part has its own (see `resolve`).
                self.stats["chased"] += 1
                return _Forward(query, response, chase)
            if transport == "udp":
                fit_udp(query, response, self.max_udp)
            wire = response.to_wire(max_size=65535)
        except Exception as e:  # a bug must cost one query, never the server
            self.bad.warning("dns.answer_failed", error=repr(e), transport=transport)
            wire = index.servfail(query).to_wire()
            return wire
        if index.synced:  # SERVFAIL before the sync is temporary: never cache it
            if len(self._cache) >= MAX_CACHE_ENTRIES:
                self._cache.clear()
            self._cache[key] = wire[2:]
        return wire

    def _malformed(self, data: bytes, transport: str, error: Exception) -> bytes | None:
        if len(data) < HEADER_BYTES:  # not even the 12-byte header: nobody to answer
            self.stats["dropped"] += 1
            self.bad.warning("dns.dropped", reason="shorter than a DNS header",
                             size=len(data), transport=transport)
            return None
        ident, flags = HEADER.unpack_from(data)
        if flags & dns.flags.QR:
            self.stats["dropped"] += 1
            self.bad.warning("dns.dropped", reason="malformed response", size=len(data),
                             transport=transport)
            return None
        self.stats["formerr"] += 1
        self.bad.warning("dns.formerr", error=type(error).__name__, detail=str(error)[:200],
                         size=len(data), transport=transport)
        reply = dns.message.Message(id=ident)
        # FORMERR keeps the opcode and RD of the query it could not read (RFC 1035 4.1.1).
        reply.flags = dns.flags.QR | (flags & (dns.flags.RD | 0x7800))
        reply.set_rcode(dns.rcode.FORMERR)
        return reply.to_wire()

    async def forward(self, data: bytes, transport: str = "udp",
                      query: dns.message.Message | None = None) -> bytes | None:
        """Relay one query (`data`, parsed: `query`) to the upstream (UDP first; over TCP
        too when the client asked over TCP and the upstream's UDP reply was truncated), or
        answer it from what the upstream said before; SERVFAIL when it does not answer."""
        if query is None:
            try:
                query = dns.message.from_wire(data)
            except Exception:  # relay it untouched all the same
                query = None
        key = _cache_key(query)
        if query is not None and key is not None:
            cached = self.upstream_answers.get(*key)
            if cached is not None:
                return self._reply_from(query, cached, transport)
        reply = await self._ask(data, "udp")
        if reply is not None and transport == "tcp" and len(reply) > 2 and reply[2] & 0x02:
            reply = await self._ask(data, "tcp") or reply  # TC: the full answer over TCP
        if reply is not None and query is not None and key is not None:
            try:
                parsed = dns.message.from_wire(reply)
            except Exception:  # garbage is relayed as it came, and not kept
                return reply
            if parsed.id == query.id and self.upstream_answers.put(*key, parsed):
                return parsed.to_wire(max_size=65535)   # with the capped TTLs
        if reply is not None:
            return reply
        try:
            return self.index.servfail(dns.message.from_wire(data)).to_wire()
        except Exception:  # it parsed before; be safe anyway
            return None

    def _reply_from(self, query: dns.message.Message, cached: dns.message.Message,
                    transport: str) -> bytes:
        """`cached` (the upstream's earlier answer) as the reply to this client's `query`."""
        reply = dns.message.make_response(query, recursion_available=True,
                                          our_payload=self.max_udp)
        reply.flags |= cached.flags & dns.flags.AA
        reply.set_rcode(cached.rcode())
        reply.answer, reply.authority = cached.answer, cached.authority
        reply.additional = cached.additional
        wire = reply.to_wire(max_size=65535)
        if transport == "udp" and len(wire) > udp_limit(query, self.max_udp):
            fit_udp(query, reply, self.max_udp)    # rendered again only when it must shrink
            wire = reply.to_wire(max_size=65535)
        return wire

    async def _ask(self, data: bytes, transport: str) -> bytes | None:
        """One query to the upstream and its reply (None: no answer)."""
        assert self.upstream is not None
        if transport == "tcp":
            return await self._ask_tcp(data)
        loop = asyncio.get_running_loop()
        for _ in range(UPSTREAM_ATTEMPTS):
            got: asyncio.Future[bytes] = loop.create_future()
            try:
                udp, _ = await loop.create_datagram_endpoint(
                    functools.partial(_UpstreamReply, data[:2], got), remote_addr=self.upstream)
            except OSError as e:
                self.bad.warning("dns.upstream_failed", upstream=self.upstream, error=str(e))
                return None
            try:
                udp.sendto(data)
                return await asyncio.wait_for(got, UPSTREAM_TIMEOUT_S)
            except TimeoutError:
                continue
            finally:
                udp.close()
        self.bad.warning("dns.upstream_timeout", upstream=self.upstream)
        return None

    async def _ask_tcp(self, data: bytes) -> bytes | None:
        assert self.upstream is not None
        writer: asyncio.StreamWriter | None = None
        try:
            reader, conn = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), UPSTREAM_TIMEOUT_S)
            writer = conn
            conn.write(struct.pack("!H", len(data)) + data)
            (size,) = struct.unpack("!H", await asyncio.wait_for(
                reader.readexactly(2), UPSTREAM_TIMEOUT_S))
            reply = await asyncio.wait_for(reader.readexactly(size), UPSTREAM_TIMEOUT_S)
            return reply if reply[:2] == data[:2] else None
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            self.bad.warning("dns.upstream_failed", upstream=self.upstream, transport="tcp",
                             error=repr(e))
            return None
        finally:
            if writer is not None:
                writer.close()


def _cache_key(query: dns.message.Message | None) -> tuple[dns.name.Name,
                                                          dns.rdatatype.RdataType] | None:
    """What a relayed query's answer is cached under: its name and type (one IN question)."""
    if query is None or len(query.question) != 1:
        return None
    question = query.question[0]
    if question.rdclass != dns.rdataclass.IN:
        return None
    return question.name, question.rdtype


class _UpstreamReply(asyncio.DatagramProtocol):
    """Takes the upstream's reply that carries our query's ID (others are spoofing noise)."""

    def __init__(self, ident: bytes, got: asyncio.Future[bytes]) -> None:
        self.ident, self.got = ident, got

    def datagram_received(self, reply: bytes, addr: Any) -> None:
        if reply[:2] == self.ident and not self.got.done():
            self.got.set_result(reply)


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, engine: DnsEngine, tasks: set[asyncio.Task[None]]) -> None:
        self.engine = engine
        self.tasks = tasks
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not a subclass of asyncio.DatagramTransport: no isinstance.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        transport = self.transport
        if transport is None:
            return
        try:
            out = self.engine._route(data, "udp")
        except Exception as e:  # never let one datagram stop the endpoint
            self.engine.bad.warning("dns.udp_failed", error=repr(e))
            return
        if isinstance(out, _Forward):
            task = asyncio.create_task(self._forward(out, data, addr),
                                       name=f"dns-forward:{addr}")
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif out is not None:
            transport.sendto(out, addr)

    async def _forward(self, pending: _Forward, data: bytes, addr: tuple[str, int]) -> None:
        try:
            out = await self.engine.resolve(pending, data, "udp")
        except Exception as e:  # a bug costs this query, not the endpoint
            self.engine.bad.warning("dns.forward_failed", error=repr(e))
            return
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a client that went away: nothing to do.
        pass


async def serve_stream(engine: DnsEngine, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
    """DNS over a stream (RFC 1035 4.2.2, RFC 7766): length-prefixed messages, answered in
    order, until the client closes or stays idle. Also used for emulated-network streams."""
    try:
        while True:
            try:
                prefix = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_S)
                (size,) = struct.unpack("!H", prefix)
                data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE_S)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return
            out = await engine.query(data, "tcp")
            if out is None:
                return  # unreadable: RFC 7766 lets us close the connection
            writer.write(struct.pack("!H", len(out)) + out)
            await writer.drain()
    except (ConnectionError, OSError):
        return
    except Exception as e:  # a bug costs this connection, not the server
        engine.bad.warning("dns.tcp_failed", error=repr(e))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


def parse_upstream(text: str | None) -> tuple[str, int] | None:
    """`ip[:port]` (port 53 by default) -> (ip, port); None/"" -> no upstream."""
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "53"
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"expected ip:port, got {text!r}")
    return host, int(port)


class DnsServer:
    """Cluster DNS for one control plane: follows `store`, listens on `host:port`."""

    def __init__(self, store: Any, *, host: str = "127.0.0.1", port: int = 0,
                 domain: str = "cluster.local", strict: bool = False,
                 upstream: str | None = None, dns_ip: str = DEFAULT_DNS_IP) -> None:
        self.store = store
        self.host = host
        self.want_port = port
        upstream_addr = parse_upstream(upstream)
        self.index = ClusterDnsIndex(domain, strict=strict, dns_ip=dns_ip,
                                     forwarding=upstream_addr is not None)
        self.engine = DnsEngine(self.index, upstream=upstream_addr)
        self.port = 0
        self.log = log.bind(component="dns")
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._follow: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.synced = asyncio.Event()

    # The two entry points, for tests and the emulated network.
    def handle_wire(self, data: bytes, transport: str) -> bytes | None:
        return self.engine.handle_wire(data, transport)

    async def query(self, data: bytes, transport: str) -> bytes | None:
        return await self.engine.query(data, transport)

    async def serve_stream(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        # Owned like every task here, so close() ends open client connections too.
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await serve_stream(self.engine, reader, writer)
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def start(self) -> None:
        self._follow = asyncio.create_task(self._follow_store(), name="dns-follow-store")
        await self._listen()
        self.log.info("dns.listening", host=self.host, port=self.port,
                      strict=self.index.strict, upstream=self.engine.upstream)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        # UDP first; then TCP on the same number. With port 0 the number the OS picks for UDP
        # may be taken for TCP: try again with a new one.
        for _attempt in range(20):
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpServer(self.engine, self._tasks),
                local_addr=(self.host, self.want_port))
            port = int(udp.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self.serve_stream, self.host, port)
            except OSError as e:
                udp.close()
                if e.errno != errno.EADDRINUSE or self.want_port:
                    raise
                continue
            self._udp, self.port = udp, port
            return
        raise OSError(errno.EADDRINUSE, "no port free for both UDP and TCP")

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        tasks = [t for t in (self._follow, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._tcp is not None:
            with contextlib.suppress(Exception):
                await self._tcp.wait_closed()

    async def _follow_store(self) -> None:
        """Full load, then every change; start over if a feed is ever cut off (the store
        closes a subscriber that falls too far behind)."""
        resources = {kind: BY_KIND[kind] for kind in FOLLOWED}
        while True:
            subs = {kind: self.store.subscribe(res) for kind, res in resources.items()}
            try:
                # Subscribe before the scan: a write in between is then applied twice
                # (harmless: each event carries the whole object), never missed.
                scans = {kind: self.store.scan(res) for kind, res in resources.items()}
                self.index.replace_all(scans["Service"], scans["EndpointSlice"],
                                       scans["Pod"], scans["Namespace"])
                self.synced.set()
                self.log.info("dns.synced", services=len(self.index.services),
                              endpointslices=len(self.index.slices),
                              pods=len(self.index.pods))
                readers = [asyncio.create_task(self._apply(kind, sub),
                                               name=f"dns-feed-{kind.lower()}")
                           for kind, sub in subs.items()]
                try:
                    await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in readers:
                        task.cancel()
                    await asyncio.gather(*readers, return_exceptions=True)
            finally:
                for sub in subs.values():
                    sub.close()
            self.log.warning("dns.feed_restarted")

    async def _apply(self, kind: str, sub: Any) -> None:
        while (change := await sub.get()) is not None:
            try:
                obj: Mapping[str, Any] = change.shared_object()
                self.index.apply(kind, change.type, obj)
            except Exception:  # one odd object must not stop DNS for everyone
                self.log.exception("dns.apply_failed", kind=kind)

