"""The issue's proof: the topology page of a real 3-node cluster, in headless Chromium.

Logged in through the one-time URL of the real `podnet ui`, the page must show what kubectl
shows: the pods of a Deployment applied with the real kubectl (their IPs, inside their nodes'
boxes), the Service's lines to each ready endpoint, the NetworkPolicy and the NetworkFault;
then flows made by curl in a pod (`podnet exec ... curl -v` prints the flow id) appear in the
flow panel, and clicking one draws its path hop by hop through the pod, node and proxy keys
the logs name. Everything is read from the DOM the page builds from its live feed, polled (the
page is live within a second, but no assertion is on time), and nothing it loads comes from
anywhere but the control plane (no CDN). The screenshot is the test's artifact:
`<state dir>/artifacts/topology.png`; with PODNET_UPDATE_SCREENSHOT=1 it is also copied to
docs/images/topology.png (the README's picture; `make screenshot`).

Also: a login link works once (a second use, or a forged one, is a 401 page telling how to
get a new link), and the page and its feed answer 401 to a browser without the cookie; a hung
node's box turns dead (gossip) and not Ready, then alive again once it resumes; more flows
than the hub keeps are counted as evicted on the page, never hidden; and the live indicator
turns "down" when the control plane goes away.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import Browser, Page, png_size, require_chromium
from harness import RunningCluster, start_cluster, stop_cluster, wait_for

pytestmark = pytest.mark.kubectl

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "images" / "topology.png"
WIDTH, HEIGHT = 1600, 1000
TIMEOUT_S = 30.0   # generous for a loaded CI machine; the page itself is live within 1 s

# Two Deployments behind Services, a client on node-1, a policy that lets only `web` into
# `api` (so the client's calls to api are denied: a red row), and a fault on client -> api.
SCENE = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: echo, image: podnet/echo, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, labels: {app: api}}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: echo, image: podnet/echo, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  nodeName: node-1
  containers: [{name: toolbox, image: podnet/toolbox}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-from-web}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
---
apiVersion: podnet.dev/v1alpha1
kind: NetworkFault
metadata: {name: slow-api}
spec:
  from: {pod: default/client}
  to: {selector: app=api}
  delayMs: 20
"""

# What the page draws, read back from its DOM (the hooks are the page's contract).
JS_NODES = """Array.from(document.querySelectorAll('#topology g.node')).map(g =>
    [g.dataset.node, g.dataset.gossip, g.dataset.ready])"""
JS_PODS = """(() => {
  const nodes = Array.from(document.querySelectorAll('#topology g.node'));
  const box = el => el.getBoundingClientRect();
  const inside = (r, n) => { const x = r.left + r.width / 2, y = r.top + r.height / 2;
    return x >= n.left && x <= n.right && y >= n.top && y <= n.bottom; };
  return Array.from(document.querySelectorAll('#topology g.pod')).map(g => {
    const r = box(g);
    const home = nodes.find(n => inside(r, box(n)));   // the node box it is drawn in
    return {pod: g.dataset.pod, ip: g.dataset.ip, phase: g.dataset.phase,
            node: home ? home.dataset.node : null, text: g.textContent};
  });
})()"""
JS_SERVICE = """((key) => {
  const g = document.querySelector(`#topology g.service[data-service="${key}"]`);
  return g && {clusterIP: g.dataset.clusterIp, text: g.textContent,
    edges: Array.from(document.querySelectorAll(`#topology .svc-edge[data-service="${key}"]`))
      .map(e => e.dataset.pod).sort()};
})"""
JS_HOPS = """(() => {
  const g = document.querySelector('#flow-path');
  return g && {flow: g.dataset.flow, n: Number(g.dataset.hops),
    hops: Array.from(g.querySelectorAll('.hop')).map(h => [h.dataset.atKind, h.dataset.atKey]),
    labels: g.textContent,
    detail: (document.querySelector('#flow-detail') || {}).textContent || ''};
})()"""


