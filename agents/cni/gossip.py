"""The gossip adapter: runs `Membership` between agents over HTTP (aiohttp).

Each agent serves `POST /gossip/v1/<type>` on its own HTTP port (the agent app skips bearer
auth under /gossip/: every frame carries its own HMAC, see `podnet/gossipwire.py`) and runs
three named tasks that it owns:

- `gossip:<node>`: every gossip interval, queued changes go to `fanout` random peers
  (`updates`; nothing is sent when nothing changed);
- `probe:<node>`: every probe interval, one member is pinged, then pinged through
  `indirect_probes` helpers (`ping-req`), then suspected;
- `anti-entropy:<node>`: joins through the seeds, then every push-pull interval exchanges
  digests with one random peer, every reconnect interval offers one to a dead member or a
  seed, and keeps `peers_file` up to date so a restarted agent can rejoin from any live peer
  with the control plane down.

Failures to reach a peer are normal here (that is what the protocol detects) and are logged
at debug; state changes at info; every rejected frame at warning with its reason, at most
once per reason per `REJECT_LOG_INTERVAL_S` (the rest are counted), so a flood of garbage
cannot flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from agents.cni.membership import GossipSettings, Member, Membership, Outgoing, Probe
from agents.cni.routes import Route, RouteTable
from podnet.auth import derive_key
from podnet.gossipwire import (
    MAX_FRAME_BYTES,
    REQUEST_TYPES,
    TOO_LARGE,
    TYPE_OF,
    Ack,
    Envelope,
    GossipError,
    Message,
    Nack,
    Ping,
    PingReq,
    Push,
    PushPull,
    PushPullReply,
    Updates,
    Verifier,
    seal,
    valid_address,
)

__all__ = ["GossipService", "GossipSettings", "Member"]

log = structlog.get_logger()
REJECT_LOG_INTERVAL_S = 10.0
MAX_IN_FLIGHT = 64          # sends not awaited by their round (updates, pushes)
PATH = "/gossip/v1/"


async def _read_limited(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole body, or None once it exceeds `limit` (never buffering more than that)."""
    buf = bytearray()
    while chunk := await stream.read(65536):
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


class _RejectLog:
    """One warning per reason per interval; the ones in between are counted, not logged."""

    def __init__(self, node: str, interval_s: float) -> None:
        self.node = node
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, err: GossipError, **fields: Any) -> None:
        now = time.monotonic()
        last = self._last.get(err.reason)
        if last is not None and now - last < self.interval_s:
            self._suppressed[err.reason] = self._suppressed.get(err.reason, 0) + 1
            return
        self._last[err.reason] = now
        log.warning("gossip.rejected", component="gossip", node=self.node, reason=err.reason,
                    detail=err.detail, suppressed=self._suppressed.pop(err.reason, 0), **fields)


