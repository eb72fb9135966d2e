"""`nginx` (and `nginx-slim`) and `httpd`: static web servers with the stock pages.

As in the real images, the server listens on port 80 whatever the manifest's `containerPort`
says (a containerPort is informational in Kubernetes; changing the port means changing the
server's configuration, which is not emulated). It serves GET and HEAD from its document root
(`/usr/share/nginx/html`, `/usr/local/apache2/htdocs`), holding the stock welcome page, and
from the container's files, so `kubectl exec web-0 -- sh -c 'echo hi >
/usr/share/nginx/html/index.html'` changes what it serves. Other paths get the server's own
404 page; other methods on a file get 405. Each request is one access-log line on stdout, in
the image's log format, with the client's pod IP.

The response logic (`respond`, `access_line`) is pure; `serve_site` puts it on the network.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from aiohttp import web

from agents.images import ContainerContext
from agents.images.httpserve import clf_time, peer, serve, server_header
from agents.images.process import run_tool
from agents.images.reference import BadReference, parse_reference

PORT = 80

# When the stock index.html of the images was built: Last-Modified and ETag derive from it.
_NGINX_MTIME = datetime(2024, 4, 16, 14, 29, 59, tzinfo=UTC)
_HTTPD_MTIME = datetime(2007, 6, 11, 18, 53, 14, tzinfo=UTC)

NGINX_INDEX = """<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"""

NGINX_50X = """<!DOCTYPE html>
<html>
<head>
<title>Error</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>An error occurred.</h1>
<p>Sorry, the page you are looking for is currently unavailable.<br/>
Please try again later.</p>
</body>
</html>
"""

HTTPD_INDEX = "<html><body><h1>It works!</h1></body></html>\n"

# The latest patch release of each minor version the tags name (`nginx:1.25` is 1.25.5).
_NGINX_RELEASES = {"1.19": "1.19.10", "1.20": "1.20.2", "1.21": "1.21.6", "1.22": "1.22.1",
                   "1.23": "1.23.4", "1.24": "1.24.0", "1.25": "1.25.5", "1.26": "1.26.2",
                   "1.27": "1.27.3", "stable": "1.26.2", "mainline": "1.27.3"}
_NGINX_DEFAULT = "1.27.3"
_HTTPD_RELEASES = {"2.4": "2.4.62", "2": "2.4.62"}
_HTTPD_DEFAULT = "2.4.62"
_VERSION_RE = re.compile(r"\d+\.\d+\.\d+")


def version_for(tag: str, releases: Mapping[str, str], default: str) -> str:
    """The server version an image tag means: `1.25.3-alpine` -> 1.25.3, `1.25` -> 1.25.5."""
    base = tag.split("-", 1)[0]
    if _VERSION_RE.fullmatch(base):
        return base
    return releases.get(base, default)


@dataclass(frozen=True)
class Site:
    kind: str           # "nginx" or "httpd"
    software: str       # what the Server header and error pages say
    docroot: str
    stock: Mapping[str, str]    # path under docroot -> the image's own file
    mtime: datetime


def nginx_site(tag: str) -> Site:
    version = version_for(tag, _NGINX_RELEASES, _NGINX_DEFAULT)
    return Site("nginx", f"nginx/{version}", "/usr/share/nginx/html",
                {"/index.html": NGINX_INDEX, "/50x.html": NGINX_50X}, _NGINX_MTIME)


def httpd_site(tag: str) -> Site:
    version = version_for(tag, _HTTPD_RELEASES, _HTTPD_DEFAULT)
    return Site("httpd", f"Apache/{version} (Unix)", "/usr/local/apache2/htdocs",
                {"/index.html": HTTPD_INDEX}, _HTTPD_MTIME)


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes         # what a GET would carry; HEAD sends the headers only


_REASONS = {301: "Moved Permanently", 404: "Not Found", 405: "Not Allowed"}


def _nginx_error(site: Site, status: int) -> bytes:
    # nginx's built-in error pages end their lines with CRLF.
    title = f"{status} {_REASONS.get(status, 'Error')}"
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>{site.software}</center>\r\n"
            "</body>\r\n</html>\r\n").encode()


def _httpd_error(status: int, method: str, path: str) -> bytes:
    if status == 405:
        title, text = ("405 Method Not Allowed",
                       f"<h1>Method Not Allowed</h1>\n<p>The requested method {method} is not "
                       "allowed for this URL.</p>\n")
    else:
        title, text = ("404 Not Found",
                       "<h1>Not Found</h1>\n<p>The requested URL was not found on this "
                       "server.</p>\n")
    return ('<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
            f"<title>{title}</title>\n</head><body>\n{text}</body></html>\n").encode()


def find_file(site: Site, path: str, files: Mapping[str, str]) -> str | None:
    """The content at URL path `path`: the container's files first, then the image's own."""
    clean = posixpath.normpath("/" + path.lstrip("/"))
    if path.endswith("/"):
        clean = posixpath.join(clean, "index.html")
    full = posixpath.normpath(site.docroot + clean)
    if full in files:
        return files[full]
    return site.stock.get(clean)


def respond(site: Site, method: str, path: str, files: Mapping[str, str]) -> Reply:
    """The reply to `method path` (pure)."""
    content = find_file(site, path, files)
    if content is None or method not in ("GET", "HEAD"):
        status = 404 if content is None else 405
        if site.kind == "nginx":
            return Reply(status, [("Content-Type", "text/html")], _nginx_error(site, status))
        headers = [("Content-Type", "text/html; charset=iso-8859-1")]
        if status == 405:
            headers.append(("Allow", "GET,POST,OPTIONS,HEAD"))
        return Reply(status, headers, _httpd_error(status, method, path))
    body = content.encode()
    stock = find_file(site, path, {}) == content
    mtime = site.mtime if stock else datetime.now(UTC).replace(microsecond=0)
    stamp = int(mtime.timestamp())
    if site.kind == "nginx":
        etag = f'"{stamp:x}-{len(body):x}"'
    else:
        etag = f'"{len(body):x}-{stamp * 1_000_000:x}"'
    return Reply(200, [("Content-Type", "text/html"),
                       ("Last-Modified", format_datetime(mtime, usegmt=True)),
                       ("ETag", etag), ("Accept-Ranges", "bytes")], body)


def _field(value: str | None) -> str:
    return value if value else "-"


def access_line(site: Site, *, client: str, when: datetime, request_line: str, status: int,
                size: int, referer: str | None, agent: str | None, forwarded: str | None) -> str:
    """One access-log line: nginx's `main` format, or Apache's common log format."""
    if site.kind == "nginx":
        return (f'{client} - - [{clf_time(when)}] "{request_line}" {status} {size} '
                f'"{_field(referer)}" "{_field(agent)}" "{_field(forwarded)}"\n')
    return f'{client} - - [{clf_time(when)}] "{request_line}" {status} {size or "-"}\n'


def startup_lines(site: Site, pod_ip: str, when: datetime) -> list[str]:
    """What the server prints as it starts."""
    if site.kind == "nginx":
        stamp = when.strftime("%Y/%m/%d %H:%M:%S")
        return ["/docker-entrypoint.sh: Configuration complete; ready for start up\n",
                f"{stamp} [notice] 1#1: {site.software}\n",
                f"{stamp} [notice] 1#1: start worker processes\n"]
    stamp = when.strftime("%a %b %d %H:%M:%S.%f %Y")
    return [f"AH00558: httpd: Could not reliably determine the server's fully qualified domain "
            f"name, using {pod_ip}. Set the 'ServerName' directive globally to suppress this "
            "message\n",
            f"[{stamp}] [mpm_event:notice] [pid 1:tid 1] AH00489: {site.software} configured "
            "-- resuming normal operations\n",
            f"[{stamp}] [core:notice] [pid 1:tid 1] AH00094: Command line: 'httpd -D "
            "FOREGROUND'\n"]


def site_for(ctx: ContainerContext, kind: str) -> Site:
    try:
        tag = parse_reference(ctx.image).tag if ctx.image else ""
    except BadReference:
        tag = ""
    return nginx_site(tag) if kind == "nginx" else httpd_site(tag)


async def serve_site(ctx: ContainerContext, site: Site) -> int:
    files: Mapping[str, str] = ctx.target.files if ctx.target is not None else {}

    async def handle(request: web.Request) -> web.StreamResponse:
        reply = respond(site, request.method, request.path, files)
        response = web.Response(status=reply.status, body=reply.body)
        for name, value in reply.headers:
            response.headers[name] = value
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        ctx.stdout.write(access_line(
            site, client=peer(request)[0], when=datetime.now(UTC),
            request_line=f"{request.method} {request.raw_path} {version}", status=reply.status,
            size=0 if request.method == "HEAD" else len(reply.body),
            referer=request.headers.get("Referer"), agent=request.headers.get("User-Agent"),
            forwarded=request.headers.get("X-Forwarded-For")))
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server_header(app, site.software)
    for line in startup_lines(site, ctx.pod.ip, datetime.now(UTC)):
        ctx.stdout.write(line)
    ctx.log.info("webserver.listening", server=site.software, port=PORT)
    return await serve(ctx, app, [PORT])


async def nginx(ctx: ContainerContext, argv: list[str]) -> int:
    """The `nginx` binary: `-v`/`-V` print the version; otherwise it serves."""
    site = site_for(ctx, "nginx")
    if "-v" in argv[1:] or "-V" in argv[1:]:
        ctx.stdout.write(f"nginx version: {site.software}\n")
        return 0
    if "-t" in argv[1:]:
        ctx.stdout.write("nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n"
                         "nginx: configuration file /etc/nginx/nginx.conf test is successful\n")
        return 0
    return await serve_site(ctx, site)


async def httpd(ctx: ContainerContext, argv: list[str]) -> int:
    """`httpd-foreground` / `httpd`: `-v` prints the version; otherwise it serves."""
    site = site_for(ctx, "httpd")
    if "-v" in argv[1:]:
        ctx.stdout.write(f"Server version: {site.software}\n")
        return 0
    return await serve_site(ctx, site)


async def docker_entrypoint(ctx: ContainerContext, argv: list[str]) -> int:
    """nginx's /docker-entrypoint.sh: configure, then exec "$@" (nginx, or anything else)."""
    rest = argv[1:]
    if not rest:
        return 0
    if posixpath.basename(rest[0]) in ("nginx", "nginx-debug"):
        return await nginx(ctx, rest)
    return await run_tool(ctx, rest)
