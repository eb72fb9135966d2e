"""Membership and route distribution: SWIM failure detection plus gossip, with no I/O.

Every agent holds one `Member` per node it knows: its podCIDR, its agent address, a version
(incarnation, counter) that only the owner advances, and a state (alive, suspect, dead) that
anyone may advance. Every change is written to the `RouteTable`, this node's own route included.

Versions and merging. Entries form a lattice, so merging is commutative, associative and
idempotent, and replaying old state can never move anything backwards:
- a higher incarnation wins outright (the owner bumps it to refute a suspicion, and starts
  from wall-clock milliseconds so a restarted agent always outranks its previous life);
- at the same incarnation the state is the worse of the two (dead > suspect > alive) and the
  data (podCIDR, address) is the one with the higher counter (the owner's in-life changes).
When a node hears that it is suspect or dead (or any version of itself newer than its own),
it refutes: incarnation = max(seen, own) + 1, alive, broadcast.

Dissemination (as in Serf/memberlist): a change is queued and piggybacked on `updates`
messages sent every gossip interval to `fanout` random live peers, each change about
`retransmit_mult * ceil(log10(n + 1))` times; with nothing queued no message is sent, so an idle
cluster costs only probes. Anti-entropy repairs whatever dissemination missed: every push-pull
interval one random live peer gets this node's digest (node, incarnation, counter, state per
member, ~40 bytes each) and answers with only the entries the digest lacks plus the names it
wants; those, if any, go back in one `push` message. A `dead` learned by anti-entropy is
taken as `suspect` (as memberlist does), so a stale view from a healed partition gives the
node a suspicion timeout to refute instead of killing it at once.

Failure detection (SWIM): every probe interval the next member in a shuffled round-robin
order is pinged; with no ack within the probe timeout, `indirect_probes` other members are
asked to ping it (ping-req); with no ack from any of them it becomes suspect. Every node that
holds a suspect entry runs its own suspicion timer from when it learned it; at expiry the
member is dead, its route withdrawn. Pings carry the prober's view of the target, so a
wrongly suspected node refutes in its ack. Dead members are kept `dead_retention_s` (so stale
gossip cannot resurrect them) and then forgotten. Every reconnect interval one dead member or
seed is offered a push-pull, so partitions heal and a node back from the dead is seen.

Time: `clock()` (monotonic seconds) drives every timer and is injected, so tests run on
virtual time; `wall()` only stamps routes for display.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from agents.cni.routes import ALIVE, DEAD, SUSPECT, Route, RouteTable
from podnet.gossipwire import (
    Ack,
    Digest,
    Entry,
    Message,
    Ping,
    PingReq,
    Push,
    PushPull,
    PushPullReply,
    Updates,
    View,
)
from podnet.settings import SettingsError

RANK = {ALIVE: 0, SUSPECT: 1, DEAD: 2}


@dataclass(frozen=True)
class GossipSettings:
    """Gossip and failure-detection settings. Defaults meet the targets measured by
    bench/convergence.py on a 2-core machine: a new node's route everywhere in < 2 s and a
    killed node's route withdrawn everywhere in < 6 s, at 30 agents."""

    gossip_interval_ms: int = field(default=200, metadata={"help": (
        "how often queued changes are sent to FANOUT random peers; Serf's LAN value, "
        "~log4(N) rounds to reach N nodes (30 nodes: ~3 rounds)")})
    fanout: int = field(default=3, metadata={"help": (
        "peers each gossip round goes to; 3 as in Serf/memberlist")})
    retransmit_mult: int = field(default=4, metadata={"help": (
        "each change is sent RETRANSMIT_MULT * ceil(log10(N + 1)) times; 4 as in memberlist "
        "(a node misses a change with probability ~e^-(that), anti-entropy repairs the rest)")})
    max_entries_per_message: int = field(default=64, metadata={"help": (
        "changes carried by one updates message (~150 bytes each)")})
    push_pull_interval_ms: int = field(default=2000, metadata={"help": (
        "anti-entropy: a digest exchange with one random peer this often; 60 agents make "
        "30 exchanges/s in all, ~2 KB each, instead of a request per change")})
    reconnect_interval_ms: int = field(default=5000, metadata={"help": (
        "a push-pull with one dead member or seed this often, so partitions heal")})
    probe_interval_ms: int = field(default=500, metadata={"help": (
        "each node pings one member this often (round-robin over a shuffled list); the "
        "first probe of a dead node comes after ~this on average at any N")})
    probe_timeout_ms: int = field(default=200, metadata={"help": (
        "no ack within this and the probe goes indirect; loopback RTT is ~1 ms, the rest is "
        "headroom for a loaded 2-core machine")})
    indirect_probes: int = field(default=3, metadata={"help": (
        "members asked to ping a target that missed a direct probe (SWIM's k)")})
    indirect_probe_timeout_ms: int = field(default=300, metadata={"help": (
        "how long the prober waits for the indirect acks; more than PROBE_TIMEOUT_MS, which "
        "the helpers use for their own pings")})
    suspicion_timeout_ms: int = field(default=2000, metadata={"help": (
        "a suspect not refuted within this is dead; four probe intervals give a wrongly "
        "suspected node time to hear it and refute (memberlist uses 4*log10(N) probe "
        "intervals of 1 s, hence its 6-12 s)")})
    dead_retention_s: float = field(default=120.0, metadata={"help": (
        "dead members are kept (shown, and shielding against stale gossip) this long, "
        "then forgotten")})
    request_timeout_ms: int = field(default=1000, metadata={"help": (
        "HTTP timeout for push-pull and updates")})
    join_seeds: int = field(default=3, metadata={"help": (
        "seeds contacted at once on start; any one that answers is enough")})
    max_clock_skew_s: float = field(default=30.0, metadata={"help": (
        "messages older or newer than this are rejected (stale/future); also how long each "
        "nonce is remembered against replays")})

    def check(self) -> None:
        for name in ("gossip_interval_ms", "fanout", "retransmit_mult", "max_entries_per_message",
                     "push_pull_interval_ms", "reconnect_interval_ms", "probe_interval_ms",
                     "probe_timeout_ms", "indirect_probe_timeout_ms", "suspicion_timeout_ms",
                     "request_timeout_ms", "join_seeds"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"--{name.replace('_', '-')}: must be greater than 0, "
                                    f"got {getattr(self, name)}")
        if self.indirect_probes < 0:
            raise SettingsError("--indirect-probes: must be 0 or more")
        if self.dead_retention_s < 0 or self.max_clock_skew_s <= 0:
            raise SettingsError("--dead-retention-s and --max-clock-skew-s: must be positive")
        if self.indirect_probe_timeout_ms <= self.probe_timeout_ms:
            raise SettingsError("--indirect-probe-timeout-ms: must be more than "
                                f"--probe-timeout-ms ({self.probe_timeout_ms}), which the "
                                "helpers spend on their own ping")