def _q(value: str) -> str:
    """A string as a JS/CSS string literal."""
    return json.dumps(value)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    require_chromium()      # before paying for a cluster
    # --policy-reject: a denied connect fails at once, so the denied flow needs no timeout.
    running = start_cluster(tmp_path_factory.mktemp("topology"), 3, "--policy-reject")
    try:
        yield running
    finally:
        stop_cluster(running)


def login_url(cluster: RunningCluster) -> str:
    """A fresh one-time login URL from the real `podnet ui`."""
    result = cluster.podnet("ui")
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"https://\S+/podnet/ui/\?login=\S+", result.stdout)
    assert found, f"no login URL in `podnet ui`'s output: {result.stdout!r}"
    return found.group(0)


def base_url(cluster: RunningCluster) -> str:
    return str(cluster.info["api"]).rstrip("/") + "/podnet/ui/"


async def text_of(page: Page) -> str:
    return str(await page.evaluate("document.body ? document.body.innerText : ''"))


async def test_login_link_works_once_and_the_page_needs_the_cookie(
        cluster: RunningCluster) -> None:
    url = await asyncio.to_thread(login_url, cluster)
    base = base_url(cluster)
    async with await Browser.launch(width=WIDTH, height=HEIGHT) as browser:
        # A browser that never logged in: the page, its feed and its API all refuse it.
        stranger = await browser.new_page(isolated=True)
        for path in ("", "events", "api/view", "static/app.js"):
            assert await stranger.navigate(base + path) == 401, path

        page = await browser.new_page()
        assert await page.navigate(url) == 200
        # The code is redeemed with a 303: it leaves the address bar (and the history).
        assert [d.status for d in page.documents] == [303, 200], page.documents
        assert await page.evaluate("location.pathname + location.search") == "/podnet/ui/"
        cookies = {c["name"]: c for c in await page.cookies(base)}
        assert "podnet-ui" in cookies, cookies
        session = cookies["podnet-ui"]
        assert session["httpOnly"] and session["secure"] and session["path"] == "/podnet/ui/"
        assert session["sameSite"] == "Lax"
        await page.wait_for("document.querySelector('#live')?.dataset.state === 'live'",
                            TIMEOUT_S, what="#live[data-state=live]")
        # The cookie is what lets it in: the same tab opens the page again without a code.
        assert await page.navigate(base) == 200

        # The same link a second time, from another browser: refused, with what to do.
        again = await browser.new_page(isolated=True)
        assert await again.navigate(url) == 401
        said = await text_of(again)
        assert "already used or has expired" in said and "podnet ui" in said, said
        assert await again.cookies(base) == []
        # A forged code is refused the same way.
        forged = url.split("login=")[0] + "login=" + "0" * 32 + ".9999999999." + "f" * 64
        assert await again.navigate(forged) == 401
        assert await again.navigate(url.split("login=")[0] + "login=%3Cscript%3E") == 401
        assert page.errors == [], page.errors

        # `podnet up` wrote its own link into cluster.json (the one its status block prints).
        up_url = cluster.info.get("ui")
        assert isinstance(up_url, str) and "/podnet/ui/?login=" in up_url, cluster.info
        first = await browser.new_page(isolated=True)
        assert await first.navigate(up_url) == 200
        await first.wait_for("document.querySelector('#live')?.dataset.state === 'live'",
                             TIMEOUT_S, what="the page opened from podnet up's link is live")


async def test_page_shows_pods_services_and_draws_flow_paths(cluster: RunningCluster) -> None:
    artifacts = cluster.state_dir / "artifacts"
    url = await asyncio.to_thread(login_url, cluster)
    async with await Browser.launch(width=WIDTH, height=HEIGHT) as browser:
        page = await browser.new_page(width=WIDTH, height=HEIGHT)
        try:
            await _prove(cluster, page, url, artifacts)
        except BaseException:
            # What the page showed when it failed, beside the test's other artifacts.
            try:
                await page.screenshot(artifacts / "topology-failed.png")
            except Exception:
                pass
            raise


