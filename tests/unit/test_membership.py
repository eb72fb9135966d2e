"""Membership as a pure state machine on virtual time: merge rules, refutation, the failure
detector, and whole clusters gossiping through a simulated lossy network."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from agents.cni.membership import (
    GossipSettings,
    Membership,
    Outgoing,
    Probe,
    join_entries,
    join_version,
)
from agents.cni.routes import ALIVE, DEAD, SUSPECT, Route, RouteTable
from podnet import gossipwire as gw
from podnet import settings
from podnet.gossipwire import Ack, Entry, Nack, Ping, PingReq, Push, PushPull, Updates, View
from podnet.settings import SettingsError

S = GossipSettings()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def entry(node: str = "b", inc: int = 1, counter: int = 0, state: str = ALIVE,
          address: str = "127.0.0.1:2", cidr: str = "10.244.2.0/24") -> Entry:
    return Entry(node, cidr, address, inc, counter, state)


def member(node: str = "a", clock: Clock | None = None, inc: int = 100,
           settings: GossipSettings = S, seed: int = 1) -> Membership:
    clock = clock or Clock()
    return Membership(node, "10.244.1.0/24", "127.0.0.1:1", RouteTable(node), settings,
                      clock=clock, wall=clock, rng=random.Random(seed), incarnation=inc)


# --- merge and versions -----------------------------------------------------------------

@pytest.mark.parametrize("a, b, want", [
    # higher incarnation wins outright, whatever the states
    (entry(inc=2), entry(inc=1, state=DEAD), entry(inc=2)),
    (entry(inc=1, state=DEAD), entry(inc=2, address="h:9"), entry(inc=2, address="h:9")),
    # same incarnation: dead > suspect > alive
    (entry(state=SUSPECT), entry(), entry(state=SUSPECT)),
    (entry(state=SUSPECT), entry(state=DEAD), entry(state=DEAD)),
    # same incarnation: the owner's higher counter brings its data; the state stays the worse
    (entry(counter=2, address="h:9"), entry(counter=1, state=SUSPECT),
     entry(counter=2, address="h:9", state=SUSPECT)),
    (entry(), entry(), entry()),
])
def test_merge_table(a: Entry, b: Entry, want: Entry) -> None:
    assert join_entries(a, b) == want
    assert join_entries(b, a) == want


def test_merge_is_a_lattice_join() -> None:
    rng = random.Random(3)
    pool = [entry(inc=rng.randrange(3), counter=rng.randrange(3),
                  state=rng.choice((ALIVE, SUSPECT, DEAD)),
                  address=f"h:{rng.randrange(1, 3)}") for _ in range(40)]
    for a, b, c in itertools.product(pool[:12], repeat=3):
        assert join_entries(a, b) == join_entries(b, a)
        assert join_entries(join_entries(a, b), c) == join_entries(a, join_entries(b, c))
        assert join_entries(a, a) == a
        j = join_entries(a, b)
        assert join_version((j.incarnation, j.counter, j.state),
                            (a.incarnation, a.counter, a.state)) == \
            (j.incarnation, j.counter, j.state)


def test_merging_updates_the_route_table_and_queues_a_broadcast() -> None:
    m = member()
    seen: list[tuple[str, str]] = []

    def record(old: Route | None, new: Route | None) -> None:
        if new is not None:
            seen.append((new.node, new.state))
    m.routes.on_change(record)
    assert m.merge(entry(inc=5))
    assert not m.merge(entry(inc=5))           # nothing new: no change, no broadcast
    assert not m.merge(entry(inc=4, state=DEAD))  # older: ignored
    assert m.merge(entry(inc=5, state=SUSPECT))
    assert seen == [("b", ALIVE), ("b", SUSPECT)]
    route = m.routes.get("b")
    assert route is not None and (route.incarnation, route.state) == (5, SUSPECT)
    assert m.routes.get("a").state == ALIVE  # type: ignore[union-attr]  # our own route
    assert not m.merge(entry(node="never-seen", state=DEAD))  # nothing to withdraw


def test_dead_from_anti_entropy_is_only_suspect() -> None:
    m = member()
    m.merge(entry(inc=5))
    m.merge(entry(inc=5, state=DEAD), from_anti_entropy=True)
    assert m.get("b").state == SUSPECT  # type: ignore[union-attr]
    m.merge(entry(inc=5, state=DEAD))  # a broadcast dead is believed
    assert m.get("b").state == DEAD  # type: ignore[union-attr]


# --- refutation -------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["merge", "ping", "digest"])
def test_a_suspected_node_refutes_with_a_higher_incarnation(how: str) -> None:
    m = member(inc=100)
    m.gossip_round()
    if how == "merge":
        m.merge(Entry("a", "10.244.1.0/24", "127.0.0.1:1", 100, 0, SUSPECT))
    elif how == "ping":
        ack = m.handle_ping(Ping("a", View(100, 0, DEAD)))
        assert ack.entry.incarnation == 101 and ack.entry.state == ALIVE
    else:
        m.handle_push_pull(PushPull((gw.Digest("a", 100, 0, SUSPECT),)))
    assert m.incarnation == 101
    assert m.self_entry.state == ALIVE
    assert m.routes.get("a").incarnation == 101  # type: ignore[union-attr]
    m.merge(entry(inc=1))  # a live peer to gossip to
    sent = [e for o in m.gossip_round() for e in o.message.entries]  # type: ignore[union-attr]
    assert Entry("a", "10.244.1.0/24", "127.0.0.1:1", 101, 0, ALIVE) in sent


def test_a_newer_version_of_ourselves_is_outranked() -> None:
    m = member(inc=100)
    m.merge(Entry("a", "10.244.1.0/24", "127.0.0.1:1", 500, 0, ALIVE))  # clock went back
    assert m.incarnation == 501
    m.handle_ping(Ping("a", View(501, 0, ALIVE)))  # an accurate view: nothing to refute
    assert m.incarnation == 501


def test_incarnations_start_from_wall_clock_milliseconds() -> None:
    clock = Clock()
    clock.now = 1_750_000_000.5
    m = Membership("a", "10.244.1.0/24", "127.0.0.1:1", RouteTable("a"), S,
                   clock=clock, wall=clock)
    assert m.incarnation == 1_750_000_000_500


def test_own_data_changes_bump_the_counter() -> None:
    m = member()
    m.update_self(address="127.0.0.1:9")
    assert (m.self_entry.counter, m.self_entry.address) == (1, "127.0.0.1:9")
    assert m.routes.get("a").address == "127.0.0.1:9"  # type: ignore[union-attr]


# --- failure detection on virtual time ------------------------------------------------

def test_probe_indirect_suspect_dead_forgotten() -> None:
    clock = Clock()
    m = member(clock=clock)
    for i, name in enumerate(("b", "c", "d", "e")):
        m.merge(entry(node=name, address=f"127.0.0.1:{10 + i}", cidr=f"10.244.{2 + i}.0/24"))
    probes = [m.probe_start() for _ in range(4)]
    assert sorted(p.target for p in probes if p) == ["b", "c", "d", "e"]  # one round
    probe = next(p for p in probes if p and p.target == "c")
    helpers = m.probe_indirect(probe)
    assert len(helpers) == 3 and all(isinstance(h.message, PingReq) for h in helpers)
    assert {h.to for h in helpers} == {"b", "d", "e"}
    clock.now += 0.5
    m.probe_failed(probe)
    assert m.get("c").state == SUSPECT  # type: ignore[union-attr]
    assert m.routes.lookup("10.244.3.1") is not None   # suspect routes still carry traffic
    clock.now += S.suspicion_timeout_ms / 1000 - 0.01
    m.tick()
    assert m.get("c").state == SUSPECT  # type: ignore[union-attr]
    clock.now += 0.02
    m.tick()
    assert m.get("c").state == DEAD  # type: ignore[union-attr]
    assert m.routes.lookup("10.244.3.1") is None       # withdrawn
    # Stale gossip of its old life cannot bring it back...
    assert not m.merge(entry(node="c", address="127.0.0.1:11", cidr="10.244.3.0/24"))
    clock.now += S.dead_retention_s
    m.tick()
    assert m.get("c") is None and m.routes.get("c") is None  # ...and later it is forgotten
    assert "c" not in {p.target for p in (m.probe_start() for _ in range(6)) if p}


def test_an_ack_or_a_refutation_meanwhile_cancels_the_suspicion() -> None:
    m = member()
    m.merge(entry(node="b"))
    probe = m.probe_start()
    assert probe is not None
    m.probe_acked(probe, Ack(entry(node="b")))
    assert m.get("b").state == ALIVE  # type: ignore[union-attr]
    m.merge(entry(node="b", inc=2))     # it refuted while we were asking helpers
    m.probe_failed(probe)
    assert m.get("b").state == ALIVE  # type: ignore[union-attr]
    # A suspicion is cancelled by a higher incarnation, not by a plain ack of the same one.
    m.merge(entry(node="b", inc=2, state=SUSPECT))
    m.probe_acked(Probe("b", "127.0.0.1:2", Ping("b")), Ack(entry(node="b", inc=2)))
    assert m.get("b").state == SUSPECT  # type: ignore[union-attr]
    m.merge(entry(node="b", inc=3))
    assert m.get("b").state == ALIVE  # type: ignore[union-attr]


def test_a_dead_node_back_with_a_higher_incarnation_is_alive() -> None:
    m = member()
    m.merge(entry(node="b", inc=1, state=DEAD))
    m.merge(entry(node="b", inc=1))
    m.merge(entry(node="b", inc=1, state=DEAD))
    assert m.get("b").state == DEAD  # type: ignore[union-attr]
    m.merge(entry(node="b", inc=2, address="127.0.0.1:77"))
    assert m.get("b").state == ALIVE  # type: ignore[union-attr]
    assert m.routes.lookup("10.244.2.9").address == "127.0.0.1:77"  # type: ignore[union-attr]


def test_probing_without_helpers_goes_straight_to_suspect() -> None:
    m = member()
    m.merge(entry(node="b"))
    probe = m.probe_start()
    assert probe is not None and m.probe_indirect(probe) == []
    m.probe_failed(probe)
    assert m.get("b").state == SUSPECT  # type: ignore[union-attr]


# --- dissemination and anti-entropy ---------------------------------------------------

def test_gossip_is_silent_when_idle_and_bounded_when_busy() -> None:
    m = member()
    m.merge(entry(node="b"))
    m.merge(entry(node="c", address="127.0.0.1:3", cidr="10.244.3.0/24"))
    sends = 0
    for _ in range(20):
        out = m.gossip_round()
        assert len(out) <= S.fanout
        sends += len(out)
    assert sends > 0 and m.pending_broadcasts() == 0
    assert m.gossip_round() == []
    # Each of the 3 facts went out retransmit_mult * ceil(log10(3 + 1)) = 4 times.
    assert sends == 4


def test_push_pull_ships_only_what_the_other_side_lacks() -> None:
    a, b = member("a"), member("b", seed=2)
    b.update_self(address="127.0.0.1:2")
    for node in ("c", "d"):
        e = entry(node=node, address=f"{node}.lab:1", cidr=f"10.244.{ord(node)}.0/24")
        a.merge(e)
        b.merge(e)
    a.merge(entry(node="e", address="e.lab:1", cidr="10.244.50.0/24"))
    b.merge(entry(node="f", address="f.lab:1", cidr="10.244.51.0/24"))
    b.merge(entry(node="c", inc=2, address="c.lab:1", cidr="10.244.99.0/24"))
    reply = b.handle_push_pull(a.push_pull_request())
    assert sorted(e.node for e in reply.entries) == ["b", "c", "f"]  # not d, which a has
    assert reply.wants == ("e",)
    push = a.handle_push_pull_reply(reply, "127.0.0.1:2", "b")
    assert push is not None and isinstance(push.message, Push)
    assert [e.node for e in push.message.entries] == ["e"]
    b.handle_push(push.message)
    # In sync: the next exchange carries nothing but the digest.
    again = b.handle_push_pull(a.push_pull_request())
    assert again.entries == () and again.wants == ()
    assert sorted(a.routes.all(), key=lambda r: r.node) == \
        sorted(b.routes.all(), key=lambda r: r.node)


def test_settings_are_checked() -> None:
    S.check()
    with pytest.raises(SettingsError, match="--fanout"):
        GossipSettings(fanout=0).check()
    with pytest.raises(SettingsError, match="--indirect-probe-timeout-ms"):
        GossipSettings(probe_timeout_ms=300, indirect_probe_timeout_ms=300).check()
    # The shared loader reads them like every other podnet setting (env, flags, check()).
    loaded = settings.load(GossipSettings, env={"PODNET_SUSPICION_TIMEOUT_MS": "3000"})
    assert loaded.suspicion_timeout_ms == 3000 and loaded.fanout == S.fanout
    with pytest.raises(SettingsError, match="--fanout"):
        settings.load(GossipSettings, env={"PODNET_FANOUT": "0"})


# --- whole clusters on a simulated network --------------------------------------------

@dataclass(order=True)
class _Event:
    at: float
    seq: int
    run: Callable[[], None] = field(compare=False)


class Net:
    """N members, virtual time, a lossy network and partitions. Requests are answered at once
    or lost; a lost one costs its timeout, as in the adapter. Every message goes through the
    real wire format, so the simulation also checks what the schema accepts."""

    def __init__(self, n: int, loss: float = 0.0, seed: int = 1,
                 settings: GossipSettings = S) -> None:
        self.clock = Clock()
        self.rng = random.Random(seed)
        self.loss = loss
        self.settings = settings
        self.events: list[_Event] = []
        self.seq = itertools.count()
        self.nodes: dict[str, Membership] = {}       # address -> membership
        self.down: set[str] = set()
        self.groups: dict[str, int] = {}            # address -> partition group
        self.generation: dict[str, int] = {}        # address -> life, to stop old timers
        for i in range(n):
            self.start(i, seeds=[self.addr(0)] if i else [])

    @staticmethod
    def addr(i: int) -> str:
        return f"10.0.0.{i + 1}:7000"

    def at(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self.events, _Event(self.clock.now + delay, next(self.seq), fn))

    def run_until(self, done: Callable[[], bool], limit_s: float) -> float:
        """Run events until `done()`; the virtual time it took (fails past `limit_s`)."""
        start = self.clock.now
        while not done():
            assert self.events and self.clock.now - start < limit_s, "did not converge"
            ev = heapq.heappop(self.events)
            self.clock.now = ev.at
            ev.run()
        return self.clock.now - start

    def run_for(self, seconds: float) -> None:
        end = self.clock.now + seconds
        while self.events and self.events[0].at <= end:
            ev = heapq.heappop(self.events)
            self.clock.now = ev.at
            ev.run()
        self.clock.now = end

    def start(self, i: int, seeds: list[str], inc: int | None = None) -> Membership:
        a = self.addr(i)
        m = Membership(f"node-{i}", f"10.244.{i}.0/24", a, RouteTable(f"node-{i}"),
                       self.settings, clock=self.clock, wall=self.clock,
                       rng=random.Random(self.rng.random()), seeds=seeds,
                       incarnation=inc if inc is not None else int(self.clock.now * 1000) + 1)
        self.nodes[a] = m
        self.down.discard(a)
        gen = self.generation[a] = self.generation.get(a, 0) + 1
        s = self.settings

        def every(interval_ms: int, step: Callable[[], None]) -> None:
            def fire() -> None:
                if self.generation[a] != gen or a in self.down:
                    return
                m.tick()
                step()
                self.at(interval_ms / 1000, fire)
            self.at(self.rng.random() * interval_ms / 1000, fire)

        def join() -> None:
            outs = m.join_requests() if not m.live_peers() else [m.push_pull_round()]
            for out in outs:
                if out is not None:
                    self.push_pull(a, out)

        def reconnect() -> None:
            out = m.reconnect_round()
            if out is not None:
                self.push_pull(a, out)

        def gossip() -> None:
            for out in m.gossip_round():
                self.send(a, out)

        every(s.gossip_interval_ms, gossip)
        every(s.probe_interval_ms, lambda: self.probe(a, m))
        every(s.push_pull_interval_ms, join)
        every(s.reconnect_interval_ms, reconnect)
        self.at(0, join)
        return m

    def kill(self, i: int) -> None:
        self.down.add(self.addr(i))

    def reachable(self, src: str, dst: str) -> bool:
        return dst not in self.down and self.groups.get(src, 0) == self.groups.get(dst, 0) \
            and self.rng.random() >= self.loss

    def send(self, src: str, out: Outgoing) -> gw.Message | None:
        """Deliver `out` and return the reply (None if the request or the reply was lost)."""
        if not self.reachable(src, out.address) or out.address not in self.nodes:
            return None
        dst = self.nodes[out.address]
        msg = self.wire(out.message)
        reply: gw.Message | None = None
        if isinstance(msg, Ping):
            reply = dst.handle_ping(msg)
        elif isinstance(msg, PingReq):
            ack = self.send(out.address, dst.handle_ping_req(msg))
            if isinstance(ack, Ack):
                dst.handle_ack(ack)
            reply = ack if isinstance(ack, Ack) else Nack(msg.target)
        elif isinstance(msg, PushPull):
            reply = dst.handle_push_pull(msg)
        elif isinstance(msg, Updates):
            dst.handle_updates(msg)
        elif isinstance(msg, Push):
            dst.handle_push(msg)
        if reply is None or not self.reachable(out.address, src):
            return None
        return self.wire(reply)

    def wire(self, msg: gw.Message) -> gw.Message:
        frame, _ = gw.seal(msg, key=b"k" * 32, sender="node-0", receiver="", now=0.0)
        return gw.parse(frame, b"k" * 32).message

    def push_pull(self, src: str, out: Outgoing) -> None:
        reply = self.send(src, out)
        if isinstance(reply, gw.PushPullReply):
            push = self.nodes[src].handle_push_pull_reply(reply, out.address, out.to)
            if push is not None:
                self.send(src, push)

    def probe(self, src: str, m: Membership) -> None:
        probe = m.probe_start()
        if probe is None:
            return
        ack = self.send(src, Outgoing(probe.address, probe.target, probe.ping))
        if isinstance(ack, Ack):
            m.probe_acked(probe, ack)
            return
        gen = self.generation[src]

        def indirect() -> None:
            if self.generation[src] != gen or src in self.down:
                return
            replies = [self.send(src, h) for h in m.probe_indirect(probe)]
            acks = [r for r in replies if isinstance(r, Ack)]

            def conclude() -> None:
                if self.generation[src] != gen or src in self.down:
                    return
                if acks:
                    m.probe_acked(probe, acks[0])
                else:
                    m.probe_failed(probe)
            self.at(0 if acks else self.settings.indirect_probe_timeout_ms / 1000, conclude)
        self.at(self.settings.probe_timeout_ms / 1000, indirect)

    # --- views ---

    def live(self) -> list[Membership]:
        return [m for a, m in self.nodes.items() if a not in self.down]

    def state_everywhere(self, node: str, state: str, inc_above: int = -1) -> bool:
        for m in self.live():
            if m.node == node:
                continue
            r = m.routes.get(node)
            if r is None or r.state != state or r.incarnation <= inc_above:
                return False
        return True

    def converged(self) -> bool:
        tables = [[(r.node, r.pod_cidr, r.address, r.state, r.incarnation) for r in
                   m.routes.all()] for m in self.live()]
        return all(t == tables[0] for t in tables) and len(tables[0]) == len(self.live())


def test_a_cluster_converges_detects_a_death_and_takes_the_node_back() -> None:
    net = Net(24, loss=0.1, seed=5)
    net.run_until(net.converged, limit_s=30)
    assert all(r.state == ALIVE for m in net.live() for r in m.routes.all())
    # A new node: its route reaches everyone.
    net.start(24, seeds=[net.addr(3)])
    t_join = net.run_until(lambda: net.state_everywhere("node-24", ALIVE), limit_s=30)
    # A death: suspect first, then withdrawn everywhere.
    victim = net.nodes[net.addr(7)]
    old_inc = victim.incarnation
    net.kill(7)
    net.run_until(lambda: any(m.routes.get("node-7").state == SUSPECT  # type: ignore[union-attr]
                              for m in net.live()), limit_s=30)
    t_dead = net.run_until(lambda: net.state_everywhere("node-7", DEAD), limit_s=30)
    assert all(m.routes.lookup("10.244.7.1") is None for m in net.live())
    # Back with a new incarnation, nobody else restarted.
    net.start(7, seeds=[net.addr(0)])
    net.run_until(lambda: net.state_everywhere("node-7", ALIVE, inc_above=old_inc), limit_s=30)
    net.run_until(net.converged, limit_s=30)
    # Virtual seconds, so deterministic: join and detection well inside the targets' budget.
    assert t_join < 2.0 and t_dead < 6.0, (t_join, t_dead)


def test_a_partitioned_then_healed_node_is_alive_again_everywhere() -> None:
    net = Net(12, seed=9)
    net.run_until(net.converged, limit_s=30)
    lonely = net.addr(4)
    net.groups[lonely] = 1
    net.run_until(lambda: net.state_everywhere("node-4", DEAD), limit_s=30)
    net.run_until(lambda: all(r.state == DEAD for r in net.nodes[lonely].routes.all()
                              if r.node != "node-4"), limit_s=30)
    net.groups[lonely] = 0
    net.run_until(lambda: net.converged() and all(
        r.state == ALIVE for m in net.live() for r in m.routes.all()), limit_s=60)
    assert net.nodes[lonely].incarnation > 1  # it had to refute its death


def test_a_split_brain_heals() -> None:
    net = Net(10, seed=11)
    net.run_until(net.converged, limit_s=30)
    for i in range(5):
        net.groups[net.addr(i)] = 1
    net.run_for(20)  # long enough for both halves to declare the other dead
    assert net.nodes[net.addr(0)].routes.get("node-9").state == DEAD  # type: ignore[union-attr]
    net.groups.clear()
    net.run_until(lambda: net.converged() and all(
        r.state == ALIVE for m in net.live() for r in m.routes.all()), limit_s=60)


def test_a_false_suspicion_under_loss_is_refuted_not_fatal() -> None:
    # Heavy loss makes probes fail; the suspected nodes hear it and refute. Nobody alive may
    # end up dead for long: check that after the loss stops everyone is alive everywhere.
    net = Net(10, loss=0.3, seed=13)
    net.run_for(30)
    net.loss = 0.0
    net.run_until(lambda: net.converged() and all(
        r.state == ALIVE for m in net.live() for r in m.routes.all()), limit_s=60)
