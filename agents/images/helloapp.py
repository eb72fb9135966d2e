"""`gcr.io/google-samples/hello-app`: "Hello, world!", its version and the pod's hostname.

Listens on `$PORT` or 8080; the version comes from the tag (`hello-app:2.0` says 2.0.0).
"""

from __future__ import annotations

from aiohttp import web

from agents.images import ContainerContext
from agents.images.golog import printf
from agents.images.httpserve import serve, server_header
from agents.images.reference import BadReference, parse_reference


def version_of(tag: str) -> str:
    """`1.0` -> `1.0.0`, `2.0` -> `2.0.0`; anything else is the first release."""
    parts = tag.split(".")
    if tag and all(p.isdigit() for p in parts) and len(parts) <= 3:
        return ".".join(parts + ["0"] * (3 - len(parts)))
    return "1.0.0"


def hello_text(version: str, hostname: str) -> str:
    return f"Hello, world!\nVersion: {version}\nHostname: {hostname}\n"


async def run(ctx: ContainerContext, argv: list[str]) -> int:
    try:
        tag = parse_reference(ctx.image).tag if ctx.image else ""
    except BadReference:
        tag = ""
    text = hello_text(version_of(tag), ctx.pod.hostname or ctx.pod.name).encode()
    port_text = ctx.env.get("PORT", "") or "8080"
    if not port_text.isdigit() or int(port_text) > 65535:
        printf(ctx, f"listen tcp :{port_text}: address {port_text}: invalid port")
        return 1

    async def handle(request: web.Request) -> web.Response:
        printf(ctx, f"Serving request: {request.path}")
        response = web.Response(body=text)
        response.headers["Content-Type"] = "text/plain; charset=utf-8"
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server_header(app, None)
    printf(ctx, f"Server listening on port {port_text}")
    return await serve(ctx, app, [int(port_text)])
