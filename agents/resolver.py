"""A pod's stub resolver: its own /etc/resolv.conf, glibc's rules, queries over its own network.

What a container's libc does for `getaddrinfo("web", ...)`, reproduced over the pod's `PodNet`:

- resolv.conf as glibc reads it: up to 3 `nameserver`s, `search` (or `domain`; the last one
  wins), `options ndots:N timeout:N attempts:N rotate use-vc edns0` with glibc's caps.
- The search walk of glibc's `res_search`: a trailing dot means absolute only; a name with
  fewer dots than ndots tries each search suffix first and then the name as is; a name with
  ndots or more dots tries the name as is first and then the search list. NXDOMAIN and NODATA
  keep the walk going, SERVFAIL too (remembered); no reply at all stops it.
- `res_send`: each attempt asks every nameserver in turn, waiting `timeout` (doubling per
  round, divided by the number of servers, like glibc); SERVFAIL/REFUSED/NOTIMP moves to the
  next server; a truncated (TC) UDP reply is asked again over TCP.
- Failures come back as getaddrinfo's: `EAI_NONAME` "Name or service not known" (every
  candidate NXDOMAIN), `EAI_NODATA` "No address associated with hostname" (a candidate exists
  but has no address), `EAI_AGAIN` "Temporary failure in name resolution" (SERVFAIL or no reply).

A pod with an IPv6 address (dual-stack) asks A and AAAA for each candidate name, as glibc's
getaddrinfo(AF_UNSPEC) does, and returns its primary family's addresses first; a candidate
that has either ends the walk. An IPv4-only pod asks A only, as before.

`/etc/hosts` is consulted first (nsswitch `hosts: files dns`), as in every Kubernetes image.
`install(net, resolv_conf, hosts)` plugs this into `net.resolver`, so `ctx.net.getaddrinfo`,
`open_connection("web", 80)` and every toolbox command that takes a name go through it.
Wire format is dnspython's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import structlog

from agents.netstack import current_flow

if TYPE_CHECKING:
    from agents.netstack import PodNet

DNS_PORT = 53
MAXNS = 3             # glibc MAXNS
MAX_NDOTS = 15        # glibc RES_MAXNDOTS
MAX_TIMEOUT_S = 30    # glibc RES_MAXRETRANS
MAX_ATTEMPTS = 5      # glibc RES_MAXRETRY
UDP_LIMIT = 65535


@dataclass
class ResolvConf:
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    ndots: int = 1
    timeout_s: int = 5     # glibc RES_TIMEOUT
    attempts: int = 2      # glibc RES_DFLRETRY
    rotate: bool = False
    use_vc: bool = False   # always TCP
    edns0: bool = False


def parse_resolv_conf(text: str) -> ResolvConf:
    """resolv.conf as glibc's res_init reads it (unknown lines and options are ignored)."""
    conf = ResolvConf()
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        key, *args = line.split()
        if key == "nameserver" and args and len(conf.nameservers) < MAXNS:
            try:
                conf.nameservers.append(str(ipaddress.ip_address(args[0])))
            except ValueError:
                continue
        elif key in ("search", "domain") and args:
            conf.search = args if key == "search" else args[:1]
        elif key == "options":
            for option in args:
                name, _, value = option.partition(":")
                number = int(value) if value.isdigit() else None
                if name == "ndots" and number is not None:
                    conf.ndots = min(number, MAX_NDOTS)
                elif name == "timeout" and number is not None:
                    conf.timeout_s = max(1, min(number, MAX_TIMEOUT_S))
                elif name == "attempts" and number is not None:
                    conf.attempts = max(1, min(number, MAX_ATTEMPTS))
                elif name == "rotate":
                    conf.rotate = True
                elif name == "use-vc":
                    conf.use_vc = True
                elif name == "edns0":
                    conf.edns0 = True
    if not conf.nameservers:  # glibc's default: a nameserver on this host
        conf.nameservers = ["127.0.0.1"]
    conf.search = [s.strip(".") for s in conf.search if s.strip(".")]
    return conf


def candidates(name: str, conf: ResolvConf) -> list[str]:
    """The absolute names glibc's res_search tries for `name`, in order."""
    if name.endswith("."):
        return [name]
    dots = name.count(".")
    suffixed = [f"{name}.{domain}." for domain in conf.search]
    if dots >= conf.ndots:
        return [f"{name}.", *suffixed]
    return [*suffixed, f"{name}."]


class NoReply(Exception):
    """No nameserver answered (timeouts or unreachable)."""


@dataclass
class Exchange:
    """One answered query: the reply, who gave it, over what, and how long it took."""

    response: dns.message.Message
    server: str
    port: int
    transport: str   # "udp" | "tcp"
    elapsed_s: float
    size: int


