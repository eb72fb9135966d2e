"""`registry.k8s.io/echoserver`: nginx + lua on 8080 printing what it knows of a request.

The body lists the hostname, the pod (from `$NODE_NAME`, `$POD_NAME`, `$POD_NAMESPACE`,
`$POD_IP` when the manifest sets them through the downward API), the server, the request
(client address, method, path, query, URI) and its headers (lowercased, sorted) and body.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from agents.images import ContainerContext
from agents.images.httpserve import local_port, peer, serve, server_header
from podnet.addresses import hostport

PORT = 8080
SERVER = "nginx/1.13.3"


def echo_text(*, hostname: str, env: Mapping[str, str], client: str, method: str, path: str,
              query: str, version: str, uri: str, headers: list[tuple[str, str]],
              body: bytes) -> str:
    """The response body (pure)."""
    pod_keys = (("node name", "NODE_NAME"), ("pod name", "POD_NAME"),
                ("pod namespace", "POD_NAMESPACE"), ("pod IP", "POD_IP"))
    if any(env.get(key) for _, key in pod_keys):
        pod = "".join(f"\t{label}:\t{env.get(key, '')}\n" for label, key in pod_keys)
    else:
        pod = "\t-no pod information available-\n"
    head = "".join(f"\t{k.lower()}={v}\n" for k, v in sorted(headers, key=lambda h: h[0].lower()))
    shown = body.decode("utf-8", "replace") if body else "\t-no body in request-"
    return (f"\n\nHostname: {hostname}\n\nPod Information:\n{pod}\n"
            f"Server values:\n\tserver_version=nginx: 1.13.3 - lua: 10008\n\n"
            f"Request Information:\n\tclient_address={client}\n\tmethod={method}\n"
            f"\treal path={path}\n\tquery={query}\n\trequest_version={version}\n"
            f"\trequest_scheme=http\n\trequest_uri={uri}\n\n"
            f"Request Headers:\n{head}\nRequest Body:\n{shown}\n\n")


async def run(ctx: ContainerContext, argv: list[str]) -> int:
    hostname = ctx.pod.hostname or ctx.pod.name

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        host = request.host or hostport(ctx.pod.ip, local_port(request))
        text = echo_text(hostname=hostname, env=ctx.env, client=peer(request)[0],
                         method=request.method, path=request.path,
                         query=request.query_string,
                         version=f"{request.version.major}.{request.version.minor}",
                         uri=f"http://{host}{request.raw_path}",
                         headers=list(request.headers.items()), body=body)
        response = web.Response(body=text.encode())
        response.headers["Content-Type"] = "text/plain"
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server_header(app, SERVER)
    return await serve(ctx, app, [PORT])
