"""The ClusterIP proxy: the control plane as a tunnel peer of the agents.

An agent carries a pod's stream or datagram for a Service IP through its tunnel to the control
plane (`podnet.tunnelnet`, the same protocol agents speak to each other, on the control plane's
plain-HTTP `/tunnel` listener: the handshake under the cluster secret is the authentication).
Here the stream's destination is looked up (`ServiceMap`), an endpoint is chosen, and a stream
is opened to that endpoint's node through a tunnel to its agent, with the client pod's
ip:port as the source (no SNAT: the backend sees the client). The two tunnel streams are then
connected to each other directly (each is the other's `StreamPeer`), so bytes cross this
process in one hop with both streams' credit-based flow control intact. The client keeps
ClusterIP:port as its peer, as kube-proxy's reverse DNAT gives it.

No Service or no ready endpoint -> OPEN_FAIL ECONNREFUSED at once; an endpoint whose node or
pod cannot be reached -> the next ready endpoint, else ECONNREFUSED.

UDP: a datagram to a Service port opens a flow (`UdpFlows`, 30 s idle) sent from the ClusterIP
and a proxy port, so the endpoint's reply comes back here and is returned to the client from
ClusterIP:port. (Unlike TCP this is SNAT: the endpoint sees the ClusterIP, since the reply must
pass the proxy to be un-NATed.) The kube-dns address (port 53, UDP and TCP) is answered here by
the DNS engine (`dns`, injected).

NetworkPolicy: TCP streams keep the client's address, so the endpoint's agent judges them
(the client's egress too, since the stream comes from this peer). A new UDP flow is judged
here (`_udp_allowed`: the client's egress and the endpoint's ingress, against the endpoint),
because after the translation only this process knows both ends.

One log event per connection or UDP flow (`proxy.connection`, `proxy.udp_flow`): the Service,
the endpoint, why it was chosen, what was tried, the verdict. Never per byte.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import ipaddress
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from podnet.addresses import address as _fmt
from podnet.addresses import hostport
from podnet.policy.state import PolicyState, verdict_fields
from podnet.resources import BY_KIND
from podnet.services.servicemap import Choice, Endpoint, ServiceMap, UdpFlows, family_of
from podnet.settings import SettingsError
from podnet.tunnel import Address, Dgram, Open
from podnet.tunnelnet import (
    CONTROLPLANE,
    Tunnel,
    TunnelEnd,
    TunnelPeer,
    errname,
    reset,
)

log = structlog.get_logger().bind(component="proxy")
SERVICES, SLICES, NODES = BY_KIND["Service"], BY_KIND["EndpointSlice"], BY_KIND["Node"]
# What NetworkPolicy needs to judge a UDP flow through a Service IP (see `_udp_allowed`).
POLICY_INPUTS = ("Namespace", "Node", "Pod", "NetworkPolicy")
MAX_DENIED_UDP = 4096       # denied UDP flows remembered, so a sender costs one verdict

# The DNS engine's entry point: one wire-format message and "udp"/"tcp" -> the reply, or None
# to drop it. May be a coroutine function (an engine that forwards out-of-cluster names).
DnsHandler = Callable[[bytes, str], "bytes | Awaitable[bytes | None] | None"]
DNS_PORT = 53
MAX_DNS_TCP_BUFFER = 2 * (65535 + 2)    # two whole queries; more waits in the tunnel


class ClusterIPProxy(TunnelPeer):
    """Proxies pod traffic for Service IPs; `add_routes()` serves its `/tunnel` endpoint."""

    def __init__(self, store: Any, secret: bytes, *, service_cidr: str = "10.96.0.0/12",
                 service_cidrs: Sequence[str] = (),
                 dns: DnsHandler | None = None, dns_ip: str | None = None,
                 session: aiohttp.ClientSession | None = None,
                 connect_timeout_s: float = 3.0, handshake_timeout_s: float = 5.0) -> None:
        super().__init__(CONTROLPLANE, secret, session=session,
                         connect_timeout_s=connect_timeout_s,
                         handshake_timeout_s=handshake_timeout_s)
        self.store = store
        self.map = ServiceMap()
        self.udp = UdpFlows()
        self.service_cidr = ipaddress.ip_network(service_cidr)
        self.dns = dns
        self.dns_address = (dns_ip or str(self.service_cidr[10]), DNS_PORT)
        # Bound now, after logs.configure: an import-time bind would miss the JSON file.
        self.log = structlog.get_logger().bind(component="proxy", node=CONTROLPLANE)
        self._dirty = True
        self._agents: dict[str, str | None] = {}
        self._followers: list[asyncio.Task[None]] = []
        # NetworkPolicy for UDP through Service IPs: the datagrams leave here translated to
        # the ClusterIP, so neither agent sees both the client and the endpoint; this does.
        self.policy = PolicyState(dns_ip=self.dns_address[0], service_cidr=service_cidr,
                                  service_cidrs=service_cidrs)
        self._policy_dirty = True
        self._udp_denied: OrderedDict[tuple[Address, Address], int] = OrderedDict()

    # -- the index, kept from the store

    async def start(self) -> None:
        self.refresh()
        self._followers = [asyncio.create_task(self._follow(res), name=f"proxy-feed-{res.plural}")
                           for res in (SERVICES, SLICES, NODES)]
        self._followers += [
            asyncio.create_task(self._follow_policy(BY_KIND[kind]),
                                name=f"proxy-policy-feed-{BY_KIND[kind].plural}")
            for kind in POLICY_INPUTS]

    async def close(self) -> None:
        for task in self._followers:
            task.cancel()
        await asyncio.gather(*self._followers, return_exceptions=True)
        await super().close()

    async def _follow(self, res: Any) -> None:
        """Mark the index stale on every change to `res` (it is rebuilt on the next lookup,
        once per burst of changes); re-subscribe if the feed is ever cut off. Node changes
        (heartbeats, mostly) only refresh the agents' addresses, at once: a moved or removed
        agent's tunnels are dropped without waiting for traffic."""
        while True:
            sub = self.store.subscribe(res)
            self._dirty = True      # whatever happened before this subscription
            try:
                while await sub.get() is not None:
                    if res is NODES:
                        self._refresh_nodes()
                    else:
                        self._dirty = True
            finally:
                sub.close()

    async def _follow_policy(self, res: Any) -> None:
        """Mark the policy view stale on every change to `res`; rebuilt on the next new UDP
        flow through a Service, so pod churn costs nothing until then."""
        while True:
            sub = self.store.subscribe(res)
            self._policy_dirty = True
            try:
                while await sub.get() is not None:
                    self._policy_dirty = True
            finally:
                sub.close()

    def _udp_allowed(self, frame: Dgram, endpoint: Endpoint) -> bool:
        """NetworkPolicy for a new UDP flow client -> Service -> endpoint: the client's egress
        and the endpoint's ingress, judged against the real endpoint. Logged once per flow."""
        key = (frame.src, frame.dst)
        state = self.policy
        if self._policy_dirty:
            self._policy_dirty = False
            for kind in POLICY_INPUTS:
                state.replace(kind, self.store.scan(BY_KIND[kind]))
        if self._udp_denied.get(key) == state.version:
            return False
        allowed = True
        for pod, verdict in state.verdicts(frame.src, endpoint.address, "udp", egress=True,
                                           ingress=True):
            self.log.info("policy.verdict", **verdict_fields(
                frame.flow, frame.src, endpoint.address, "udp", pod, verdict))
            allowed = allowed and verdict.allowed
        if allowed:
            self._udp_denied.pop(key, None)
        else:
            self._udp_denied[key] = state.version
            while len(self._udp_denied) > MAX_DENIED_UDP:
                self._udp_denied.popitem(last=False)
        return allowed

    def refresh(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self.map.rebuild(self.store.scan(SERVICES), self.store.scan(SLICES))
        self._refresh_nodes()

    def _refresh_nodes(self) -> None:
        self.map.set_nodes(self.store.scan(NODES))
        agents = {n.name: n.address for n in self.map.nodes()}
        for name, address in self._agents.items():
            if agents.get(name) != address:
                self.fail_peer(name, "node removed" if name not in agents
                               else "peer address changed")
        self._agents = agents

    def dial_wanted(self, peer: str, address: str) -> bool:
        self.refresh()
        return self._agents.get(peer) == address

    # -- streams

    def on_open(self, tunnel: Tunnel, frame: Open) -> None:
        if frame.dst == self.dns_address and self.dns is not None:
            end = tunnel.new_end(frame)
            local = _DnsStream(self, end, self.dns)
            if tunnel.accept(end, local):
                self.log.info("proxy.connection", flow=frame.flow, **_where(frame.src, frame.dst),
                              service="kube-dns", endpoint="dns engine", verdict="connected")
            return
        self.spawn(self._proxy(tunnel, frame), f"proxy {frame.flow}")

    async def _proxy(self, tunnel: Tunnel, frame: Open) -> None:
        where = {"flow": frame.flow, **_where(frame.src, frame.dst), "from_node": tunnel.peer}
        try:
            await self._connect(tunnel, frame, where)
        except Exception:   # one connection's bug must not take the proxy down
            self.log.exception("proxy.connection_failed", **where)
            tunnel.refuse(frame.sid, errno.ECONNREFUSED)

    async def _connect(self, tunnel: Tunnel, frame: Open, where: dict[str, Any]) -> None:
        self.refresh()
        client = tunnel.new_end(frame)
        tried: list[str] = []
        failed: list[tuple[str, int]] = []
        while True:
            choice = self.map.choose(frame.dst[0], frame.dst[1], "TCP", frame.src[0], failed)
            endpoint = choice.endpoint
            if endpoint is None:
                tunnel.refuse(frame.sid, errno.ECONNREFUSED)
                self.log.info("proxy.connection", **where, **_service(choice), tried=tried,
                              reason=choice.reason, verdict="ECONNREFUSED")
                return
            try:
                backend = await self._open_backend(endpoint, frame, client)
            except OSError as exc:
                failed.append(endpoint.address)
                tried.append(f"{hostport(endpoint.ip, endpoint.port)} {errname(exc.errno)}")
                if tunnel.closed is not None or not tunnel.session.has_stream(frame.sid):
                    # The client gave up meanwhile (a NetworkPolicy drop times out slowly):
                    # trying the other endpoints would only hold them for nobody.
                    self.log.info("proxy.connection", **where, **_service(choice),
                                  tried=tried, verdict="client gone")
                    return
                continue
            break
        if not tunnel.accept(client, backend):
            backend.hang_up(reset())    # the client gave up while we were connecting
            self.log.info("proxy.connection", **where, **_service(choice),
                          endpoint=hostport(endpoint.ip, endpoint.port), tried=tried,
                          reason=choice.reason, verdict="client gone")
            return
        backend.wake()      # hand over what the backend may have sent already
        self.log.info("proxy.connection", **where, **_service(choice),
                      endpoint=hostport(endpoint.ip, endpoint.port), pod=endpoint.pod,
                      endpoint_node=self._node_name(endpoint),
                      reason="retry" if tried else choice.reason, tried=tried or None,
                      ready=choice.ready, verdict="connected")

    def _node_name(self, endpoint: Endpoint) -> str | None:
        info = self.map.node_of(endpoint)
        return info.name if info is not None else None

    async def _open_backend(self, endpoint: Endpoint, frame: Open,
                            client: TunnelEnd) -> TunnelEnd:
        node = self.map.node_of(endpoint)
        if node is None or node.address is None:
            raise OSError(errno.EHOSTUNREACH, "no agent for the endpoint's node")
        backend_tunnel = await self.tunnel_to(node.name, node.address)
        return await self.open_via(backend_tunnel, frame.src, endpoint.address, client,
                                   frame.flow)

    # -- datagrams

    def on_datagram(self, tunnel: Tunnel, frame: Dgram) -> None:
        if frame.dst == self.dns_address and self.dns is not None:
            self._dns_datagram(tunnel, frame)
            return
        flow = self.udp.reply(frame.src, frame.dst)
        if flow is not None:        # an endpoint answering a client: undo the NAT
            via: Tunnel = flow.via
            if via.closed is None and via.session.datagram(flow.service, flow.client,
                                                           frame.flow, frame.data):
                via.kick()
            return
        self.refresh()
        flow = self.udp.outbound(frame.src, frame.dst)
        if flow is not None and not self._still_ready(flow.endpoint, frame.dst):
            self.udp.drop(frame.src, frame.dst)     # its endpoint left: like a conntrack flush
            flow = None
        if flow is None:
            choice = self.map.choose(frame.dst[0], frame.dst[1], "UDP", frame.src[0])
            where = {"flow": frame.flow, **_where(frame.src, frame.dst), **_service(choice)}
            if choice.endpoint is None:
                # No ICMP here: the datagram is dropped, as UDP to nowhere is.
                self.log.debug("proxy.udp_flow", **where, reason=choice.reason,
                               verdict="dropped")
                return
            if not self._udp_allowed(frame, choice.endpoint):
                return      # a NetworkPolicy drops it (policy.verdict says which end)
            flow = self.udp.add(frame.src, frame.dst, choice.endpoint, via=tunnel)
            if flow is None:
                self.log.warning("proxy.udp_flow", **where, verdict="dropped",
                                 reason="no free proxy port")
                return
            self.log.info("proxy.udp_flow", **where,
                          endpoint=hostport(choice.endpoint.ip, choice.endpoint.port),
                          proxy=f"{flow.proxy[0]}:{flow.proxy[1]}", reason=choice.reason,
                          verdict="forwarded")
        flow.via = tunnel
        node = self.map.node_of(flow.endpoint)
        if node is not None and node.address is not None:
            self.datagram_to(node.name, node.address, flow.proxy, flow.endpoint.address,
                             frame.data, frame.flow)

    def _still_ready(self, endpoint: Endpoint, service: tuple[str, int]) -> bool:
        svc = self.map.service(service[0])
        port = svc.port_for(service[1], "UDP") if svc is not None else None
        return svc is not None and port is not None \
            and endpoint in self.map.ready_endpoints(svc, port, family_of(service[0]))

    def _dns_datagram(self, tunnel: Tunnel, frame: Dgram) -> None:
        assert self.dns is not None
        try:
            answer = self.dns(frame.data, "udp")
        except Exception:   # a DNS engine bug drops the query, nothing more
            self.log.exception("proxy.dns_failed", flow=frame.flow)
            return
        if inspect.isawaitable(answer):
            self.spawn(self._dns_reply_later(tunnel, frame, answer), f"proxy-dns {frame.flow}")
        else:
            self._dns_reply(tunnel, frame, answer)

    async def _dns_reply_later(self, tunnel: Tunnel, frame: Dgram,
                               answer: Awaitable[bytes | None]) -> None:
        try:
            reply = await answer
        except Exception:
            self.log.exception("proxy.dns_failed", flow=frame.flow)
            return
        self._dns_reply(tunnel, frame, reply)

    @staticmethod
    def _dns_reply(tunnel: Tunnel, frame: Dgram, reply: bytes | None) -> None:
        if reply is not None and tunnel.closed is None \
                and tunnel.session.datagram(frame.dst, frame.src, frame.flow, reply):
            tunnel.kick()


class _DnsStream:
    """DNS over TCP (RFC 7766 framing: 2-byte length, message) answered by the DNS engine;
    the local end of a client's stream to kube-dns:53. Queries are answered in order; at most
    `MAX_DNS_TCP_BUFFER` bytes are taken from the tunnel while answers cannot be written."""

    def __init__(self, proxy: ClusterIPProxy, end: TunnelEnd, dns: DnsHandler) -> None:
        self.proxy = proxy
        self.end = end
        self.dns = dns
        self.buf = bytearray()
        self.eof = False
        self.gone = False
        self.writable = asyncio.Event()
        self.kick = asyncio.Event()
        self.task = proxy.spawn(self._serve(), f"proxy-dns-tcp {end.flow}")

    def ready(self) -> bool:
        return not self.gone and len(self.buf) < MAX_DNS_TCP_BUFFER

    def deliver(self, data: bytes) -> None:
        self.buf += data
        self.kick.set()

    def deliver_eof(self) -> None:
        self.eof = True
        self.kick.set()

    def hang_up(self, exc: Exception | None) -> None:
        self.gone = True
        self.task.cancel()

    def wake(self) -> None:
        self.writable.set()

    async def _serve(self) -> None:
        try:
            while not self.gone:
                while len(self.buf) >= 2 \
                        and len(self.buf) >= 2 + (size := int.from_bytes(self.buf[:2], "big")):
                    query = bytes(self.buf[2:2 + size])
                    del self.buf[:2 + size]
                    self.end.wake()         # room again for what waits in the tunnel
                    answer = self.dns(query, "tcp")
                    reply = await answer if inspect.isawaitable(answer) else answer
                    if reply is None:
                        continue
                    while not self.end.ready() and not self.gone:
                        self.writable.clear()
                        await self.writable.wait()
                    self.end.deliver(len(reply).to_bytes(2, "big") + reply)
                if self.eof:
                    self.end.deliver_eof()  # the client is done asking: close, as servers do
                    return
                self.kick.clear()
                await self.kick.wait()
        except asyncio.CancelledError:
            raise
        except Exception:   # a DNS engine bug resets this connection, nothing more
            self.proxy.log.exception("proxy.dns_failed", flow=self.end.flow)
            self.gone = True
            self.end.hang_up(reset())


def _where(src: tuple[str, int], dst: tuple[str, int]) -> dict[str, str]:
    return {"src": _fmt(src), "dst": _fmt(dst)}


def _service(choice: Choice) -> dict[str, Any]:
    if choice.service is None:
        return {"service": None}
    return {"service": choice.service.key,
            "port": choice.port.name or choice.port.port if choice.port else None}


async def serve_tunnels(proxy: ClusterIPProxy, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve the proxy's `/tunnel` endpoint (and nothing else) over plain HTTP on host:port;
    returns the runner and the "host:port" agents dial. Plain HTTP because the tunnel handshake
    under the cluster secret is what authenticates a peer; everything else gets 404/400."""
    app = web.Application()
    proxy.add_routes(app)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as e:
        await runner.cleanup()
        raise SettingsError(f"--tunnel-port: cannot listen on {host}:{port}: {e.strerror}") \
            from None
    bound = runner.addresses[0]
    address = f"{host}:{bound[1]}"
    proxy.log.info("proxy.listening", address=address)
    return runner, address