async def _prove(cluster: RunningCluster, page: Page, url: str, artifacts: Path) -> None:
    # Logged in: the cookie is set and the live feed is up.
    assert await page.navigate(url) == 200
    assert any(c["name"] == "podnet-ui" for c in await page.cookies(base_url(cluster)))
    await page.wait_for("document.querySelector('#live')?.dataset.state === 'live'",
                        TIMEOUT_S, what="#live[data-state=live]")
    # Every node, alive by gossip and Ready, with its podCIDR in its box.
    nodes = {n["metadata"]["name"]: n for n in (await _kubectl_json(
        cluster, "get", "nodes"))["items"]}
    assert sorted(nodes) == ["node-1", "node-2", "node-3"]
    want_nodes = sorted([name, "alive", "true"] for name in nodes)
    await _poll_js(page, JS_NODES, lambda got: sorted(got) == want_nodes,
                   f"node boxes {want_nodes} (name, gossip, ready)")
    for name, node in nodes.items():
        text = await page.evaluate(
            f"document.querySelector('#topology g.node[data-node={_q(name)}]').textContent")
        assert node["spec"]["podCIDR"] in text, (name, text)

    # kubectl apply; then the page must show what kubectl shows.
    await asyncio.to_thread(cluster.kubectl, "apply", "-f", "-", input=SCENE, check=True)
    pods = await asyncio.to_thread(_running_pods, cluster, 6)
    want = {f"default/{p['metadata']['name']}": p for p in pods}

    def shown_ok(shown: list[dict[str, Any]]) -> bool:
        by_key = {s["pod"]: s for s in shown}
        return set(by_key) == set(want) and all(
            by_key[key]["ip"] == p["status"]["podIP"] and by_key[key]["phase"] == "Running"
            and by_key[key]["node"] == p["spec"]["nodeName"] for key, p in want.items())

    shown = await _poll_js(page, JS_PODS, shown_ok, "exactly the pods kubectl shows, with "
                           "their IPs, Running, each inside its node's box")
    for s in shown:
        assert want[s["pod"]]["status"]["podIP"] in s["text"], s   # the IP is written out

    # Each Service: its ClusterIP, and one line per ready endpoint that is a pod.
    for svc in ("web", "api"):
        service = await _kubectl_json(cluster, "get", "service", svc)
        ready = await asyncio.to_thread(_ready_endpoint_pods, cluster, svc, 3 if svc == "web"
                                        else 2)
        expect = {"clusterIP": service["spec"]["clusterIP"], "edges": sorted(ready)}
        got = await _poll_js(page, f"({JS_SERVICE})({_q('default/' + svc)})",
                             lambda g, e=expect: bool(g) and g["clusterIP"] == e["clusterIP"]
                             and g["edges"] == e["edges"],
                             f"Service default/{svc} at {expect['clusterIP']} with lines to "
                             f"{expect['edges']}")
        assert expect["clusterIP"] in got["text"], got
    await page.wait_for("!!document.querySelector('#topology g.policy"
                        "[data-policy=\"default/api-from-web\"]')", TIMEOUT_S,
                        what="the NetworkPolicy's marker")
    await page.wait_for("!!document.querySelector('#topology g.fault[data-fault=\"slow-api\"]')",
                        TIMEOUT_S, what="the NetworkFault's marker")

    # Flows: client (node-1) -> the web Service, and -> a web pod's IP on another node.
    web = {key: p for key, p in want.items() if key.startswith("default/web-")}
    far = sorted((p["spec"]["nodeName"], key) for key, p in web.items()
                 if p["spec"]["nodeName"] != "node-1")
    assert far, f"every web replica is on node-1 with the client: {web}"
    far_node, far_pod = far[0]
    # Through the Service until the proxy picks an endpoint on another node (round robin over
    # 3: a few tries), so the path has every leg: pod -> node tunnel -> proxy -> endpoint.
    for _ in range(6):
        via_service = await asyncio.to_thread(_curl_flow, cluster, "http://web/")
        chosen = await asyncio.to_thread(_proxy_choice, cluster, via_service)
        if chosen["node"] != "node-1":
            break
    assert chosen["node"] != "node-1", f"the proxy chose node-1's endpoint 6 times: {chosen}"
    direct = await asyncio.to_thread(
        _curl_flow, cluster, f"http://{web[far_pod]['status']['podIP']}:8080/")
    # And one the policy denies (no id is printed for a refused connect: found by outcome).
    await asyncio.to_thread(_denied, cluster, "http://api/")

    for flow in (via_service, direct):
        row = await page.wait_for(
            f"(r => r && r.dataset.outcome)(document.querySelector("
            f"{_q(f'#flows tr.flow[data-flow={_q(flow)}]')}))",
            TIMEOUT_S, what=f"flow row {flow}")
        assert row == "ALLOWED", (flow, row)
    await page.wait_for("!!document.querySelector('#flows tr.flow[data-outcome=\"DENIED\"]')",
                        TIMEOUT_S, what="a DENIED row for the client's call to api")
    order = await page.evaluate("Array.from(document.querySelectorAll('#flows tr.flow'))"
                                ".map(r => r.dataset.flow)")
    assert order.index(direct) < order.index(via_service), ("newest first", order)

    # The flow-id filter narrows the panel to that flow, and clearing it brings the rest back.
    await _filter(page, "#flow-filter-flow", direct)
    await page.wait_for(f"(rows => rows.length === 1 && rows[0].dataset.flow === {_q(direct)})"
                        "(Array.from(document.querySelectorAll('#flows tr.flow'))"
                        ".filter(r => r.offsetParent !== null))",
                        TIMEOUT_S, what=f"only flow {direct} left by the flow filter")
    await _filter(page, "#flow-filter-flow", "")
    # Verdicts filter as `podnet logs --verdict` does: only the denied call is left.
    await _filter(page, "#flow-filter-verdict", "denied")
    await page.wait_for("(rows => rows.length >= 1 && rows.every(r => r.dataset.outcome === "
                        "'DENIED'))(Array.from(document.querySelectorAll('#flows tr.flow'))"
                        ".filter(r => r.offsetParent !== null))",
                        TIMEOUT_S, what="only DENIED rows under the verdict filter 'denied'")
    await _filter(page, "#flow-filter-verdict", "")
    await page.wait_for("Array.from(document.querySelectorAll('#flows tr.flow'))"
                        ".filter(r => r.offsetParent !== null).length >= 3",
                        TIMEOUT_S, what="every row back once the filter is cleared")

    # Each path is drawn in the order the flow crossed things, whatever order the processes
    # logged them in: the client pod, its node's tunnel, (the proxy,) the far node, the pod.
    client = ("pod", "default/client")
    hops = await _draw(page, direct)
    keys = [tuple(h) for h in hops["hops"]]
    assert ("proxy", "@controlplane") not in keys, keys
    assert _in_order(keys, [client, ("node", "node-1"), ("node", far_node), ("pod", far_pod)]), \
        f"drawn: {keys}\nthe hops:\n{await _story(page, direct)}"

    # Through the proxy to the endpoint it chose (as the control plane's log says).
    chosen_pod = next(key for key, p in web.items() if p["status"]["podIP"] == chosen["ip"])
    hops = await _draw(page, via_service)
    keys = [tuple(h) for h in hops["hops"]]
    assert _in_order(keys, [client, ("node", "node-1"), ("proxy", "@controlplane"),
                            ("node", chosen["node"]), ("pod", chosen_pod)]), \
        f"endpoint {chosen_pod}; drawn: {keys}\nthe hops:\n{await _story(page, via_service)}"
    assert ("node", "node-3" if chosen["node"] == "node-2" else "node-2") not in keys, keys
    assert "proxy.connection" in hops["detail"] and "default/web" in hops["detail"], hops
    assert "proxy.connection" in hops["labels"], hops["labels"]

    # Counts of what was kept, evicted and missed are shown, never hidden.
    stats = await page.wait_for(
        "(s => s && s.textContent.trim() && {text: s.textContent, missed: s.dataset.missed,"
        " evicted: s.dataset.evicted})(document.querySelector('#flow-stats'))",
        TIMEOUT_S, what="#flow-stats")
    assert re.search(r"\bkept\b", stats["text"]) and "evicted" in stats["text"] \
        and "missed" in stats["text"], stats
    assert str(stats["missed"]).isdigit() and str(stats["evicted"]).isdigit(), stats
    # Link health: node-1 sent to the far node, so that pair has a chart.
    await page.wait_for(f"!!document.querySelector('#links g.link[data-from=\"node-1\"]"
                        f"[data-to={_q(far_node)}] polyline')", TIMEOUT_S,
                        what=f"the node-1 -> {far_node} link chart")

    assert page.errors == [], page.errors
    # Offline: everything the page loaded came from the control plane itself (no CDN).
    origin = str(cluster.info["api"]).rstrip("/") + "/"
    assert page.requests and all(u.startswith((origin, "data:")) for u in page.requests), \
        sorted(set(page.requests))
    # The picture without transitions caught halfway (e.g. new rows' tint fading).
    await page.wait_for("document.getAnimations().every(a => a.playState !== 'running' || "
                        "a.effect?.getComputedTiming().iterations === Infinity)", TIMEOUT_S,
                        what="the page's finite animations to finish")
    png = await page.screenshot(artifacts / "topology.png")
    assert png_size(png) == (WIDTH, HEIGHT)
    if os.environ.get("PODNET_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(artifacts / "topology.png", SCREENSHOT)


async def _kubectl_json(cluster: RunningCluster, *args: str) -> Any:
    result = await asyncio.to_thread(cluster.kubectl, *args, "-o", "json", check=True)
    return json.loads(result.stdout)


async def _poll_js(page: Page, expression: str, ok: Any, what: str,
                   timeout_s: float = TIMEOUT_S) -> Any:
    """Poll a JS expression until `ok(value)` holds; the value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    value: Any = None
    while loop.time() < deadline:
        value = await page.evaluate(expression)
        if ok(value):
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; the page shows: "
                         f"{json.dumps(value)[:3000]}")


async def _filter(page: Page, selector: str, value: str) -> None:
    await page.evaluate(f"""(() => {{
        const el = document.querySelector({_q(selector)});
        if (!el) throw new Error("no " + {_q(selector)});
        el.value = {_q(value)};
        el.dispatchEvent(new Event("input", {{bubbles: true}}));
        el.dispatchEvent(new Event("change", {{bubbles: true}}));
    }})()""")


async def _draw(page: Page, flow: str) -> dict[str, Any]:
    """Click the flow's row; the path drawn for it, once complete."""
    await page.click(f"#flows tr.flow[data-flow={_q(flow)}]")
    got: dict[str, Any] = await _poll_js(
        page, JS_HOPS, lambda g: bool(g) and g["flow"] == flow and g["n"] >= 2
        and len(g["hops"]) == g["n"], f"#flow-path[data-flow={flow}] with its hops")
    return got


async def _story(page: Page, flow: str) -> str:
    """The flow's hops as the page's API tells them (for failure messages)."""
    detail = await page.evaluate(f"fetch('/podnet/ui/api/flows/' + {_q(flow)})"
                                 ".then(r => r.json())")
    return "\n".join(f"  +{h.get('offset_ms')}ms {h.get('process')} {h.get('event')} "
                     f"[{h.get('verdict')}] at {h.get('at')}"
                     for h in (detail or {}).get("hops", []))


def _in_order(keys: list[tuple[str, ...]], path: list[tuple[str, str]]) -> bool:
    """True when `path` is a subsequence of the drawn hops' keys."""
    it = iter(keys)
    return all(any(k == step for k in it) for step in path)


def _running_pods(cluster: RunningCluster, n: int) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        result = cluster.kubectl("get", "pods", "-o", "json")
        if result.returncode != 0:
            return None
        pods = [p for p in json.loads(result.stdout)["items"]
                if p.get("status", {}).get("phase") == "Running"
                and p["status"].get("podIP") and any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in p["status"].get("conditions", []))]
        return pods if len(pods) == n else None
    return wait_for(check, 60, 0.3, what=f"{n} pods Running and Ready (kubectl get pods)")


