"""Validation and defaulting: wording, field paths, unknown fields, immutability, garbage."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from podnet.apierrors import FieldError
from podnet.validation import (
    IMAGE_BUILTINS,
    Validated,
    parse_image,
    validate,
    validate_dns_label,
    validate_name,
)


def pod(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "podnet/echo",
                                 "ports": [{"containerPort": 8080}]}]},
    }
    base["spec"].update(spec)
    return base


def messages(v: Validated) -> list[str]:
    return [e.message() for e in v.errors]


def only_error(v: Validated) -> FieldError:
    assert len(v.errors) == 1, messages(v)
    return v.errors[0]


# --- names and images ------------------------------------------------------------------------

def test_validate_name() -> None:
    assert validate_name("web-1.example") == []
    assert validate_name("") == [FieldError("metadata.name", "Required value")]
    err = validate_name("Web_1")[0]
    assert err.type == "Invalid value" and err.value == "Web_1"
    assert "RFC 1123 subdomain" in err.detail
    assert validate_name("a" * 254)[0].detail == "must be no more than 253 characters"
    assert validate_dns_label("a.b")[0].path == "metadata.name"
    assert validate_name("x\n") != []


@pytest.mark.parametrize(
    ("image", "parsed"),
    [
        ("podnet/echo", ("builtin", "echo")),
        ("podnet/toolbox:1.2", ("builtin", "toolbox")),
        ("podnet/pause:latest", ("builtin", "pause")),
        ("py:myapp.server:main", ("py", "myapp.server:main")),
        ("py:mod:fn", ("py", "mod:fn")),
    ],
)
def test_parse_image_accepts(image: str, parsed: tuple[str, str]) -> None:
    assert parse_image(image) == parsed


@pytest.mark.parametrize(
    "image",
    ["nginx", "nginx:1.25", "docker.io/podnet/echo", "podnet/echo:", "podnet/echo:bad tag",
     "podnet/other", "py:", "py:mod", "py:mod:", "py::fn", "py:1mod:fn", "py:mod.:fn",
     "py:mod:fn()", "py:class.x:fn", "py:mod:def", "", "py:a-b:fn", "PODNET/ECHO"],
)
def test_parse_image_rejects_with_value_error(image: str) -> None:
    with pytest.raises(ValueError):
        parse_image(image)


def test_image_builtins() -> None:
    assert frozenset({"podnet/echo", "podnet/toolbox", "podnet/pause"}) == IMAGE_BUILTINS


# --- pods ------------------------------------------------------------------------------------

def test_valid_pod_is_defaulted_like_kubernetes_and_input_untouched() -> None:
    obj = pod()
    before = copy.deepcopy(obj)
    v = validate("Pod", obj)
    assert v.errors == [] and v.warnings == []
    assert obj == before
    spec = v.obj["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["enableServiceLinks"] is True
    c = spec["containers"][0]
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "File"
    assert c["ports"][0]["protocol"] == "TCP"


def test_defaults_do_not_override_given_values() -> None:
    v = validate("Pod", pod(restartPolicy="Never", terminationGracePeriodSeconds=0))
    assert v.errors == []
    assert v.obj["spec"]["restartPolicy"] == "Never"
    assert v.obj["spec"]["terminationGracePeriodSeconds"] == 0


def test_py_image_and_every_known_pod_field_are_accepted() -> None:
    spec = {
        "containers": [{
            "name": "app", "image": "py:myapp.web:serve", "command": ["x"], "args": ["y"],
            "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"x": 1}}],
            "envFrom": [], "resources": {"limits": {"cpu": "1"}}, "readinessProbe": {},
            "livenessProbe": {}, "startupProbe": {}, "imagePullPolicy": "Never",
            "workingDir": "/", "volumeMounts": [], "securityContext": {}, "lifecycle": {},
            "stdin": False, "tty": False, "terminationMessagePath": "/t",
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "ports": [{"containerPort": 80, "name": "http", "protocol": "UDP", "hostPort": 8080,
                       "hostIP": "0.0.0.0"}],
        }],
        "initContainers": [{"name": "init", "image": "podnet/toolbox:v1"}],
        "restartPolicy": "OnFailure", "nodeName": "node-1", "nodeSelector": {"disk": "ssd"},
        "hostname": "h", "subdomain": "s", "dnsPolicy": "None",
        "dnsConfig": {"nameservers": ["10.96.0.10"], "searches": ["a"],
                      "options": [{"name": "ndots", "value": "5"}]},
        "terminationGracePeriodSeconds": 5, "activeDeadlineSeconds": 60,
        "serviceAccountName": "default", "serviceAccount": "default",
        "automountServiceAccountToken": False, "schedulerName": "s", "priority": 0,
        "priorityClassName": "p", "tolerations": [{"key": "k"}], "affinity": {},
        "volumes": [], "securityContext": {}, "hostNetwork": False, "enableServiceLinks": False,
        "readinessGates": [{"conditionType": "x"}], "topologySpreadConstraints": [],
        "imagePullSecrets": [{"name": "s"}], "preemptionPolicy": "Never",
    }
    obj = pod()
    obj["spec"] = spec
    obj["metadata"].update({
        "generateName": "web-", "uid": "u", "resourceVersion": "5", "generation": 1,
        "creationTimestamp": "2026-01-01T00:00:00Z", "deletionTimestamp": None,
        "deletionGracePeriodSeconds": 30, "annotations": {"a.io/b": "c"},
        "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "1",
                             "controller": True}],
        "finalizers": ["example.com/f"], "managedFields": [{"anything": True}],
    })
    obj["status"] = {"phase": "Running", "whatever": [1]}
    v = validate("Pod", obj, field_validation="Strict")
    assert v.errors == [], messages(v)
    assert v.warnings == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"containers": []}, "spec.containers: Required value"),
        ({"containers": [{"image": "podnet/echo"}]}, "spec.containers[0].name: Required value"),
        ({"containers": [{"name": "a"}]}, "spec.containers[0].image: Required value"),
        ({"restartPolicy": "Sometimes"},
         'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", '
         '"OnFailure", "Never"'),
        ({"dnsPolicy": "Cluster"}, 'spec.dnsPolicy: Unsupported value: "Cluster"'),
        ({"dnsPolicy": "None"}, "spec.dnsConfig: Required value"),
        ({"terminationGracePeriodSeconds": -1},
         "spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or "
         "equal to 0"),
        ({"activeDeadlineSeconds": 0}, "spec.activeDeadlineSeconds: Invalid value: 0"),
        ({"nodeSelector": {"bad key": "x"}}, 'spec.nodeSelector: Invalid value: "bad key"'),
        ({"nodeSelector": {"k": "bad value"}}, 'spec.nodeSelector: Invalid value: "bad value"'),
        ({"hostname": "Not_OK"}, 'spec.hostname: Invalid value: "Not_OK"'),
        ({"dnsConfig": {"nameservers": ["x"]}},
         'spec.dnsConfig.nameservers[0]: Invalid value: "x": must be valid IP address'),
    ],
)
def test_pod_spec_errors(spec: dict[str, Any], expected: str) -> None:
    v = validate("Pod", pod(**spec))
    assert any(m.startswith(expected) for m in messages(v)), messages(v)


def test_container_errors() -> None:
    obj = pod(containers=[
        {"name": "a", "image": "nginx ", "imagePullPolicy": "Sometimes",
         "ports": [{"containerPort": 70000}, {"containerPort": 80, "protocol": "ICMP"},
                   {"name": "http"}, {"containerPort": 81, "name": "Bad--Name"},
                   {"containerPort": 82, "hostPort": 99999}],
         "env": [{"value": "x"}, {"name": "A=B"}]},
        {"name": "a", "image": "py:mod:fn", "ports": [{"containerPort": 82}]},
        {"name": "B", "image": "py:1bad:fn"},
    ])
    got = messages(validate("Pod", obj))
    expected = [
        'spec.containers[0].image: Invalid value: "nginx ": must not have leading or trailing '
        'whitespace',
        "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 "
        "and 65535, inclusive",
        'spec.containers[0].ports[1].protocol: Unsupported value: "ICMP": supported values: '
        '"SCTP", "TCP", "UDP"',
        "spec.containers[0].ports[2].containerPort: Required value",
        'spec.containers[0].ports[3].name: Invalid value: "Bad--Name"',
        "spec.containers[0].ports[4].hostPort: Invalid value: 99999",
        "spec.containers[0].env[0].name: Required value",
        'spec.containers[0].env[1].name: Invalid value: "A=B"',
        'spec.containers[0].imagePullPolicy: Unsupported value: "Sometimes"',
        'spec.containers[1].name: Duplicate value: "a"',
        "spec.containers[1].ports[0].containerPort: Duplicate value: 82",
        'spec.containers[2].name: Invalid value: "B"',
        'spec.containers[2].image: Invalid value: "py:1bad:fn"',
    ]
    for want in expected:
        assert any(m.startswith(want) for m in got), (want, got)


def test_same_port_different_protocol_is_fine_and_init_names_count() -> None:
    obj = pod(containers=[
        {"name": "a", "image": "podnet/echo",
         "ports": [{"containerPort": 53, "protocol": "UDP"}, {"containerPort": 53}]}],
        initContainers=[{"name": "a", "image": "podnet/pause"}])
    got = messages(validate("Pod", obj))
    assert got == ['spec.containers[0].name: Duplicate value: "a"']


def test_metadata_errors() -> None:
    obj = pod()
    obj["metadata"] = {"namespace": "Bad_NS", "labels": {"a": "b c"},
                       "annotations": {"Bad Key": "x"}}
    got = messages(validate("Pod", obj))
    assert "metadata.name: Required value: name or generateName is required" in got
    assert any(m.startswith('metadata.namespace: Invalid value: "Bad_NS"') for m in got)
    assert any(m.startswith('metadata.labels: Invalid value: "b c"') for m in got)
    assert any(m.startswith('metadata.annotations: Invalid value: "Bad Key"') for m in got)


def test_generate_name_is_validated_as_a_prefix() -> None:
    obj = pod()
    obj["metadata"] = {"generateName": "web-", "namespace": "default"}
    assert validate("Pod", obj).errors == []
    obj["metadata"]["generateName"] = "Web_"
    assert only_error(validate("Pod", obj)).path == "metadata.generateName"


def test_namespaced_kind_needs_namespace_cluster_kind_loses_it() -> None:
    obj = pod()
    del obj["metadata"]["namespace"]
    assert only_error(validate("Pod", obj)).message() == "metadata.namespace: Required value"
    v = validate("Node", {"metadata": {"name": "n1", "namespace": "default"}})
    assert v.errors == [] and "namespace" not in v.obj["metadata"]


def test_annotations_too_long() -> None:
    obj = pod()
    obj["metadata"]["annotations"] = {"a": "x" * (256 * 1024)}
    assert only_error(validate("Pod", obj)).type == "Too long"


def test_kind_mismatch() -> None:
    obj = pod()
    obj["kind"] = "Service"
    err = only_error(validate("Pod", obj))
    assert err.message() == 'kind: Invalid value: "Service": must be Pod'


# --- unknown fields --------------------------------------------------------------------------

def with_unknown() -> dict[str, Any]:
    obj = pod(foo=1)
    obj["spec"]["containers"][0]["bar"] = {"x": 1}
    obj["spec"]["containers"][0]["ports"][0]["baz"] = True
    obj["metadata"]["qux"] = "x"
    return obj


UNKNOWN = ["metadata.qux", "spec.containers[0].ports[0].baz", "spec.containers[0].bar",
           "spec.foo"]


def test_unknown_fields_warn_mode_drops_and_warns() -> None:
    v = validate("Pod", with_unknown())
    assert v.errors == []
    assert sorted(v.warnings) == sorted(f'unknown field "{p}"' for p in UNKNOWN)
    assert "foo" not in v.obj["spec"]
    assert "bar" not in v.obj["spec"]["containers"][0]
    assert "qux" not in v.obj["metadata"]


def test_unknown_fields_strict_mode_errors() -> None:
    v = validate("Pod", with_unknown(), field_validation="Strict")
    assert sorted(e.path for e in v.errors) == sorted(UNKNOWN)
    assert all(e.type == "Invalid value" for e in v.errors)
    assert {e.detail for e in v.errors} == {f'unknown field "{p}"' for p in UNKNOWN}
    assert sorted(v.unknown_fields) == sorted(UNKNOWN)
    assert v.warnings == []


def test_unknown_fields_ignore_mode_drops_silently() -> None:
    v = validate("Pod", with_unknown(), field_validation="Ignore")
    assert v.errors == [] and v.warnings == []
    assert "foo" not in v.obj["spec"]


def test_bad_field_validation_mode_raises_value_error() -> None:
    with pytest.raises(ValueError, match="fieldValidation"):
        validate("Pod", pod(), field_validation="Loose")
    assert validate("Pod", pod(), field_validation="").errors == []


def test_nulls_are_absent() -> None:
    obj = pod(nodeName=None, restartPolicy=None)
    obj["metadata"]["creationTimestamp"] = None
    v = validate("Pod", obj, field_validation="Strict")
    assert v.errors == []
    assert v.obj["spec"]["restartPolicy"] == "Always"
    assert "creationTimestamp" not in v.obj["metadata"]


def test_integral_float_becomes_int() -> None:
    v = validate("Pod", pod(terminationGracePeriodSeconds=10.0))
    assert v.errors == []
    assert v.obj["spec"]["terminationGracePeriodSeconds"] == 10
    assert isinstance(v.obj["spec"]["terminationGracePeriodSeconds"], int)


# --- garbage never raises --------------------------------------------------------------------

GARBAGE: list[Any] = [None, "x", 7, -1, 3.5, True, [], [None], ["x"], [{}], {}, {"a": None},
                      {"a": [1, {"b": "c"}]}, [[[]]]]


def garbage_objects() -> list[Any]:
    out: list[Any] = list(GARBAGE)
    paths = [("metadata",), ("metadata", "name"), ("metadata", "namespace"),
             ("metadata", "labels"), ("metadata", "annotations"), ("metadata", "finalizers"),
             ("metadata", "ownerReferences"), ("metadata", "generateName"), ("spec",),
             ("spec", "containers"), ("spec", "initContainers"), ("spec", "nodeSelector"),
             ("spec", "tolerations"), ("spec", "dnsConfig"), ("spec", "dnsPolicy"),
             ("spec", "terminationGracePeriodSeconds"), ("spec", "hostname"),
             ("spec", "containers", 0), ("spec", "containers", 0, "name"),
             ("spec", "containers", 0, "image"), ("spec", "containers", 0, "ports"),
             ("spec", "containers", 0, "ports", 0), ("spec", "containers", 0, "env"),
             ("spec", "containers", 0, "ports", 0, "containerPort"),
             ("spec", "containers", 0, "ports", 0, "protocol"),
             ("spec", "podCIDR"), ("spec", "podCIDRs"), ("status",), ("status", "phase"),
             ("involvedObject",), ("count",), ("kind",)]
    for path in paths:
        for bad in GARBAGE:
            obj = pod()
            obj["spec"]["podCIDR"] = "10.244.1.0/24"
            obj["status"] = {}
            cur: Any = obj
            for step in path[:-1]:
                cur = cur[step]
            cur[path[-1]] = bad
            out.append(obj)
    return out


@pytest.mark.parametrize("kind", ["Pod", "Node", "Namespace", "Event", "ConfigMap"])
def test_garbage_never_raises(kind: str) -> None:
    old = validate(kind, pod()).obj
    for obj in garbage_objects():
        before = copy.deepcopy(obj)
        for mode in ("Strict", "Warn", "Ignore"):
            for previous in (None, old, {"spec": "x"}, {"metadata": 5}):
                v = validate(kind, obj, old=previous, field_validation=mode)
                assert isinstance(v.obj, dict)
                assert all(isinstance(e, FieldError) for e in v.errors)
                for e in v.errors:
                    e.message()
        assert obj == before


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("containers", "nginx", "spec.containers"),
        ("containers", [{"name": 5, "image": "podnet/echo"}], "spec.containers[0].name"),
        ("restartPolicy", ["Always"], "spec.restartPolicy"),
        ("terminationGracePeriodSeconds", "30", "spec.terminationGracePeriodSeconds"),
        ("terminationGracePeriodSeconds", True, "spec.terminationGracePeriodSeconds"),
        ("hostNetwork", "yes", "spec.hostNetwork"),
        ("nodeSelector", {"a": 1}, "spec.nodeSelector[a]"),
        ("nodeSelector", ["a"], "spec.nodeSelector"),
    ],
)
def test_wrong_types_are_field_errors(field: str, value: Any, path: str) -> None:
    v = validate("Pod", pod(**{field: value}))
    assert path in [e.path for e in v.errors], messages(v)
    assert all(e.type == "Invalid value" for e in v.errors if e.path == path)


def test_env_name_parsed_as_bool_by_yaml_is_reported() -> None:
    # kubectl's YAML parser turns a bare `Y` into true (reference §8.1).
    obj = pod()
    obj["spec"]["containers"][0]["env"] = [{"name": True, "value": "3"}]
    err = only_error(validate("Pod", obj))
    assert err.path == "spec.containers[0].env[0].name"
    assert err.detail == "expected string, got boolean"


def test_non_dict_object() -> None:
    v = validate("Pod", "nope")  # type: ignore[arg-type]
    assert v.obj == {} and len(v.errors) == 1


# --- updates ---------------------------------------------------------------------------------

def stored_pod() -> dict[str, Any]:
    obj = validate("Pod", pod(tolerations=[{"key": "a"}])).obj
    obj["metadata"]["uid"] = "uid-1"
    return obj


def test_pod_update_allowed_changes() -> None:
    old = stored_pod()
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "podnet/toolbox"
    new["spec"]["activeDeadlineSeconds"] = 100
    new["spec"]["terminationGracePeriodSeconds"] = 5
    new["spec"]["tolerations"].append({"key": "b"})
    new["metadata"]["labels"] = {"app": "other"}
    new["status"] = {"phase": "Running"}
    assert validate("Pod", new, old=old).errors == []


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.update(nodeName="n2"),
        lambda s: s.update(restartPolicy="Never"),
        lambda s: s.update(tolerations=[]),  # removal is not an addition
        lambda s: s["containers"][0].update(name="other"),
        lambda s: s["containers"][0]["ports"].append({"containerPort": 9}),
        lambda s: s["containers"].append({"name": "b", "image": "podnet/echo"}),
    ],
)
def test_pod_update_forbidden_changes(change: Any) -> None:
    old = stored_pod()
    new = copy.deepcopy(old)
    change(new["spec"])
    errs = [e for e in validate("Pod", new, old=old).errors if e.path == "spec"]
    assert len(errs) == 1
    assert errs[0].type == "Forbidden"
    assert errs[0].detail.startswith(
        "pod updates may not change fields other than `spec.containers[*].image`")


def test_metadata_immutable_on_update() -> None:
    old = stored_pod()
    new = copy.deepcopy(old)
    new["metadata"]["name"] = "web-2"
    new["metadata"]["uid"] = "uid-2"
    got = messages(validate("Pod", new, old=old))
    assert 'metadata.name: Invalid value: "web-2": field is immutable' in got
    assert 'metadata.uid: Invalid value: "uid-2": field is immutable' in got
    del new["metadata"]["uid"]  # an update body without uid is fine
    new["metadata"]["name"] = "web-1"
    assert validate("Pod", new, old=old).errors == []


# --- other kinds -----------------------------------------------------------------------------

def test_node_pod_cidr() -> None:
    node: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}}
    assert validate("Node", node).errors == []
    fresh = copy.deepcopy(node)
    del fresh["spec"]
    set_later = validate("Node", node, old=fresh)
    assert set_later.errors == []  # "" -> valid is allowed
    moved = copy.deepcopy(node)
    moved["spec"] = {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.2.0/24"]}
    got = messages(validate("Node", moved, old=node))
    assert ('spec.podCIDR: Forbidden: node updates may not change podCIDR except from "" '
            "to valid") in got
    bad = copy.deepcopy(node)
    bad["spec"]["podCIDR"] = "10.244.1.0"
    assert only_error(validate("Node", bad)).path == "spec.podCIDR"


def test_namespace_defaults_and_name_is_a_label() -> None:
    v = validate("Namespace", {"metadata": {"name": "team-a"}})
    assert v.errors == [] and v.obj["status"]["phase"] == "Active"
    assert only_error(validate("Namespace", {"metadata": {"name": "a.b"}})).path == \
        "metadata.name"


def test_event() -> None:
    ev: dict[str, Any] = {"apiVersion": "v1", "kind": "Event",
          "metadata": {"name": "web-1.17a", "namespace": "default"},
          "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default",
                             "uid": "u", "fieldPath": "spec.containers{app}"},
          "reason": "Started", "message": "Started container app", "type": "Normal",
          "source": {"component": "kubelet", "host": "node-1"}, "count": 1,
          "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
          "eventTime": None, "reportingComponent": "kubelet", "reportingInstance": "node-1"}
    assert validate("Event", ev, field_validation="Strict").errors == []
    ev["involvedObject"]["namespace"] = "other"
    assert only_error(validate("Event", ev)).path == "involvedObject.namespace"


def test_unknown_kind_checks_metadata_only_and_keeps_fields() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"},
          "data": {"a": "b"}, "binaryData": {}}
    v = validate("ConfigMap", cm, field_validation="Strict")
    assert v.errors == [] and v.obj == cm
    assert validate("ConfigMap", {"metadata": {"namespace": "d"}}).errors[0].path == \
        "metadata.name"
