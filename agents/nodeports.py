"""NodePort Services: real listeners on the node's own address, forwarded into the emulated
network (what kube-proxy's NodePort rules do on every node).

The agent follows every Service and EndpointSlice (two `Informer`s) into the same `ServiceMap`
the control plane's ClusterIP proxy uses, and keeps one real TCP listener per NodePort on its
listen host (the host of its Node's InternalIP). An accepted connection gets an endpoint from
the map's choice (round robin, ClientIP affinity on the real client's address) and is joined
to it: straight into the pod's stack when the endpoint is on this node, through the tunnel to
its node otherwise. The host socket and the pod end are each other's `StreamPeer`, so the
pod's flow control reaches the real socket and back.

`externalTrafficPolicy: Cluster` (the default): any ready endpoint on any node, and the
source is translated to this node's gateway address (the first address of its podCIDR, the
address a CNI bridge such as cni0 holds), as kube-proxy masquerades NodePort traffic: the
backend sees e.g. 10.244.1.1:40123, never the outside client. `Local`: only endpoints on this
node, and the source is kept, so the backend sees the real client (127.0.0.1:54321 from this
machine); a node with no local endpoint drops the connection.

A TCP NodePort listens only while the Service has an endpoint this node may use; otherwise
its socket stays bound but not listening, so the port stays this node's and the kernel
refuses a connect, as kube-proxy's REJECT rule does for a Service without endpoints
(`nodeport.refusing` says why: `no ready endpoints`, or `no local endpoints` for Local, where
kube-proxy would drop instead). A connection accepted just as its last endpoint went away is
reset, and the flow log says why. A deleted Service's port is closed altogether.

UDP NodePorts get a real UDP socket; each client address is a flow (`UdpFlows`, the proxy's
conntrack: 30 s idle) sent from this node's gateway and a port of its own, whatever the
policy, since the endpoint's answer must come back through this node (`NodeNetwork` hands
datagrams for the gateway to `host_datagram`) to be returned from the NodePort. So for UDP,
Local still only uses local endpoints but the backend sees the gateway, not the client.

A LoadBalancer Service with `externalTrafficPolicy: Local` also has a `healthCheckNodePort`;
like kube-proxy, every node answers HTTP there: 200 while it has a ready local endpoint of
the Service, 503 otherwise, with `{"service": ..., "localEndpoints": N}`.

Several agents on one host (`podnet up`: every agent listens on 127.0.0.1) cannot all listen
on the same port: the first one to listen serves it, and the others log `nodeport.shared` and
try again every few seconds, so if that agent stops, or stops listening (for Local: it has no
endpoint of its own), another takes the port over.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
import struct
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import structlog
from aiohttp import web, web_request

from agents.netstack import Address, NodeNetwork, PolicyDropped, StreamPeer, dropped
from podnet.addresses import address as _fmt
from podnet.addresses import hostport
from podnet.client import ApiClient
from podnet.informer import Informer
from podnet.resources import BY_KIND
from podnet.services.servicemap import (
    EPHEMERAL,
    Choice,
    Endpoint,
    Service,
    ServiceMap,
    UdpFlow,
    UdpFlows,
)
from podnet.tunnelnet import errname, reset

if TYPE_CHECKING:
    from agents.tunnels import TunnelManager

SERVICES, SLICES = BY_KIND["Service"], BY_KIND["EndpointSlice"]
RETRY_SHARED_S = 5.0        # how often a port held by a co-located agent is tried again
COALESCE_S = 0.01           # a burst of Service/slice events becomes one reconcile

PortKey = tuple[int, str]   # (nodePort, protocol); protocol HEALTH: a health check port
HEALTH = "HEALTH"


class HostStream(asyncio.Protocol):
    """One accepted connection on a NodePort: the real socket's protocol, and the
    `StreamPeer` the pod end (a local stack's transport or a tunnel's stand-in) talks to."""

    def __init__(self, owner: NodePorts, key: PortKey) -> None:
        self.owner = owner
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer: StreamPeer | None = None
        self.client: Address = ("", 0)
        self.flow = ""
        self.inbox: deque[bytes] = deque()      # from the client, waiting for the pod end
        self.eof_in = False                     # the client half-closed
        self.eof_in_sent = False
        self.eof_out = False                    # the pod end half-closed
        self.writing_paused = False
        self.closed = False
        self.flush_scheduled = False
        self.snat_port: int | None = None
        self.sent = self.received = 0
        self.started = time.monotonic()
        self.logged = False                     # a connected flow logs flow.closed

    # -- asyncio.Protocol: the real socket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is no asyncio.Transport subclass, but has its methods.
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("?", 0)
        self.flow = self.owner.network.new_flow()
        # Logged first, so `podnet logs --flow` heads the trace with the outside client.
        self.owner.log.info("nodeport.accepted", flow=self.flow, src=_fmt(self.client),
                            dst=self.owner.where(self.key), proto="tcp")
        self.owner.spawn(self.owner.connect(self), f"nodeport {self.flow}")

    def data_received(self, data: bytes) -> None:
        self.sent += len(data)
        peer = self.peer
        if peer is not None and not self.inbox and peer.ready():
            peer.deliver(data)
            return
        self.inbox.append(data)
        if self.transport is not None:
            self.transport.pause_reading()      # one chunk held at most: backpressure

    def eof_received(self) -> bool:
        self.eof_in = True
        self._schedule_flush()
        return True     # keep the socket open: the pod may still answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.hang_up(reset() if exc is not None or self.inbox else None)
        self.owner.release(self)
        if self.logged:
            self.owner.log.info("flow.closed", flow=self.flow, src=_fmt(self.client),
                                dst=self.owner.where(self.key), proto="tcp",
                                verdict="reset" if exc is not None else "closed",
                                bytes_sent=self.sent, bytes_received=self.received,
                                duration_s=round(time.monotonic() - self.started, 6))

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.peer is not None:
            self.peer.wake()

    # -- StreamPeer: the pod end calls these

    def ready(self) -> bool:
        return not self.closed and not self.writing_paused and self.transport is not None \
            and not self.transport.is_closing()

    def deliver(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.received += len(data)
            self.transport.write(data)

    def deliver_eof(self) -> None:
        self.eof_out = True
        if self.transport is None or self.closed:
            return
        if self.eof_in_sent:
            self.transport.close()      # both directions are done
        elif self.transport.can_write_eof():
            self.transport.write_eof()

    def hang_up(self, exc: Exception | None) -> None:
        self.peer = None
        if exc is not None:
            self.abort()
        elif self.transport is not None:
            self.transport.close()      # what was written goes first, then FIN

    def wake(self) -> None:
        self._schedule_flush()

    # -- internals

    def attach(self, peer: StreamPeer) -> None:
        self.peer = peer
        self._schedule_flush()
        peer.wake()     # it may hold data back until we were connected

    def abort(self) -> None:
        """Close with a TCP reset (SO_LINGER 0), as a kernel answers a dead connection."""
        transport = self.transport
        if transport is None or self.closed:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def _schedule_flush(self) -> None:
        # Deferred: the pod end calls wake() from inside its own resume_reading().
        if not self.flush_scheduled and not self.closed:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        peer = self.peer
        if peer is None or self.closed or self.transport is None:
            return
        while self.inbox and peer.ready():
            peer.deliver(self.inbox.popleft())
            if self.peer is None:
                return
        if self.inbox:
            return          # wake() brings us back
        if self.eof_in and not self.eof_in_sent:
            self.eof_in_sent = True
            peer.deliver_eof()
            if self.eof_out and self.transport is not None:
                self.transport.close()
            return
        if not self.eof_in:
            self.transport.resume_reading()


class TcpNodePort:
    """One TCP NodePort on this node. While the Service has an endpoint this node may use it
    listens; otherwise the socket stays bound but not listening, so the port stays ours and
    the kernel refuses a connect (RST), as kube-proxy's REJECT rule makes a Service without
    endpoints refuse."""

    def __init__(self, owner: NodePorts, key: PortKey) -> None:
        self.owner = owner
        self.key = key
        self.sock: socket.socket | None = self._bind()
        self.server: asyncio.AbstractServer | None = None
        self.announced: bool | None = None      # the serving state last logged
        self.refusal = ""                       # and, while refusing, the reason logged

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(False)
            sock.bind((self.owner.host, self.key[0]))
        except BaseException:
            sock.close()
            raise
        return sock

    @property
    def serving(self) -> bool:
        return self.server is not None

    async def serve(self, on: bool) -> None:
        """Listen (on) or only hold the port (off). Raises OSError when the port could not be
        bound again after listening stopped (another program took it in between)."""
        if on and self.server is None:
            sock = self.sock if self.sock is not None else self._bind()
            self.sock = None
            try:
                sock.listen(socket.SOMAXCONN)
                loop = asyncio.get_running_loop()
                self.server = await loop.create_server(
                    lambda: HostStream(self.owner, self.key), sock=sock)
            except BaseException:
                sock.close()
                raise
        elif not on and self.server is not None:
            self.server.close()     # connections already made carry on
            self.server = None
            self.sock = self._bind()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class UdpNodePort(asyncio.DatagramProtocol):
    """The real UDP socket of one NodePort: datagrams in go to `NodePorts.udp_in`."""

    def __init__(self, owner: NodePorts, key: PortKey) -> None:
        self.owner = owner
        self.key = key
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if isinstance(addr, tuple) and len(addr) >= 2:
            self.owner.udp_in(self, data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        pass        # an ICMP error for an earlier reply: nothing to do, as for any UDP server

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class NodePorts:
    """This node's NodePort listeners, kept in step with the cluster's Services."""

    def __init__(self, api: ApiClient, node: str, host: str, pod_cidr: str,
                 network: NodeNetwork, tunnels: TunnelManager, *,
                 retry_shared_s: float = RETRY_SHARED_S) -> None:
        self.node = node
        self.host = host
        self.pod_cidr = ipaddress.ip_network(pod_cidr)
        # The node's side of the pod network (a bridge's address): the masquerade source.
        self.gateway = str(self.pod_cidr.network_address + 1)
        self.network = network
        self.tunnels = tunnels
        self.retry_shared_s = retry_shared_s
        self.map = ServiceMap()
        self.kick = asyncio.Event()
        self.log = structlog.get_logger().bind(component="nodeport", node=node)
        self.services = Informer(api, SERVICES, on_list=self._changed_list,
                                 on_event=self._changed)
        self.slices = Informer(api, SLICES, on_list=self._changed_list, on_event=self._changed)
        # TCP: asyncio servers; UDP: `UdpNodePort`s; health checks: aiohttp runners.
        self.listeners: dict[PortKey, Any] = {}
        self.udp = UdpFlows()
        network.host_datagrams = self.host_datagram
        self.shared: dict[PortKey, str] = {}        # ports this host's other agent serves
        self._tasks: set[asyncio.Task[Any]] = set()
        self._snat_used: set[int] = set()
        self._snat_next = EPHEMERAL[0]

    # -- following the cluster

    async def _changed_list(self, items: list[dict[str, Any]]) -> None:
        self.kick.set()

    async def _changed(self, kind: str, obj: dict[str, Any]) -> None:
        self.kick.set()

    async def run(self) -> None:
        feeds = [asyncio.create_task(self.services.run(), name="nodeport-services"),
                 asyncio.create_task(self.slices.run(), name="nodeport-slices")]
        try:
            await self.services.synced.wait()
            while True:
                with contextlib.suppress(TimeoutError):
                    timeout = self.retry_shared_s if self.shared else None
                    await asyncio.wait_for(self.kick.wait(), timeout)
                await asyncio.sleep(COALESCE_S)
                self.kick.clear()
                try:
                    await self.reconcile()
                except Exception:   # logged; the next change tries again
                    self.log.exception("nodeport.reconcile_failed")
        finally:
            for task in feeds:
                task.cancel()
            await asyncio.gather(*feeds, return_exceptions=True)
            await self.close()

    async def close(self) -> None:
        for key in list(self.listeners):
            await self._close_listener(key, "agent stopping")
        if self.network.host_datagrams == self.host_datagram:
            self.network.host_datagrams = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def reconcile(self) -> None:
        self.map.rebuild(self.services.items.values(), self.slices.items.values())
        wanted = {key: svc for key, (svc, _) in self.map.node_ports().items()
                  if key[1] in ("TCP", "UDP")}
        for svc in self.map.services():
            if svc.health_check_node_port is not None:
                wanted.setdefault((svc.health_check_node_port, HEALTH), svc)
        for key in [k for k in self.listeners if k not in wanted]:
            await self._close_listener(key, "service gone")
        self.shared = {k: v for k, v in self.shared.items() if k in wanted}
        for key, svc in wanted.items():
            if key not in self.listeners:
                await self._open_listener(key, svc)
            port = self.listeners.get(key)
            if isinstance(port, TcpNodePort):
                await self._serve_tcp(port, svc)

    async def _serve_tcp(self, port: TcpNodePort, svc: Service) -> None:
        found = self.map.node_port(*port.key)
        ready = self.map.ready_endpoints(*found) if found is not None else []
        usable = [e for e in ready if self.is_local(e)] if svc.external_local else ready
        refusal = "" if usable else "no local endpoints" if ready else "no ready endpoints"
        if port.announced is bool(usable) and port.refusal == refusal:
            return      # no change (a new reason to refuse is news: it is logged)
        where = {"service": svc.key, "address": self.where(port.key), "proto": "tcp"}
        try:
            await port.serve(bool(usable))
        except OSError as exc:
            # EADDRINUSE: an agent on the same host listens on it already (sockets that only
            # hold a port can share it; only one may listen): that one serves it.
            self.listeners.pop(port.key, None)
            port.close()
            self._not_bound(port.key, svc.key, exc)
            return
        port.announced, port.refusal = bool(usable), refusal
        if usable:
            self.log.info("nodeport.listening", **where, endpoints=len(usable))
        else:
            self.log.info("nodeport.refusing", **where, reason=refusal)

    async def _listen(self, key: PortKey, svc: Service) -> Any:
        loop = asyncio.get_running_loop()
        if key[1] == "UDP":
            _, protocol = await loop.create_datagram_endpoint(
                lambda: UdpNodePort(self, key), local_addr=(self.host, key[0]))
            return protocol
        if key[1] == HEALTH:
            runner = web.ServerRunner(web.Server(self._health_handler(svc.namespace,
                                                                      svc.name)),
                                      access_log=None)
            await runner.setup()
            try:
                await web.TCPSite(runner, self.host, key[0], reuse_address=True).start()
            except BaseException:
                await runner.cleanup()
                raise
            return runner
        return TcpNodePort(self, key)   # bound; reconcile decides whether it listens

    async def _open_listener(self, key: PortKey, svc: Service) -> None:
        service = svc.key
        try:
            server = await self._listen(key, svc)
        except OSError as exc:
            self._not_bound(key, service, exc)
            return
        if self.shared.pop(key, None) is not None:
            self.log.info("nodeport.taken_over", service=service, address=self.where(key))
        self.listeners[key] = server
        if key[1] != "TCP":     # a TCP port says whether it listens once reconcile decides
            self.log.info("nodeport.listening", service=service, address=self.where(key),
                          proto="http health check" if key[1] == HEALTH else key[1].lower())

    def _not_bound(self, key: PortKey, service: str, exc: OSError) -> None:
        if exc.errno == errno.EADDRINUSE:
            if key not in self.shared:
                self.log.info("nodeport.shared", service=service, address=self.where(key),
                              reason="port in use on this host: an agent sharing the host "
                                     "serves it (or another program holds it)")
            self.shared[key] = service      # tried again every retry_shared_s
        else:
            self.log.warning("nodeport.bind_failed", service=service, address=self.where(key),
                             error=exc.strerror or str(exc))

    async def _close_listener(self, key: PortKey, reason: str) -> None:
        server = self.listeners.pop(key, None)
        if server is None:
            return
        if isinstance(server, web.BaseRunner):
            await server.cleanup()
        else:
            server.close()
        self.log.info("nodeport.closed", address=self.where(key), reason=reason,
                      proto="http health check" if key[1] == HEALTH else key[1].lower())

    def where(self, key: PortKey) -> str:
        return hostport(self.host, key[0])

    def spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one connection

    def is_local(self, endpoint: Endpoint) -> bool:
        if endpoint.node is not None:
            return endpoint.node == self.node
        return ipaddress.ip_address(endpoint.ip) in self.pod_cidr

    def _snat(self) -> int:
        low, high = EPHEMERAL
        for _ in range(high - low + 1):
            port = self._snat_next
            self._snat_next = low if port >= high else port + 1
            if port not in self._snat_used:
                self._snat_used.add(port)
                return port
        raise OSError(errno.EADDRNOTAVAIL, "no free source port to masquerade with")

    def release(self, stream: HostStream) -> None:
        if stream.snat_port is not None:
            self._snat_used.discard(stream.snat_port)
            stream.snat_port = None

    async def connect(self, stream: HostStream) -> None:
        where = {"flow": stream.flow, "src": _fmt(stream.client), "dst": self.where(stream.key),
                 "proto": "tcp", "node_port": stream.key[0]}
        try:
            await self._connect(stream, where)
        except Exception:   # one connection's bug must not take the listener down
            self.log.exception("nodeport.connection_failed", **where)
            stream.abort()

    async def _connect(self, stream: HostStream, where: dict[str, Any]) -> None:
        tried: list[str] = []
        failed: list[Address] = []
        while True:
            choice = self.map.choose_node_port(stream.key[0], stream.key[1], stream.client[0],
                                               failed, self.is_local)
            endpoint = choice.endpoint
            if endpoint is None or stream.closed:
                stream.abort()
                self.log.info("proxy.connection", **where, **_service(choice), tried=tried or None,
                              reason="client gone" if stream.closed else choice.reason,
                              verdict="client gone" if stream.closed else "reset")
                return
            assert choice.service is not None
            policy = "Local" if choice.service.external_local else "Cluster"
            if policy == "Local":
                src = stream.client     # the source is kept
            else:
                self.release(stream)
                stream.snat_port = self._snat()
                src = (self.gateway, stream.snat_port)
            try:
                peer = await self._open(src, endpoint, stream)
            except OSError as exc:
                failed.append(endpoint.address)
                tried.append(f"{hostport(endpoint.ip, endpoint.port)} {errname(exc.errno)}")
                continue
            break
        if stream.closed:
            peer.hang_up(reset())   # the client gave up while we were connecting
            self.release(stream)
            return
        stream.attach(peer)
        stream.logged = True
        self.log.info("proxy.connection", **where, **_service(choice), policy=policy,
                      snat=_fmt(src) if policy == "Cluster" else None,
                      endpoint=_fmt(endpoint.address), pod=endpoint.pod,
                      endpoint_node=endpoint.node, reason="retry" if tried else choice.reason,
                      tried=tried or None, ready=choice.ready, verdict="connected")

    async def _open(self, src: Address, endpoint: Endpoint, stream: HostStream) -> StreamPeer:
        dst = endpoint.address
        if self.network.is_local(dst[0]):
            self.log.info("flow.route", flow=stream.flow, src=_fmt(src), dst=_fmt(dst),
                          proto="tcp", route="node-local", verdict="local")
            try:
                return self.network.accept_stream(src, dst, stream, stream.flow)
            except PolicyDropped:
                await dropped()     # a NetworkPolicy dropped it: the client's timeout fires
        return await self.tunnels.open_stream(src, dst, stream, stream.flow)

    # -- the health check port (LoadBalancer + Local), as kube-proxy serves it

    def _health_handler(self, namespace: str, name: str) -> Any:
        """A cloud load balancer probes every node here and sends traffic only to nodes
        that answer 200: those with a ready endpoint of the Service (503 otherwise)."""

        async def handle(request: web_request.BaseRequest) -> web.StreamResponse:
            local = self.local_endpoints(namespace, name)
            body = {"service": {"namespace": namespace, "name": name},
                    "localEndpoints": local, "serviceProxyHealthy": True}
            return web.json_response(body, status=200 if local else 503,
                                     headers={"X-Content-Type-Options": "nosniff",
                                              "X-Load-Balancing-Endpoints": str(local)})

        return handle

    def local_endpoints(self, namespace: str, name: str) -> int:
        svc = next((s for s in self.map.services()
                    if s.namespace == namespace and s.name == name), None)
        if svc is None:
            return 0
        found = {e.address for port in svc.ports
                 for e in self.map.ready_endpoints(svc, port) if self.is_local(e)}
        return len({ip for ip, _ in found})

    # -- UDP: one flow per client address, translated to this node's gateway

    def udp_in(self, listener: UdpNodePort, data: bytes, client: Address) -> None:
        """A datagram from outside to a UDP NodePort. Its flow's source is this node's
        gateway and a port of its own, whatever the policy: the endpoint's reply has to come
        back here to be returned (an outside address is not routable in the emulated
        network), so for UDP even Local cannot keep the client's address."""
        key = listener.key
        service = (self.gateway, key[0])
        flow = self.udp.outbound(client, service)
        if flow is not None and not self._still_ready(key, flow):
            self.udp.drop(client, service)      # its endpoint left: like a conntrack flush
            flow = None
        if flow is None:
            flow = self._new_udp_flow(listener, client, service)
            if flow is None:
                return
        flow.via = (listener, flow.via[1])
        src, dst, flow_id = flow.proxy, flow.endpoint.address, flow.via[1]
        try:
            if self.network.is_local(dst[0]):
                self.network.deliver_datagram(src, dst, data)
            else:
                self.tunnels.send_datagram(src, dst, data, flow_id)
        except OSError:
            pass        # no socket there, or no route: UDP drops it

    def _new_udp_flow(self, listener: UdpNodePort, client: Address,
                      service: Address) -> UdpFlow | None:
        key = listener.key
        flow_id = self.network.new_flow()
        choice = self.map.choose_node_port(key[0], "UDP", client[0], (), self.is_local)
        where = {"flow": flow_id, "src": _fmt(client), "dst": self.where(key), "proto": "udp",
                 "node_port": key[0], **_service(choice)}
        if choice.endpoint is None:
            # Dropped, as UDP to nowhere is; debug, so a flood of them is not a log flood.
            self.log.debug("proxy.udp_flow", **where, reason=choice.reason, verdict="dropped")
            return None
        flow = self.udp.add(client, service, choice.endpoint, via=(listener, flow_id))
        if flow is None:
            self.log.warning("proxy.udp_flow", **where, reason="no free source port",
                             verdict="dropped")
            return None
        assert choice.service is not None
        self.log.info("proxy.udp_flow", **where, endpoint=_fmt(choice.endpoint.address),
                      pod=choice.endpoint.pod, endpoint_node=choice.endpoint.node,
                      policy="Local" if choice.service.external_local else "Cluster",
                      snat=_fmt(flow.proxy), reason=choice.reason, verdict="forwarded")
        return flow

    def _still_ready(self, key: PortKey, flow: UdpFlow) -> bool:
        found = self.map.node_port(key[0], "UDP")
        return found is not None and flow.endpoint in self.map.ready_endpoints(*found)

    def host_datagram(self, src: Address, dst: Address, data: bytes) -> None:
        """A datagram to this node's gateway: an endpoint answering a translated flow is
        returned to the outside client from the NodePort; anything else is dropped."""
        flow = self.udp.reply(src, dst)
        if flow is None:
            return
        listener: UdpNodePort = flow.via[0]
        if listener.transport is not None and not listener.transport.is_closing():
            listener.transport.sendto(data, flow.client)


def _service(choice: Choice) -> dict[str, Any]:
    if choice.service is None:
        return {"service": None}
    return {"service": choice.service.key,
            "port": choice.port.name or choice.port.port if choice.port else None}