def _ready_endpoint_pods(cluster: RunningCluster, svc: str, n: int) -> list[str]:
    def check() -> list[str] | None:
        result = cluster.kubectl("get", "endpointslices", "-l",
                                 f"kubernetes.io/service-name={svc}", "-o", "json")
        if result.returncode != 0:
            return None
        pods = sorted(f"{ep['targetRef'].get('namespace', 'default')}/{ep['targetRef']['name']}"
                      for s in json.loads(result.stdout)["items"]
                      for ep in s.get("endpoints") or []
                      if (ep.get("conditions") or {}).get("ready") is not False
                      and (ep.get("targetRef") or {}).get("kind") == "Pod")
        return pods if len(pods) == n else None
    return wait_for(check, 30, 0.3, what=f"{n} ready endpoints of {svc}")


def _curl_flow(cluster: RunningCluster, url: str) -> str:
    """curl from the client pod until it gets through; the flow id curl -v printed."""
    return _curl_flow_from(cluster, "client", url)


def _curl_flow_from(cluster: RunningCluster, pod: str, url: str) -> str:
    def attempt() -> str | None:
        result = cluster.podnet("exec", pod, "--", "curl", "-sv", "-m", "5", url)
        found = re.search(r"^\* flow: (\S+)$", result.stderr, re.M)
        return found.group(1) if result.returncode == 0 and found else None
    return wait_for(attempt, 30, 0.3, what=f"curl {url} from {pod}, with a flow id")


