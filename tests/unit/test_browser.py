"""tests/browser.py, the DevTools client the page tests use, against real headless Chromium and
a small aiohttp site on 127.0.0.1: navigation and HTTP status, JS evaluation, polling, clicks on
HTML and SVG, screenshots, cookies, and the errors a page raises. Skipped without chromium."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from browser import Browser, JsError, png_size, require_chromium

INDEX = """<!doctype html><html><head><title>fixture</title></head><body>
<h1 id="t">hello</h1>
<button id="b" onclick="document.body.dataset.clicked = 'yes';
  setTimeout(() => { const p = document.createElement('p'); p.id = 'late';
  p.textContent = 'arrived'; document.body.append(p); }, 300)">go</button>
<svg width="200" height="100"><g id="g" class="node" data-node="n1"
  onclick="this.dataset.hit = 'svg'"><rect width="50" height="50"/></g></svg>
</body></html>"""

ERRORS = """<!doctype html><html><body><script>
console.error("boom", 42);
console.log("just a log");
setTimeout(() => { throw new Error("kaput"); }, 0);
</script></body></html>"""


async def _index(_: web.Request) -> web.Response:
    return web.Response(text=INDEX, content_type="text/html")


async def _errors(_: web.Request) -> web.Response:
    return web.Response(text=ERRORS, content_type="text/html")


async def _login(_: web.Request) -> web.Response:
    resp = web.Response(status=303, headers={"Location": "/"})
    resp.set_cookie("session", "s3cret", httponly=True, samesite="Lax", path="/")
    return resp


async def _denied(_: web.Request) -> web.Response:
    return web.Response(status=401, text="<p id='why'>no</p>", content_type="text/html")


@pytest.fixture
async def site() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/", _index)
    app.router.add_get("/errors", _errors)
    app.router.add_get("/login", _login)
    app.router.add_get("/denied", _denied)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    require_chromium()
    b = await Browser.launch(width=800, height=600)
    try:
        yield b
    finally:
        await b.close()


async def test_navigate_evaluate_click_wait_and_screenshot(site: str, browser: Browser,
                                                           tmp_path: Path) -> None:
    page = await browser.new_page(width=800, height=600)
    assert await page.navigate(site + "/") == 200
    assert await page.evaluate("document.title") == "fixture"
    assert await page.evaluate("({a: [1, 'x'], b: null})") == {"a": [1, "x"], "b": None}
    assert await page.evaluate("Promise.resolve(7)") == 7
    assert await page.evaluate("document.querySelector('#late')") is None

    await page.click("#b")
    assert await page.evaluate("document.body.dataset.clicked") == "yes"
    # #late appears 300 ms after the click: polled, not slept for.
    assert await page.wait_for("document.querySelector('#late')?.textContent") == "arrived"
    await page.click("g.node[data-node=n1]")   # an SVG element has no .click(): dispatched
    assert await page.evaluate("document.querySelector('#g').dataset.hit") == "svg"

    png = await page.screenshot(tmp_path / "shots" / "page.png")
    assert png_size(png) == (800, 600)
    assert (tmp_path / "shots" / "page.png").read_bytes() == png
    assert page.errors == [], page.errors


async def test_errors_are_collected_and_js_failures_raise(site: str, browser: Browser) -> None:
    page = await browser.new_page()
    assert await page.navigate(site + "/errors") == 200
    await page.wait_for("true")
    found = await _poll(lambda: page.exceptions and page.console_errors)
    assert found
    assert any("kaput" in e.text for e in page.exceptions), page.exceptions
    assert [e.text for e in page.console_errors] == ["boom 42"]
    assert ("log", "just a log") in page.console
    assert len(page.errors) >= 2

    with pytest.raises(JsError, match="nope"):
        await page.evaluate("(() => { throw new Error('nope'); })()")
    with pytest.raises(JsError, match="no element matches"):
        await page.click("#missing")
    with pytest.raises(AssertionError, match="the impossible"):
        await page.wait_for("false", timeout_s=0.3, what="the impossible")


async def test_redirect_cookie_and_error_status(site: str, browser: Browser) -> None:
    page = await browser.new_page()
    assert await page.navigate(site + "/login") == 200   # 303 then the page it points to
    assert [d.status for d in page.documents] == [303, 200]
    assert page.requests[:2] == [site + "/login", site + "/"], page.requests
    assert await page.evaluate("location.pathname") == "/"
    cookies = await page.cookies(site + "/")
    assert [(c["name"], c["value"], c["httpOnly"]) for c in cookies] == [
        ("session", "s3cret", True)]
    assert await page.evaluate("document.cookie") == ""   # HttpOnly: not visible to JS
    stranger = await browser.new_page(isolated=True)    # its own cookie jar
    assert await stranger.cookies(site + "/") == []
    assert (await browser.new_page()).session_id != stranger.session_id
    assert [c["name"] for c in await (await browser.new_page()).cookies(site + "/")] == [
        "session"]

    assert await page.navigate(site + "/denied") == 401
    assert await page.evaluate("document.querySelector('#why').textContent") == "no"


async def test_close_kills_the_browser_and_its_helpers(site: str) -> None:
    require_chromium()
    b = await Browser.launch()
    page = await b.new_page()
    assert await page.navigate(site + "/") == 200
    pid, profile = b.pid, str(b.profile)
    await b.close()
    assert not _exists(profile)
    assert await _poll(lambda: not _processes_using(profile)), _processes_using(profile)
    assert not _exists(f"/proc/{pid}")


def _exists(path: str) -> bool:
    return Path(path).exists()


def _processes_using(profile: str) -> list[int]:
    """Every process whose command line names the browser's profile dir (its helpers too)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if profile.encode() in cmdline:
            found.append(int(entry))
    return found


async def _poll(check: object, timeout_s: float = 10.0) -> object:
    assert callable(check)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        got = check()
        if got:
            return got
        await asyncio.sleep(0.05)
    return check()


async def test_a_browser_that_dies_or_never_listens_is_reported_and_cleaned_up(
        tmp_path: Path) -> None:
    """Launch failures say what the browser printed, and leave no process or profile."""
    dies = tmp_path / "dies"
    dies.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 3\n")
    silent = tmp_path / "silent"
    silent.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/pid\necho 'starting' >&2\n"
                      "exec sleep 60\n")
    for script in (dies, silent):
        script.chmod(0o755)
    before = set(_profiles())
    with pytest.raises(RuntimeError, match=r"exited \(3\)[\s\S]*cannot open display"):
        await Browser.launch(chromium=str(dies))
    with pytest.raises(TimeoutError, match=r"did not print its DevTools URL[\s\S]*starting"):
        await Browser.launch(chromium=str(silent), timeout_s=0.5)
    assert set(_profiles()) == before        # profiles removed
    pid = (tmp_path / "pid").read_text().strip()
    assert pid.isdigit() and not _exists(f"/proc/{pid}"), "the silent one still runs"


def _profiles() -> list[str]:
    import tempfile

    return [p.name for p in Path(tempfile.gettempdir()).glob("podnet-chromium-*")]
