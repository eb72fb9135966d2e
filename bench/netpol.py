"""NetworkPolicy cost on the data path, and how fast a policy change takes effect.

A real cluster (`podnet up --detach --policy-reject`: control plane and 2 agents as separate
processes, uvloop where installed). A client pod on node-1 and a 64-byte echo server on
node-2, both labelled bench=rr. Alternating, run by run (the order flips every run so drift
hits both alike):

- "none": no NetworkPolicy in the cluster;
- "20 policies": 20 NetworkPolicies select both pods for ingress and egress; 19 allow peers
  and ports the traffic does not match (other namespaces, labels, ports, ipBlocks), one
  allows it (TCP 7000 between bench=rr pods). Before measuring, a connect to port 7001 (no
  policy allows it) must be refused: the policies are in force on both nodes.

Measured by the client pod (bench/pods/netpol_pods.py): request/response over one
connection (rt/s), and connect + one exchange + close (conn/s: policy is judged per
connection, so this is where it costs). Medians over `--runs`. Target: 20 policies >= 0.9x
none for request/response.

Then the time a policy change takes to take effect: with the client connecting to the server
back to back, a default-deny-ingress policy selecting the server is created through the API;
the time from sending that write to the first refused connect (and, deleting it, to the first
accepted one again). Medians over `--changes`. Target: 1 s.

    .venv/bin/python bench/netpol.py [--seconds 3] [--runs 5] [--changes 7]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from harness import RunningCluster, start_cluster, stop_cluster, wait_for  # noqa: E402

from podnet.eventloop import loop_name  # noqa: E402
from podnet.execclient import exec_in_pod  # noqa: E402

TARGET_RATIO = 0.9
TARGET_CHANGE_S = 1.0
NETPOLS = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies"


def pod(name: str, node: str, image: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"bench": "rr", "role": name}},
            "spec": {"nodeName": node, "containers": [{"name": name, "image": image}]}}


def policies() -> list[dict[str, Any]]:
    """19 policies whose rules this traffic does not match, then the one that allows it."""
    rr = {"matchLabels": {"bench": "rr"}}
    out = []
    for i in range(19):
        kind = i % 4
        if kind == 0:
            peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {"team": f"t{i}"}}}
        elif kind == 1:
            peer = {"podSelector": {"matchLabels": {"app": f"other-{i}"}}}
        elif kind == 2:
            peer = {"ipBlock": {"cidr": f"192.168.{i}.0/24", "except": [f"192.168.{i}.0/28"]}}
        else:
            peer = {"namespaceSelector": {}, "podSelector": {"matchExpressions": [
                {"key": "tier", "operator": "In", "values": [f"t{i}", f"u{i}"]}]}}
        ports = [{"protocol": "TCP", "port": 8000 + i, "endPort": 8000 + i + 5}]
        out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": f"bench-{i:02d}"},
                    "spec": {"podSelector": rr, "policyTypes": ["Ingress", "Egress"],
                             "ingress": [{"from": [peer], "ports": ports}],
                             "egress": [{"to": [peer], "ports": ports}]}})
    allow = [{"from": [{"podSelector": rr}], "ports": [{"protocol": "TCP", "port": 7000}]}]
    out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "bench-19"},
                "spec": {"podSelector": rr, "policyTypes": ["Ingress", "Egress"],
                         "ingress": allow,
                         "egress": [{"to": [{"podSelector": rr}],
                                     "ports": [{"protocol": "TCP", "port": 7000}]}]}})
    return out


DENY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-server"},
        "spec": {"podSelector": {"matchLabels": {"role": "server"}},
                 "policyTypes": ["Ingress"]}}


def ask(cluster: RunningCluster, path: str) -> str:
    """GET the client pod's loopback control server, through exec + curl."""
    out, err = io.BytesIO(), io.BytesIO()
    code = asyncio.run(exec_in_pod(
        cluster.info["api"], cluster.token, "default", "client", None,
        ["curl", "-s", "-m", "60", f"http://127.0.0.1:9000{path}"], stdin=False,
        stdout=out, stderr=err, ssl_context=cluster.ssl))
    if code != 0:
        raise RuntimeError(f"client {path}: exit {code}: {err.getvalue().decode()}")
    return out.getvalue().decode().strip()