def _denied(cluster: RunningCluster, url: str) -> None:
    wait_for(lambda: cluster.podnet("exec", "client", "--", "curl", "-s", "-m", "3",
                                    url).returncode != 0,
             30, 0.3, what=f"the policy denying the client's curl {url}")


def _proxy_choice(cluster: RunningCluster, flow: str) -> dict[str, str]:
    """The endpoint the ClusterIP proxy chose for `flow`, from `podnet logs --flow`."""
    def check() -> dict[str, str] | None:
        result = cluster.podnet("logs", "--flow", flow, "-o", "json")
        for line in result.stdout.splitlines():
            event = json.loads(line)
            if event.get("event") == "proxy.connection" and event.get("endpoint"):
                return {"ip": str(event["endpoint"]).rsplit(":", 1)[0],
                        "node": str(event.get("endpoint_node", ""))}
        return None
    return wait_for(check, 15, 0.2, what=f"the proxy's choice for flow {flow} in the logs")


async def test_node_boxes_follow_gossip_and_readiness(cluster: RunningCluster) -> None:
    """A hung node (SIGSTOP): the other agents' gossip declares it dead and the control plane
    marks it NotReady, and its box says so; resumed, it is alive and Ready again."""
    url = await asyncio.to_thread(login_url, cluster)
    node = "g.node[data-node=\"node-3\"]"
    state = (f"(g => g && [g.dataset.gossip, g.dataset.ready])"
             f"(document.querySelector('#topology {node}'))")
    async with await Browser.launch(width=WIDTH, height=HEIGHT) as browser:
        page = await browser.new_page()
        assert await page.navigate(url) == 200
        await _poll_js(page, state, lambda s: s == ["alive", "true"], "node-3 alive and Ready")
        paused = await asyncio.to_thread(cluster.podnet, "node", "pause", "node-3")
        assert paused.returncode == 0, paused.stderr
        try:
            await _poll_js(page, state, lambda s: bool(s) and s[0] == "dead",
                           "node-3 dead by gossip on its box", timeout_s=60)
            await _poll_js(page, state, lambda s: bool(s) and s[1] == "false",
                           "node-3 not Ready on its box", timeout_s=60)
            ready = await _kubectl_json(cluster, "get", "node", "node-3")
            assert {c["type"]: c["status"] for c in ready["status"]["conditions"]}[
                "Ready"] != "True"
            text = await page.evaluate(f"document.querySelector('#topology {node}').textContent")
            assert "dead" in text, text
        finally:
            resumed = await asyncio.to_thread(cluster.podnet, "node", "resume", "node-3")
        assert resumed.returncode == 0, resumed.stderr
        await _poll_js(page, state, lambda s: s == ["alive", "true"],
                       "node-3 alive and Ready again", timeout_s=60)
        assert page.errors == [], page.errors


