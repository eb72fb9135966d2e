"""Server-side Table rendering: AGE format, column sets, pod status precedence, row objects."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controlplane.tables import PRINTERS, format_age, table

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"), (-1.5, "0s"), (0, "0s"), (0.9, "0s"), (59, "59s"), (91, "91s"),
        (119, "119s"), (120, "2m"), (151, "2m31s"), (599, "9m59s"), (600, "10m"),
        (7200, "120m"), (3 * 3600 - 1, "179m"), (3 * 3600, "3h"), (3 * 3600 + 1800, "3h30m"),
        (8 * 3600 - 1, "7h59m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"),
        (3 * 86400 + 5 * 3600, "3d5h"), (8 * 86400 - 1, "7d23h"), (8 * 86400, "8d"),
        (400 * 86400, "400d"), (730 * 86400 - 1, "729d"), (730 * 86400, "2y"),
        (735 * 86400, "2y5d"), (8 * 365 * 86400 - 1, "7y364d"), (8 * 365 * 86400, "8y"),
        (20 * 365 * 86400, "20y"),
    ],
)
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


def pod(name: str = "web-1", **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": "u-" + name,
                     "resourceVersion": "1005", "creationTimestamp": ts(300),
                     "labels": {"app": "web"}, "managedFields": [{"manager": "x"}]},
        "spec": {"containers": [{"name": "a", "image": "podnet/echo"},
                                {"name": "b", "image": "podnet/echo"}],
                 "nodeName": "node-1"},
        "status": {"phase": "Running", "podIP": "10.244.1.10", **status},
    }


def running(name: str, restarts: int = 0, finished_ago: float | None = None) -> dict[str, Any]:
    cs: dict[str, Any] = {"name": name, "ready": True, "restartCount": restarts,
                          "state": {"running": {"startedAt": ts(100)}}}
    if finished_ago is not None:
        cs["lastState"] = {"terminated": {"exitCode": 1, "finishedAt": ts(finished_ago)}}
    return cs


def cells(kind: str, obj: dict[str, Any]) -> list[Any]:
    return list(table(kind, [obj], now=NOW, resource_version="7")["rows"][0]["cells"])


def test_pod_table_shape_matches_reference() -> None:
    obj = pod(containerStatuses=[running("a"), running("b")])
    t = table("Pod", [obj], now=NOW, resource_version="1012")
    assert t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1"
    assert t["metadata"] == {"resourceVersion": "1012"}
    names = [c["name"] for c in t["columnDefinitions"]]
    assert names == ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node",
                     "Nominated Node", "Readiness Gates"]
    assert [c["priority"] for c in t["columnDefinitions"]] == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert t["columnDefinitions"][0]["format"] == "name"
    row = t["rows"][0]
    assert row["cells"] == ["web-1", "2/2", "Running", "0", "5m", "10.244.1.10", "node-1",
                            "<none>", "<none>"]
    assert row["object"] == {
        "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"name": "web-1", "namespace": "default", "uid": "u-web-1",
                     "resourceVersion": "1005", "creationTimestamp": ts(300),
                     "labels": {"app": "web"}}}
    for r in t["rows"]:
        assert len(r["cells"]) == len(t["columnDefinitions"])


def test_include_object_modes() -> None:
    obj = pod()
    full = table("pods", [obj], include_object="Object", now=NOW, resource_version="1")
    assert full["rows"][0]["object"] == obj
    bare = copy.deepcopy(obj)
    del bare["kind"], bare["apiVersion"]
    filled = table("Pod", [bare], include_object="Object", now=NOW, resource_version="1")
    assert filled["rows"][0]["object"]["kind"] == "Pod"
    assert filled["rows"][0]["object"]["apiVersion"] == "v1"
    none = table("Pod", [obj], include_object="None", now=NOW, resource_version="1")
    assert "object" not in none["rows"][0]
    default = table("Pod", [obj], include_object="", now=NOW, resource_version="1")
    assert default["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    with pytest.raises(ValueError, match="includeObject"):
        table("Pod", [obj], include_object="Everything", now=NOW, resource_version="1")


def test_empty_table_has_columns_and_no_rows() -> None:
    t = table("Pod", [], now=NOW, resource_version="3")
    assert t["rows"] == [] and len(t["columnDefinitions"]) == 9


@pytest.mark.parametrize(
    ("status", "deleting", "ready", "text"),
    [
        ({"phase": "Pending"}, False, "0/2", "Pending"),
        ({"phase": "Pending", "containerStatuses": [
            {"name": "a", "state": {"waiting": {"reason": "ContainerCreating"}}}]},
         False, "0/2", "ContainerCreating"),
        ({"containerStatuses": [
            running("a"), {"name": "b", "restartCount": 4,
                           "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
         False, "1/2", "CrashLoopBackOff"),
        ({"containerStatuses": [
            {"name": "a", "state": {"waiting": {"reason": "ErrImagePull"}}}]},
         False, "0/2", "ErrImagePull"),
        ({"phase": "Succeeded", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "b", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]},
         False, "0/2", "Completed"),
        ({"phase": "Failed", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 2}}}]},
         False, "0/2", "ExitCode:2"),
        ({"containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 0, "signal": 9}}}]},
         False, "0/2", "Signal:9"),
        ({"containerStatuses": [
            running("a"),
            {"name": "b", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
          "conditions": [{"type": "Ready", "status": "False"}]},
         False, "1/2", "NotReady"),
        ({"containerStatuses": [running("a"), running("b")]}, True, "2/2", "Terminating"),
        ({"phase": "Running", "reason": "NodeLost"}, True, "0/2", "Unknown"),
        ({"phase": "Pending", "reason": "Evicted"}, False, "0/2", "Evicted"),
    ],
)
def test_pod_status_column(status: dict[str, Any], deleting: bool, ready: str,
                           text: str) -> None:
    obj = pod()
    obj["status"] = {"phase": "Running", **status}
    if deleting:
        obj["metadata"]["deletionTimestamp"] = ts(1)
    row = cells("Pod", obj)
    assert (row[1], row[2]) == (ready, text)


@pytest.mark.parametrize(
    ("init_statuses", "text"),
    [
        ([{"name": "i0", "state": {"running": {}}}], "Init:0/2"),
        ([{"name": "i0", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
          {"name": "i1", "state": {"waiting": {"reason": "PodInitializing"}}}], "Init:1/2"),
        ([{"name": "i0", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
         "Init:CrashLoopBackOff"),
        ([{"name": "i0", "state": {"terminated": {"exitCode": 3}}}], "Init:ExitCode:3"),
        ([{"name": "i0", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}],
         "Init:Error"),
    ],
)
def test_pod_init_status(init_statuses: list[dict[str, Any]], text: str) -> None:
    obj = pod()
    obj["spec"]["initContainers"] = [{"name": "i0"}, {"name": "i1"}]
    obj["status"] = {"phase": "Pending", "initContainerStatuses": init_statuses}
    assert cells("Pod", obj)[2] == text


def test_restarts_with_last_restart_time() -> None:
    obj = pod(containerStatuses=[running("a", 1, finished_ago=600),
                                 running("b", 2, finished_ago=120)])
    assert cells("Pod", obj)[3] == "3 (2m ago)"
    no_time = pod(containerStatuses=[running("a", 2)])
    assert cells("Pod", no_time)[3] == "2"


def test_readiness_gates_and_nominated_node() -> None:
    obj = pod(nominatedNodeName="node-2",
              conditions=[{"type": "example.com/gate", "status": "True"}])
    obj["spec"]["readinessGates"] = [{"conditionType": "example.com/gate"},
                                     {"conditionType": "other"}]
    row = cells("Pod", obj)
    assert row[7:] == ["node-2", "1/2"]


def test_node_rows() -> None:
    node = {"metadata": {"name": "node-1", "creationTimestamp": ts(90000),
                         "labels": {"node-role.kubernetes.io/control-plane": "",
                                    "node-role.kubernetes.io/worker": ""}},
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.0-podnet",
                                    "osImage": "podnet", "kernelVersion": "6.1",
                                    "containerRuntimeVersion": "podnet://0.1"}}}
    assert cells("Node", node) == ["node-1", "Ready,SchedulingDisabled", "control-plane,worker",
                                   "25h", "v1.32.0-podnet", "127.0.0.1", "<none>", "podnet",
                                   "6.1", "podnet://0.1"]
    bare = {"metadata": {"name": "n2"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}
    assert cells("nodes", bare)[:4] == ["n2", "NotReady", "<none>", "<unknown>"]
    assert cells("Node", {"metadata": {"name": "n3"}})[1] == "Unknown"


def test_namespace_rows() -> None:
    ns = {"metadata": {"name": "default", "creationTimestamp": ts(10)},
          "status": {"phase": "Active"}}
    assert cells("Namespace", ns) == ["default", "Active", "10s"]


def test_event_rows() -> None:
    ev = {"metadata": {"name": "web-1.17a", "namespace": "default"},
          "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{a}"},
          "reason": "Started", "message": " Started container a\n", "type": "Normal",
          "source": {"component": "kubelet", "host": "node-1"}, "count": 3,
          "firstTimestamp": ts(600), "lastTimestamp": ts(30)}
    t = table("Event", [ev], now=NOW, resource_version="1")
    assert [c["name"] for c in t["columnDefinitions"]] == [
        "Last Seen", "Type", "Reason", "Object", "Subobject", "Source", "Message",
        "First Seen", "Count", "Name"]
    assert t["rows"][0]["cells"] == ["30s", "Normal", "Started", "pod/web-1",
                                     "spec.containers{a}", "kubelet, node-1",
                                     "Started container a", "10m", 3, "web-1.17a"]
    micro = {"metadata": {"name": "e"}, "involvedObject": {"kind": "Node"},
             "eventTime": "2026-11-27T11:59:00.000000Z", "reportingComponent": "podnet"}
    row = cells("Event", micro)
    assert row[0] == "60s" and row[3] == "node" and row[5] == "podnet" and row[8] == 1


def test_service_rows() -> None:
    svc = {"metadata": {"name": "web", "creationTimestamp": ts(5)},
           "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "selector": {"app": "web",
                                                                              "tier": "a"},
                    "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                              {"port": 53, "protocol": "UDP"}]}}
    assert cells("Service", svc) == ["web", "NodePort", "10.96.0.20", "<none>",
                                     "80:30080/TCP,53/UDP", "5s", "app=web,tier=a",
                                     "10.96.0.20"]
    plain = {"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}}
    assert cells("services", plain) == ["h", "ClusterIP", "None", "<none>", "<none>",
                                        "<unknown>", "<none>", "None"]
    dual = {"metadata": {"name": "d"},
            "spec": {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7", "fd00:10:96::7"]}}
    assert cells("Service", dual)[2::5] == ["10.96.0.7", "10.96.0.7,fd00:10:96::7"]
    assert cells("Service", {"metadata": {"name": "n"}, "spec": {}})[7] == "<none>"
    lb = {"metadata": {"name": "l"}, "spec": {"type": "LoadBalancer"}}
    assert cells("Service", lb)[3] == "<pending>"


def test_endpoints_rows_truncate_after_three() -> None:
    ep = {"metadata": {"name": "web"},
          "subsets": [{"addresses": [{"ip": f"10.244.1.{i}"} for i in range(1, 6)],
                       "ports": [{"port": 8080}]}]}
    assert cells("Endpoints", ep)[1] == \
        "10.244.1.1:8080,10.244.1.2:8080,10.244.1.3:8080 + 2 more..."
    assert cells("Endpoints", {"metadata": {"name": "x"}})[1] == "<none>"


def test_endpointslice_rows() -> None:
    es = {"metadata": {"name": "web-abc"}, "addressType": "IPv4",
          "ports": [{"port": 8080}, {"name": "x"}],
          "endpoints": [{"addresses": ["10.244.1.1"]}, {"addresses": ["10.244.2.1"]}]}
    assert cells("EndpointSlice", es)[:4] == ["web-abc", "IPv4", "8080,<unset>",
                                              "10.244.1.1,10.244.2.1"]
    empty = cells("endpointslices", {"metadata": {"name": "e"}, "addressType": "IPv4"})
    assert empty[2:4] == ["<unset>", "<unset>"]


def test_deployment_and_replicaset_rows() -> None:
    dep = {"metadata": {"name": "web"},
           "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"spec": {"containers": [{"name": "a", "image": "podnet/echo"},
                                                         {"name": "b", "image": "py:m:f"}]}}},
           "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2,
                      "replicas": 3}}
    assert cells("Deployment", dep) == ["web", "2/3", 3, 2, "<unknown>", "a,b",
                                        "podnet/echo,py:m:f", "app=web"]
    assert cells("ReplicaSet", dep) == ["web", 3, 3, 2, "<unknown>", "a,b",
                                        "podnet/echo,py:m:f", "app=web"]
    t = table("Deployment", [dep], include_object="Object", now=NOW, resource_version="1")
    assert t["rows"][0]["object"]["apiVersion"] == "apps/v1"


def test_generic_fallback() -> None:
    cm = {"metadata": {"name": "c", "creationTimestamp": ts(3600 * 5)}, "data": {}}
    t = table("ConfigMap", [cm], now=NOW, resource_version="1")
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Age"]
    assert t["rows"][0]["cells"] == ["c", "5h"]


def test_naive_now_is_utc() -> None:
    obj = {"metadata": {"name": "c", "creationTimestamp": ts(30)}}
    t = table("Namespace", [obj], now=NOW.replace(tzinfo=None), resource_version="1")
    assert t["rows"][0]["cells"][2] == "30s"


GARBAGE: list[Any] = [None, "x", 5, -1, 1.5, True, [], [None], ["x"], {}, [{}], {"a": None},
                      [{"reason": 5}], {"terminated": "x"}]


@pytest.mark.parametrize("kind", [*PRINTERS, "Unknown"])
def test_garbage_objects_never_raise(kind: str) -> None:
    objects: list[Any] = [*GARBAGE]
    fields = ["metadata", "spec", "status", "subsets", "ports", "endpoints", "involvedObject",
              "source", "series", "count", "eventTime", "firstTimestamp", "lastTimestamp"]
    nested = ["containers", "containerStatuses", "initContainerStatuses", "conditions",
              "addresses", "nodeInfo", "labels", "name", "creationTimestamp",
              "deletionTimestamp", "readinessGates", "selector", "template", "replicas",
              "ports", "type", "podIP", "loadBalancer"]
    for bad in GARBAGE:
        for f in fields:
            objects.append({"metadata": {"name": "x"}, f: bad})
        for section in ("metadata", "spec", "status"):
            for f in nested:
                objects.append({"metadata": {"name": "x"}, section: {f: bad}})
        objects.append(pod(containerStatuses=[{"state": bad, "lastState": bad,
                                               "restartCount": bad}]))
    for mode in ("Metadata", "Object", "None"):
        t = table(kind, objects, include_object=mode, now=NOW, resource_version="1")
        assert len(t["rows"]) == len(objects)
        for r in t["rows"]:
            assert len(r["cells"]) == len(t["columnDefinitions"])
