"""Headless Chromium driven through the DevTools protocol (CDP) over one aiohttp WebSocket:
enough for tests and benches to open a page, read its DOM with JS, click, take a screenshot and
see every JS exception and console error. No new dependency: CDP is JSON over a WebSocket.

    async with await Browser.launch() as browser:
        page = await browser.new_page()
        status = await page.navigate("https://127.0.0.1:6443/podnet/ui/?login=...")
        await page.wait_for("document.querySelector('#live')?.dataset.state === 'live'")
        await page.click("tr.flow")
        png = await page.screenshot(path)

The browser runs in its own process group with a throw-away profile; `close()` (also on any
error, from `async with`) kills that group by its id and removes the profile.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

CHROMIUM = os.environ.get("PODNET_CHROMIUM", "/usr/bin/chromium")
# The brief's flags: headless, no sandbox (CI runs as root), nothing phoning home, and the
# cluster's own CA accepted without installing it (the page is served over the API's TLS).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--ignore-certificate-errors", "--remote-debugging-port=0", "--hide-scrollbars",
         "--mute-audio")
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")
# Resources a browser fetches on its own (not the page's doing): their failures are not errors.
_AMBIENT = re.compile(r"/favicon\.ico")


def chromium_path() -> str | None:
    """The Chromium binary, if this machine has it."""
    return CHROMIUM if os.access(CHROMIUM, os.X_OK) else None


def require_chromium() -> str:
    """The Chromium binary, or skip the calling test with the reason."""
    found = chromium_path()
    if found is None:
        import pytest

        pytest.skip(f"chromium is not installed ({CHROMIUM} missing): the browser tests need "
                    "Debian's chromium (`apt-get install chromium`; .ci/run installs it as root)")
    return found


class CdpError(RuntimeError):
    """The browser answered a command with an error."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        super().__init__(f"{method}: {error.get('message', error)} "
                         f"({error.get('code', '?')}) {error.get('data', '')}".rstrip())
        self.method = method
        self.code = error.get("code")


class JsError(RuntimeError):
    """A JS expression evaluated in the page threw."""


@dataclass(frozen=True)
class PageError:
    kind: str          # "exception" (uncaught), "console" (console.error/assert), "log" (browser)
    text: str
    url: str = ""
    line: int = 0

    def __str__(self) -> str:
        where = f" at {self.url}:{self.line}" if self.url else ""
        return f"{self.kind}: {self.text}{where}"


@dataclass(frozen=True)
class DocumentResponse:
    url: str
    status: int


def _remote_text(obj: dict[str, Any]) -> str:
    """One console argument as the DevTools console would print it."""
    if "value" in obj:
        value = obj["value"]
        return value if isinstance(value, str) else json.dumps(value)
    return str(obj.get("description") or obj.get("unserializableValue") or obj.get("type", ""))


def _exception_text(details: dict[str, Any]) -> str:
    exc = details.get("exception") or {}
    return str(exc.get("description") or exc.get("value") or details.get("text") or "exception")


Listener = Callable[[str, dict[str, Any], str | None], None]


