"""The topology page's HTTP side on a real cluster: `podnet ui` login links (one use, then a
session cookie), every path refusing requests without the cookie or the bearer token, static
files without traversal, the live event stream (snapshot, then patches as kubectl changes the
cluster, gossip from the agents' /observe feeds, flows and links) and the JSON endpoints."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import RunningCluster, start_cluster, stop_cluster
from yarl import URL

STATIC = Path(__file__).resolve().parents[2] / "controlplane" / "ui" / "static"
APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: echo, image: podnet/echo, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: node-1
  containers: [{name: toolbox, image: podnet/toolbox}]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    c = start_cluster(tmp_path_factory.mktemp("ui"), 2)
    try:
        yield c
    finally:
        stop_cluster(c)


def login_url(c: RunningCluster) -> str:
    out = c.podnet("ui")
    assert out.returncode == 0, out.stderr
    url = str(out.stdout).strip()
    assert re.fullmatch(re.escape(c.info["api"]) + r"/podnet/ui/\?login=[0-9a-f.]+", url), url
    return url


@pytest.fixture
async def http(cluster: RunningCluster) -> AsyncIterator[aiohttp.ClientSession]:
    ctx = ssl.create_default_context(cafile=cluster.info["ca_file"])
    # No cookie jar: the tests carry the cookie themselves, to see exactly what was set.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx),
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


async def log_in(c: RunningCluster, http: aiohttp.ClientSession) -> dict[str, str]:
    async with http.get(login_url(c), allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
        assert resp.headers["Location"] == "/podnet/ui/"
        cookie = resp.cookies["podnet-ui"]
    return {"Cookie": f"podnet-ui={cookie.value}"}


def test_up_prints_the_ui_line_and_cluster_json_has_it(
        cluster: RunningCluster, capsys: pytest.CaptureFixture[str]) -> None:
    from podnet.up import print_status

    assert cluster.info["ui"].startswith(cluster.info["api"] + "/podnet/ui/?login=")
    print_status(cluster.info, 1.0)
    lines = capsys.readouterr().out.splitlines()
    assert f"  UI          {cluster.info['ui']}" in lines, lines
    assert "topology page" in cluster.podnet("ui", "--help").stdout


async def test_login_link_works_once_and_sets_the_session_cookie(
        cluster: RunningCluster, http: aiohttp.ClientSession) -> None:
    url = login_url(cluster)
    async with http.get(url, allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/podnet/ui/"
        raw = resp.headers["Set-Cookie"]
        morsel = resp.cookies["podnet-ui"]
    for attr in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/podnet/ui/"):
        assert attr.lower() in raw.lower(), raw
    cookie = {"Cookie": f"podnet-ui={morsel.value}"}
    async with http.get(url, allow_redirects=False) as resp:   # the same link again
        assert resp.status == 401
        assert "already used or has expired" in await resp.text()
        assert "podnet ui" in await resp.text()
    forged = re.sub(r"login=.*", "login=" + "0" * 32 + ".9999999999." + "0" * 64, url)
    for bad in (forged, url.replace("login=", "login=x"), cluster.info["api"]
                + "/podnet/ui/?login=" + "%FF" * 300):
        async with http.get(bad, allow_redirects=False) as resp:
            assert resp.status == 401, bad
    async with http.get(cluster.info["api"] + "/podnet/ui/", headers=cookie) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        assert "<html" in (await resp.text()).lower()


async def test_every_path_refuses_without_cookie_or_token(
        cluster: RunningCluster, http: aiohttp.ClientSession) -> None:
    api = cluster.info["api"]
    paths = ["/podnet/ui/", "/podnet/ui/events", "/podnet/ui/api/view",
             "/podnet/ui/api/flows/abc-1", "/podnet/ui/static/index.html",
             "/podnet/ui/nothing/here", "/podnet/ui/api/v1/pods"]
    for headers in ({}, {"Cookie": "podnet-ui=garbage"},
                    {"Cookie": "podnet-ui=" + "0" * 32 + ".9999999999." + "0" * 64},
                    {"Authorization": "Bearer wrong"}):
        for path in paths:
            async with http.get(api + path, headers=headers) as resp:
                assert resp.status == 401, (path, headers, resp.status)
        async with http.post(api + "/podnet/ui/api/view", headers=headers, data=b"{}") as resp:
            assert resp.status == 401
    token = {"Authorization": f"Bearer {cluster.token}"}
    async with http.get(api + "/podnet/ui/api/view", headers=token) as resp:
        assert resp.status == 200
    async with http.post(api + "/podnet/ui/api/view", headers=token) as resp:
        assert resp.status == 405
    async with http.get(api + "/podnet/ui/nothing/here", headers=token) as resp:
        assert resp.status == 404


async def test_static_files_have_types_and_no_traversal(
        cluster: RunningCluster, http: aiohttp.ClientSession) -> None:
    api = cluster.info["api"]
    cookie = await log_in(cluster, http)
    for name, ctype in (("app.css", "text/css"), ("app.js", "text/javascript"),
                        ("index.html", "text/html")):
        async with http.get(f"{api}/podnet/ui/static/{name}", headers=cookie) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith(ctype)
            assert resp.headers["Cache-Control"] == "no-cache"
            assert await resp.read() == (STATIC / name).read_bytes()
    for bad in ("..%2Fweb.py", "%2E%2E", "..", ".hidden.css", "web.py", "..%2F..%2Fhub.py",
                "missing.css", "a" * 300 + ".css"):
        # encoded=True: sent as written (the client would resolve the dots itself)
        raw = URL(f"{api}/podnet/ui/static/{bad}", encoded=True)
        async with http.get(raw, headers=cookie, allow_redirects=False) as resp:
            assert resp.status == 404, bad


async def sse(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """(event, decoded data) for each server-sent event; ("ping", None) for comments."""
    buf = b""
    async for chunk in resp.content.iter_any():
        buf += chunk
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            event, data = "message", ""
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    event = "ping"
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data += line[6:]
            if event == "message" and not data:
                continue  # the retry: directive
            yield event, (json.loads(data) if data else None)


class Model:
    """The page's picture, kept from a snapshot and patches as the page keeps it."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.view = {kind: {e["key"]: e for e in items}
                     for kind, items in snapshot["view"].items()}
        self.flows = {r["id"]: r for r in snapshot["flows"]}
        self.stats = snapshot["flowStats"]
        self.links = snapshot["links"]

    def apply(self, event: str, data: Any) -> None:
        if event == "patch":
            for kind, items in data["upsert"].items():
                for e in items:
                    self.view[kind][e["key"]] = e
            for kind, keys in data["delete"].items():
                for k in keys:
                    self.view[kind].pop(k, None)
        elif event == "flows":
            for r in data["rows"]:
                self.flows[r["id"]] = r
            self.stats = data["stats"]
        elif event == "links":
            self.links = data
        elif event == "snapshot":
            self.__init__(data)  # type: ignore[misc]