class _Waiter(asyncio.DatagramProtocol):
    """Collects the reply to one UDP query: the right ID, from the server asked."""

    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) >= 2 and struct.unpack("!H", data[:2])[0] == self.ident \
                and not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def udp_exchange(net: PodNet, server: str, port: int, wire: bytes, ident: int,
                       timeout_s: float) -> bytes:
    """Send one query from the pod over UDP; the reply's bytes. Raises TimeoutError/OSError."""
    transport, waiter = await net.create_datagram_endpoint(
        lambda: _Waiter(ident), remote_addr=(server, port))
    try:
        transport.sendto(wire)
        return await asyncio.wait_for(waiter.reply, timeout_s)
    finally:
        transport.close()


async def tcp_exchange(net: PodNet, server: str, port: int, wire: bytes,
                       timeout_s: float) -> bytes:
    """One query over a fresh TCP connection from the pod (RFC 1035 2-byte framing)."""
    async def run() -> bytes:
        reader, writer = await net.open_connection(server, port)
        try:
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
            (size,) = struct.unpack("!H", await reader.readexactly(2))
            return await reader.readexactly(size)
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(run(), timeout_s)
    except asyncio.IncompleteReadError as e:
        raise ConnectionResetError("connection closed by the server") from e


async def exchange(net: PodNet, server: str, query: dns.message.Message, *,
                   port: int = DNS_PORT, tcp: bool = False, timeout_s: float = 5.0,
                   tries: int = 1, tc_fallback: bool = True) -> Exchange:
    """Ask one server; retry on timeouts; on a TC reply over UDP ask again over TCP.
    Raises NoReply when nothing usable came back."""
    wire = query.to_wire()
    last: Exception | None = None
    for _ in range(max(1, tries)):
        start = time.monotonic()
        try:
            if tcp:
                data, used = await tcp_exchange(net, server, port, wire, timeout_s), "tcp"
            else:
                data = await udp_exchange(net, server, port, wire, query.id, timeout_s)
                used = "udp"
                if tc_fallback and _tc_set(data):
                    start = time.monotonic()
                    data, used = await tcp_exchange(net, server, port, wire, timeout_s), "tcp"
            response = dns.message.from_wire(data)
        except (TimeoutError, OSError, dns.exception.DNSException) as e:
            last = e
            if isinstance(e, OSError) and not isinstance(e, TimeoutError):
                break  # unreachable/refused: retrying the same server will not help
            continue
        if response.id != query.id or not query.is_response(response):
            last = NoReply("mismatched reply")
            continue
        return Exchange(response, server, port, used, time.monotonic() - start, len(data))
    raise NoReply(str(last) if last else "no reply")


def _tc_set(data: bytes) -> bool:
    return len(data) >= 4 and bool(struct.unpack("!H", data[2:4])[0] & dns.flags.TC)


def _gaierror(code: int) -> socket.gaierror:
    texts = {socket.EAI_NONAME: "Name or service not known",
             socket.EAI_AGAIN: "Temporary failure in name resolution",
             socket.EAI_NODATA: "No address associated with hostname"}
    return socket.gaierror(code, texts[code])


def parse_hosts(text: str) -> dict[str, list[str]]:
    """/etc/hosts: lower-cased name -> addresses, in file order."""
    table: dict[str, list[str]] = {}
    for raw in text.splitlines():
        fields = raw.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            ip = str(ipaddress.ip_address(fields[0]))
        except ValueError:
            continue
        for name in fields[1:]:
            table.setdefault(name.lower().rstrip("."), []).append(ip)
    return table


_log = structlog.get_logger()