class _Connection:
    """One CDP WebSocket: commands matched to answers by id, events handed to listeners."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._session = session
        self._ws = ws
        self._next_id = 0
        self._pending: dict[int, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self.listeners: list[Listener] = []
        self._reader = asyncio.create_task(self._read_loop(), name="cdp-reader")

    @classmethod
    async def open(cls, url: str) -> _Connection:
        session = aiohttp.ClientSession()
        try:
            # Screenshots of a 1600x1000 page are a few MB of base64 in one message.
            ws = await session.ws_connect(url, max_msg_size=256 * 1024 * 1024)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   session_id: str | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
        if self._reader.done():
            raise ConnectionError(f"{method}: the DevTools connection is closed")
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session_id is not None:
            msg["sessionId"] = session_id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = (method, fut)
        try:
            await self._ws.send_str(json.dumps(msg))
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._pending.pop(msg["id"], None)

    async def _read_loop(self) -> None:
        try:
            async for frame in self._ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                msg = json.loads(frame.data)
                if "id" in msg:
                    method, fut = self._pending.get(msg["id"], ("", None))
                    if fut is None or fut.done():
                        continue
                    if "error" in msg:
                        fut.set_exception(CdpError(method, msg["error"]))
                    else:
                        fut.set_result(msg.get("result") or {})
                elif "method" in msg:
                    for listener in list(self.listeners):
                        listener(msg["method"], msg.get("params") or {}, msg.get("sessionId"))
        finally:
            for method, fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"{method}: the browser went away"))

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        with contextlib.suppress(Exception):
            await self._ws.close()
        await self._session.close()


class Browser:
    """A headless Chromium process and its DevTools connection."""

    def __init__(self, proc: subprocess.Popen[bytes], profile: Path, conn: _Connection,
                 ws_url: str) -> None:
        self.proc = proc
        self.profile = profile
        self.ws_url = ws_url
        self._conn = conn
        self.pages: list[Page] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def launch(cls, *, width: int = 1600, height: int = 1000, timeout_s: float = 30.0,
                     chromium: str | None = None) -> Browser:
        binary = chromium or require_chromium()
        profile = Path(tempfile.mkdtemp(prefix="podnet-chromium-"))
        stderr_path = profile / "stderr.log"
        argv = [binary, *FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}",
                "about:blank"]
        proc = _spawn(argv, stderr_path)
        try:
            ws_url = await _devtools_url(proc, stderr_path, timeout_s)
            conn = await _Connection.open(ws_url)
        except BaseException:
            _kill(proc)
            shutil.rmtree(profile, ignore_errors=True)
            raise
        return cls(proc, profile, conn, ws_url)

    async def new_page(self, *, width: int = 1600, height: int = 1000,
                       isolated: bool = False) -> Page:
        """A new tab. `isolated`: in a fresh browser context (its own cookies, like a private
        window), e.g. to be a visitor who never logged in."""
        params: dict[str, Any] = {"url": "about:blank"}
        if isolated:
            context = await self._conn.send("Target.createBrowserContext")
            params["browserContextId"] = context["browserContextId"]
        created = await self._conn.send("Target.createTarget", params)
        attached = await self._conn.send("Target.attachToTarget",
                                         {"targetId": created["targetId"], "flatten": True})
        page = Page(self._conn, attached["sessionId"], created["targetId"])
        await page._start(width, height)
        self.pages.append(page)
        return page

    def stderr_tail(self, n: int = 4000) -> str:
        return _read(self.profile / "stderr.log")[-n:]

    async def close(self) -> None:
        try:
            with contextlib.suppress(Exception):
                await self._conn.close()
        finally:
            _kill(self.proc)
            shutil.rmtree(self.profile, ignore_errors=True)

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


def _spawn(argv: list[str], stderr_path: Path) -> subprocess.Popen[bytes]:
    with stderr_path.open("wb") as stderr:
        # Its own session, so close() can kill the browser and its helpers by one id.
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stderr, start_new_session=True)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def _devtools_url(proc: subprocess.Popen[bytes], stderr_path: Path,
                        timeout_s: float) -> str:
    """Chromium prints the browser target's WebSocket URL on stderr once it listens."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = _read(stderr_path)
        found = _LISTENING.search(text)
        if found:
            return found.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited ({proc.returncode}) before listening:\n"
                               f"{text[-3000:]}")
        await asyncio.sleep(0.05)
    raise TimeoutError(f"chromium did not print its DevTools URL within {timeout_s}s:\n"
                       f"{_read(stderr_path)[-3000:]}")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the browser's process group (the id is the browser's pid) and reap the browser."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@dataclass
class _Waiter:
    method: str
    check: Callable[[dict[str, Any]], bool]
    future: asyncio.Future[dict[str, Any]]


