"""Probing pods that run `py:podapps.netpol_probe:serve`, for the NetworkPolicy tests.

A probe is one exec in the source pod (the path `podnet exec` takes, without a process per
call): `curl` asks the pod's own loopback probe server to try every target at once, and the
answer says, per (IP, port, protocol), which pod answered or why none did.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable, Sequence

from harness import RunningCluster

from podnet.execclient import exec_in_pod

# (ip, port, protocol) -> "ok <ns>/<pod>" | "refused" | "timeout" | "error-<errno>" | "closed"
Outcomes = dict[tuple[str, int, str], str]


async def probe_from(cluster: RunningCluster, namespace: str, pod: str, targets: Sequence[str],
                     ports: Iterable[int] = (), protocols: Iterable[str] = ()) -> Outcomes:
    query = f"to={','.join(targets)}"
    if ports:
        query += f"&ports={','.join(map(str, ports))}"
    if protocols:
        query += f"&protocols={','.join(protocols)}"
    out, err = io.BytesIO(), io.BytesIO()
    code = await exec_in_pod(
        cluster.info["api"], cluster.token, namespace, pod, None,
        ["curl", "-s", f"http://127.0.0.1:8080/probe?{query}"],
        stdin=False, stdout=out, stderr=err, ssl_context=cluster.ssl)
    assert code == 0, (f"probing from {namespace}/{pod}", out.getvalue(), err.getvalue())
    found: Outcomes = {}
    for line in out.getvalue().decode().splitlines():
        ip, port, proto, outcome = line.split(" ", 3)
        found[(ip, int(port), proto)] = outcome
    return found


def probe_all(cluster: RunningCluster, sources: Sequence[tuple[str, str]],
              targets: Sequence[str], ports: Iterable[int] = (),
              protocols: Iterable[str] = ()) -> list[Outcomes]:
    """probe_from every (namespace, pod) in `sources` at once; one Outcomes per source."""
    ports, protocols = tuple(ports), tuple(protocols)

    async def every() -> list[Outcomes]:
        return await asyncio.gather(*(probe_from(cluster, ns, pod, targets, ports, protocols)
                                      for ns, pod in sources))
    return asyncio.run(every())