LOADER = """\
apiVersion: v1
kind: Pod
metadata: {name: loader}
spec:
  nodeName: node-1
  containers: [{name: toolbox, image: podnet/toolbox}]
---
apiVersion: v1
kind: Pod
metadata: {name: sink}
spec:
  nodeName: node-2
  containers: [{name: echo, image: podnet/echo}]
"""
FLOWS_KEPT = 1000     # the hub's FlowTable default


async def test_evicted_flows_are_counted_on_the_page(cluster: RunningCluster) -> None:
    """More flows than the hub keeps: the oldest go, and the page says how many."""
    await asyncio.to_thread(cluster.kubectl, "apply", "-f", "-", input=LOADER, check=True)
    await asyncio.to_thread(cluster.running_pod, "loader", "default", 60)
    sink = await asyncio.to_thread(cluster.running_pod, "sink", "default", 60)
    target = f"http://{sink['status']['podIP']}:8080/"
    await asyncio.to_thread(_curl_flow_from, cluster, "loader", target)   # routes are up
    url = await asyncio.to_thread(login_url, cluster)
    async with await Browser.launch(width=WIDTH, height=HEIGHT) as browser:
        page = await browser.new_page()
        assert await page.navigate(url) == 200
        await page.wait_for("document.querySelector('#live')?.dataset.state === 'live'",
                            TIMEOUT_S, what="#live[data-state=live]")
        n = FLOWS_KEPT + 100
        loop = (f"i=0; while [ $i -lt {n} ]; do curl -s -o /dev/null -m 5 {target} || exit 1;"
                f" i=$((i+1)); done")
        ran = await asyncio.to_thread(cluster.podnet, "exec", "loader", "--", "sh", "-c", loop,
                                      timeout_s=240)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        stats = await page.wait_for(
            "(s => s && Number(s.dataset.evicted) > 0 && {text: s.textContent, evicted: "
            "Number(s.dataset.evicted), missed: s.dataset.missed})"
            "(document.querySelector('#flow-stats'))",
            TIMEOUT_S, what="#flow-stats[data-evicted] above 0")
        assert f"{stats['evicted']} evicted" in stats["text"].replace(",", ""), stats
        assert str(stats["missed"]).isdigit(), stats
        assert page.errors == [], page.errors


async def test_live_indicator_goes_down_with_the_control_plane(cluster: RunningCluster) -> None:
    """The page says when its feed is gone rather than showing a stale picture as live.
    (Last in this module: it stops the module's control plane.)"""
    url = await asyncio.to_thread(login_url, cluster)
    async with await Browser.launch(width=WIDTH, height=HEIGHT) as browser:
        page = await browser.new_page()
        assert await page.navigate(url) == 200
        await page.wait_for("document.querySelector('#live')?.dataset.state === 'live'",
                            TIMEOUT_S, what="#live[data-state=live]")
        os.kill(int(cluster.info["controlplane"]["pid"]), signal.SIGTERM)
        await page.wait_for("document.querySelector('#live')?.dataset.state === 'down'",
                            TIMEOUT_S, what="#live[data-state=down] once the control plane "
                            "stopped")
        said = await page.evaluate("document.querySelector('#live').textContent")
        assert said.strip(), "the indicator says nothing"
        assert not page.exceptions, page.exceptions