class GossipService:
    """Membership and route distribution for one agent (an async context manager)."""

    def __init__(self, node: str, pod_cidr: str, address: str, secret: bytes,
                 routes: RouteTable, settings: GossipSettings, *, seeds: Iterable[str] = (),
                 peers_file: Path | None = None,
                 session: aiohttp.ClientSession | None = None,
                 pod_cidrs: tuple[str, ...] = ()) -> None:
        settings.check()
        if not valid_address(address):
            raise ValueError(f"gossip address must be host:port, got {address!r}")
        self.node = node
        self.address = address
        self.settings = settings
        self.routes = routes
        self.peers_file = peers_file
        self._key = derive_key(secret, "gossip")
        self._verifier = Verifier(self._key, node, max_clock_skew_s=settings.max_clock_skew_s)
        self._session = session
        self._owns_session = session is None
        self._reject = _RejectLog(node, REJECT_LOG_INTERVAL_S)
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()  # new seeds: join now rather than at the next round
        self._peers_written: list[str] | None = None
        # Network faults (agents/faults.py): True when a partition cuts our messages to this
        # node. A cut message is lost: the request times out unanswered, as on a real network.
        self.cut: Callable[[str], bool] | None = None
        routes.on_change(self._log_route_change)
        self.membership = Membership(node, pod_cidr, address, routes, settings,
                                     seeds=[*self._valid(seeds), *self._read_peers_file()],
                                     pod_cidrs=pod_cidrs)

    # --- public -------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(PATH + "{kind}", self._handle)

    def add_seeds(self, addresses: Iterable[str]) -> None:
        """More agents to join through (e.g. the control plane's node list)."""
        self.membership.add_seeds(self._valid(addresses))
        self._wake.set()

    def snapshot(self) -> list[Member]:
        """Every member as this agent sees it, itself first (for `podnet routes`)."""
        return self.membership.members()

    async def start(self) -> None:
        if self._tasks:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, limit_per_host=8),
                auto_decompress=False)
        self._tasks = [
            asyncio.create_task(self._loop(self._gossip_once, self.settings.gossip_interval_ms),
                                name=f"gossip:{self.node}"),
            asyncio.create_task(self._loop(self._probe_once, self.settings.probe_interval_ms),
                                name=f"probe:{self.node}"),
            asyncio.create_task(self._anti_entropy(), name=f"anti-entropy:{self.node}"),
        ]
        log.info("gossip.started", component="gossip", node=self.node, address=self.address,
                 incarnation=self.membership.incarnation, seeds=len(self.membership.seeds))

    async def close(self) -> None:
        tasks = [*self._tasks, *self._in_flight]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        self._in_flight.clear()
        with contextlib.suppress(OSError):
            await self._save_peers()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> GossipService:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # --- loops --------------------------------------------------------------------------

    async def _loop(self, step: Callable[[], Awaitable[None]], interval_ms: int) -> None:
        """Run `step` every interval (from the start of the last one, so rounds do not drift
        by the time a round takes); one failing round is logged and the next one runs."""
        interval_s = interval_ms / 1000
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                self.membership.tick()
                await step()
            except Exception:  # a bug in one round must not end failure detection
                log.exception("gossip.round_failed", component="gossip", node=self.node)
            next_at = max(next_at + interval_s, loop.time())
            await asyncio.sleep(next_at - loop.time())

    async def _gossip_once(self) -> None:
        for out in self.membership.gossip_round():
            self._spawn(self._request(out, self._request_timeout_s))

    async def _probe_once(self) -> None:
        probe = self.membership.probe_start()
        if probe is not None:
            await self._probe(probe)

    async def _anti_entropy(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        next_reconnect = loop.time() + s.reconnect_interval_ms / 1000
        while True:
            # Cleared before the round, not after it: seeds added while a round runs (the
            # control plane's node list arrives just after start) must wake the next one.
            self._wake.clear()
            try:
                self.membership.tick()
                if not self.membership.live_peers():
                    # Alone: contact several seeds at once; any one that answers is enough.
                    await asyncio.gather(*(self._push_pull(o)
                                           for o in self.membership.join_requests()))
                elif (out := self.membership.push_pull_round()) is not None:
                    await self._push_pull(out)
                if loop.time() >= next_reconnect:
                    next_reconnect = loop.time() + s.reconnect_interval_ms / 1000
                    if (out := self.membership.reconnect_round()) is not None:
                        await self._push_pull(out)
                await self._save_peers()
            except Exception:  # as in _loop
                log.exception("gossip.anti_entropy_failed", component="gossip", node=self.node)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), s.push_pull_interval_ms / 1000)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Send without waiting for the answer, so one slow peer cannot stall a round. Past
        MAX_IN_FLIGHT the send is dropped: gossip is redundant, and a backlog would only
        grow while peers are unreachable."""
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            coro.close()
            log.debug("gossip.send_dropped", component="gossip", node=self.node,
                      in_flight=len(self._in_flight))
            return
        task = asyncio.create_task(coro, name=f"gossip-send:{self.node}")
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    # --- protocol steps -----------------------------------------------------------------

    @property
    def _request_timeout_s(self) -> float:
        return self.settings.request_timeout_ms / 1000

    async def _push_pull(self, out: Outgoing) -> None:
        env = await self._request(out, self._request_timeout_s, expect=("push-pull-reply",))
        if env is None or not isinstance(env.message, PushPullReply):
            return
        push = self.membership.handle_push_pull_reply(env.message, out.address, env.sender)
        if push is not None:
            self._spawn(self._request(push, self._request_timeout_s))

    async def _probe(self, probe: Probe) -> None:
        s = self.settings
        env = await self._request(Outgoing(probe.address, probe.target, probe.ping),
                                  s.probe_timeout_ms / 1000, expect=("ack",))
        if env is not None and isinstance(env.message, Ack):
            self.membership.probe_acked(probe, env.message)
            return
        helpers = self.membership.probe_indirect(probe)
        log.debug("gossip.probe_indirect", component="gossip", node=self.node,
                  target=probe.target, helpers=[h.to for h in helpers])
        asks = [asyncio.create_task(
                    self._request(h, s.indirect_probe_timeout_ms / 1000, expect=("ack", "nack")),
                    name=f"ping-req:{self.node}->{h.to}") for h in helpers]
        try:
            for done in asyncio.as_completed(asks):
                reply = await done
                if reply is not None and isinstance(reply.message, Ack) \
                        and reply.message.entry.node == probe.target:
                    self.membership.probe_acked(probe, reply.message)
                    return
        finally:  # one ack is enough: the other helpers' requests are not needed any more
            for task in asks:
                task.cancel()
            await asyncio.gather(*asks, return_exceptions=True)
        self.membership.probe_failed(probe)
        log.info("gossip.probe_failed", component="gossip", node=self.node,
                 target=probe.target, helpers=len(helpers))

    async def _request(self, out: Outgoing, timeout_s: float,
                       expect: tuple[str, ...] | None = None) -> Envelope | None:
        """Send `out`; the verified reply if `expect` names its types, else None."""
        assert self._session is not None, "start() first"
        if self.cut is not None and out.to and self.cut(out.to):
            await asyncio.sleep(timeout_s)      # lost on the way: no answer comes
            log.debug("gossip.send_failed", component="gossip", node=self.node, peer=out.to,
                      address=out.address, type=TYPE_OF[type(out.message)],
                      error="partitioned (network fault)")
            return None
        frame, nonce = seal(out.message, key=self._key, sender=self.node, receiver=out.to,
                            now=time.time())
        kind = TYPE_OF[type(out.message)]
        try:
            async with self._session.post(
                    f"http://{out.address}{PATH}{kind}", data=frame,
                    headers={"Content-Type": "application/octet-stream"},
                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                body = await _read_limited(resp.content, MAX_FRAME_BYTES)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.debug("gossip.send_failed", component="gossip", node=self.node, peer=out.to,
                      address=out.address, type=kind, error=str(e) or type(e).__name__)
            return None
        if expect is None:
            if status != 204:
                log.debug("gossip.send_refused", component="gossip", node=self.node,
                          peer=out.to, address=out.address, type=kind, status=status)
            return None
        if status != 200 or body is None:
            log.debug("gossip.send_refused", component="gossip", node=self.node, peer=out.to,
                      address=out.address, type=kind, status=status)
            return None
        try:
            return self._verifier.open(body, now=time.time(), expect=expect, re=nonce)
        except GossipError as e:
            self._reject(e, peer=out.address, direction="reply", type=kind)
            return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        if kind not in REQUEST_TYPES:
            raise web.HTTPNotFound()
        peer = request.remote or ""
        if (request.content_length or 0) > MAX_FRAME_BYTES:
            frame = None
        else:
            frame = await _read_limited(request.content, MAX_FRAME_BYTES)
        try:
            if frame is None:
                raise GossipError(TOO_LARGE, f"more than {MAX_FRAME_BYTES} bytes")
            env = self._verifier.open(frame, now=time.time(), expect=(kind,))
        except GossipError as e:
            self._reject(e, peer=peer, direction="request", type=kind)
            return web.Response(status=e.http_status, text=e.reason + "\n")
        reply = await self._answer(env.message)
        if self.cut is not None and self.cut(env.sender):
            # the message arrived, but our answer would be lost (a partition from us to the
            # sender): it never comes, so the sender's own timeout fires; we hold on no
            # longer than that
            await asyncio.sleep(self.settings.request_timeout_ms / 1000)
            return web.Response(status=503)
        if reply is None:
            return web.Response(status=204)
        body, _ = seal(reply, key=self._key, sender=self.node, receiver=env.sender,
                       now=time.time(), re=env.nonce)
        return web.Response(body=body, content_type="application/octet-stream")

    async def _answer(self, msg: Message) -> Message | None:
        m = self.membership
        if isinstance(msg, Ping):
            return m.handle_ping(msg)
        if isinstance(msg, PingReq):
            out = m.handle_ping_req(msg)
            env = await self._request(out, self.settings.probe_timeout_ms / 1000,
                                      expect=("ack",))
            if env is not None and isinstance(env.message, Ack) \
                    and env.message.entry.node == msg.target:
                m.handle_ack(env.message)
                return env.message
            return Nack(msg.target)
        if isinstance(msg, PushPull):
            return m.handle_push_pull(msg)
        if isinstance(msg, Updates):
            m.handle_updates(msg)
        elif isinstance(msg, Push):
            m.handle_push(msg)
        return None

    # --- peers file and logs ------------------------------------------------------------

    def _valid(self, addresses: Iterable[str]) -> list[str]:
        good = []
        for a in addresses:
            if valid_address(a):
                good.append(a)
            else:
                log.warning("gossip.bad_seed", component="gossip", node=self.node, seed=a)
        return good

    def _read_peers_file(self) -> list[str]:
        if self.peers_file is None:
            return []
        try:
            data = json.loads(self.peers_file.read_text())
            peers = data["peers"]
            if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
                raise ValueError("peers is not a list of strings")
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.info("gossip.peers_file_ignored", component="gossip", node=self.node,
                     path=str(self.peers_file), error=str(e))
            return []
        return [p for p in peers if valid_address(p)]

    async def _save_peers(self) -> None:
        if self.peers_file is None:
            return
        peers = self.membership.known_addresses()
        if peers == self._peers_written:
            return
        await asyncio.to_thread(self._write_peers, self.peers_file, peers)
        self._peers_written = peers

    @staticmethod
    def _write_peers(path: Path, peers: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"peers": peers}, indent=1) + "\n")
        os.replace(tmp, path)  # readers see the old list or the new one, never half

    def _log_route_change(self, old: Route | None, new: Route | None) -> None:
        if new is None:
            if old is not None:
                log.info("gossip.member_forgotten", component="gossip", node=self.node,
                         member=old.node)
            return
        if new.node == self.node and old is not None and old.state == new.state:
            return
        if old is None or old.state != new.state or old.incarnation != new.incarnation:
            log.info("gossip.member", component="gossip", node=self.node, member=new.node,
                     state=new.state, was=old.state if old else None, pod_cidr=new.pod_cidr,
                     address=new.address, incarnation=new.incarnation)
