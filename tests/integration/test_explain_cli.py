"""`podnet explain` driven as a user runs it, against a real 2-node cluster: the path of a
cross-node flow and of a ClusterIP flow, policy verdicts naming the rule, bad input, and
`--flow ID` for a request that really happened."""

from __future__ import annotations

import json

from harness import RunningCluster, wait_for

PODS = """\
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  nodeName: node-1
  containers: [{name: toolbox, image: podnet/toolbox}]
---
apiVersion: v1
kind: Pod
metadata: {name: other, labels: {app: other}}
spec:
  nodeName: node-1
  containers: [{name: toolbox, image: podnet/toolbox}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: node-2
  containers: [{name: echo, image: podnet/echo, ports: [{containerPort: 8080, name: http}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""

POLICIES = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress}
spec:
  podSelector: {}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client-to-web}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: client}}
    ports: [{port: http}]
"""


def _setup(cluster: RunningCluster) -> None:
    cluster.kubectl("apply", "-f", "-", input=PODS, check=True)
    for name in ("client", "other", "web"):
        cluster.running_pod(name)
    # The Service's endpoint is published once web is Ready.
    wait_for(lambda: "10.244." in cluster.kubectl("get", "endpointslices", "-l",
                                                  "kubernetes.io/service-name=web").stdout,
             what="web's EndpointSlice")


def test_explain_paths_verdicts_and_bad_input(cluster: RunningCluster) -> None:
    _setup(cluster)
    web_ip = cluster.pod("web")["status"]["podIP"]  # type: ignore[index]
    node2 = next(n for n in cluster.info["nodes"] if n["name"] == "node-2")

    plain = cluster.podnet("explain", "client", "web")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert f"default/web {web_ip}:8080/TCP on node-2" in plain.stdout
    assert f"node-1's route table: {node2['podCIDR']} -> node-2 at {node2['address']} " \
        "(alive)" in plain.stdout
    assert "no policy selects this pod: allowed by default" in plain.stdout
    assert plain.stdout.rstrip().endswith("ALLOWED")

    via_service = cluster.podnet("explain", "default/client", "svc/web", "-o", "json")
    assert via_service.returncode == 0, via_service.stderr
    doc = json.loads(via_service.stdout)
    assert (doc["port"], doc["protocol"], doc["outcome"]) == (80, "TCP", "ALLOWED")
    assert [(leg["destination"], leg["ip"], leg["port"]) for leg in doc["legs"]] == [
        ("default/web", web_ip, 8080)]
    assert any(step["step"] == "proxy" for step in doc["path"])

    cluster.kubectl("apply", "-f", "-", input=POLICIES, check=True)
    allowed = cluster.podnet("explain", "client", web_ip, "--port", "8080")
    assert allowed.returncode == 0, allowed.stdout
    assert "allowed by default/allow-client-to-web spec.ingress[0].from[0] " \
        "(spec.ingress[0].ports[0])" in allowed.stdout
    denied = cluster.podnet("explain", "other", "svc/web")
    assert denied.returncode == 1, denied.stdout
    last = denied.stdout.rstrip().splitlines()[-1]
    assert last.startswith("DENIED: ingress at default/web: ")
    assert "default/allow-client-to-web, default/deny-ingress select this pod for ingress" \
        in last

    for args, message in (
            (("client", "nope"), "podnet explain: no pod default/nope"),
            (("client", "svc/kube-system/nope"), "podnet explain: no service kube-system/nope"),
            (("client",), "podnet explain: give FROM and TO"),
            (("--flow", "no-such-flow"), "podnet explain: no events for flow no-such-flow")):
        bad = cluster.podnet("explain", *args)
        assert bad.returncode == 2, (args, bad.stdout, bad.stderr)
        assert bad.stderr.startswith(message), bad.stderr
        assert "Traceback" not in bad.stderr


def test_explain_flow_tells_what_happened(cluster: RunningCluster) -> None:
    _setup(cluster)
    curl = cluster.podnet("exec", "client", "--", "curl", "-s", "-m", "5", "http://web/")
    assert curl.returncode == 0, curl.stderr

    def flow_id() -> str | None:
        logs = cluster.podnet("logs", "--pod", "default/client", "--event", "flow.route",
                              "-o", "json")
        ids = [e["flow"] for e in map(json.loads, logs.stdout.splitlines())
               if str(e.get("dst", "")).endswith(":80")]
        return ids[-1] if ids else None

    flow = wait_for(flow_id, what="the curl's flow in the logs")
    told = wait_for(lambda: (r := cluster.podnet("explain", "--flow", flow)).returncode == 0
                    and "proxy.connection" in r.stdout and r, what="the whole flow logged")
    assert told.stdout.startswith(f"flow {flow}: default/client ")
    assert "Service default/web chose " in told.stdout
    assert told.stdout.rstrip().endswith("ALLOWED")
    doc = json.loads(cluster.podnet("explain", "--flow", flow, "-o", "json").stdout)
    assert doc["outcome"] == "ALLOWED"
    assert doc["hops"][0]["event"] == "flow.route"


def test_a_dropped_flow_is_explained_and_listed_as_denied(cluster: RunningCluster) -> None:
    _setup(cluster)
    cluster.kubectl("apply", "-f", "-", input=POLICIES, check=True)
    # `other` is not allowed in: the connect is dropped, curl times out (exit 28).
    curl = cluster.podnet("exec", "other", "--", "curl", "-s", "-m", "2", "http://web/")
    assert curl.returncode == 28, (curl.stdout, curl.stderr)

    def denied_flow() -> str | None:
        logs = cluster.podnet("logs", "--verdict", "denied", "--pod", "default/web", "-o",
                              "json")
        events = [json.loads(line) for line in logs.stdout.splitlines()]
        assert all(e["event"] == "policy.verdict" and e["verdict"] == "denied"
                   for e in events), events
        return next((e["flow"] for e in reversed(events)
                     if e["direction"] == "ingress" and e["src"].startswith(
                         cluster.pod("other")["status"]["podIP"] + ":")), None)  # type: ignore[index]

    flow = wait_for(denied_flow, what="other's denied flow in `podnet logs --verdict denied`")
    told = cluster.podnet("explain", "--flow", flow)
    assert told.returncode == 1, told.stdout
    assert told.stdout.startswith(f"flow {flow}: default/other ")
    assert told.stdout.rstrip().splitlines()[-1].startswith(
        "DENIED: ingress at default/web: default/allow-client-to-web, default/deny-ingress "
        "select this pod for ingress and no rule allows it")
