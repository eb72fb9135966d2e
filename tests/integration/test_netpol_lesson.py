"""examples/netpol/README.md, step by step, with the real kubectl: the lesson's files applied
as they are, and what the lesson says to look for. The cluster runs with --policy-reject so
denials are refused at once (the lesson's default cluster drops them: same verdicts, slower)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import RunningCluster, start_cluster, stop_cluster, wait_for

pytestmark = pytest.mark.kubectl

LESSON = Path(__file__).resolve().parents[2] / "examples" / "netpol"
POLL_S = 20.0


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("netpol-lesson"), 3, "--policy-reject")
    try:
        apply(cluster, "shop.yaml")
        for ns in ("shop", "guest"):
            result = cluster.kubectl("wait", "-n", ns, "--for=condition=Ready", "pod", "--all",
                                     "--timeout=60s")
            assert result.returncode == 0, result.stderr
        yield cluster
    finally:
        stop_cluster(cluster)


def apply(cluster: RunningCluster, name: str) -> None:
    result = cluster.kubectl("apply", "-f", str(LESSON / name))
    assert result.returncode == 0, result.stderr


def run(cluster: RunningCluster, pod: str, *argv: str) -> tuple[int, str]:
    ns, name = pod.split("/")
    result = cluster.kubectl("exec", "-n", ns, name, "--", *argv)
    return result.returncode, result.stdout + result.stderr


def fetch(cluster: RunningCluster, pod: str, url: str) -> tuple[int, str]:
    return run(cluster, pod, "wget", "-qO-", "-T", "2", url)


def eventually(cluster: RunningCluster, pod: str, argv: list[str], works: bool) -> str:
    """Poll until `argv` in `pod` succeeds (or fails, `works=False`); its output."""
    def check() -> str | None:
        code, out = run(cluster, pod, *argv)
        return (out or "-") if (code == 0) == works else None
    state = "working" if works else "failing"
    return wait_for(check, POLL_S, what=f"{pod}: {' '.join(argv)} {state}")


WEB = ["wget", "-qO-", "-T", "2", "http://web/hostname"]
WEB_FROM_GUEST = ["wget", "-qO-", "-T", "2", "http://web.shop/hostname"]


def test_the_lesson(shop: RunningCluster) -> None:
    # Without policies: everyone reaches the web pods.
    assert eventually(shop, "shop/frontend", WEB, True).startswith("web-")
    eventually(shop, "guest/visitor", WEB_FROM_GUEST, True)

    # 1. Default deny ingress in shop.
    apply(shop, "1-default-deny-ingress.yaml")
    described = shop.kubectl("describe", "netpol", "-n", "shop", "default-deny-ingress").stdout
    assert "isolated for ingress" in described
    eventually(shop, "shop/frontend", WEB, False)
    eventually(shop, "guest/visitor", WEB_FROM_GUEST, False)
    denied = shop.podnet("logs", "--verdict", "denied").stdout
    assert "denied: shop/default-deny-ingress selects this pod for ingress" in denied
    assert "direction=ingress" in denied

    # 2. Allow from one app: the frontend, on the port named http.
    apply(shop, "2-allow-frontend.yaml")
    assert eventually(shop, "shop/frontend", WEB, True).startswith("web-")
    assert fetch(shop, "shop/batch", "http://web/hostname")[0] != 0
    assert fetch(shop, "guest/visitor", "http://web.shop/hostname")[0] != 0
    explained = shop.podnet("explain", "shop/frontend", "svc/shop/web")
    assert explained.returncode == 0, explained.stdout + explained.stderr
    assert "allowed by shop/web-from-frontend spec.ingress[0].from[0]" in explained.stdout
    assert explained.stdout.rstrip().endswith("ALLOWED")
    explained = shop.podnet("explain", "shop/batch", "svc/shop/web")
    assert explained.returncode == 1 and "DENIED for 2 of 2 endpoints" in explained.stdout

    # 3. The DNS egress trap: default deny egress denies kube-dns too.
    apply(shop, "3-default-deny-egress.yaml")
    eventually(shop, "shop/frontend", ["nslookup", "web"], False)
    assert fetch(shop, "shop/frontend", "http://web/hostname")[0] != 0
    explained = shop.podnet("explain", "shop/frontend", "kube-dns")
    assert explained.returncode == 1
    assert "DENIED: shop/default-deny-egress selects this pod for egress" in explained.stdout
    assert "-> 10.96.0.10:53 udp [denied]" in shop.podnet("logs", "--verdict", "denied").stdout

    # 4. The fix: DNS for every pod, and the frontend's egress to the web pods.
    apply(shop, "4-allow-dns.yaml")
    assert "web.shop.svc.cluster.local" in eventually(shop, "shop/frontend", ["nslookup", "web"],
                                                      True)
    assert eventually(shop, "shop/frontend", WEB, True).startswith("web-")
    eventually(shop, "shop/batch", ["nslookup", "web"], True)
    assert fetch(shop, "shop/batch", "http://web/hostname")[0] != 0
    for src, dst in (("shop/frontend", "svc/shop/web"), ("shop/batch", "kube-dns")):
        explained = shop.podnet("explain", src, dst)
        assert explained.returncode == 0 and explained.stdout.rstrip().endswith("ALLOWED"), \
            explained.stdout
