"""`podnet explain`: the pure parts (podnet/cli/explain.py, podnet/cli/flowstory.py) and the
`--verdict denied|allowed` filter of `podnet logs`."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from podnet import logview
from podnet.cli.explain import ExplainError, Snapshot, as_json, explain, render
from podnet.cli.flowstory import render_story, story, story_json


def pod(name: str, ip: str, node: str, labels: dict[str, str], ns: str = "default",
        ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports or []}]},
            "status": {"phase": "Running", "podIP": ip}}


def node(name: str, cidr: str, address: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": {"podnet.io/agent-address": address}},
            "spec": {"podCIDR": cidr}}


def netpol(name: str, spec: dict[str, Any], ns: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


ROUTES = [{"podCIDR": "10.244.1.0/24", "node": "node-1", "address": "127.0.0.1:1001",
           "state": "alive"},
          {"podCIDR": "10.244.2.0/24", "node": "node-2", "address": "127.0.0.1:1002",
           "state": "alive"}]


def snapshot(policies: list[dict[str, Any]] | None = None) -> Snapshot:
    web_ports = [{"containerPort": 8080, "name": "http"}]
    return Snapshot(
        pods=[pod("client", "10.244.1.5", "node-1", {"app": "client"}),
              pod("other", "10.244.1.6", "node-1", {"app": "other"}),
              pod("web-a", "10.244.2.7", "node-2", {"app": "web"}, ports=web_ports),
              pod("web-b", "10.244.1.8", "node-1", {"app": "web"}, ports=web_ports),
              {"metadata": {"name": "pending", "namespace": "default"},
               "status": {"phase": "Pending"}}],
        services=[{"metadata": {"name": "web", "namespace": "default"},
                   "spec": {"clusterIP": "10.96.3.4",
                            "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]}},
                  {"metadata": {"name": "empty", "namespace": "default"},
                   "spec": {"clusterIP": "10.96.3.5", "ports": [{"port": 80}]}},
                  {"metadata": {"name": "headless", "namespace": "default"},
                   "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}],
        slices=[{"metadata": {"name": "web-x", "namespace": "default",
                              "labels": {"kubernetes.io/service-name": "web"}},
                 "addressType": "IPv4", "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
                 "endpoints": [
                     {"addresses": ["10.244.2.7"], "nodeName": "node-2",
                      "conditions": {"ready": True}},
                     {"addresses": ["10.244.1.8"], "nodeName": "node-1",
                      "conditions": {"ready": True}}]}],
        nodes=[node("node-1", "10.244.1.0/24", "127.0.0.1:1001"),
               node("node-2", "10.244.2.0/24", "127.0.0.1:1002")],
        namespaces=[{"metadata": {"name": "default",
                                  "labels": {"kubernetes.io/metadata.name": "default"}}}],
        policies=policies or [],
        routes={"node-1": ROUTES, "node-2": ROUTES},
        proxy_address="127.0.0.1:2000",
    )


def steps(ex: Any) -> list[str]:
    return [h.step for h in ex.hops]


def test_cross_node_pod_to_pod_reads_the_source_nodes_route_table() -> None:
    ex = explain(snapshot(), "client", "default/web-a")
    assert (ex.port, ex.protocol, ex.outcome, ex.exit_code) == (8080, "TCP", "ALLOWED", 0)
    leg = ex.legs[0]
    assert [h.step for h in leg.hops] == ["route", "tunnel"]
    assert "node-1's route table: 10.244.2.0/24 -> node-2 at 127.0.0.1:1002 (alive)" \
        in leg.hops[0].text
    assert leg.egress is not None and leg.egress.reason.startswith("no policy selects")
    text = render(ex)
    assert text.splitlines()[-1] == "ALLOWED"


def test_same_node_needs_no_tunnel_and_a_pod_ip_names_the_pod() -> None:
    ex = explain(snapshot(), "10.244.1.5", "10.244.1.8", port="http")
    assert ex.destination == "default/web-b"
    assert [h.step for h in ex.legs[0].hops] == ["deliver"]
    assert "same node" in ex.legs[0].hops[0].text


def test_a_dead_route_is_unreachable_and_a_silent_agent_falls_back_to_the_api() -> None:
    snap = snapshot()
    snap.routes["node-1"] = [dict(ROUTES[0]), dict(ROUTES[1], state="dead")]
    ex = explain(snap, "client", "web-a")
    assert ex.outcome == "UNREACHABLE" and ex.exit_code == 1
    assert "EHOSTUNREACH" in ex.summary()
    snap.routes["node-1"] = "unreachable (timeout)"
    ex = explain(snap, "client", "web-a")
    assert ex.outcome == "ALLOWED"
    assert "the API's Node podCIDRs (node-1's agent: unreachable (timeout))" \
        in ex.legs[0].hops[0].text


def test_a_service_lists_every_ready_endpoint_with_its_own_verdicts() -> None:
    only_a = netpol("only-a", {"podSelector": {"matchLabels": {"app": "web"}},
                               "ingress": [{"from": [{"podSelector": {
                                   "matchLabels": {"app": "client"}}}],
                                   "ports": [{"port": "http"}]}]})
    block_b = netpol("lock-b", {"podSelector": {"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["web"]}]}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                           "except": ["10.244.1.0/24"]}}]}]})
    ex = explain(snapshot([only_a]), "client", "svc/web")
    assert (ex.port, ex.protocol, ex.outcome) == (80, "TCP", "ALLOWED")
    assert steps(ex) == ["source", "destination", "route", "proxy"]
    assert [(leg.destination, leg.port) for leg in ex.legs] == [("default/web-b", 8080),
                                                                ("default/web-a", 8080)]
    assert all(leg.ingress is not None and leg.ingress.policy == "default/only-a"
               and leg.ingress.rule == "spec.ingress[0].from[0]" for leg in ex.legs)
    # The other pod is not allowed in: denied at every endpoint.
    ex = explain(snapshot([only_a]), "other", "svc/default/web")
    assert ex.outcome == "DENIED" and ex.exit_code == 1
    assert ex.summary().startswith("DENIED for 2 of 2 endpoints")
    assert "ingress at default/web-a: default/only-a selects this pod" in ex.summary()
    # Union of policies; and an except block that hits only the same-node client's range.
    ex = explain(snapshot([block_b]), "client", "svc/web")
    assert ex.outcome == "DENIED"
    doc = as_json(ex)
    assert doc["outcome"] == "DENIED"
    assert [leg["ingress"]["verdict"] for leg in doc["legs"]] == ["denied", "denied"]
    assert json.loads(json.dumps(doc)) == doc


def test_a_node_port_service_is_reached_through_its_cluster_ip_from_a_pod() -> None:
    snap = snapshot()
    spec = snap.services[0]["spec"]
    spec["type"] = "NodePort"
    spec["ports"][0]["nodePort"] = 30080
    ex = explain(snap, "client", "svc/web")
    assert steps(ex) == ["source", "destination", "note", "route", "proxy"]
    assert "type NodePort: also open on every node's address at port 30080" in ex.hops[2].text
    assert ex.outcome == "ALLOWED" and len(ex.legs) == 2


def test_service_without_endpoints_and_kinds_without_a_proxy() -> None:
    ex = explain(snapshot(), "client", "svc/empty")
    assert ex.outcome == "UNREACHABLE"
    assert "no ready endpoints" in ex.summary()
    with pytest.raises(ExplainError, match="headless"):
        explain(snapshot(), "client", "svc/headless")
    with pytest.raises(ExplainError, match=r"service default/web has no port 81"):
        explain(snapshot(), "client", "svc/web", port="81")
    with pytest.raises(ExplainError, match=r"has no UDP port \(it has: 80/TCP\)"):
        explain(snapshot(), "client", "svc/web", protocol="udp")


def test_kube_dns_and_the_egress_trap() -> None:
    deny_egress = netpol("deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]})
    allow_dns = netpol("allow-dns", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
        "to": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"port": 53, "protocol": "UDP"}]}]})
    ex = explain(snapshot(), "client", "kube-dns")
    assert (ex.port, ex.protocol, ex.outcome) == (53, "UDP", "ALLOWED")
    # The control plane answers kube-dns: no agent judges its ingress (docs/policy.md).
    assert ex.legs[0].ingress is None
    assert [h.step for h in ex.legs[0].hops] == ["dns", "ingress"]
    lock_dns = netpol("lock-dns", {"podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}},
                      ns="kube-system")
    ex = explain(snapshot([lock_dns]), "client", "kube-dns")
    assert ex.outcome == "ALLOWED"
    assert any(n.startswith("in a real cluster coredns' own ingress policy would drop this: "
                            "kube-system/lock-dns selects") for n in ex.notes)
    ex = explain(snapshot([deny_egress]), "client", "10.96.0.10")
    assert ex.outcome == "DENIED"
    assert "egress at default/client: default/deny-egress selects this pod" in ex.summary()
    ex = explain(snapshot([deny_egress, allow_dns]), "client", "kube-dns")
    assert ex.outcome == "ALLOWED"
    egress = ex.legs[0].egress
    assert egress is not None and egress.policy == "default/allow-dns"
    # DNS over TCP is not in that rule.
    assert explain(snapshot([deny_egress, allow_dns]), "client", "kube-dns",
                   protocol="tcp").outcome == "DENIED"


def test_off_cluster_address_is_unreachable_but_egress_is_still_judged() -> None:
    ex = explain(snapshot(), "client", "8.8.8.8", port="53", protocol="udp")
    assert ex.outcome == "UNREACHABLE"
    assert ex.legs[0].egress is not None and ex.legs[0].egress.allowed


@pytest.mark.parametrize(("src", "dst", "kw", "message"), [
    ("nope", "web-a", {}, "no pod default/nope"),
    ("client", "team/nope", {}, "no pod team/nope"),
    ("client", "svc/nope", {}, "no service default/nope"),
    ("client", "pending", {}, "pod default/pending has no IP yet (phase Pending)"),
    ("svc/web", "client", {}, "FROM must be a pod"),
    ("client", "other", {}, "pod default/other declares no container port"),
    ("client", "web-a", {"port": "nope"}, "has no container port named 'nope'"),
    ("client", "web-a", {"port": "70000"}, "out of range"),
    ("client", "web-a", {"protocol": "icmp"}, "unknown protocol"),
    ("client", "a/b/c", {}, "use NAME or NAMESPACE/NAME"),
    ("client", "8.8.8.8", {}, "give --port as a number"),
    ("", "web-a", {}, "empty FROM/TO"),
])
def test_bad_input_is_one_clear_error(src: str, dst: str, kw: dict[str, str],
                                      message: str) -> None:
    with pytest.raises(ExplainError, match=message.replace("(", r"\(").replace(")", r"\)")):
        explain(snapshot(), src, dst, **kw)


def test_garbage_in_the_snapshot_is_survived() -> None:
    snap = snapshot([{"metadata": {}}, netpol("broken", {"podSelector": "x"})])
    snap.pods.append({"metadata": "x"})
    snap.services.append({"spec": []})
    snap.routes["node-1"] = [{"podCIDR": "garbage"}, *ROUTES]
    ex = explain(snap, "client", "web-a")
    assert ex.outcome == "ALLOWED"
    assert any("skipped" in n for n in ex.notes)


# --- --flow ----------------------------------------------------------------------------------

def _event(ts: str, event: str, **fields: Any) -> dict[str, Any]:
    return {"ts": f"2026-01-01T00:00:{ts}Z", "event": event, "flow": "f1", **fields}


def test_flow_story_names_the_deciding_policy() -> None:
    events = [
        _event("00.900", "policy.verdict", node="node-1", pod="client", namespace="default",
               src="10.244.1.5:40000", dst="10.96.3.4:80", verdict="allowed",
               direction="egress", reason="no policy selects this pod: allowed by default"),
        _event("01.000", "flow.route", node="node-1", pod="client", namespace="default",
               src="10.244.1.5:40000", dst="10.96.3.4:80", proto="tcp", verdict="tunnel",
               route="10.96.0.0/12", to_node="@controlplane", address="127.0.0.1:2000",
               state="alive"),
        _event("01.010", "proxy.connection", node="@controlplane", verdict="connected",
               service="default/web", endpoint="10.244.2.7:8080", endpoint_node="node-2",
               reason="round-robin", ready=2),
        _event("01.020", "policy.verdict", node="node-2", pod="web-a", namespace="default",
               verdict="denied", direction="ingress", policy=None, rule=None,
               reason="denied: default/only-a selects this pod for ingress and no rule "
                      "allows it"),
    ]
    told = story("f1", events)
    assert told.outcome == "DENIED" and told.exit_code == 1
    assert told.source == "default/client 10.244.1.5:40000"
    assert [h.event for h in told.hops] == ["policy.verdict", "flow.route",
                                            "proxy.connection", "policy.verdict"]
    assert "Service default/web chose 10.244.2.7:8080 on node-2 (round-robin, 2 ready)" \
        == told.hops[2].detail
    assert told.hops[2].offset_ms == pytest.approx(110.0)
    assert [(d.direction, d.allowed) for d in told.decisions] == [("egress", True),
                                                                  ("ingress", False)]
    text = render_story(told)
    assert "ingress  default/web-a: DENIED: default/only-a selects" in text
    assert text.splitlines()[-1].startswith("DENIED: ingress at default/web-a")
    assert story_json(told)["decisions"][1]["allowed"] is False


def test_flow_story_outcomes_without_verdicts() -> None:
    through = story("f1", [_event("01.0", "flow.delivered", node="n", verdict="accepted")])
    assert through.outcome == "ALLOWED"
    refused = story("f1", [_event("01.0", "flow.refused", node="n", verdict="ECONNREFUSED")])
    assert refused.outcome == "FAILED" and refused.exit_code == 1
    allowed = story("f1", [_event("01.0", "policy.verdict", verdict="allowed",
                                  direction="egress", reason="no policy selects this pod: "
                                  "allowed by default")])
    assert allowed.outcome == "ALLOWED"
    assert story("f1", [_event("01.0", "flow.route", ts_extra=1)]).outcome == "UNKNOWN"
    assert story("f1", []).outcome == "UNKNOWN"
    # The receiving pod's events never name the source.
    late = story("f1", [_event("01.0", "flow.delivered", pod="web", namespace="default",
                               src="10.244.1.5:4", node="n", verdict="accepted")])
    assert late.source == "10.244.1.5:4"
    # Garbage field types are shown, never raised on.
    odd = story("f1", [{"ts": 5, "event": 3, "verdict": ["x"], "node": {}}])
    assert odd.hops and odd.outcome in ("UNKNOWN", "FAILED")


# --- podnet logs --verdict -------------------------------------------------------------------

def test_logs_verdict_denied_and_allowed_select_policy_verdicts(tmp_path: Path) -> None:
    lines = [
        _event("01.000", "policy.verdict", verdict="denied", direction="ingress"),
        _event("02.000", "policy.verdict", verdict="allowed", direction="egress"),
        _event("03.000", "flow.closed", verdict="closed"),
        _event("04.000", "flow.refused", verdict="ECONNREFUSED"),
    ]
    (tmp_path / "agent-node-1.jsonl").write_text("\n".join(json.dumps(x) for x in lines))

    def shown(verdict: str) -> list[str]:
        out = io.StringIO()
        logview.show(tmp_path, logview.Filter(verdict=verdict), output="json", out=out,
                     err=io.StringIO())
        return [json.loads(x)["verdict"] for x in out.getvalue().splitlines()]

    assert shown("denied") == ["denied"]
    assert shown("DENY") == ["denied"]
    assert shown("allowed") == ["allowed"]
    assert shown("refused") == ["ECONNREFUSED"]
