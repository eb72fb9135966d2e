"""Patches: RFC 7386, strategic merge (with kubectl's real bodies), RFC 6902, apply."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from podnet.patch import (
    PRIMITIVE,
    PatchError,
    apply_patch,
    json_merge_patch,
    json_patch,
    merge_key,
    strategic_merge_patch,
)


def no_directives(value: Any) -> bool:
    text = json.dumps(value)
    return '"$patch"' not in text and '"$setElementOrder' not in text and \
        '"$retainKeys"' not in text and '"$deleteFromPrimitiveList' not in text


# --- RFC 7386 --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # the examples of RFC 7386 appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_json_merge_patch_rfc_examples(target: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy((target, patch))
    assert json_merge_patch(target, patch) == result
    assert (target, patch) == before


def test_kubectl_label_patch() -> None:
    obj = {"metadata": {"name": "p", "labels": {"a": "1", "x": "old"}}}
    out = json_merge_patch(obj, {"metadata": {"labels": {"x": None, "y": "2"}}})
    assert out == {"metadata": {"name": "p", "labels": {"a": "1", "y": "2"}}}


# --- strategic merge patch: kubectl's real bodies ---------------------------------------------

LIVE_POD: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "nginx", "namespace": "default", "uid": "u1",
                 "labels": {"app": "web", "tier": "front"},
                 "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "old"}},
    "spec": {
        "containers": [
            {"name": "a", "image": "img:1",
             "ports": [{"containerPort": 80, "protocol": "TCP"},
                       {"containerPort": 81, "protocol": "TCP"}],
             "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
             "imagePullPolicy": "IfNotPresent"},
            {"name": "b", "image": "img:1"},
        ],
        "restartPolicy": "Always", "nodeName": "node-1",
    },
    "status": {"phase": "Running", "podIP": "10.244.1.5"},
}

POD_PATCH: dict[str, Any] = {
    "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "new"},
                 "labels": {"tier": None}},
    "spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
             "containers": [{"name": "b", "image": "img:2"},
                            {"name": "a",
                             "$setElementOrder/ports": [{"containerPort": 80}],
                             "ports": [{"$patch": "delete", "containerPort": 81}],
                             "$setElementOrder/env": [{"name": "Y"}],
                             "env": [{"name": "Y", "value": "3"},
                                     {"$patch": "delete", "name": "X"}]}]},
}


def test_kubectl_pod_apply_patch() -> None:
    before = copy.deepcopy((LIVE_POD, POD_PATCH))
    out = strategic_merge_patch(LIVE_POD, POD_PATCH, "Pod")
    assert (LIVE_POD, POD_PATCH) == before
    assert no_directives(out)
    assert out["metadata"]["labels"] == {"app": "web"}
    assert out["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/last-applied-configuration": "new"}
    b, a = out["spec"]["containers"]
    assert b == {"name": "b", "image": "img:2"}
    assert a["name"] == "a" and a["image"] == "img:1"
    assert a["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert a["env"] == [{"name": "Y", "value": "3"}]
    assert a["imagePullPolicy"] == "IfNotPresent"  # server-set fields survive
    assert out["spec"]["nodeName"] == "node-1"
    assert out["status"] == LIVE_POD["status"]


def test_kubectl_service_apply_patch() -> None:
    live = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"clusterIP": "10.96.0.20", "selector": {"app": "web"},
                     "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"},
                               {"port": 81, "targetPort": 81, "protocol": "TCP"}]}}
    patch = {"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration":
                                          "x"}},
             "spec": {"$setElementOrder/ports": [{"port": 80}],
                      "ports": [{"port": 80, "targetPort": 8080},
                                {"$patch": "delete", "port": 81}]}}
    out = strategic_merge_patch(live, patch, "Service")
    assert no_directives(out)
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]
    assert out["spec"]["clusterIP"] == "10.96.0.20"
    assert out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] \
        == "x"


# --- strategic merge patch: each rule ----------------------------------------------------------

def test_lists_without_merge_key_are_replaced() -> None:
    live = {"spec": {"containers": [{"name": "a", "args": ["1", "2"], "command": ["x"]}],
                     "tolerations": [{"key": "a"}, {"key": "b"}]}}
    patch = {"spec": {"containers": [{"name": "a", "args": ["3"]}],
                      "tolerations": [{"key": "c"}]}}
    out = strategic_merge_patch(live, patch, "Pod")
    assert out["spec"]["containers"] == [{"name": "a", "args": ["3"], "command": ["x"]}]
    assert out["spec"]["tolerations"] == [{"key": "c"}]


def test_merge_key_lists_add_new_elements_and_strip_directives_in_them() -> None:
    live = {"spec": {"containers": [{"name": "a", "image": "i"}]}}
    patch = {"spec": {"containers": [
        {"name": "b", "image": "j", "$setElementOrder/env": [{"name": "E"}],
         "env": [{"name": "E", "value": "1"}, {"$patch": "delete", "name": "F"}]}]}}
    out = strategic_merge_patch(live, patch, "Pod")
    assert out["spec"]["containers"] == [
        {"name": "a", "image": "i"},
        {"name": "b", "image": "j", "env": [{"name": "E", "value": "1"}]}]


def test_deployment_template_pod_spec_uses_pod_merge_keys() -> None:
    live = {"spec": {"replicas": 2, "template": {"spec": {"containers": [
        {"name": "a", "image": "i", "ports": [{"containerPort": 80}],
         "volumeMounts": [{"mountPath": "/d", "name": "v"}]}]}}}}
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "j", "ports": [{"containerPort": 81}],
         "volumeMounts": [{"mountPath": "/d", "readOnly": True}]}]}}}}
    for kind in ("Deployment", "ReplicaSet"):
        out = strategic_merge_patch(live, patch, kind)
        c = out["spec"]["template"]["spec"]["containers"]
        assert c == [{"name": "a", "image": "j",
                      "ports": [{"containerPort": 80}, {"containerPort": 81}],
                      "volumeMounts": [{"mountPath": "/d", "name": "v", "readOnly": True}]}]
        assert out["spec"]["replicas"] == 2


def test_merge_key_table() -> None:
    assert merge_key("Pod", ("spec", "initContainers")) == "name"
    assert merge_key("Pod", ("spec", "ephemeralContainers", "env")) == "name"
    assert merge_key("Pod", ("spec", "volumes")) == "name"
    assert merge_key("Pod", ("spec", "containers", "volumeMounts")) == "mountPath"
    assert merge_key("Service", ("spec", "ports")) == "port"
    assert merge_key("Node", ("status", "conditions")) == "type"
    assert merge_key("Deployment", ("spec", "template", "spec", "containers", "ports")) == \
        "containerPort"
    assert merge_key("Anything", ("metadata", "ownerReferences")) == "uid"
    assert merge_key("Anything", ("metadata", "finalizers")) == PRIMITIVE
    assert merge_key("Endpoints", ("subsets",)) is None
    assert merge_key("EndpointSlice", ("endpoints",)) is None
    assert merge_key("Pod", ("spec", "tolerations")) is None


def test_owner_references_and_conditions_merge_by_key() -> None:
    live = {"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"},
                                      {"type": "Scheduled", "status": "True"}]}}
    patch = {"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]},
             "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    out = strategic_merge_patch(live, patch, "Pod")
    assert [r["uid"] for r in out["metadata"]["ownerReferences"]] == ["1", "2"]
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "True"},
                                           {"type": "Scheduled", "status": "True"}]


def test_finalizers_merged_primitive_list_and_delete_from_primitive_list() -> None:
    live = {"metadata": {"finalizers": ["a", "b"]}}
    out = strategic_merge_patch(live, {"metadata": {"finalizers": ["b", "c"]}}, "Pod")
    assert out["metadata"]["finalizers"] == ["a", "b", "c"]
    out = strategic_merge_patch(
        live, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}, "Pod")
    assert out["metadata"]["finalizers"] == ["b"]
    out = strategic_merge_patch(
        live, {"metadata": {"$setElementOrder/finalizers": ["b", "a"]}}, "Pod")
    assert out["metadata"]["finalizers"] == ["b", "a"]


def test_patch_replace_on_map_and_list() -> None:
    live = {"spec": {"nodeSelector": {"a": "1", "b": "2"},
                     "containers": [{"name": "a"}, {"name": "b"}]}}
    out = strategic_merge_patch(
        live, {"spec": {"nodeSelector": {"$patch": "replace", "c": "3"}}}, "Pod")
    assert out["spec"]["nodeSelector"] == {"c": "3"}
    out = strategic_merge_patch(
        live, {"spec": {"containers": [{"name": "z"}, {"$patch": "replace"}]}}, "Pod")
    assert out["spec"]["containers"] == [{"name": "z"}]


def test_patch_delete_on_map_and_merge() -> None:
    live = {"spec": {"nodeSelector": {"a": "1"}, "x": 1}}
    out = strategic_merge_patch(live, {"spec": {"nodeSelector": {"$patch": "delete"}}}, "Pod")
    assert out["spec"]["nodeSelector"] == {}
    out = strategic_merge_patch(live, {"spec": {"$patch": "merge", "y": 2}}, "Pod")
    assert out["spec"] == {"nodeSelector": {"a": "1"}, "x": 1, "y": 2}


def test_retain_keys() -> None:
    live = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    out = strategic_merge_patch(live, patch, "Deployment")
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    with pytest.raises(PatchError):
        strategic_merge_patch(live, {"spec": {"strategy": {"$retainKeys": ["type"],
                                                           "other": 1}}}, "Deployment")


def test_set_element_order_keeps_unlisted_server_elements() -> None:
    live = {"spec": {"containers": [{"name": "a"}, {"name": "sidecar"}, {"name": "b"}]}}
    patch = {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}
    out = strategic_merge_patch(live, patch, "Pod")
    assert [c["name"] for c in out["spec"]["containers"]] == ["b", "a", "sidecar"]


def test_null_deletes_and_new_maps_drop_nulls() -> None:
    out = strategic_merge_patch({"a": {"b": 1}}, {"a": {"b": None}, "c": {"d": None, "e": 1}},
                                "Pod")
    assert out == {"a": {}, "c": {"e": 1}}


@pytest.mark.parametrize(
    "patch",
    [
        [1],
        "x",
        None,
        {"spec": {"containers": [{"image": "no-name"}]}},
        {"spec": {"containers": ["a"]}},
        {"spec": {"containers": [{"$patch": "delete"}]}},
        {"spec": {"containers": [{"name": "a", "$patch": "explode"}]}},
        {"spec": {"$patch": "explode"}},
        {"spec": {"$unknownDirective": 1}},
        {"spec": {"$setElementOrder/containers": "a"}},
        {"spec": {"$deleteFromPrimitiveList/x": {"a": 1}}},
        {"spec": {"$retainKeys": "a"}},
        {"metadata": {"finalizers": [{"a": 1}]}},
    ],
)
def test_smp_garbage_raises_patch_error(patch: Any) -> None:
    with pytest.raises(PatchError):
        strategic_merge_patch(copy.deepcopy(LIVE_POD), patch, "Pod")


@pytest.mark.parametrize("target", [None, "x", 5, [], {"spec": "x"}, {"spec": {"containers": 3}}])
def test_smp_on_garbage_targets_still_works(target: Any) -> None:
    out = strategic_merge_patch(target, POD_PATCH, "Pod")
    assert no_directives(out)
    assert [c["name"] for c in out["spec"]["containers"]] == ["b", "a"]


# --- RFC 6902 --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("doc", "ops", "result"),
    [  # RFC 6902 appendix A
        ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}],
         {"baz": "qux", "foo": "bar"}),
        ({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}],
         {"foo": ["bar", "qux", "baz"]}),
        ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
        ({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}],
         {"foo": ["bar", "baz"]}),
        ({"baz": "qux", "foo": "bar"}, [{"op": "replace", "path": "/baz", "value": "boo"}],
         {"baz": "boo", "foo": "bar"}),
        ({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
         [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
         {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
        ({"foo": ["all", "grass", "cows", "eat"]},
         [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
         {"foo": ["all", "cows", "eat", "grass"]}),
        ({"baz": "qux", "foo": ["a", 2, "c"]},
         [{"op": "test", "path": "/baz", "value": "qux"},
          {"op": "test", "path": "/foo/1", "value": 2}],
         {"baz": "qux", "foo": ["a", 2, "c"]}),
        ({"foo": "bar"}, [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
         {"foo": "bar", "child": {"grandchild": {}}}),
        ({"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
         {"foo": ["bar", ["abc", "def"]]}),
        ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10},
                              {"op": "replace", "path": "/~1", "value": 1}],
         {"/": 1, "~1": 10}),
        ({"a": 1}, [{"op": "copy", "from": "/a", "path": "/b"}], {"a": 1, "b": 1}),
        ({"a": 1}, [{"op": "replace", "path": "", "value": [1]}], [1]),
        ({"a": {"b": 1}}, [{"op": "test", "path": "/a/b", "value": 1.0}], {"a": {"b": 1}}),
    ],
)
def test_json_patch_rfc_examples(doc: Any, ops: Any, result: Any) -> None:
    before = copy.deepcopy((doc, ops))
    assert json_patch(doc, ops) == result
    assert (doc, ops) == before


@pytest.mark.parametrize(
    ("doc", "ops"),
    [
        ({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}]),
        ({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}]),
        ({"a": 1}, [{"op": "test", "path": "/a", "value": True}]),  # 1 is not true
        ({"a": [1]}, [{"op": "add", "path": "/a/2", "value": 1}]),
        ({"a": [1]}, [{"op": "add", "path": "/a/01", "value": 1}]),
        ({"a": [1]}, [{"op": "remove", "path": "/a/-"}]),
        ({"a": 1}, [{"op": "remove", "path": "/b"}]),
        ({"a": 1}, [{"op": "replace", "path": "/b", "value": 1}]),
        ({"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/a/b/c"}]),
        ({"a": 1}, [{"op": "move", "from": "/x", "path": "/y"}]),
        ({"a": 1}, [{"op": "move", "from": "/x", "path": "/x"}]),
        ({"a": 1}, [{"op": "copy", "path": "/y"}]),
        ({"a": 1}, [{"op": "add", "path": "a", "value": 1}]),
        ({"a": 1}, [{"op": "add", "path": "/a~2", "value": 1}]),
        ({"a": 1}, [{"op": "add", "path": "/b"}]),
        ({"a": 1}, [{"op": "jump", "path": "/a"}]),
        ({"a": 1}, [{"path": "/a"}]),
        ({"a": 1}, [{"op": "add", "value": 1}]),
        ({"a": 1}, [{"op": "add", "path": 5, "value": 1}]),
        ({"a": 1}, [{"op": "remove", "path": ""}]),
        ({"a": "s"}, [{"op": "add", "path": "/a/b", "value": 1}]),
        ({"a": 1}, {"op": "add"}),
        ({"a": 1}, ["add"]),
        ({"a": 1}, None),
    ],
)
def test_json_patch_failures_raise_patch_error(doc: Any, ops: Any) -> None:
    before = copy.deepcopy(doc)
    with pytest.raises(PatchError):
        json_patch(doc, ops)
    assert doc == before


def test_json_patch_is_atomic() -> None:
    doc = {"a": 1}
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "add", "path": "/b", "value": 2},
                         {"op": "test", "path": "/a", "value": 3}])
    assert doc == {"a": 1}


# --- server-side apply -----------------------------------------------------------------------

def test_apply_creates_from_none() -> None:
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "a", "image": "i"}], "x": None}}
    out = apply_patch(None, manifest, "Pod")
    assert out == {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                   "spec": {"containers": [{"name": "a", "image": "i"}]}}


def test_apply_last_applied_body_never_wipes_the_spec() -> None:
    # kubectl 1.32's second SSA request after a client-side apply (reference §8.2)
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "nginx", "namespace": "default",
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration":
                                         "new"}}}
    before = copy.deepcopy(LIVE_POD)
    out = apply_patch(LIVE_POD, body, "Pod")
    assert LIVE_POD == before
    assert out["spec"] == LIVE_POD["spec"]
    assert out["status"] == LIVE_POD["status"]
    assert out["metadata"]["labels"] == LIVE_POD["metadata"]["labels"]
    assert out["metadata"]["annotations"][
        "kubectl.kubernetes.io/last-applied-configuration"] == "new"


def test_apply_merges_keyed_lists_and_replaces_others() -> None:
    body = {"spec": {"containers": [{"name": "a", "image": "img:9",
                                     "ports": [{"containerPort": 82}], "args": ["z"]},
                                    {"name": "c", "image": "new"}],
                     "tolerations": [{"key": "t"}]}}
    out = apply_patch(LIVE_POD, body, "Pod")
    names = [c["name"] for c in out["spec"]["containers"]]
    assert names == ["a", "b", "c"]
    a = out["spec"]["containers"][0]
    assert a["image"] == "img:9" and a["args"] == ["z"]
    assert [p["containerPort"] for p in a["ports"]] == [80, 81, 82]
    assert a["env"] == LIVE_POD["spec"]["containers"][0]["env"]
    assert out["spec"]["tolerations"] == [{"key": "t"}]


@pytest.mark.parametrize(
    "body",
    [None, [1], "x", {"spec": {"containers": [{"image": "no-name"}]}},
     {"spec": {"containers": ["a"]}}],
)
def test_apply_garbage_raises_patch_error(body: Any) -> None:
    with pytest.raises(PatchError):
        apply_patch(LIVE_POD, body, "Pod")


FUZZ_VALUES: list[Any] = [None, 0, -1, 1.5, True, "", "x", [], [None], [1, "a"], {},
                          {"$patch": "delete"}, {"$patch": "replace"}, [{"$patch": "replace"}],
                          {"a": None}, [{"name": None}], [{"name": "a", "$patch": "delete"}]]


@pytest.mark.parametrize("value", FUZZ_VALUES)
def test_fuzz_only_patch_error_and_no_mutation(value: Any) -> None:
    fields = ["spec", "metadata", "status", "containers", "finalizers", "labels", "ports"]
    for field in fields:
        for patch in ({field: value}, {"spec": {field: value}},
                      {"spec": {"containers": [{"name": "a", field: value}]}},
                      {"metadata": {field: value}}):
            for kind in ("Pod", "Service", "Deployment", "Unknown"):
                live = copy.deepcopy(LIVE_POD)
                frozen = copy.deepcopy((live, patch))
                for fn in (strategic_merge_patch, apply_patch):
                    try:
                        out = fn(live, patch, kind)
                    except PatchError:
                        continue
                    if fn is strategic_merge_patch:
                        assert no_directives(out)
                assert (live, patch) == frozen
                json_merge_patch(live, patch)
                assert (live, patch) == frozen