class StubResolver:
    """One pod's resolver (see the module docstring)."""

    def __init__(self, net: PodNet, resolv_conf: str, hosts: str = "") -> None:
        self.net = net
        self.conf = parse_resolv_conf(resolv_conf)
        self.hosts = parse_hosts(hosts)
        self._next_ns = 0

    def _servers(self) -> list[str]:
        servers = list(self.conf.nameservers)
        if self.conf.rotate and servers:
            self._next_ns = (self._next_ns + 1) % len(servers)
            servers = servers[self._next_ns:] + servers[:self._next_ns]
        return servers

    async def send(self, qname: str, rdtype: int) -> dns.message.Message:
        """glibc's res_send for one absolute name: every server, `attempts` rounds.
        Returns the first acceptable reply (anything but SERVFAIL/REFUSED/NOTIMP, or the
        last of those when every server gave one); raises NoReply otherwise."""
        servers = self._servers()
        query = dns.message.make_query(qname, dns.rdatatype.RdataType.make(rdtype),
                                       use_edns=0 if self.conf.edns0 else -1)
        fallback: dns.message.Message | None = None
        for round_ in range(self.conf.attempts):
            # glibc: retrans << round, shared between the servers after the first round.
            wait = float(self.conf.timeout_s << round_)
            if round_ > 0:
                wait = max(1.0, wait / len(servers))
            for server in servers:
                query.id = random.randrange(65536)
                try:
                    result = await exchange(self.net, server, query, tcp=self.conf.use_vc,
                                            timeout_s=wait)
                except NoReply:
                    continue
                if result.response.rcode() in (dns.rcode.SERVFAIL, dns.rcode.REFUSED,
                                               dns.rcode.NOTIMP):
                    fallback = result.response
                    continue
                return result.response
            if fallback is not None:
                return fallback
        raise NoReply(f"no nameserver of {servers} answered")

    async def lookup(self, name: str, rdtype: int = dns.rdatatype.A,
                     also: int | None = None) -> list[str]:
        """Addresses for `name` by the search walk (of `rdtype`, then `also`'s); raises
        socket.gaierror like getaddrinfo."""
        key = name.lower().rstrip(".")
        if key in self.hosts:
            order = [6 if t == dns.rdatatype.AAAA else 4 for t in (rdtype, also) if t]
            found = [ip for family in order for ip in self.hosts[key]
                     if ipaddress.ip_address(ip).version == family]
            if found:
                return found
        try:
            names = candidates(name, self.conf)
            for fqdn in names:
                dns.name.from_text(fqdn)  # a bad name (empty label, >63 bytes) fails here
        except (dns.exception.DNSException, ValueError):
            raise _gaierror(socket.EAI_NONAME) from None
        # One flow id for the whole lookup: every query it sends (UDP, TCP retries) carries it,
        # so `podnet logs --flow` shows the search walk and the DNS server's side together.
        flow = self.net.new_flow()
        token = current_flow.set(flow)
        try:
            return await self._walk(names, rdtype, flow, also)
        finally:
            current_flow.reset(token)

    async def _walk(self, names: list[str], rdtype: int, flow: str,
                    also: int | None = None) -> list[str]:
        """The search walk for `rdtype` (and, dual-stack, `also`, asked alongside for each
        candidate: its addresses follow `rdtype`'s)."""
        got_nodata = got_servfail = False
        rdtypes = (rdtype,) if also is None else (rdtype, also)
        base = {"flow": flow, "pod": self.net.pod, "namespace": self.net.namespace,
                "proto": "dns"}
        for step, fqdn in enumerate(names, 1):
            replies = await asyncio.gather(*(self.send(fqdn, t) for t in rdtypes),
                                           return_exceptions=True)
            found: list[str] = []
            rcodes: list[int] = []
            for qtype, response in zip(rdtypes, replies, strict=True):
                where = {**base, "qtype": dns.rdatatype.to_text(
                    dns.rdatatype.RdataType.make(qtype))}
                if isinstance(response, NoReply):
                    _log.info("dns.step", **where, step=step, question=fqdn,
                              verdict="no reply", reason=str(response))
                    raise _gaierror(socket.EAI_AGAIN) from None  # glibc stops the walk here
                if isinstance(response, BaseException):
                    raise response
                rcode = response.rcode()
                addresses = _addresses(response, qtype) if rcode == dns.rcode.NOERROR else []
                _log.info("dns.step", **where, step=step, question=fqdn,
                          rcode=dns.rcode.to_text(rcode), answers=addresses,
                          verdict="answered" if addresses else dns.rcode.to_text(rcode).lower()
                          if rcode != dns.rcode.NOERROR else "nodata")
                found += addresses
                rcodes.append(rcode)
            if found:
                return found
            if all(r == dns.rcode.NXDOMAIN for r in rcodes):
                continue
            if any(r not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) for r in rcodes):
                got_servfail = True
                continue
            got_nodata = True
        if got_nodata:
            raise _gaierror(socket.EAI_NODATA)
        if got_servfail:
            raise _gaierror(socket.EAI_AGAIN)
        raise _gaierror(socket.EAI_NONAME)

    async def __call__(self, name: str) -> Sequence[str]:
        """`PodNet.resolver`: IPv4 addresses, as the pod's getaddrinfo(AF_INET) sees them; a
        pod with IPv6 gets both families (getaddrinfo(AF_UNSPEC)), its primary one first."""
        if self.net.ip6 is None:
            return await self.lookup(name, dns.rdatatype.A)
        if ":" in self.net.ip:
            return await self.lookup(name, dns.rdatatype.AAAA, also=dns.rdatatype.A)
        return await self.lookup(name, dns.rdatatype.A, also=dns.rdatatype.AAAA)


def _addresses(response: dns.message.Message, rdtype: int) -> list[str]:
    """The addresses answering the question, following a CNAME chain inside the reply."""
    if not isinstance(response, dns.message.QueryMessage):
        return []
    try:
        chain = response.resolve_chaining()
    except dns.exception.DNSException:
        return []
    if chain.answer is None or chain.answer.rdtype != rdtype:
        return []
    return [cast(Any, rd).address for rd in chain.answer]


def install(net: PodNet, resolv_conf: str, hosts: str = "") -> StubResolver:
    """Make `net` resolve names through the pod's own resolv.conf (and /etc/hosts)."""
    resolver = StubResolver(net, resolv_conf, hosts)
    net.resolver = resolver
    return resolver
