from typing import Any

from controlplane.scheduling import choose_node


def node(name: str, ready: str = "True", labels: dict[str, str] | None = None,
         unschedulable: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"unschedulable": unschedulable},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}


def pod(selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": {"nodeSelector": selector or {}}}


def test_spreads_to_least_loaded_node() -> None:
    nodes = [node("node-1"), node("node-2"), node("node-3")]
    assert choose_node(pod(), nodes, {"node-1": 2, "node-2": 1, "node-3": 1}).node == "node-2"


def test_skips_not_ready_and_unschedulable_nodes() -> None:
    nodes = [node("node-1", ready="Unknown"), node("node-2", unschedulable=True), node("node-3")]
    assert choose_node(pod(), nodes, {"node-3": 10}).node == "node-3"


def test_node_selector_filters() -> None:
    nodes = [node("node-1", labels={"disk": "hdd"}), node("node-2", labels={"disk": "ssd"})]
    assert choose_node(pod({"disk": "ssd"}), nodes, {}).node == "node-2"


def test_no_fit_explains_why_like_kube_scheduler() -> None:
    nodes = [node("node-1", ready="False"), node("node-2", labels={"disk": "hdd"})]
    decision = choose_node(pod({"disk": "ssd"}), nodes, {})
    assert decision.node is None
    assert decision.reason.startswith("0/2 nodes are available:")
    assert "1 node(s) didn't match Pod's node affinity/selector" in decision.reason
    assert "not-ready" in decision.reason


def test_no_nodes_at_all() -> None:
    assert choose_node(pod(), [], {}).reason == "0/0 nodes are available:"


def test_a_full_node_is_skipped_and_explained() -> None:
    full = node("node-1")
    full["status"]["allocatable"] = {"pods": "2"}
    roomy = node("node-2")
    roomy["status"]["allocatable"] = {"pods": "250"}
    assert choose_node(pod(), [full, roomy], {"node-1": 2, "node-2": 100}).node == "node-2"
    decision = choose_node(pod(), [full], {"node-1": 2})
    assert decision.node is None and "1 Too many pods" in decision.reason