async def follow(resp: aiohttp.ClientResponse, model: Model, what: str, done: Any,
                 timeout_s: float = 30.0) -> None:
    """Apply events until `done(model)` holds."""
    async def run() -> None:
        if done(model):
            return
        async for event, data in sse(resp):
            model.apply(event, data)
            if done(model):
                return
        raise AssertionError(f"the event stream ended before {what}")
    try:
        await asyncio.wait_for(run(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}: {model.view} "
                             f"flows={list(model.flows.values())[-3:]} "
                             f"links={model.links}") from None


async def test_events_stream_a_snapshot_then_patches(
        cluster: RunningCluster, http: aiohttp.ClientSession) -> None:
    api = cluster.info["api"]
    cookie = await log_in(cluster, http)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with http.get(api + "/podnet/ui/events", headers=cookie, timeout=timeout) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = sse(resp)
        event, snapshot = await asyncio.wait_for(anext(events), 10)
        assert event == "snapshot"
        assert set(snapshot) >= {"view", "flows", "flowStats", "links", "server"}
        assert {"ts", "version"} <= set(snapshot["server"])
        model = Model(snapshot)
        assert set(model.view["nodes"]) == {"node-1", "node-2"}
        assert model.view["nodes"]["node-1"]["podCIDR"]
        assert "clientResets" in model.stats

        # Gossip arrives from the agents' /observe feeds: each node seen alive by the other.
        await follow(resp, model, "both nodes alive by gossip", lambda m: all(
            n["gossip"] == "alive" and n["ready"] for n in m.view["nodes"].values()))
        assert model.view["nodes"]["node-1"]["seenBy"] == {"node-2": "alive"}

        manifest = cluster.state_dir / "app.yaml"
        manifest.write_text(APP)
        applied = await asyncio.to_thread(cluster.kubectl, "apply", "-f", str(manifest))
        assert applied.returncode == 0, applied.stderr

        def app_is_up(m: Model) -> bool:
            web_pods = [p for p in m.view["pods"].values()
                        if p["labels"].get("app") == "web" and p["phase"] == "Running"
                        and p["ip"] and p["ready"]]
            svc = m.view["services"].get("default/web")
            ready = {e["pod"] for e in svc["endpoints"] if e["ready"]} if svc else set()
            return len(web_pods) == 2 and ready == {p["key"] for p in web_pods} \
                and bool(svc and svc["clusterIP"])
        await follow(resp, model, "the Deployment's pods Running and the Service's endpoints",
                     app_is_up)
        assert model.view["services"]["default/web"]["ports"] == ["80/TCP"]
        assert model.view["pods"]["default/client"]["node"] == "node-1"

        # A request through the Service: its flow appears, with its path hop by hop.
        svc_ip = model.view["services"]["default/web"]["clusterIP"]
        curl = await asyncio.to_thread(cluster.podnet, "exec", "client", "--", "curl", "-sv",
                                       "-m", "5", f"http://{svc_ip}/")
        assert curl.returncode == 0, curl.stderr
        found = re.search(r"^\* flow: (\S+)$", curl.stderr, re.M)
        assert found is not None, curl.stderr
        flow = found.group(1)
        await follow(resp, model, f"flow {flow} ALLOWED through the proxy", lambda m: (
            flow in m.flows and m.flows[flow]["outcome"] == "ALLOWED"
            and "@controlplane" in m.flows[flow]["nodes"]))
        row = model.flows[flow]
        assert row["srcPod"] == "default/client", row
        assert row["service"] == "default/web", row
        assert model.stats["flowsKept"] >= 1
        async with http.get(f"{api}/podnet/ui/api/flows/{flow}", headers=cookie) as got:
            assert got.status == 200
            detail = await got.json()
        assert detail["outcome"] == "ALLOWED"
        kinds = [h["at"]["kind"] for h in detail["hops"]]
        assert kinds[0] == "pod" and "proxy" in kinds, detail["hops"]
        assert {h["process"] for h in detail["hops"]} >= {"agent-node-1", "controlplane"}
        # The same flow through the list, filtered like `podnet logs`.
        for query, hit in ((f"?flow={flow}", True), ("?pod=default/client&verdict=allowed",
                                                     True),
                           ("?pod=nobody", False), (f"?flow={flow}&proto=udp", False),
                           (f"?node=node-1&flow={flow[:4]}&limit=1000", True)):
            async with http.get(f"{api}/podnet/ui/api/flows{query}", headers=cookie) as got:
                assert got.status == 200, query
                listed = await got.json()
            assert (flow in {r["id"] for r in listed["rows"]}) is hit, query
            assert listed["stats"]["flowsKept"] >= 1
        for query in ("?limit=0", "?limit=1001", "?limit=x", "?limit=00001999", "?color=red",
                      "?pod=a/b/c", "?pod=has%20space", "?node=" + "n" * 400):
            async with http.get(f"{api}/podnet/ui/api/flows{query}", headers=cookie) as got:
                assert got.status == 400, query
        # The link chart: node-1's tunnel to the proxy carried bytes, as both ends count them
        # (the request opened that tunnel: its first bytes count too).
        def carried(m: Model, src: str, dst: str) -> bool:
            return any(s["from"] == src and s["to"] == dst and any(p[1] > 0 for p in s["points"])
                       for s in m.links)
        await follow(resp, model, "link rates both ways between node-1 and the proxy",
                     lambda m: carried(m, "node-1", "@controlplane")
                     and carried(m, "@controlplane", "node-1"))

        deleted = await asyncio.to_thread(cluster.kubectl, "delete", "pod", "client",
                                          "--wait=false")
        assert deleted.returncode == 0, deleted.stderr
        await follow(resp, model, "the deleted pod gone",
                     lambda m: "default/client" not in m.view["pods"])


