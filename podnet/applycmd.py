"""`podnet apply -f FILE...`: create or update objects from Kubernetes YAML, like
`kubectl apply` without kubectl.

The cluster is found either from a state directory's `cluster.json` (as `podnet exec` does),
or with `--api URL --secret-file F`: then the cluster CA is fetched from the control plane and
accepted only if its HMAC under the secret verifies (as an agent does), so no CA file or
kubeconfig is needed. `--wait-nodes N` first waits until N nodes are Ready (the one-shot demo
service of docker-compose.yml uses it), retrying while the control plane is not up yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
import time
from pathlib import Path
from typing import Any

from podnet.auth import SecretError, api_token, load_secret
from podnet.client import ApiClient, ApiUnavailable, CaMismatch, fetch_cluster_info
from podnet.cluster import ClusterNotFound, client_ssl, read_cluster
from podnet.manifests import ManifestError, apply, load_manifests
from podnet.pki import client_context
from podnet.resources import BY_KIND


class ApplyError(Exception):
    """`podnet apply` cannot go on; the message says why."""


async def _connect(api: str | None, secret_file: Path | None, state_dir: Path,
                   deadline: float) -> tuple[str, str, ssl.SSLContext]:
    """(API URL, bearer token, TLS context that trusts the cluster CA)."""
    if not api:
        info = read_cluster(state_dir)
        secret = load_secret(Path(info.get("secret_file") or state_dir / "secret"))
        return str(info["api"]), api_token(secret), client_ssl(info)
    path = secret_file or state_dir / "secret"
    for _ in range(int(max(0.0, deadline - time.monotonic()) / 0.2)):
        if path.exists():
            break
        await asyncio.sleep(0.2)  # the control plane writes it at its first start
    secret = load_secret(path)
    delay = 0.1
    while True:
        try:
            cluster = await fetch_cluster_info(api, secret)
            return api, api_token(secret), client_context(cluster.ca_pem)
        except ApiUnavailable as e:
            if time.monotonic() > deadline:
                raise ApplyError(str(e)) from None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


def _ready_nodes(items: list[dict[str, Any]]) -> list[str]:
    return sorted(n["metadata"]["name"] for n in items
                  if any(c.get("type") == "Ready" and c.get("status") == "True"
                         for c in (n.get("status") or {}).get("conditions") or []))


async def _wait_nodes(client: ApiClient, count: int, deadline: float) -> None:
    ready: list[str] = []
    while True:
        with contextlib.suppress(ApiUnavailable):
            ready = _ready_nodes((await client.list(BY_KIND["Node"]))["items"])
            if len(ready) >= count:
                print(f"{len(ready)} node(s) Ready: {', '.join(ready)}", flush=True)
                return
        if time.monotonic() > deadline:
            raise ApplyError(f"only {len(ready)} of {count} node(s) Ready in time "
                             f"({', '.join(ready) or 'none'})")
        await asyncio.sleep(0.5)


async def run(files: list[Path], api: str | None, secret_file: Path | None, state_dir: Path,
              namespace: str, wait_nodes: int, timeout_s: float) -> int:
    try:  # a manifest that cannot be read fails before anything is sent
        objects = [obj for path in files for obj in load_manifests(path)]
    except ManifestError as e:
        raise ApplyError(str(e)) from None
    deadline = time.monotonic() + timeout_s
    url, token, ctx = await _connect(api, secret_file, state_dir, deadline)
    async with ApiClient(url, token, ssl_context=ctx) as client:
        if wait_nodes:
            await _wait_nodes(client, wait_nodes, deadline)
        failed = 0
        for obj in objects:
            try:
                print(await apply(client, obj, default_namespace=namespace), flush=True)
            except ManifestError as e:
                failed += 1
                print(f"Error: {e}", file=sys.stderr, flush=True)
    return 1 if failed else 0


def main(files: list[Path], api: str | None, secret_file: Path | None, state_dir: Path,
         namespace: str, wait_nodes: int, timeout_s: float) -> int:
    if not files:
        print("podnet apply: no manifest given: podnet apply -f FILE", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(files, api, secret_file, state_dir, namespace, wait_nodes,
                               timeout_s))
    except (ApplyError, ClusterNotFound, SecretError, CaMismatch, ApiUnavailable) as e:
        print(f"podnet apply: {e}", file=sys.stderr)
        return 1
