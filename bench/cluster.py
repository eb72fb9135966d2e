"""Cluster-level benchmarks for the foundation, each beside a baseline from the same run.

    .venv/bin/python bench/cluster.py [--runs 5] [--pods 1000]

1. `podnet up --detach --nodes 3` until every node is Ready (median of --runs), beside the
   floor for the same work: starting 4 Python interpreters that import the same libraries.
2. Creating --pods pods through the API with 16 concurrent clients (accepted per second), beside
   the rate of a trivial aiohttp JSON endpoint on this machine with the same client; then the
   time until all are Running on 3 nodes.
3. `kubectl get pods` with those pods listed (median of 5), beside `kubectl version --client`
   (kubectl's own start-up cost).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from podnet.auth import api_token, load_secret  # noqa: E402

PODNET = [sys.executable, "-c", "import sys; from podnet.cli import main; sys.exit(main())"]


def up(state: Path, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run([*PODNET, "up", "--detach", "--no-demo", "--nodes", "3", "--state-dir",
                    str(state)], check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def down(state: Path) -> None:
    subprocess.run([*PODNET, "down", "--state-dir", str(state)], capture_output=True)


def interpreter_floor() -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", "import aiohttp, structlog, sqlite3, yaml"])
             for _ in range(4)]
    for p in procs:
        p.wait()
    return time.perf_counter() - t0


async def post_pods(url: str, count: int, tls: ssl.SSLContext, headers: dict[str, str],
                    concurrency: int = 16) -> float:
    """POST `count` pod manifests to `url` from `concurrency` clients; returns requests/s."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"bench-{i}"},
                    "spec": {"containers": [{"name": "e", "image": "podnet/echo"}]}}
            async with session.post(url, data=json.dumps(body), headers=headers) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"create failed: {resp.status} {await resp.text()}")
                await resp.read()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return count / (time.perf_counter() - t0)


async def create_pods(api: str, token: str, count: int, tls: ssl.SSLContext) -> float:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return await post_pods(f"{api}/api/v1/namespaces/default/pods", count, tls, headers)


async def baseline_http_rate(count: int, state: Path) -> float:
    """The same client against a trivial aiohttp endpoint over the same TLS, storing into a
    dict: the cost of HTTPS + JSON alone, with no validation, store or fsync."""
    from podnet.pki import client_context, server_context

    stored: dict[str, bytes] = {}

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        stored[str(len(stored))] = body
        return web.json_response(json.loads(body), status=201)

    app = web.Application()
    app.router.add_post("/p", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    pki = state / "pki"
    site = web.TCPSite(runner, "127.0.0.1", 0,
                       ssl_context=server_context(pki / "apiserver.crt", pki / "apiserver.key"))
    await site.start()
    port = runner.addresses[0][1]
    tls = client_context((pki / "ca.crt").read_bytes())
    try:
        return await post_pods(f"https://127.0.0.1:{port}/p", count, tls,
                               {"Content-Type": "application/json"})
    finally:
        await runner.cleanup()


async def wait_running(api: str, token: str, count: int, tls: ssl.SSLContext,
                       timeout_s: float = 120) -> float:
    t0 = time.perf_counter()
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers,
                                     connector=aiohttp.TCPConnector(ssl=tls)) as session:
        while time.perf_counter() - t0 < timeout_s:
            async with session.get(f"{api}/api/v1/namespaces/default/pods",
                                   params={"fieldSelector": "status.phase=Running"}) as resp:
                items = (await resp.json())["items"]
            if sum(1 for p in items if p["metadata"]["name"].startswith("bench-")) >= count:
                return time.perf_counter() - t0
            await asyncio.sleep(0.1)
    raise RuntimeError(f"pods not Running within {timeout_s}s")


def timed(cmd: list[str], env: dict[str, str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--pods", type=int, default=1000)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="podnet-bench-"))
    try:
        ups, floors = [], []
        for i in range(args.runs):
            floors.append(interpreter_floor())
            state = root / f"up{i}"
            try:
                ups.append(up(state))
            finally:
                down(state)
        up_s, floor_s = statistics.median(ups), statistics.median(floors)
        print(f"podnet up --detach --nodes 3 -> all Ready: median {up_s:.2f}s over "
              f"{args.runs} runs (target < 3 s; kind: 12-17 s for one node)")
        print(f"  baseline: 4 interpreters importing the same libraries: {floor_s:.2f}s "
              f"(ratio {up_s / floor_s:.1f}x)")

        state = root / "pods"
        # A /24 holds 253 pods, so 1000 pods on 3 nodes need bigger node CIDRs (/22: 1021).
        up(state, dict(os.environ, PODNET_NODE_CIDR_MASK="22"))
        try:
            info = json.loads((state / "cluster.json").read_text())
            token = api_token(load_secret(state / "secret"))
            tls = ssl.create_default_context(cafile=info["ca_file"])
            base = asyncio.run(baseline_http_rate(args.pods, state))
            rate = asyncio.run(create_pods(info["api"], token, args.pods, tls))
            running_s = asyncio.run(wait_running(info["api"], token, args.pods, tls))
            print(f"create {args.pods} pods, 16 concurrent clients: {rate:.0f} accepted/s "
                  f"(target >= 300/s), each durable (fsync) before the reply")
            print(f"  baseline: trivial aiohttp JSON endpoint, same client: {base:.0f} req/s "
                  f"(ratio {rate / base:.2f})")
            print(f"  all {args.pods} Running on 3 nodes {running_s:.1f}s after the last create "
                  "(target: within 10 s)")
            kubectl = shutil.which("kubectl")
            if kubectl:
                env = dict(os.environ, KUBECONFIG=str(state / "kubeconfig"),
                           KUBECACHEDIR=str(state / "kcache"))
                listed = subprocess.run([kubectl, "get", "pods", "--no-headers"], env=env,
                                        capture_output=True, text=True)  # also warms caches
                rows = len(listed.stdout.splitlines())
                if rows != args.pods:
                    raise RuntimeError(f"kubectl listed {rows} pods, expected {args.pods}")
                get_s = timed([kubectl, "get", "pods"], env)
                ver_s = timed([kubectl, "version", "--client"], env)
                print(f"kubectl get pods with {args.pods} pods: median {get_s:.2f}s "
                      "(target < 1 s)")
                print(f"  baseline: kubectl version --client: {ver_s:.2f}s")
        finally:
            down(state)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
