"""Names outside the cluster, relayed to --dns-upstream: answered from the cache against asked
of the upstream every time, in the same run.

One process, one event loop: a `DnsEngine` (the control plane's, no sockets of its own) and a
small upstream on 127.0.0.1 (UDP, dnspython) that answers every name with one A record, TTL
60. Each round asks the engine for N distinct external names, the way a pod's resolver asks
them (`engine.query(wire, "udp")`), first with the cache off (every query relayed: the cost
before the cache) and then warm (every query answered from it). The upstream's answer time is
part of the first figure, as it is for a pod. Medians of the rounds, with the ratio.

    .venv/bin/python bench/dns_upstream.py [--names 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

# bench/ holds dns.py: drop this directory from the path, or `import dns` (dnspython) would
# find that script instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import dns.message  # noqa: E402
import dns.rrset  # noqa: E402

from controlplane.dns.cache import UpstreamCache  # noqa: E402
from controlplane.dns.records import ClusterDnsIndex  # noqa: E402
from controlplane.dns.server import DnsEngine  # noqa: E402


class Upstream(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.asked = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.asked += 1
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        reply.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A",
                                                "192.0.2.10"))
        assert self.transport is not None
        self.transport.sendto(reply.to_wire(), addr)


class NoCache(UpstreamCache):
    """The engine before the cache: nothing is kept."""

    def put(self, name: dns.name.Name, rdtype: int, reply: dns.message.Message) -> bool:
        return False


async def per_query_us(engine: DnsEngine, wires: list[bytes]) -> float:
    start = time.perf_counter()
    for wire in wires:
        assert await engine.query(wire, "udp") is not None
    return (time.perf_counter() - start) / len(wires) * 1e6


async def run(names: int, rounds: int) -> None:
    loop = asyncio.get_running_loop()
    upstream = Upstream()
    transport, _ = await loop.create_datagram_endpoint(lambda: upstream,
                                                       local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    index = ClusterDnsIndex("cluster.local", forwarding=True)
    index.replace_all([], [], [], [{"metadata": {"name": "default"}}])
    wires = [dns.message.make_query(f"host-{i}.example.test", "A", use_edns=0).to_wire()
             for i in range(names)]
    relayed, cached = [], []
    try:
        for _ in range(rounds):
            engine = DnsEngine(index, upstream=("127.0.0.1", port))
            engine.upstream_answers = NoCache()
            relayed.append(await per_query_us(engine, wires))
            engine = DnsEngine(index, upstream=("127.0.0.1", port))
            await per_query_us(engine, wires)               # warm it
            before = upstream.asked
            cached.append(await per_query_us(engine, wires))
            assert upstream.asked == before, "a warm cache asked the upstream"
    finally:
        transport.close()
    before_us, after_us = statistics.median(relayed), statistics.median(cached)
    print(f"names outside the cluster, {names} distinct names, median of {rounds} rounds")
    print(f"  relayed to the upstream every time (before)  {before_us:8.1f} us/query")
    print(f"  answered from the cache (now)                {after_us:8.1f} us/query")
    print(f"  ratio before/now                             {before_us / after_us:8.2f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--names", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    if args.names < 1 or args.rounds < 1:
        p.error("--names and --rounds must be at least 1")
    asyncio.run(run(args.names, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
