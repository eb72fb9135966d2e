"""The topology page's pure model: stored objects + route tables -> entities, and patches."""

from __future__ import annotations

from typing import Any

from podnet.observe.topology import (
    DEPENDS,
    as_lists,
    build_view,
    diff,
    empty_view,
    patch_empty,
    rebuild,
)


def node(name: str, cidr: str, port: int, ready: bool = True,
         net_unavailable: bool = False) -> dict[str, Any]:
    conds = [{"type": "Ready", "status": "True" if ready else "False"}]
    if net_unavailable:
        conds.append({"type": "NetworkUnavailable", "status": "True"})
    return {"metadata": {"name": name, "resourceVersion": "7"},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"conditions": conds,
                       "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}


def pod(name: str, node_name: str, ip: str, labels: dict[str, str] | None = None,
        phase: str = "Running", ready: bool = True, ns: str = "default") -> dict[str, Any]:
    spec = {"nodeName": node_name} if node_name else {}
    status: dict[str, Any] = {"phase": phase,
                              "conditions": [{"type": "Ready",
                                              "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": {"namespace": ns, "name": name, "labels": labels or {}},
            "spec": spec, "status": status}


def service(name: str, ip: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": name},
            "spec": {"clusterIP": ip, "ports": [{"port": 80, "protocol": "TCP"},
                                                {"port": 53, "protocol": "UDP"}]}}


def slice_(svc: str, eps: list[tuple[str, str, str, bool | None]]) -> dict[str, Any]:
    endpoints = []
    for ip, pod_name, node_name, ready in eps:
        ep: dict[str, Any] = {"addresses": [ip], "nodeName": node_name,
                              "targetRef": {"kind": "Pod", "namespace": "default",
                                            "name": pod_name}}
        if ready is not None:
            ep["conditions"] = {"ready": ready}
        endpoints.append(ep)
    return {"metadata": {"namespace": "default", "name": f"{svc}-abc",
                         "labels": {"kubernetes.io/service-name": svc}},
            "endpoints": endpoints}


NODES = [node("node-1", "10.244.1.0/24", 7001), node("node-2", "10.244.2.0/24", 7002),
         node("node-3", "10.244.3.0/24", 7003, net_unavailable=True)]
PODS = [pod("web-1", "node-1", "10.244.1.3", {"app": "web"}),
        pod("web-2", "node-2", "10.244.2.3", {"app": "web"}, ready=False),
        pod("client", "node-1", "10.244.1.4", {"role": "client"}),
        pod("pending", "", "", phase="Pending", ready=False)]


def view(**over: Any) -> Any:
    args: dict[str, Any] = {"nodes": NODES, "pods": PODS, "services": [], "slices": [],
                            "policies": [], "faults": [], "routes_by_node": {}, "now": 0.0}
    args.update(over)
    return build_view(**args)


def test_nodes_and_pods_are_keyed_entities() -> None:
    v = view()
    n1 = v["nodes"]["node-1"]
    assert n1 == {"key": "node-1", "name": "node-1", "podCIDR": "10.244.1.0/24",
                  "podCIDRs": ["10.244.1.0/24"], "address": "127.0.0.1:7001", "ready": True,
                  "gossip": "unknown",
                  "seenBy": {}, "routes": []}
    assert v["nodes"]["node-3"]["ready"] is False           # NetworkUnavailable
    assert v["pods"]["default/web-1"] == {
        "key": "default/web-1", "namespace": "default", "name": "web-1", "node": "node-1",
        "ip": "10.244.1.3", "phase": "Running", "ready": True, "labels": {"app": "web"}}
    assert v["pods"]["default/pending"]["node"] == ""
    assert v["pods"]["default/pending"]["ip"] == ""
    assert v["pods"]["default/web-2"]["ready"] is False


def test_gossip_is_the_worst_state_other_agents_report() -> None:
    routes = {
        "node-1": [{"podCIDR": "10.244.2.0/24", "node": "node-2", "state": "alive",
                    "address": "x", "version": 3, "age_s": 1.5},
                   {"podCIDR": "10.244.3.0/24", "node": "node-3", "state": "suspect"},
                   # a node's own opinion of itself is not counted
                   {"podCIDR": "10.244.1.0/24", "node": "node-1", "state": "dead"}],
        "node-2": [{"podCIDR": "10.244.3.0/24", "node": "node-3", "state": "dead"},
                   {"podCIDR": "10.244.1.0/24", "node": "node-1", "state": "alive"}],
    }
    v = view(routes_by_node=routes)
    assert v["nodes"]["node-1"]["gossip"] == "alive"
    assert v["nodes"]["node-1"]["seenBy"] == {"node-2": "alive"}
    assert v["nodes"]["node-2"]["gossip"] == "alive"
    assert v["nodes"]["node-3"]["gossip"] == "dead"
    assert v["nodes"]["node-3"]["seenBy"] == {"node-1": "suspect", "node-2": "dead"}
    # The node's own table is shown without the ever-changing version and age.
    assert v["nodes"]["node-1"]["routes"][0] == {"podCIDR": "10.244.1.0/24", "node": "node-1",
                                                 "state": "dead"}


def test_garbage_route_rows_do_not_crash() -> None:
    routes: dict[str, Any] = {"node-1": ["junk", {"node": 5}, {"node": "node-2",
                                                              "state": "weird"}],
                              "node-2": "not a list"}
    v = view(routes_by_node=routes)
    assert v["nodes"]["node-2"]["gossip"] == "unknown"


def test_service_endpoints_come_from_slices() -> None:
    v = view(services=[service("web", "10.96.0.20")],
             slices=[slice_("web", [("10.244.2.3", "web-2", "node-2", False),
                                    ("10.244.1.3", "web-1", "node-1", None)]),
                     slice_("other", [("10.244.1.9", "x", "node-1", True)])])
    svc = v["services"]["default/web"]
    assert svc["clusterIP"] == "10.96.0.20"
    assert svc["type"] == "ClusterIP"
    assert svc["ports"] == ["80/TCP", "53/UDP"]
    assert svc["endpoints"] == [
        {"ip": "10.244.1.3", "pod": "default/web-1", "node": "node-1", "ready": True},
        {"ip": "10.244.2.3", "pod": "default/web-2", "node": "node-2", "ready": False}]
    assert "default/other" not in v["services"]   # a slice without its Service


def test_policy_selects_pods_in_its_namespace() -> None:
    pol = {"metadata": {"namespace": "default", "name": "web-in"},
           "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"from": [{"podSelector": {}}]}]}}
    deny = {"metadata": {"namespace": "default", "name": "deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    bad = {"metadata": {"namespace": "default", "name": "bad"},
           "spec": {"podSelector": {"matchLabels": "nope"}}}
    v = view(policies=[pol, deny, bad])
    assert v["policies"]["default/web-in"]["selects"] == ["default/web-1", "default/web-2"]
    assert v["policies"]["default/web-in"]["types"] == ["Ingress"]
    assert "ingress: 1 rule" in v["policies"]["default/web-in"]["summary"]
    assert len(v["policies"]["default/deny"]["selects"]) == 4
    assert v["policies"]["default/deny"]["summary"] == \
        "every pod in default: ingress: deny all, egress: deny all"
    assert v["policies"]["default/bad"]["selects"] == []
    assert "unreadable" in v["policies"]["default/bad"]["summary"]


def test_faults_name_their_pods_and_nodes() -> None:
    pod_fault = {"metadata": {"name": "slow-web"},
                 "spec": {"from": {"pod": "default/client"}, "to": {"selector": "app=web"},
                          "direction": "to", "delayMs": 100},
                 "status": {"expiresAt": "2026-12-07T18:00:00Z"}}
    node_fault = {"metadata": {"name": "split"},
                  "spec": {"from": {"node": "node-1"}, "to": {"node": "node-2"},
                           "partition": True}}
    svc_fault = {"metadata": {"name": "lossy"},
                 "spec": {"from": {"namespace": "default"},
                          "to": {"service": "default/web"}, "lossPct": 5}}
    garbage = {"metadata": {"name": "junk"}, "spec": {"from": 3}}
    v = view(faults=[pod_fault, node_fault, svc_fault, garbage],
             services=[service("web", "10.96.0.20")],
             slices=[slice_("web", [("10.244.1.3", "web-1", "node-1", True)])])
    f = v["faults"]["slow-web"]
    assert f["pods"] == ["default/client", "default/web-1", "default/web-2"]
    assert f["nodes"] == []
    assert f["expires"] == "2026-12-07T18:00:00Z"
    assert f["summary"].startswith("delay 100ms, pod/default/client -> ")
    assert v["faults"]["split"]["nodes"] == ["node-1", "node-2"]
    assert v["faults"]["split"]["pods"] == []
    assert v["faults"]["split"]["expires"] is None
    assert "partition" in v["faults"]["split"]["summary"]
    # every pod of the namespace (the source side) and the Service's endpoint
    assert "default/web-1" in v["faults"]["lossy"]["pods"]
    assert v["faults"]["junk"]["summary"].startswith("unreadable: ")


def test_diff_sends_only_what_changed() -> None:
    old = view()
    same = view()
    assert patch_empty(diff(old, same))
    moved = [*PODS[:3], pod("pending", "node-2", "10.244.2.9")]
    new = view(pods=moved[1:])  # web-1 gone, pending scheduled
    p = diff(old, new)
    assert p["delete"] == {"pods": ["default/web-1"]}
    assert [e["key"] for e in p["upsert"]["pods"]] == ["default/pending"]
    assert "nodes" not in p["upsert"]
    # a heartbeat (a new resourceVersion) is not a change
    beat = [dict(n, metadata={"name": n["metadata"]["name"], "resourceVersion": "99"})
            for n in NODES]
    assert patch_empty(diff(old, view(nodes=beat)))


def test_diff_from_empty_is_everything_and_lists_are_sorted() -> None:
    v = view()
    p = diff(empty_view(), v)
    assert len(p["upsert"]["pods"]) == 4 and p["delete"] == {}
    lists = as_lists(v)
    assert [n["key"] for n in lists["nodes"]] == ["node-1", "node-2", "node-3"]
    assert set(lists) == {"nodes", "pods", "services", "policies", "faults"}


def test_rebuild_only_what_an_input_feeds_and_agree_with_a_full_build() -> None:
    pol = {"metadata": {"namespace": "default", "name": "web-in"},
           "spec": {"podSelector": {"matchLabels": {"app": "web"}}}}
    full_args: dict[str, Any] = {"nodes": NODES, "pods": PODS, "services": [], "slices": [],
                                 "policies": [pol], "faults": [], "routes_by_node": {},
                                 "now": 0.0}
    old = build_view(**full_args)
    # A pod change: pods, and what is derived from pods, again; nodes shared untouched.
    pods = [*PODS, pod("web-3", "node-2", "10.244.2.7", {"app": "web"})]
    kinds = {k for k in DEPENDS["pods"]}
    new = rebuild(old, kinds, **{**full_args, "pods": pods, "nodes": []})
    assert new["nodes"] is old["nodes"]
    assert new == build_view(**{**full_args, "pods": pods})
    assert "default/web-3" in new["policies"]["default/web-in"]["selects"]
    # A route change rebuilds only the nodes: the pods are not even read.
    routes = {"node-1": [{"podCIDR": "10.244.2.0/24", "node": "node-2", "state": "suspect"}]}
    newer = rebuild(new, set(DEPENDS["routes"]),
                    **{**full_args, "pods": [], "routes_by_node": routes})
    assert newer["pods"] is new["pods"]
    assert newer["nodes"]["node-2"]["gossip"] == "suspect"
    p = diff(new, newer)
    assert [e["key"] for e in p["upsert"]["nodes"]] == ["node-1", "node-2"]
    assert set(p["upsert"]) == {"nodes"}
