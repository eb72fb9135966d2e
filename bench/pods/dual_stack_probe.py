"""Pod image for bench/dual_stack.py (`image: py:dual_stack_probe:serve`; the bench puts
bench/pods/ and tests/ on the agents' PYTHONPATH).

`podapps.faults_probe` (tests/podapps/) as it is (64-byte echo on TCP 7000, its control server
on 127.0.0.1:8080), plus a second loopback control server on 127.0.0.1:8081 whose
`GET /rr?host=IP&n=N` runs the same timed round trips (faults_probe's own `_rr`) but answers
them in microseconds to 3 decimals: faults_probe's milliseconds to 3 decimals are 1 us steps,
7% of a ~14 us same-node round trip, too coarse for a 0.97x target. `host` may be an IPv6
literal (the netstack of a dual-stack pod dials it as is).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

from podapps import faults_probe
from podapps.probe_common import serve_control

CONTROL_PORT = 8081


async def serve(ctx: Any) -> None:
    async def control(words: list[str]) -> tuple[str, bytes]:
        url = urllib.parse.urlsplit(words[1] if len(words) == 3 else "/")
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        try:
            if url.path != "/rr":
                raise ValueError(f"unknown path {url.path}")
            n = int(query.get("n", "50"))
            if not 0 < n <= faults_probe.MAX_N:
                raise ValueError(f"n must be 1..{faults_probe.MAX_N}")
            times = await faults_probe._rr(ctx, query["host"], n)
            return "200 OK", "".join(f"{t * 1e6:.3f}\n" for t in times).encode()
        except (ValueError, KeyError, OSError, TimeoutError,
                asyncio.IncompleteReadError) as exc:
            return "500 Error", f"{type(exc).__name__}: {exc}\n".encode()

    await serve_control(ctx, control, CONTROL_PORT)
    await faults_probe.serve(ctx)
