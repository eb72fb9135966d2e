"""The topology page's HTTP side, under /podnet/ui/ on the API's own HTTPS server.

The API's auth middleware lets /podnet/ui/ through (a browser following a link cannot send a
bearer token), so every handler here checks for itself: the `podnet-ui` session cookie, or
the API's bearer token (scripts, the bench). Nothing under the prefix is answered without
one, including paths that do not exist (a catch-all keeps them from reaching the API's
dispatcher unauthenticated).

    GET /podnet/ui/?login=CODE    one-time code -> session cookie, 303 to /podnet/ui/
    GET /podnet/ui/               the page (static/index.html)
    GET /podnet/ui/static/{file}  its assets
    GET /podnet/ui/events         server-sent events from the hub
    GET /podnet/ui/api/view       the snapshot as JSON
    GET /podnet/ui/api/flows      the held flows, filtered like `podnet logs`
                                  (?pod=&node=&verdict=&proto=&flow=&limit=)
    GET /podnet/ui/api/flows/{id} one flow's story, hop by hop
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from controlplane.ui.hub import PING_EVERY_S, UiHub
from podnet.auth import UsedLoginCodes, check_ui_session, token_matches, ui_session
from podnet.observe.flows import FlowFilter

log = structlog.get_logger(component="ui")  # lazy: bound once logging is configured

PREFIX = "/podnet/ui/"
COOKIE = "podnet-ui"
STATIC_DIR = Path(__file__).resolve().parent / "static"
SESSION_TTL_S = 7 * 86400
_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_FLOW_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
    ".ico": "image/x-icon", ".json": "application/json", ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}
NO_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
FLOW_QUERY = frozenset({"pod", "node", "verdict", "proto", "flow", "limit"})
MAX_ROWS = 1000
# The browser reconnects this soon after the stream breaks (a restart, a network blip).
RETRY_MS = 1000


def _page(title: str, body: str, status: int) -> web.Response:
    text = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
            "<style>body{font:15px system-ui,sans-serif;margin:3em auto;max-width:36em;"
            "color:#222}code{background:#eee;padding:.1em .3em}</style></head>"
            f"<body><h1>{title}</h1>{body}</body></html>")
    return web.Response(status=status, text=text, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


def login_failed_page() -> web.Response:
    return _page("podnet: login link not valid",
                 "<p>This login link was already used or has expired; get a new one with: "
                 "<code>podnet ui</code></p>", 401)


def login_needed_page() -> web.Response:
    return _page("podnet: log in",
                 "<p>This page needs a login link. Get one with: <code>podnet ui</code></p>",
                 401)


class QuietLog:
    """Logs an event at most once per `every_s` per event name, with how many were left out
    since: a page retrying every second with an expired cookie, or someone guessing codes,
    must not flood the log."""

    def __init__(self, clock: Callable[[], float], every_s: float = 10.0) -> None:
        self.clock = clock
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def __call__(self, event: str, **fields: Any) -> None:
        now = self.clock()
        if now - self._last.get(event, -self.every_s) < self.every_s:
            self._skipped[event] = self._skipped.get(event, 0) + 1
            return
        self._last[event] = now
        skipped = self._skipped.pop(event, 0)
        log.info(event, **fields, **({"not_logged_before": skipped} if skipped else {}))


class UiServer:
    """The handlers; `add_routes` is what `build_app(extra_routes=...)` calls."""

    def __init__(self, hub: UiHub, secret: bytes, api_token: str, *,
                 static_dir: Path = STATIC_DIR, clock: Callable[[], float] = time.time,
                 used_codes_file: Path | None = None) -> None:
        self.hub = hub
        self.secret = secret
        self.api_token = api_token
        self.static_dir = static_dir.resolve()
        self.clock = clock
        self.used_codes = UsedLoginCodes()
        # Used login codes outlive a restart: a link works once, not once per control plane.
        self.used_codes_file = used_codes_file
        if used_codes_file is not None:
            self._load_used_codes(used_codes_file)
        self.quiet = QuietLog(time.monotonic)

    def _load_used_codes(self, path: Path) -> None:
        """Read what earlier runs redeemed, and write back only the live ones."""
        now = self.clock()
        try:
            self.used_codes.load(path.read_text(encoding="ascii", errors="replace"), now)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("ui.used_codes_unread", path=str(path), error=str(e))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(self.used_codes.dump(now), encoding="ascii")
            tmp.chmod(0o600)
            tmp.replace(path)
        except OSError as e:
            log.warning("ui.used_codes_unwritten", path=str(path), error=str(e))

    def _remember_used_code(self, nonce: str, expires: int) -> None:
        if self.used_codes_file is None:
            return
        try:    # one short line, appended: a login is rare, so this blocks nothing for long
            with self.used_codes_file.open("a", encoding="ascii") as f:
                f.write(f"{nonce} {expires}\n")
        except OSError as e:
            log.warning("ui.used_codes_unwritten", path=str(self.used_codes_file),
                        error=str(e))

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(PREFIX, self.index)
        r.add_get(PREFIX + "static/{file}", self.static)
        r.add_get(PREFIX + "events", self.events)
        r.add_get(PREFIX + "api/view", self.view)
        r.add_get(PREFIX + "api/flows", self.flow_list)
        r.add_get(PREFIX + "api/flows/{flow}", self.flow)
        r.add_route("*", PREFIX + "{tail:.*}", self.other)
        app.on_shutdown.append(self.on_shutdown)

    async def on_shutdown(self, _: web.Application) -> None:
        await self.hub.close()

    # ------------------------------------------------------------------ auth

    def authorized(self, request: web.Request) -> bool:
        if check_ui_session(self.secret, request.cookies.get(COOKIE), self.clock()):
            return True
        return token_matches(request.headers.get("Authorization"), self.api_token)

    def refuse(self, request: web.Request) -> web.Response:
        self.quiet("ui.unauthorized", path=request.path, remote=request.remote,
                   cookie=COOKIE in request.cookies)
        return web.json_response({"error": "unauthorized: log in with a link from "
                                           "`podnet ui`, or send the API's bearer token"},
                                 status=401, headers={"Cache-Control": "no-store"})

    # ------------------------------------------------------------------ handlers

    async def index(self, request: web.Request) -> web.StreamResponse:
        codes = request.query.getall("login", [])
        if codes:
            now = self.clock()
            token = self.used_codes.redeem(self.secret, codes[0], now) \
                if len(codes) == 1 else None
            if token is None:
                self.quiet("ui.login_refused", remote=request.remote,
                           reason="several codes" if len(codes) != 1
                           else "used, expired or not genuine")
                return login_failed_page()
            self._remember_used_code(token.nonce, token.expires)
            log.info("ui.login", remote=request.remote)
            # 303: the browser GETs the bare page, so the code leaves the address bar.
            resp = web.Response(status=303, headers={"Location": PREFIX})
            resp.set_cookie(COOKIE, ui_session(self.secret, now, SESSION_TTL_S),
                            max_age=SESSION_TTL_S, path=PREFIX, secure=True, httponly=True,
                            samesite="Lax")
            resp.headers["Cache-Control"] = "no-store"
            return resp
        if not self.authorized(request):
            self.quiet("ui.unauthorized", path=request.path, remote=request.remote,
                       cookie=COOKIE in request.cookies)
            return login_needed_page()
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            return self.refuse(request)
        return self._file(request.match_info["file"])

    def _file(self, name: str) -> web.Response:
        suffix = Path(name).suffix
        if not _FILE.fullmatch(name) or ".." in name or suffix not in CONTENT_TYPES:
            raise web.HTTPNotFound(text=f"no such file: {name[:100]}")
        path = self.static_dir / name
        try:
            # Only files directly in the package's static directory, never through a link.
            if path.resolve().parent != self.static_dir or not path.is_file():
                raise FileNotFoundError(name)
            body = path.read_bytes()
        except OSError:
            raise web.HTTPNotFound(text=f"no such file: {name}") from None
        return web.Response(body=body, headers={**NO_CACHE,
                                                "Content-Type": CONTENT_TYPES[suffix]})

    async def events(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            return self.refuse(request)
        if self.hub.closed:
            raise web.HTTPServiceUnavailable(text="the control plane is shutting down")
        if request.method == "HEAD":  # headers only: no stream to hold the hub open
            return web.Response(headers={"Content-Type": "text/event-stream",
                                         "Cache-Control": "no-cache"})
        client = self.hub.attach()
        resp = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})
        try:
            await resp.prepare(request)
            await resp.write(f"retry: {RETRY_MS}\n\n".encode())
            while True:
                batch = await client.next(PING_EVERY_S)
                if batch is None:
                    await resp.write(b": ping\n\n")
                elif not batch:  # the hub closed (shutdown)
                    break
                else:
                    await resp.write(b"".join(batch))
        except (ConnectionError, RuntimeError):
            pass  # the page went away mid-write: its handler ends here
        finally:
            self.hub.detach(client)
        return resp

    async def view(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            return self.refuse(request)
        if self.hub.closed:
            raise web.HTTPServiceUnavailable(text="the control plane is shutting down")
        self.hub.acquire()
        try:
            body = json.dumps(self.hub.snapshot(), separators=(",", ":"), default=str)
        finally:
            self.hub.release()
        return web.Response(text=body, content_type="application/json", headers=NO_CACHE)

    async def flow_list(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            return self.refuse(request)
        try:
            unknown = sorted(set(request.query) - FLOW_QUERY)
            if unknown:
                raise ValueError(f"unknown parameter {unknown[0][:40]!r} (known: "
                                 f"{', '.join(sorted(FLOW_QUERY))})")
            flt = FlowFilter.from_query({k: request.query.get(k, "") for k in FLOW_QUERY})
            text = request.query.get("limit", str(MAX_ROWS))
            if not (text.isascii() and text.isdigit() and len(text) <= 4
                    and 1 <= int(text) <= MAX_ROWS):
                raise ValueError(f"limit must be a number from 1 to {MAX_ROWS}")
            limit = int(text)
        except ValueError as e:
            self.quiet("ui.bad_request", path=request.path, reason=str(e))
            return web.json_response({"error": str(e)}, status=400)
        if self.hub.closed:
            raise web.HTTPServiceUnavailable(text="the control plane is shutting down")
        self.hub.acquire()
        try:
            body = {"rows": self.hub.rows(limit, flt), "stats": self.hub.flow_stats()}
        finally:
            self.hub.release()
        return web.json_response(body, headers=NO_CACHE)

    async def flow(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            return self.refuse(request)
        flow_id = request.match_info["flow"]
        if not _FLOW_ID.fullmatch(flow_id):
            self.quiet("ui.bad_request", path=request.path[:200], reason="flow id")
            return web.json_response({"error": "not a flow id"}, status=400)
        if self.hub.closed:
            raise web.HTTPServiceUnavailable(text="the control plane is shutting down")
        self.hub.acquire()
        try:
            detail: dict[str, Any] | None = self.hub.detail(flow_id)
        finally:
            self.hub.release()
        if detail is None:
            return web.json_response({"error": f"no flow {flow_id} is held (flows are kept "
                                               "while a page is open, the newest first)"},
                                     status=404)
        return web.json_response(detail, dumps=lambda o: json.dumps(o, default=str),
                                 headers=NO_CACHE)

    async def other(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            return self.refuse(request)
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        raise web.HTTPNotFound(text=f"nothing at {html.escape(request.path[:200])}")