async def test_view_and_flow_endpoints(cluster: RunningCluster,
                                       http: aiohttp.ClientSession) -> None:
    api = cluster.info["api"]
    token = {"Authorization": f"Bearer {cluster.token}"}
    async with http.get(api + "/podnet/ui/api/view", headers=token) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        view = await resp.json()
    assert {n["key"] for n in view["view"]["nodes"]} == {"node-1", "node-2"}
    for bad in ("has%20space", "semi;colon", "x" * 200, "%00", "-leading"):
        async with http.get(f"{api}/podnet/ui/api/flows/{bad}", headers=token) as resp:
            assert resp.status == 400, bad
    async with http.get(f"{api}/podnet/ui/api/flows/nope-1", headers=token) as resp:
        assert resp.status == 404


def test_a_link_that_appears_between_reports_counts_its_first_bytes() -> None:
    from controlplane.ui.hub import LinkReports
    from podnet.observe.links import LinkHistory

    zero = {"bytes_out": 0, "bytes_in": 0, "records_out": 0, "records_in": 0, "errors": 0}
    history = LinkHistory()
    reports = LinkReports()
    t0 = 1_800_000_000.0
    for ts, peers in ((t0, {"node-2": zero}),
                      (t0 + 1, {"node-2": zero, "@controlplane": dict(zero, bytes_out=500)})):
        for at, counters in reports.reports(ts, peers):
            history.observe("node-1", at, counters)
    series = {(s["from"], s["to"]): s["points"] for s in history.series()}
    assert series[("node-1", "@controlplane")][-1][1] == 500.0
    # A fresh connection's first report is only a baseline (what came before is unknown).
    fresh = LinkReports()
    assert fresh.reports(t0 + 2, {"node-3": zero}) == [(t0 + 2, {"node-3": zero})]


