"""The agent's tunnels: pod traffic to other nodes (and to the control plane's ClusterIP proxy).

`TunnelManager` is the node network's `RemoteDelivery`: a connect to a pod on another node
looks the destination up in the route table and goes through the tunnel to that node's agent
(the transport, `podnet.tunnelnet.TunnelPeer`: one WebSocket per peer, dialed lazily; the
protocol is `podnet.tunnel`). A Service IP goes where `service_route` says (the control plane).
Inbound streams and datagrams are handed to this node's pods.

Failures are the kernel's: no route (or a dead one) -> EHOSTUNREACH at once; a peer agent that
cannot be dialed -> EHOSTUNREACH; nobody listening -> ECONNREFUSED; a route withdrawn or a
WebSocket lost -> every stream through it is reset. A node that comes back is dialed again on
the next connect.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
from collections.abc import Callable, Sequence

import aiohttp

from agents.cni.routes import DEAD, Route, RouteTable
from agents.netstack import (
    DROP_TIMEOUT_S,
    Address,
    IPNetwork,
    NodeNetwork,
    PolicyDropped,
    StreamPeer,
    unreachable,
)
from podnet.addresses import address as _fmt
from podnet.tunnel import WINDOW, Dgram, Open
from podnet.tunnelnet import (
    CONTROLPLANE,
    HEARTBEAT_S,
    MAX_WS_MESSAGE,
    Tunnel,
    TunnelEnd,
    TunnelPeer,
    TunnelStream,
    errname,
)

__all__ = ["MAX_WS_MESSAGE", "SERVICE_CIDR", "ServiceRoute", "TunnelManager", "TunnelStream"]

SERVICE_CIDR = "10.96.0.0/12"

# A route for a destination in the Service CIDR (to the control plane's ClusterIP proxy);
# None -> EHOSTUNREACH.
ServiceRoute = Callable[[str], Route | None]


class TunnelManager(TunnelPeer):
    """This node's tunnels to every other node: the `RemoteDelivery` of its `NodeNetwork`."""

    def __init__(self, node: str, secret: bytes, routes: RouteTable, network: NodeNetwork, *,
                 session: aiohttp.ClientSession | None = None, window: int = WINDOW,
                 connect_timeout_s: float = 3.0, handshake_timeout_s: float = 5.0,
                 heartbeat_s: float | None = HEARTBEAT_S,
                 service_route: ServiceRoute | None = None,
                 service_cidr: str = SERVICE_CIDR, service_cidrs: Sequence[str] = ()) -> None:
        super().__init__(node, secret, session=session, window=window,
                         connect_timeout_s=connect_timeout_s,
                         handshake_timeout_s=handshake_timeout_s, heartbeat_s=heartbeat_s)
        self.routes = routes
        self.network = network
        self.service_cidr = ipaddress.ip_network(service_cidr)
        # Dual-stack: the IPv6 service CIDR, checked only for IPv6 destinations.
        self.service_cidr6 = next(
            (n for n in map(ipaddress.ip_network, [service_cidr, *service_cidrs])
             if isinstance(n, ipaddress.IPv6Network)), None)
        # The hook for Service IPs: without it they are unreachable like any off-cluster IP.
        self.service_route = service_route
        # Peers reached through `service_route` (not in the route table) and their addresses,
        # so a dial to one of them is recognised as still wanted when it completes.
        self._service_peers: dict[str, str] = {}
        # OPENs a NetworkPolicy dropped: left unanswered like a dropped SYN, and failed with
        # ETIMEDOUT after DROP_TIMEOUT_S so nothing waits on them for ever (an opener that
        # gives up first resets the stream, and the late answer is then a no-op).
        self._dropped: set[asyncio.TimerHandle] = set()
        routes.on_change(self._on_route_change)
        network.remote = self

    async def close(self) -> None:
        for handle in self._dropped:
            handle.cancel()
        self._dropped.clear()
        await super().close()
        if self.network.remote is self:
            self.network.remote = None

    # -- routing

    def has_route(self, ip: str) -> bool:
        """`RemoteRoutes`: a route toward `ip` (a pod on another node or a Service) now."""
        return self._route(ip) is not None

    def _route(self, ip: str) -> Route | None:
        try:
            addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(ip)
        except ValueError:
            try:
                addr = ipaddress.IPv6Address(ip)
            except ValueError:
                return None
            return self._route_in(ip, addr, self.network.cluster_cidr6, self.service_cidr6)
        return self._route_in(ip, addr, self.network.cluster_cidr, self.service_cidr)

    def _route_in(self, ip: str, addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
                  cluster: IPNetwork | None, service: IPNetwork | None) -> Route | None:
        """The route toward `addr` given its family's cluster and service ranges: a pod on
        another node (gossiped routes) or a ClusterIP (the proxy's route)."""
        if cluster is not None and addr in cluster:
            route = self.routes.lookup(ip)
        elif service is not None and addr in service and self.service_route is not None:
            route = self.service_route(ip)
            if route is not None:
                self._service_peers[route.node] = route.address
        else:
            route = None
        if route is None or route.node == self.node:
            return None
        return route

    def dial_wanted(self, peer: str, address: str) -> bool:
        if self._service_peers.get(peer) == address:
            return True
        current = self.routes.get(peer)
        return current is not None and current.usable and current.address == address

    def _on_route_change(self, old: Route | None, new: Route | None) -> None:
        if old is None:
            return
        if new is None:
            reason = "route removed"
        elif new.state == DEAD:
            reason = "route dead"
        elif new.address != old.address:
            reason = "peer address changed"     # restarted elsewhere: this socket is stale
        else:
            return          # alive <-> suspect, version bumps: traffic keeps flowing
        self.fail_peer(old.node, reason)

    # -- inbound: hand traffic to this node's pods

    def on_open(self, tunnel: Tunnel, frame: Open) -> None:
        end = tunnel.new_end(frame)
        where = {"flow": frame.flow, "peer": tunnel.peer, "src": _fmt(frame.src),
                 "dst": _fmt(frame.dst)}
        try:
            # Through the control plane's ClusterIP proxy: the source agent did not know the
            # endpoint, so the client's egress is judged here, against the real one.
            local = self.network.accept_stream(frame.src, frame.dst, end, frame.flow,
                                               judge_egress=tunnel.peer == CONTROLPLANE)
        except PolicyDropped:
            self._drop_open(tunnel, frame.sid)
            self.log.info("tunnel.stream_in", **where, verdict="dropped")
            return
        except OSError as exc:
            err = exc.errno or errno.ECONNREFUSED
            tunnel.refuse(frame.sid, err)
            self.log.info("tunnel.stream_in", **where, verdict=errname(err))
            return
        tunnel.accept(end, local)
        self.log.info("tunnel.stream_in", **where, verdict="accepted")

    def _drop_open(self, tunnel: Tunnel, sid: int) -> None:
        def expire() -> None:
            self._dropped.discard(handle)
            if tunnel.closed is None:
                tunnel.refuse(sid, errno.ETIMEDOUT)

        handle = asyncio.get_running_loop().call_later(DROP_TIMEOUT_S, expire)
        self._dropped.add(handle)

    def on_datagram(self, tunnel: Tunnel, frame: Dgram) -> None:
        try:
            self.network.deliver_datagram(frame.src, frame.dst, frame.data, frame.flow)
        except OSError:
            pass        # no socket there: UDP drops it (ICMP errors are not emulated yet)

    def answers_echo(self, ip: str) -> bool:
        return self.network.pod(ip) is not None

    # -- RemoteDelivery

    async def open_stream(self, src: Address, dst: Address, local: StreamPeer,
                          flow: str | None = None) -> StreamPeer:
        flow = flow or self.new_flow()
        where = {"flow": flow, "src": _fmt(src), "dst": _fmt(dst)}
        route = self._route(dst[0])
        if route is None:
            self.log.info("flow.route", **where, proto="tcp", route="none",
                          verdict="EHOSTUNREACH", reason="no route")
            raise unreachable()
        # The routing decision, once per flow: which route (podCIDR or Service) and node.
        self.log.info("flow.route", **where, proto="tcp", route=route.pod_cidr, to_node=route.node,
                      address=route.address, state=route.state, verdict="tunnel")
        try:
            tunnel = await self.tunnel_to(route.node, route.address)
        except OSError:
            self.log.info("tunnel.stream_out", **where, peer=route.node, verdict="EHOSTUNREACH",
                          reason="peer agent unreachable")
            raise
        try:
            end: TunnelEnd = await self.open_via(tunnel, src, dst, local, flow)
        except OSError as exc:
            self.log.info("tunnel.stream_out", **where, peer=route.node,
                          verdict=errname(exc.errno))
            raise
        self.log.info("tunnel.stream_out", **where, peer=route.node, verdict="connected")
        return end

    def send_datagram(self, src: Address, dst: Address, data: bytes,
                      flow: str | None = None) -> None:
        route = self._route(dst[0])
        if route is None:
            raise unreachable()
        self.datagram_to(route.node, route.address, src, dst, data, flow)

    async def ping(self, src: str, dst: str, ident: int, seq: int, payload: bytes) -> None:
        """Send an echo request from pod `src` to `dst`; returns when the reply arrives."""
        route = self._route(dst)
        if route is None:
            raise unreachable()
        await self.ping_via(route.node, route.address, src, dst, ident, seq, payload)
