"""Pod start-up for the emulated tutorial images, beside `podnet/echo` in the same run.

    .venv/bin/python bench/pod_startup.py [--pods 60] [--runs 5] [--nodes 2]

One `podnet up --detach` cluster. Each run creates --pods pods of each kind in turn through
the API (16 concurrent clients), timing from the first create until every one of them is
Ready, then deletes them and waits until they are gone:

- `podnet/echo` (the baseline: an aiohttp server on 8080),
- `nginx:1.25` (the emulated nginx: HTTP on 80 with the welcome page),
- `busybox` running `sleep 3600` (the toolbox's sleep as the main process).

The order of the kinds rotates from run to run so that none always goes first. Prints the
median per kind and the ratios nginx/echo and busybox/echo (target: within 1.2x).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from podnet.auth import api_token, load_secret  # noqa: E402

PODNET = [sys.executable, "-c", "import sys; from podnet.cli import main; sys.exit(main())"]
KINDS: dict[str, dict[str, Any]] = {
    "echo": {"name": "c", "image": "podnet/echo", "ports": [{"containerPort": 8080}]},
    "nginx": {"name": "c", "image": "nginx:1.25", "ports": [{"containerPort": 80}]},
    "busybox": {"name": "c", "image": "busybox", "command": ["sleep", "3600"]},
}
CONCURRENCY = 16
POLL_S = 0.05
TIMEOUT_S = 120.0


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.pods = f"{base}/api/v1/namespaces/default/pods"

    async def listed(self, batch: str) -> list[dict[str, Any]]:
        async with self.session.get(self.pods, params={"labelSelector": f"batch={batch}"}) as r:
            if r.status != 200:
                raise RuntimeError(f"list failed: {r.status} {await r.text()}")
            items: list[dict[str, Any]] = (await r.json())["items"]
            return items

    async def _each(self, count: int, one: Any) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(count):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                await one(queue.get_nowait())

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    async def create(self, batch: str, container: dict[str, Any], count: int) -> None:
        async def one(i: int) -> None:
            body = {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": f"{batch}-{i}", "labels": {"batch": batch}},
                    "spec": {"containers": [container]}}
            async with self.session.post(self.pods, data=json.dumps(body),
                                         headers={"Content-Type": "application/json"}) as r:
                if r.status != 201:
                    raise RuntimeError(f"create failed: {r.status} {await r.text()}")

        await self._each(count, one)

    async def delete(self, batch: str, count: int) -> None:
        async def one(i: int) -> None:
            async with self.session.delete(f"{self.pods}/{batch}-{i}",
                                           params={"gracePeriodSeconds": "0"}) as r:
                if r.status not in (200, 202, 404):
                    raise RuntimeError(f"delete failed: {r.status} {await r.text()}")

        await self._each(count, one)


async def wait_until(check: Any, what: str) -> None:
    deadline = time.perf_counter() + TIMEOUT_S
    while time.perf_counter() < deadline:
        if await check():
            return
        await asyncio.sleep(POLL_S)
    raise RuntimeError(f"timed out waiting for {what}")


async def one_batch(api: Api, batch: str, container: dict[str, Any], count: int) -> float:
    """Seconds from the first create until all `count` pods are Ready."""
    t0 = time.perf_counter()
    await api.create(batch, container, count)

    async def all_ready() -> bool:
        return sum(1 for p in await api.listed(batch) if _ready(p)) >= count

    await wait_until(all_ready, f"{count} pods of {batch} Ready")
    took = time.perf_counter() - t0
    await api.delete(batch, count)

    async def gone() -> bool:
        return not await api.listed(batch)

    await wait_until(gone, f"{batch} deleted")
    return took


async def measure(state: Path, count: int, runs: int) -> dict[str, list[float]]:
    info = json.loads((state / "cluster.json").read_text())
    token = api_token(load_secret(state / "secret"))
    tls = ssl.create_default_context(cafile=info["ca_file"])
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    order = list(KINDS)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"},
                                     connector=aiohttp.TCPConnector(ssl=tls)) as session:
        api = Api(session, info["api"])
        # A warm-up batch: the first pods on a fresh cluster also pay for imports and caches.
        await one_batch(api, "warm", KINDS["echo"], count)
        for run in range(runs):
            for kind in order[run % len(order):] + order[:run % len(order)]:
                took = await one_batch(api, f"{kind}-{run}", KINDS[kind], count)
                times[kind].append(took)
                print(f"  run {run + 1}: {kind:8s} {took:.2f}s", flush=True)
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pods", type=int, default=60)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--nodes", type=int, default=2)
    args = p.parse_args()
    print("$ " + shlex.join([".venv/bin/python", "bench/pod_startup.py", "--pods",
                             str(args.pods), "--runs", str(args.runs), "--nodes",
                             str(args.nodes)]))
    root = Path(tempfile.mkdtemp(prefix="podnet-bench-startup-"))
    state = root / "state"
    try:
        subprocess.run([*PODNET, "up", "--detach", "--no-demo", "--nodes", str(args.nodes),
                        "--state-dir", str(state)], check=True, capture_output=True)
        try:
            times = asyncio.run(measure(state, args.pods, args.runs))
        finally:
            subprocess.run([*PODNET, "down", "--state-dir", str(state)], capture_output=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    print(f"{args.pods} pods from first create to all Ready on {args.nodes} nodes, "
          f"median of {args.runs} runs:")
    for kind, value in medians.items():
        print(f"  {KINDS[kind]['image']:12s} {value:.2f}s  "
              f"(min {min(times[kind]):.2f}, max {max(times[kind]):.2f})")
    for kind in ("nginx", "busybox"):
        print(f"  ratio {kind}/echo: {medians[kind] / medians['echo']:.2f}x (target <= 1.2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