# ---------------------------------------------------------------- the hub in process
# A real store (SQLite on disk) and real sockets, without a whole cluster: the cases a
# cluster does not produce on demand (a page that stops reading, an agent sending garbage).

async def poll(check: Any, what: str, timeout_s: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        got = check()
        if got:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def make_hub(tmp_path: Path, **kw: Any) -> Any:
    from controlplane.store import Store
    from controlplane.ui.hub import UiHub
    from podnet.observe.flows import FlowTable
    from podnet.observe.links import LinkHistory

    store = Store.open(tmp_path / "store.db")
    return store, UiHub(store, agent_token="t0ken", version="test", new_flows=FlowTable,
                        new_links=LinkHistory, **kw)


def stored_node(name: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "spec": {"podCIDR": "10.244.1.0/24"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}


def decode(data: bytes) -> list[tuple[str, Any]]:
    out = []
    for block in data.decode().split("\n\n"):
        lines = block.split("\n")
        if lines[0].startswith("event: "):
            out.append((lines[0][7:], json.loads(lines[1][6:])))
    return out


async def test_a_page_that_stops_reading_gets_a_fresh_snapshot(tmp_path: Path) -> None:
    from podnet.resources import BY_KIND

    store, hub = make_hub(tmp_path, max_queue_messages=3)
    try:
        client = hub.attach()
        for i in range(6):  # six patches, never read
            store.create(BY_KIND["Pod"], {"metadata": {"namespace": "default",
                                                       "name": f"p{i}"}, "spec": {}})
            hub._mark("pods")
            hub.publish()
        assert hub.client_resets >= 1
        events = decode(b"".join(await client.next(1.0)))
        assert events[0][0] == "snapshot"       # the backlog replaced, not piled up
        assert len(events) <= 4
        model = Model(events[0][1])
        for event, data in events[1:]:
            model.apply(event, data)
        assert set(model.view["pods"]) == {f"default/p{i}" for i in range(6)}
        assert model.stats["clientResets"] == hub.client_resets
        hub.detach(client)
    finally:
        await hub.close()
        store.close()


async def test_nothing_runs_once_the_last_page_closed(tmp_path: Path) -> None:
    store, hub = make_hub(tmp_path, linger_s=0.05)
    try:
        client = hub.attach()
        tasks = list(hub._tasks)
        assert hub.active and tasks
        await poll(lambda: any(store._subs.values()), "the hub following the store")
        hub.detach(client)
        await poll(lambda: not hub.active and all(t.done() for t in tasks), "the hub stopped")
        assert not any(store._subs.values())    # no store feed left behind
        assert not hub._feeds and hub._session is None
        again = hub.attach()                    # and it starts again for the next page
        assert hub.active
        hub.detach(again)
    finally:
        await hub.close()
        store.close()


def flow_event(seq: int, event: str) -> bytes:
    return json.dumps({"seq": seq, "flow": "abc-1", "ts": f"2026-12-07T18:00:00.{seq:03d}Z",
                       "event": event, "node": "node-1", "component": "agent",
                       "pod": "client", "namespace": "default", "src": "10.244.1.2:1000",
                       "dst": "10.244.2.3:80", "proto": "tcp", "verdict": "ok"}).encode()


async def test_garbage_from_an_agent_is_skipped_and_logged(tmp_path: Path) -> None:
    from aiohttp import web

    from podnet.resources import BY_KIND

    seen: list[str] = []
    done = asyncio.Event()

    async def observe(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for line in (b"not json", b"[1,2]", b"[" * 100000, b'{"type":"flows","events":5}',
                     b'{"type":"links","ts":"x","peers":{}}',
                     b'{"type":"hello","node":"node-1","seq":0,"since":0,"boot":"b1"}',
                     b'{"type":"routes","routes":[{"podCIDR":"10.244.2.0/24","node":"node-2",'
                     b'"state":"suspect"}]}',
                     # history from before the page opened: its rotated part is not "missed"
                     b'{"type":"flows","missed":5,"events":[' + flow_event(6, "flow.route")
                     + b']}',
                     b'{"type":"flows","missed":3,"events":[' + flow_event(10, "flow.closed")
                     + b']}'):
            await resp.write(line + b"\n")
        await done.wait()
        return resp

    app = web.Application()
    app.router.add_get("/observe", observe)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    store, hub = make_hub(tmp_path)
    try:
        store.create(BY_KIND["Node"], stored_node("node-1", port))
        store.create(BY_KIND["Node"], stored_node("node-2", 1))
        client = hub.attach()
        await poll(lambda: hub.view["nodes"]["node-2"]["gossip"] == "suspect",
                   "the valid routes line applied after the garbage")
        assert seen and seen[0] == "Bearer t0ken"
        await poll(lambda: hub.flows.row("abc-1") and hub.flows.row("abc-1")["events"] == 2,
                   "both flow events")
        assert hub.flow_stats()["eventsMissed"] == {"agent-node-1": 3}
        assert hub.view["nodes"]["node-2"]["seenBy"] == {"node-1": "suspect"}
        hub.detach(client)
    finally:
        done.set()
        await hub.close()
        store.close()
        await runner.cleanup()


async def test_a_shutdown_at_once_leaves_no_store_feed(tmp_path: Path) -> None:
    store, hub = make_hub(tmp_path)
    try:
        client = hub.attach()
        await hub.close()           # before any of the hub's tasks ever ran
        assert client.closed and not hub.active
        assert not any(store._subs.values())
    finally:
        store.close()