@dataclass(frozen=True)
class Member:
    """One node as this node sees it. `since` is clock() at the last state change."""
    node: str
    pod_cidr: str
    address: str
    incarnation: int
    counter: int
    state: str
    since: float
    is_self: bool = False
    pod_cidrs: tuple[str, ...] = ()     # dual-stack: every podCIDR, pod_cidr first

    @property
    def entry(self) -> Entry:
        return Entry(self.node, self.pod_cidr, self.address, self.incarnation, self.counter,
                     self.state, self.pod_cidrs)

    @property
    def digest(self) -> Digest:
        return Digest(self.node, self.incarnation, self.counter, self.state)


@dataclass(frozen=True)
class Outgoing:
    """A message for the adapter to send. `to` is the receiver's node name, "" for a seed."""
    address: str
    to: str
    message: Message


@dataclass(frozen=True)
class Probe:
    """One probe in flight: ping `target` at `address`; then `indirect`; then `failed`."""
    target: str
    address: str
    ping: Ping


Version = tuple[int, int, str]


def join_version(a: Version, b: Version) -> Version:
    """The lattice join of two (incarnation, counter, state) versions."""
    if a[0] != b[0]:
        return a if a[0] > b[0] else b
    return a[0], max(a[1], b[1]), a[2] if RANK[a[2]] >= RANK[b[2]] else b[2]


def join_entries(a: Entry, b: Entry) -> Entry:
    """The lattice join of two entries of one node (see the module docstring)."""
    if a.incarnation != b.incarnation:
        return a if a.incarnation > b.incarnation else b
    # Data from the higher counter; a tie with different data cannot come from an honest
    # owner, but must still merge the same way everywhere, hence the total order.
    data = max(a, b, key=lambda e: (e.counter, e.pod_cidr, e.address, e.pod_cidrs))
    state = a.state if RANK[a.state] >= RANK[b.state] else b.state
    return replace(data, state=state)


