"""`podnet routes`: every node's route table, as that node sees it (asked of each agent)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp

from podnet.auth import agent_token, load_secret


async def fetch_routes(nodes: list[dict[str, Any]], token: str,
                       timeout_s: float = 3.0) -> dict[str, list[dict[str, Any]] | str]:
    """node name -> its routes, or an error text when its agent did not answer."""

    async def one(session: aiohttp.ClientSession, node: dict[str, Any]) -> tuple[str, Any]:
        try:
            async with session.get(f"http://{node['address']}/routes",
                                   timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                if resp.status != 200:
                    return node["name"], f"HTTP {resp.status}"
                body = await resp.json()
                return node["name"], list(body.get("routes") or [])
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            return node["name"], f"unreachable ({e or type(e).__name__})"

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        answers = await asyncio.gather(*(one(session, n) for n in nodes))
    return dict(answers)


def format_age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def render(views: dict[str, list[dict[str, Any]] | str]) -> str:
    lines: list[str] = []
    for node, routes in views.items():
        if lines:
            lines.append("")
        if isinstance(routes, str):
            lines.append(f"{node}: {routes}")
            continue
        lines.append(f"{node} sees:")
        cidrs = [",".join(r.get("podCIDRs") or [r["podCIDR"]]) for r in routes]
        head = "POD CIDRS" if any("," in c for c in cidrs) else "POD CIDR"
        rows = [(head, "NODE", "ADDRESS", "STATE", "VERSION", "AGE")]
        rows += [(c, r["node"], r["address"], r["state"], r["version"],
                  format_age(float(r["age_s"]))) for c, r in zip(cidrs, routes, strict=True)]
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            lines.append("  " + "  ".join(str(c).ljust(w)
                                          for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def run(info: dict[str, Any], node: str | None, output: str) -> int:
    nodes = [n for n in info.get("nodes", []) if node is None or n.get("name") == node]
    if not nodes:
        print(f"podnet routes: no node named {node!r} in this cluster", file=sys.stderr)
        return 1
    token = agent_token(load_secret(Path(info["secret_file"])))
    views = asyncio.run(fetch_routes(nodes, token))
    failed = {n: v for n, v in views.items() if isinstance(v, str)}
    if output == "json":
        print(json.dumps({n: v for n, v in views.items() if not isinstance(v, str)}, indent=2))
        for name, why in failed.items():
            print(f"podnet routes: {name}: {why}", file=sys.stderr)
    else:
        print(render(views))
    return 1 if failed and len(failed) == len(views) else 0
