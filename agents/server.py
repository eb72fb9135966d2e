"""The agent's own HTTP endpoints: health, container logs, exec and port-forward (kubelet's API).

Only the control plane talks to these (it relays `kubectl logs` and `kubectl exec`), so every
path but /healthz needs the agent token derived from the cluster secret.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web

from agents.cni.routes import RouteTable
from agents.exec_server import exec_handler
from agents.netstack import PodNet
from agents.observe import route_rows
from agents.portforward_server import PortForwardEndpoint
from agents.runtime import PodRuntime
from agents.toolbox import ExecTarget
from podnet.auth import token_matches

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Failure", "message": message, "reason": reason,
                              "code": code}, status=code)


# Paths whose protocols authenticate every message themselves (HMACs under the cluster
# secret, with replay protection), so a bearer token would add nothing but a replayable value.
SELF_AUTHENTICATED = ("/gossip/", "/tunnel")


def build_agent_app(runtime: PodRuntime, agent_token: str,
                    extra: Callable[[web.Application], None] | None = None,
                    route_table: RouteTable | None = None) -> web.Application:
    """The agent's HTTP app; `extra` adds the CNI's routes (gossip, tunnels)."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/healthz" and not request.path.startswith(SELF_AUTHENTICATED) \
                and not token_matches(request.headers.get("Authorization"), agent_token):
            return _status(401, "Unauthorized", "Unauthorized")
        return await handler(request)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    def lookup(namespace: str, name: str, container: str | None) -> ExecTarget | str:
        pod = runtime.find(namespace, name)
        if pod is None:
            return f'pod "{name}" is not running on node {runtime.node}'
        if container is None:
            container = next(iter(pod.containers), "")
        if container not in pod.containers:
            return f'container "{container}" not found in pod "{name}"'
        return pod.exec_target(container)

    async def container_log(request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        pod = runtime.find(ns, name)
        if pod is None:
            return _status(404, "NotFound", f'pod "{name}" is not running on node '
                                            f"{runtime.node}")
        q = request.query
        container = q.get("container") or next(iter(pod.containers), "")
        buf = pod.logs.get(container)
        if buf is None:
            return _status(400, "BadRequest",
                           f'container "{container}" in pod "{name}" is not valid')
        try:
            tail = int(q["tailLines"]) if "tailLines" in q else None
            since = float(q["sinceSeconds"]) if "sinceSeconds" in q else None
            limit = int(q["limitBytes"]) if "limitBytes" in q else None
        except ValueError as e:
            return _status(400, "BadRequest", f"bad log option: {e}")
        since_ts = time.time() - since if since is not None else None
        if "sinceTime" in q:
            try:
                since_ts = datetime.fromisoformat(q["sinceTime"].replace("Z", "+00:00")
                                                  ).timestamp()
            except ValueError:
                return _status(400, "BadRequest", f"bad sinceTime {q['sinceTime']!r}")
        stamps = q.get("timestamps") == "true"

        def render(ts: float, text: str) -> bytes:
            if stamps:
                stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
                return f"{stamp} {text}".encode()
            return text.encode()

        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)
        sent = 0
        if q.get("follow") == "true":
            async for line in buf.follow(tail=tail, since_ts=since_ts):
                data = render(line.ts, line.text)
                if limit is not None and sent + len(data) > limit:
                    break
                await resp.write(data)
                sent += len(data)
        else:
            chunk = b"".join(render(ln.ts, ln.text)
                             for ln in buf.snapshot(tail=tail, since_ts=since_ts))
            await resp.write(chunk[:limit] if limit is not None else chunk)
        await resp.write_eof()
        return resp

    async def routes(_: web.Request) -> web.Response:
        """This node's route table as it sees it (`podnet routes`)."""
        table = route_table.all() if route_table is not None else []
        return web.json_response({"node": runtime.node,
                                  "routes": route_rows(table, time.time())})

    app = web.Application(middlewares=[auth])
    app.router.add_get("/routes", routes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/pods/{namespace}/{name}/log", container_log)
    app.router.add_get("/pods/{namespace}/{name}/exec", exec_handler(lookup))

    def pod_net(namespace: str, name: str) -> PodNet | None:
        pod = runtime.find(namespace, name)
        return pod.net if pod is not None else None

    forwards = PortForwardEndpoint(pod_net)
    app.router.add_get("/pods/{namespace}/{name}/portforward", forwards.handler)
    app.on_shutdown.append(forwards.on_shutdown)
    if extra is not None:
        extra(app)
    return app

