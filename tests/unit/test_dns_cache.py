"""The cache of chased upstream answers (controlplane/dns/cache.py), on a fake clock."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from controlplane.dns.cache import UpstreamCache

NAME = dns.name.from_text("www.example.test.")
A = dns.rdatatype.A


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reply(ttl: int, rcode: int = dns.rcode.NOERROR, *, soa: tuple[int, int] | None = None,
          answer: bool = True) -> dns.message.Message:
    msg = dns.message.make_response(dns.message.make_query(NAME, A))
    msg.set_rcode(rcode)
    if answer and rcode == dns.rcode.NOERROR:
        msg.answer.append(dns.rrset.from_text(NAME, ttl, "IN", "A", "192.0.2.10"))
    if soa is not None:
        msg.authority.append(dns.rrset.from_text(
            "example.test.", soa[0], "IN", "SOA",
            f"ns.example.test. admin.example.test. 1 7200 1800 86400 {soa[1]}"))
    return msg


def test_kept_for_its_ttl_at_most_30_s_and_served_with_its_age_off() -> None:
    clock = Clock()
    cache = UpstreamCache(clock=clock)
    assert cache.get(NAME, A) is None
    first = reply(60)
    cache.put(NAME, A, first)
    assert first.answer[0].ttl == 30            # the first answer is capped too
    clock.now += 12.5
    got = cache.get(dns.name.from_text("WWW.Example.Test."), A)
    assert got is not None and got.answer[0].ttl == 30 - 12    # names match in any case
    clock.now += 17.6                                          # 30.1 s after: gone
    assert cache.get(NAME, A) is None
    assert (cache.hits, cache.misses, len(cache)) == (1, 2, 0)


def test_a_short_ttl_is_kept_only_that_long() -> None:
    clock = Clock()
    cache = UpstreamCache(clock=clock)
    cache.put(NAME, A, reply(5))
    clock.now += 4.9
    assert cache.get(NAME, A) is not None
    clock.now += 0.2
    assert cache.get(NAME, A) is None


def test_denials_live_for_the_soa_minimum_and_failures_not_at_all() -> None:
    clock = Clock()
    cache = UpstreamCache(clock=clock)
    cache.put(NAME, A, reply(0, dns.rcode.NXDOMAIN, soa=(3600, 10)))
    got = cache.get(NAME, A)
    assert got is not None and got.rcode() == dns.rcode.NXDOMAIN
    clock.now += 10
    assert cache.get(NAME, A) is None
    cache.put(NAME, A, reply(0, answer=False, soa=(3600, 300)))      # NODATA: capped at 30
    clock.now += 29
    assert cache.get(NAME, A) is not None
    truncated = reply(60)
    truncated.flags |= dns.flags.TC
    for kept_not in (reply(60, dns.rcode.SERVFAIL), reply(0), reply(0, dns.rcode.NXDOMAIN),
                     truncated):
        other = UpstreamCache(clock=clock)
        assert other.put(NAME, A, kept_not) is False
        assert len(other) == 0


def test_bounded_oldest_first() -> None:
    cache = UpstreamCache(clock=Clock(), max_entries=2)
    names = [dns.name.from_text(f"n{i}.example.test.") for i in range(3)]
    for name in names:
        cache.put(name, A, reply(60))
    assert cache.get(names[0], A) is None and cache.get(names[2], A) is not None
    assert len(cache) == 2