def _version(e: Entry | Digest | View) -> Version:
    return e.incarnation, e.counter, e.state


@dataclass
class _Broadcast:
    entry: Entry
    sends: int = 0


class Membership:
    """The protocol state of one node. Methods return what to send; the adapter sends it."""

    def __init__(self, node: str, pod_cidr: str, address: str, routes: RouteTable,
                 settings: GossipSettings, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, rng: random.Random | None = None,
                 incarnation: int | None = None, seeds: Iterable[str] = (),
                 pod_cidrs: tuple[str, ...] = ()) -> None:
        self.node = node
        self.routes = routes
        self.settings = settings
        self.clock = clock
        self.wall = wall
        self.rng = rng or random.Random()
        # Wall-clock milliseconds: a restarted agent outranks every version of its old life.
        inc = int(wall() * 1000) if incarnation is None else incarnation
        self._self = Member(node, pod_cidr, address, inc, 0, ALIVE, clock(), is_self=True,
                            pod_cidrs=pod_cidrs if len(pod_cidrs) > 1 else ())
        self._members: dict[str, Member] = {}
        self._queue: dict[str, _Broadcast] = {}
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._seeds: set[str] = set()
        self.add_seeds(seeds)
        self._publish(self._self)
        self._enqueue(self._self.entry)

    # --- reading ------------------------------------------------------------------------

    @property
    def self_entry(self) -> Entry:
        return self._self.entry

    @property
    def incarnation(self) -> int:
        return self._self.incarnation

    def get(self, node: str) -> Member | None:
        return self._self if node == self.node else self._members.get(node)

    def members(self) -> list[Member]:
        """Every member, this node first, then by name."""
        return [self._self, *sorted(self._members.values(), key=lambda m: m.node)]

    def live_peers(self) -> list[Member]:
        """Other members not dead (suspects included: they may still answer)."""
        return [m for m in self._members.values() if m.state != DEAD]

    @property
    def seeds(self) -> set[str]:
        return set(self._seeds)

    def known_addresses(self) -> list[str]:
        """Addresses worth remembering across a restart: every other member's, and seeds."""
        addrs = {m.address for m in self._members.values()} | self._seeds
        addrs.discard(self._self.address)
        return sorted(addrs)

    def pending_broadcasts(self) -> int:
        return len(self._queue)

    # --- changes ------------------------------------------------------------------------

    def add_seeds(self, addresses: Iterable[str]) -> None:
        for a in addresses:
            if a and a != self._self.address:
                self._seeds.add(a)

    def update_self(self, *, pod_cidr: str | None = None, address: str | None = None) -> None:
        """Change this node's own data (a new counter within the incarnation) and announce it."""
        new = replace(self._self, pod_cidr=pod_cidr or self._self.pod_cidr,
                      address=address or self._self.address, counter=self._self.counter + 1)
        self._self = new
        self._publish(new)
        self._enqueue(new.entry)

    def _refute(self, seen_incarnation: int) -> None:
        self._self = replace(self._self,
                             incarnation=max(seen_incarnation, self._self.incarnation) + 1,
                             counter=0, state=ALIVE)
        self._publish(self._self)
        self._enqueue(self._self.entry)

    def _about_me(self, version: Version) -> None:
        """Someone holds `version` of this node: refute it if it is not ours or older."""
        mine = _version(self._self.entry)
        if join_version(mine, version) != mine:
            self._refute(version[0])

    def merge(self, entry: Entry, *, from_anti_entropy: bool = False) -> bool:
        """Merge what a peer says about `entry.node`; True if anything changed here."""
        if entry.node == self.node:
            self._about_me(_version(entry))
            return False
        current = self._members.get(entry.node)
        if current is None and entry.state == DEAD:
            return False  # a node we never knew (or forgot): nothing to withdraw
        if from_anti_entropy and entry.state == DEAD:
            entry = replace(entry, state=SUSPECT)
        if current is None:
            new = Member(entry.node, entry.pod_cidr, entry.address, entry.incarnation,
                         entry.counter, entry.state, self.clock(), pod_cidrs=entry.pod_cidrs)
            self._add_probe_target(new.node)
        else:
            joined = join_entries(current.entry, entry)
            if joined == current.entry:
                return False
            since = current.since if joined.state == current.state else self.clock()
            new = Member(joined.node, joined.pod_cidr, joined.address, joined.incarnation,
                         joined.counter, joined.state, since, pod_cidrs=joined.pod_cidrs)
        self._members[new.node] = new
        self._publish(new)
        self._enqueue(new.entry)
        return True

    def _set_state(self, member: Member, state: str) -> None:
        new = replace(member, state=state, since=self.clock())
        self._members[member.node] = new
        self._publish(new)
        self._enqueue(new.entry)

    def _publish(self, m: Member) -> None:
        self.routes.update(Route(m.pod_cidr, m.node, m.address, m.state, m.incarnation,
                                 m.counter, since=self.wall(), pod_cidrs=m.pod_cidrs))

    def _enqueue(self, entry: Entry) -> None:
        # A newer fact about a node replaces the older one still in the queue.
        self._queue[entry.node] = _Broadcast(entry)

    # --- timers -------------------------------------------------------------------------

    def tick(self) -> None:
        """Expire suspicions (-> dead) and forget long-dead members. Call often."""
        now = self.clock()
        suspicion_s = self.settings.suspicion_timeout_ms / 1000
        for m in list(self._members.values()):
            if m.state == SUSPECT and now - m.since >= suspicion_s:
                self._set_state(m, DEAD)
            elif m.state == DEAD and now - m.since >= self.settings.dead_retention_s:
                del self._members[m.node]
                self._queue.pop(m.node, None)
                self.routes.remove(m.node)

    # --- dissemination ------------------------------------------------------------------

    def _transmit_limit(self) -> int:
        n = 1 + len(self.live_peers())
        return self.settings.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))

    def _take_broadcasts(self, limit: int) -> list[Entry]:
        """Up to `limit` queued entries, least-sent first; each counts one more send."""
        chosen = sorted(self._queue.values(), key=lambda b: b.sends)[:limit]
        cap = self._transmit_limit()
        for b in chosen:
            b.sends += 1
            if b.sends >= cap:
                del self._queue[b.entry.node]
        return [b.entry for b in chosen]

    def gossip_round(self) -> list[Outgoing]:
        """`updates` to `fanout` random live peers, if anything is queued."""
        if not self._queue:
            return []
        peers = self.live_peers()
        targets = self.rng.sample(peers, min(self.settings.fanout, len(peers)))
        out = []
        for peer in targets:
            entries = self._take_broadcasts(self.settings.max_entries_per_message)
            if not entries:
                break
            out.append(Outgoing(peer.address, peer.node, Updates(tuple(entries))))
        return out

    def handle_updates(self, msg: Updates) -> None:
        for e in msg.entries:
            self.merge(e)

    # --- anti-entropy -------------------------------------------------------------------

    def push_pull_request(self) -> PushPull:
        """This node's digest (dead members too) and its own entry (so a seed learns us)."""
        digest = tuple(m.digest for m in self.members())
        return PushPull(digest, (self._self.entry,))

    def push_pull_round(self) -> Outgoing | None:
        """A push-pull with one random live peer; with none, with a random seed."""
        peers = self.live_peers()
        if peers:
            peer = self.rng.choice(peers)
            return Outgoing(peer.address, peer.node, self.push_pull_request())
        if self._seeds:
            return Outgoing(self.rng.choice(sorted(self._seeds)), "", self.push_pull_request())
        return None

    def join_requests(self) -> list[Outgoing]:
        """Push-pulls to up to `join_seeds` random seeds, for the first contact."""
        seeds = sorted(self._seeds)
        chosen = self.rng.sample(seeds, min(self.settings.join_seeds, len(seeds)))
        return [Outgoing(a, "", self.push_pull_request()) for a in chosen]

    def reconnect_round(self) -> Outgoing | None:
        """A push-pull with one dead member or a seed no live member answers at, if any."""
        live = {m.address for m in self.live_peers()}
        candidates = sorted({m.address for m in self._members.values() if m.state == DEAD}
                            | (self._seeds - live))
        candidates = [a for a in candidates if a not in live]
        if not candidates:
            return None
        address = self.rng.choice(candidates)
        to = next((m.node for m in self._members.values()
                   if m.address == address and m.state == DEAD), "")
        return Outgoing(address, to, self.push_pull_request())

    def handle_push_pull(self, msg: PushPull) -> PushPullReply:
        """Merge the pushed entries; answer with what the sender lacks and what we lack."""
        for e in msg.entries:
            self.merge(e, from_anti_entropy=True)
        theirs: dict[str, Version] = {}
        for d in msg.digest:
            theirs[d.node] = _version(d)
            if d.node == self.node:
                self._about_me(_version(d))
        entries = []
        for m in self.members():
            have = _version(m.entry)
            their = theirs.get(m.node)
            if their is None:
                if m.state != DEAD:  # they would ignore a dead node they never knew
                    entries.append(m.entry)
            elif join_version(their, have) != their:
                entries.append(m.entry)
        wants = []
        for node, their in theirs.items():
            if node == self.node:
                continue  # what they lack about us went out above; a newer one was refuted
            local = self._members.get(node)
            if local is None:
                if their[2] != DEAD:
                    wants.append(node)
            elif join_version(_version(local.entry), their) != _version(local.entry):
                wants.append(node)
        return PushPullReply(tuple(entries), tuple(wants))

    def handle_push(self, msg: Push) -> None:
        for e in msg.entries:
            self.merge(e, from_anti_entropy=True)

    def handle_push_pull_reply(self, reply: PushPullReply, address: str,
                               to: str) -> Outgoing | None:
        """Merge the pulled entries; return the `push` of what the peer asked for, if any."""
        for e in reply.entries:
            self.merge(e, from_anti_entropy=True)
        wanted = []
        for node in reply.wants:
            m = self.get(node)
            if m is not None:
                wanted.append(m.entry)
        if not wanted:
            return None
        return Outgoing(address, to, Push(tuple(wanted)))

    # --- failure detection --------------------------------------------------------------

    def _add_probe_target(self, node: str) -> None:
        # At a random place in the rest of this round, as memberlist does, so a new member is
        # probed within one round and the order stays unpredictable.
        pos = self.rng.randint(self._probe_index, len(self._probe_order))
        self._probe_order.insert(pos, node)

    def _view_of(self, m: Member) -> View:
        return View(m.incarnation, m.counter, m.state)

    def probe_start(self) -> Probe | None:
        """The next member to ping (round-robin over a shuffled list), or None."""
        for _ in range(2):
            while self._probe_index < len(self._probe_order):
                node = self._probe_order[self._probe_index]
                self._probe_index += 1
                m = self._members.get(node)
                if m is not None and m.state != DEAD:
                    return Probe(node, m.address, Ping(node, self._view_of(m)))
            # End of a round: a fresh shuffle of everyone probe-able.
            self._probe_order = sorted(m.node for m in self.live_peers())
            self.rng.shuffle(self._probe_order)
            self._probe_index = 0
        return None

    def probe_indirect(self, probe: Probe) -> list[Outgoing]:
        """ping-req to `indirect_probes` other live members (may be none)."""
        helpers = [m for m in self._members.values()
                   if m.state == ALIVE and m.node != probe.target]
        chosen = self.rng.sample(helpers, min(self.settings.indirect_probes, len(helpers)))
        return [Outgoing(h.address, h.node, PingReq(probe.target, probe.address, probe.ping.view))
                for h in chosen]

    def probe_acked(self, probe: Probe, ack: Ack) -> None:
        if ack.entry.node == probe.target:
            self.merge(ack.entry)

    def probe_failed(self, probe: Probe) -> None:
        """Neither the target nor any helper answered: suspect it (unless refuted meanwhile)."""
        m = self._members.get(probe.target)
        view = probe.ping.view
        if m is None or m.state != ALIVE or view is None:
            return
        if (m.incarnation, m.counter) != (view.incarnation, view.counter):
            return  # it said something newer while we waited: that is an answer
        self._set_state(m, SUSPECT)

    def handle_ping(self, msg: Ping) -> Ack:
        """Answer a ping (refuting the prober's view of us first, if it is wrong)."""
        if msg.view is not None and msg.target == self.node:
            self._about_me(_version(msg.view))
        return Ack(self._self.entry)

    def handle_ping_req(self, msg: PingReq) -> Outgoing:
        """The ping to send on a prober's behalf; its ack goes back as ours."""
        return Outgoing(msg.address, msg.target, Ping(msg.target, msg.view))

    def handle_ack(self, ack: Ack) -> None:
        """An ack relayed by a helper, or our own indirect ping's ack."""
        self.merge(ack.entry)
