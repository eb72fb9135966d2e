"""A small cache of the upstream's answers (names relayed to it, and chased ExternalName
targets), as CoreDNS's `cache 30` plugin keeps them: a record set is kept for its own TTL, at
most 30 s, and served with the time it spent here taken off its TTL. Denials (NXDOMAIN,
NODATA) are kept for their SOA's negative TTL (RFC 2308), capped the same way. Pure: the
clock is passed in."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

MAX_TTL_S = 30                  # CoreDNS's default Corefile: `cache 30`
MAX_ENTRIES = 10_000

Key = tuple[dns.name.Name, int]     # (owner, rdtype); Name compares case-insensitively


class UpstreamCache:
    def __init__(self, *, max_ttl_s: int = MAX_TTL_S, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_ttl_s = max_ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[Key, tuple[bytes, float, float]] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: dns.name.Name, rdtype: int) -> dns.message.Message | None:
        """A fresh copy of the cached reply, its TTLs lowered by its age; None on a miss."""
        key = (name, rdtype)
        entry = self._entries.get(key)
        now = self.clock()
        if entry is None or entry[1] <= now:
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        wire, _, stored = entry
        self._entries.move_to_end(key)
        self.hits += 1
        reply = dns.message.from_wire(wire)
        age = int(now - stored)
        for section in (reply.answer, reply.authority):
            for rrset in section:
                rrset.ttl = max(0, rrset.ttl - age)
        return reply

    def put(self, name: dns.name.Name, rdtype: int, reply: dns.message.Message) -> bool:
        """Keep `reply` (the upstream's answer to `name`/`rdtype`) for as long as its own
        TTLs allow, at most `max_ttl_s`. SERVFAIL and TTL-0 answers are not kept.

        As CoreDNS does, every record of `reply` is given that TTL, this first answer too:
        a client never sees a TTL longer than the cache will keep the records. True when
        kept (and `reply`'s TTLs changed)."""
        if reply.flags & dns.flags.TC:
            return False        # a partial answer: the full one comes over TCP
        ttl = self._ttl(reply)
        if ttl <= 0:
            return False
        for section in (reply.answer, reply.authority):
            for rrset in section:
                rrset.ttl = ttl
        now = self.clock()
        key = (name, rdtype)
        self._entries[key] = (reply.to_wire(), now + ttl, now)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return True

    def _ttl(self, reply: dns.message.Message) -> int:
        rcode = reply.rcode()
        if rcode == dns.rcode.NOERROR and reply.answer:
            ttl = min(rrset.ttl for rrset in reply.answer)
        elif rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            # A denial lives as long as its SOA says (RFC 2308 5); none: not cached.
            soas = [r for r in reply.authority if r.rdtype == dns.rdatatype.SOA and len(r)]
            if not soas:
                return 0
            ttl = min(soas[0].ttl, soas[0][0].minimum)
        else:
            return 0
        return min(ttl, self.max_ttl_s)
