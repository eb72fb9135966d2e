"""Agent memory: idle RSS, and RSS added per running `podnet/echo` pod.

    .venv/bin/python bench/memory.py [--pods 200]

Starts a one-node cluster (`podnet up --detach --nodes 1`), reads the agent's RSS from
/proc once it is idle, creates --pods echo pods on it, waits until all are Running (and
answer), then reads it again. The baseline, measured in the same run, is the RSS of a bare
interpreter that imports the same libraries the agent does: the floor any Python agent pays.
Targets: idle agent under 60 MB, under 50 KB per pod.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from podnet.auth import api_token, load_secret  # noqa: E402

PODNET = [sys.executable, "-c", "import sys; from podnet.cli import main; sys.exit(main())"]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def floor_kib() -> int:
    code = ("import aiohttp, structlog, yaml, cryptography.x509, sqlite3, uvloop, sys;"
            "import agents.main, agents.images.echo; sys.stdout.write('ready'); sys.stdout.flush();"
            "sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    proc.stdout.read(5)
    try:
        return rss_kib(proc.pid)
    finally:
        proc.kill()
        proc.wait()


async def create_and_wait(info: dict, token: str, count: int) -> None:
    tls = ssl.create_default_context(cafile=info["ca_file"])
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers,
                                     connector=aiohttp.TCPConnector(ssl=tls)) as session:
        for i in range(count):
            body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"mem-{i}"},
                    "spec": {"containers": [{"name": "e", "image": "podnet/echo",
                                             "ports": [{"containerPort": 8080}]}]}}
            async with session.post(f"{info['api']}/api/v1/namespaces/default/pods",
                                    data=json.dumps(body)) as resp:
                if resp.status != 201:
                    raise RuntimeError(await resp.text())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            async with session.get(f"{info['api']}/api/v1/namespaces/default/pods",
                                   params={"fieldSelector": "status.phase=Running"}) as resp:
                running = len((await resp.json())["items"])
            if running >= count:
                return
            await asyncio.sleep(0.2)
    raise RuntimeError("pods did not all run")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pods", type=int, default=200)
    args = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="podnet-mem-"))
    subprocess.run([*PODNET, "up", "--detach", "--no-demo", "--nodes", "1", "--state-dir",
                    str(state)], check=True, capture_output=True)
    try:
        info = json.loads((state / "cluster.json").read_text())
        agent = int(info["nodes"][0]["pid"])
        time.sleep(2)
        idle = rss_kib(agent)
        floor = floor_kib()
        asyncio.run(create_and_wait(info, api_token(load_secret(state / "secret")), args.pods))
        time.sleep(2)
        loaded = rss_kib(agent)
        per_pod = (loaded - idle) * 1024 / args.pods
        print(f"idle agent RSS: {idle / 1024:.1f} MB (target < 60 MB)")
        print(f"  baseline: bare interpreter with the same imports: {floor / 1024:.1f} MB "
              f"(agent minus floor: {(idle - floor) / 1024:+.1f} MB)")
        print(f"with {args.pods} running podnet/echo pods: {loaded / 1024:.1f} MB -> "
              f"{per_pod / 1024:.1f} KB per pod (target < 50 KB)")
    finally:
        subprocess.run([*PODNET, "down", "--state-dir", str(state)], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