@dataclass
class Page:
    """One tab, attached as a flat session on the browser's connection."""

    _conn: _Connection
    session_id: str
    target_id: str
    exceptions: list[PageError] = field(default_factory=list)
    console_errors: list[PageError] = field(default_factory=list)
    log_errors: list[PageError] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)
    documents: list[DocumentResponse] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)    # every URL the page asked for
    _waiters: list[_Waiter] = field(default_factory=list)

    async def _start(self, width: int, height: int) -> None:
        self._conn.listeners.append(self._on_event)
        for domain in ("Page", "Runtime", "Network", "Log"):
            await self.send(f"{domain}.enable")
        await self.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 1,
                         "mobile": False})

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   timeout_s: float = 30.0) -> dict[str, Any]:
        return await self._conn.send(method, params, self.session_id, timeout_s)

    @property
    def errors(self) -> list[PageError]:
        """What a test wants empty: uncaught exceptions, console errors, failed loads (except
        what the browser fetches by itself, like /favicon.ico)."""
        return [*self.exceptions, *self.console_errors,
                *(e for e in self.log_errors if not _AMBIENT.search(e.url))]

    def _on_event(self, method: str, params: dict[str, Any], session_id: str | None) -> None:
        if session_id != self.session_id:
            return
        if method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails") or {}
            self.exceptions.append(PageError("exception", _exception_text(d), str(d.get("url", "")),
                                             int(d.get("lineNumber", 0))))
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_text(a) for a in params.get("args") or [])
            kind = str(params.get("type", "log"))
            self.console.append((kind, text))
            if kind in ("error", "assert"):
                frames = (params.get("stackTrace") or {}).get("callFrames") or [{}]
                self.console_errors.append(PageError("console", text,
                                                     str(frames[0].get("url", "")),
                                                     int(frames[0].get("lineNumber", 0))))
        elif method == "Log.entryAdded":
            entry = params.get("entry") or {}
            if entry.get("level") == "error":
                self.log_errors.append(PageError("log", str(entry.get("text", "")),
                                                 str(entry.get("url", "")),
                                                 int(entry.get("lineNumber", 0))))
        elif method == "Network.requestWillBeSent":
            self.requests.append(str((params.get("request") or {}).get("url", "")))
            r = params.get("redirectResponse")
            if r and params.get("type") == "Document":
                self.documents.append(DocumentResponse(str(r.get("url")),
                                                       int(r.get("status", 0))))
        elif method == "Network.responseReceived" and params.get("type") == "Document":
            r = params.get("response") or {}
            self.documents.append(DocumentResponse(str(r.get("url")), int(r.get("status", 0))))
        for w in list(self._waiters):
            if w.method == method and not w.future.done() and w.check(params):
                w.future.set_result(params)

    def _expect(self, method: str,
                check: Callable[[dict[str, Any]], bool] = lambda _: True) -> _Waiter:
        w = _Waiter(method, check, asyncio.get_running_loop().create_future())
        self._waiters.append(w)
        return w

    async def _await(self, w: _Waiter, timeout_s: float, what: str) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(w.future, timeout_s)
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}") from None
        finally:
            self._waiters.remove(w)

    async def navigate(self, url: str, timeout_s: float = 30.0) -> int:
        """Open `url` and wait for its load event; the final document's HTTP status."""
        before = len(self.documents)
        loaded = self._expect("Page.loadEventFired")
        try:
            result = await self.send("Page.navigate", {"url": url})
        except BaseException:
            self._waiters.remove(loaded)
            raise
        if result.get("errorText"):
            self._waiters.remove(loaded)
            raise RuntimeError(f"navigating to {url} failed: {result['errorText']}")
        await self._await(loaded, timeout_s, f"{url} to load")
        docs = self.documents[before:]
        return docs[-1].status if docs else 0

    async def evaluate(self, expression: str, timeout_s: float = 30.0) -> Any:
        """The value of a JS expression (promises awaited), as JSON; JsError if it threw."""
        result = await self.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True,
            "userGesture": True}, timeout_s)
        if "exceptionDetails" in result:
            raise JsError(f"{_exception_text(result['exceptionDetails'])}\n  in: {expression}")
        return (result.get("result") or {}).get("value")

    async def wait_for(self, predicate: str, timeout_s: float = 15.0, interval_s: float = 0.05,
                       what: str | None = None) -> Any:
        """Poll a JS expression until it is truthy; its value. An expression that throws (the
        page still loading, an element not there yet) counts as not yet."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while True:
            try:
                last = await self.evaluate(predicate)
                if last:
                    return last
            except (JsError, CdpError) as e:
                last = e
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout_s}s waiting for "
                                     f"{what or predicate} (last: {last!r})")
            await asyncio.sleep(interval_s)

    async def click(self, selector: str) -> None:
        """A bubbling mouse click on the first element matching `selector` (HTML or SVG)."""
        await self.evaluate(f"""(() => {{
            const el = document.querySelector({json.dumps(selector)});
            if (!el) throw new Error("no element matches " + {json.dumps(selector)});
            el.dispatchEvent(new MouseEvent("click",
                {{bubbles: true, cancelable: true, view: window}}));
            return true;
        }})()""")

    async def screenshot(self, path: Path | None = None) -> bytes:
        """A PNG of the viewport; also written to `path` (parents made) when given."""
        shot = await self.send("Page.captureScreenshot", {"format": "png"}, timeout_s=60)
        png = base64.b64decode(shot["data"])
        if path is not None:
            _write(path, png)
        return png

    async def cookies(self, url: str) -> list[dict[str, Any]]:
        """The cookies the browser would send to `url` (HttpOnly ones included)."""
        got = await self.send("Network.getCookies", {"urls": [url]})
        return list(got.get("cookies") or [])


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (raises ValueError if it is not a PNG)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