def set_policies(cluster: RunningCluster, on: bool, server_ip: str) -> None:
    for policy in policies():
        name = policy["metadata"]["name"]
        code, body = (cluster.api("POST", NETPOLS, policy) if on
                      else cluster.api("DELETE", f"{NETPOLS}/{name}"))
        assert code in (200, 201), (code, body)
    # 7001 is allowed by no policy: refused once the 20 are in force, open once they are gone.
    want = "refused" if on else "ok"
    wait_for(lambda: ask(cluster, f"/connects?host={server_ip}&port=7001") == want, 20,
             what=f"port 7001 {want}")


def change_latency(cluster: RunningCluster, server_ip: str, until: str) -> float:
    """Seconds from sending the policy write to the first connect that turns out `until`."""
    assert ask(cluster, f"/watch?host={server_ip}&port=7000&until={until}") == "started"
    sent = time.time()
    code, body = (cluster.api("POST", NETPOLS, DENY) if until == "refused"
                  else cluster.api("DELETE", f"{NETPOLS}/deny-server"))
    assert code in (200, 201), (code, body)

    def done() -> str | None:
        result = ask(cluster, "/result")
        return None if result == "pending" else result
    return float(wait_for(done, 35, interval_s=0.05, what=f"a connect {until}")) - sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--changes", type=int, default=7)
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE / "pods"), os.environ.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryDirectory(prefix="podnet-bench-") as tmp:
        cluster = start_cluster(Path(tmp), 2, "--policy-reject")
        try:
            for name, node, image in (("server", "node-2", "py:netpol_pods:server"),
                                      ("client", "node-1", "py:netpol_pods:client")):
                code, body = cluster.api("POST", "/api/v1/namespaces/default/pods",
                                         pod(name, node, image))
                assert code == 201, body
            server_ip = cluster.running_pod("server")["status"]["podIP"]
            cluster.running_pod("client")
            wait_for(lambda: ask(cluster, f"/connects?host={server_ip}&port=7000") == "ok",
                     20, what="the client reaching the server")
            rates: dict[tuple[str, str], list[float]] = {}
            on = False
            for run in range(args.runs):
                for mode in (("none", "20 policies") if run % 2 == 0
                             else ("20 policies", "none")):
                    if (mode == "20 policies") != on:
                        on = mode == "20 policies"
                        set_policies(cluster, on, server_ip)
                    for kind in ("rr", "crr"):
                        rate = float(ask(cluster, f"/{kind}?host={server_ip}&port=7000"
                                                  f"&seconds={args.seconds}"))
                        rates.setdefault((kind, mode), []).append(rate)
            if on:
                set_policies(cluster, False, server_ip)
            deny, allow = [], []
            for _ in range(args.changes):
                deny.append(change_latency(cluster, server_ip, "refused"))
                allow.append(change_latency(cluster, server_ip, "ok"))
        finally:
            stop_cluster(cluster)
    print(f"== NetworkPolicy: cross-node 64-byte request/response, 20 policies selecting "
          f"client and server vs none (median of {args.runs} x {args.seconds:g}s, "
          f"alternating, real processes, {loop_name()}, --policy-reject)")
    failed = False
    for kind, label, unit in (("rr", "rr 1 conn", "rt/s"),
                              ("crr", "connect+rr+close", "conn/s")):
        none = statistics.median(rates[(kind, "none")])
        with_policies = statistics.median(rates[(kind, "20 policies")])
        ratio = with_policies / none if none else 0.0
        verdict = "" if kind == "crr" else (" ok" if ratio >= TARGET_RATIO else " BELOW TARGET")
        failed |= kind == "rr" and ratio < TARGET_RATIO
        print(f"  {label:<18} 20 policies {with_policies:>9,.0f}  none {none:>9,.0f} {unit:<6}"
              f" x{ratio:.2f}{verdict}")
    for label, values in (("deny takes effect", deny), ("allow takes effect", allow)):
        median = statistics.median(values)
        failed |= median > TARGET_CHANGE_S
        print(f"  {label:<18} median {median * 1000:6.0f} ms  (min {min(values) * 1000:.0f}, "
              f"max {max(values) * 1000:.0f}, n={len(values)}) "
              f"{'ok' if median <= TARGET_CHANGE_S else 'ABOVE TARGET'}")
    print(f"  command: .venv/bin/python bench/netpol.py --seconds {args.seconds:g} "
          f"--runs {args.runs} --changes {args.changes}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
