"""podnet.protobuf: Kubernetes protobuf bodies decoded into the JSON-shaped dicts the API uses.

Two kinds of input: bodies the real kubectl 1.32 sent (captured with `kubectl -v=9`, which
hex-dumps protobuf request bodies), and bodies built here field by field with a tiny encoder,
so every schema entry and every kind of garbage is exercised on purpose.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

import pytest

from controlplane.apiserver import decode_object
from podnet import protobuf as pb
from podnet.apierrors import ApiError
from podnet.protobuf import Field, Msg, ProtobufError

# ---------------------------------------------------------------------- a tiny encoder


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negatives as proto int32/int64 encode them: 10 bytes
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def vi(number: int, value: int) -> bytes:
    """A varint field (int32, int64, bool)."""
    return tag(number, 0) + varint(value)


def ld(number: int, payload: bytes | str) -> bytes:
    """A length-delimited field (string, bytes, message)."""
    data = payload.encode() if isinstance(payload, str) else payload
    return tag(number, 2) + varint(len(data)) + data


def entry(number: int, key: str, value: bytes | str) -> bytes:
    """One map<string, V> entry."""
    return ld(number, ld(1, key) + ld(2, value))


def qty(text: str) -> bytes:
    return ld(1, text)


def int_or_str(value: int | str) -> bytes:
    return vi(1, 1) + ld(3, value) if isinstance(value, str) else vi(1, 0) + vi(2, value)


def envelope(api_version: str, kind: str, raw: bytes, *, encoding: str = "",
             content_type: str = "") -> bytes:
    type_meta = ld(1, api_version) + ld(2, kind)
    return pb.MAGIC + ld(1, type_meta) + ld(2, raw) + ld(3, encoding) + ld(4, content_type)


def meta(name: str, **extra: bytes) -> bytes:
    """ObjectMeta the way gogo-protobuf writes it: every non-pointer field, even empty."""
    return ld(1, name) + ld(2, "") + ld(3, "") + ld(4, "") + ld(5, "") + ld(6, "") + \
        vi(7, 0) + ld(8, b"") + b"".join(extra.values())


# ---------------------------------------------------------------------- what kubectl sent

KUBECTL = {  # kubectl 1.32.4's bodies, as hex, and the JSON kubectl would have sent instead
    "create namespace foo": (
        "6b3873000a0f0a02763112094e616d657370616365121b0a130a03666f6f12001a0022002a003200"
        "3800420012001a020a001a002200",
        {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "foo"}, "spec": {},
         "status": {}}),
    "create configmap cm1 --from-literal=a=b": (
        "6b3873000a0f0a0276311209436f6e6669674d6170121d0a130a03636d3112001a0022002a003200"
        "3800420012060a01611201621a002200",
        {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "cm1"},
         "data": {"a": "b"}}),
    "create secret generic s1 --from-literal=a=b --from-literal=pw=x\\x01y": (
        "6b3873000a0c0a027631120653656372657412290a120a02733112001a0022002a00320038004200"
        "12060a016112016212090a02707712037801791a001a002200",
        {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s1"},
         "data": {"a": "Yg==", "pw": "eAF5"}}),
    "create serviceaccount robot": (
        "6b3873000a140a027631120e536572766963654163636f756e7412170a150a05726f626f7412001a"
        "0022002a003200380042001a002200",
        {"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": "robot"}}),
    "create service clusterip svc1 --tcp=80:8080": (
        "6b3873000a0d0a027631120753657276696365126c0a210a047376633112001a0022002a00320038"
        "0042005a0b0a0361707012047376633112430a1b0a0738302d383038301203544350185022070800"
        "10903f1a002800120b0a036170701204737663311a002209436c757374657249503a00420052005a"
        "00600068001a020a001a002200",
        {"kind": "Service", "apiVersion": "v1",
         "metadata": {"name": "svc1", "labels": {"app": "svc1"}},
         "spec": {"ports": [{"name": "80-8080", "protocol": "TCP", "port": 80,
                             "targetPort": 8080}],
                  "selector": {"app": "svc1"}, "type": "ClusterIP"},
         "status": {"loadBalancer": {}}}),
    "create service nodeport np --tcp=80:http": (
        "6b3873000a0d0a02763112075365727669636512680a1d0a026e7012001a0022002a003200380042"
        "005a090a0361707012026e7012430a1e0a0738302d6874747012035443501850220a080110001a04"
        "68747470280012090a0361707012026e701a0022084e6f6465506f72743a00420052005a00600068"
        "001a020a001a002200",
        {"kind": "Service", "apiVersion": "v1",
         "metadata": {"name": "np", "labels": {"app": "np"}},
         "spec": {"ports": [{"name": "80-http", "protocol": "TCP", "port": 80,
                             "targetPort": "http"}],
                  "selector": {"app": "np"}, "type": "NodePort"},
         "status": {"loadBalancer": {}}}),
    "create deployment zero --image=podnet/echo --replicas=0": (
        "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412b5010a210a047a65726f1200"
        "1a0022002a003200380042005a0b0a0361707012047a65726f1281010800120d0a0b0a0361707012"
        "047a65726f1a660a1d0a0012001a0022002a003200380042005a0b0a0361707012047a65726f1245"
        "12270a046563686f120b706f646e65742f6563686f2a0042006a007200800100880100900100a201"
        "001a00320042004a0052005800600068008201008a01009a0100c2010022020a00280038001a0c08"
        "00100018002000280038001a002200",
        # replicas is a pointer in Go: an explicit 0 is not "unset".
        {"kind": "Deployment", "apiVersion": "apps/v1",
         "metadata": {"name": "zero", "labels": {"app": "zero"}},
         "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "zero"}},
                  "template": {"metadata": {"labels": {"app": "zero"}},
                               "spec": {"containers": [{"name": "echo",
                                                        "image": "podnet/echo",
                                                        "resources": {}}]}},
                  "strategy": {}},
         "status": {}}),
}


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize("command", list(KUBECTL))
def test_bodies_kubectl_sent(command: str) -> None:
    body, want = KUBECTL[command]
    assert pb.decode(_hex(body)) == want


def test_secret_string_data_type_and_immutable() -> None:
    raw = ld(1, meta("t")) + entry(4, "user", "bob") + ld(3, "kubernetes.io/basic-auth") + vi(5, 1)
    assert pb.decode(envelope("v1", "Secret", raw)) == {
        "kind": "Secret", "apiVersion": "v1", "metadata": {"name": "t"},
        "stringData": {"user": "bob"}, "type": "kubernetes.io/basic-auth", "immutable": True}


DEPLOYMENT = (  # kubectl create deployment web --image=podnet/echo --replicas=3 --port=8080
    #              -- /bin/echo hi
    "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412ce010a1f0a0377656212001a"
    "0022002a003200380042005a0a0a036170701203776562129c010803120c0a0a0a03617070120377"
    "65621a81010a1c0a0012001a0022002a003200380042005a0a0a036170701203776562126112430a"
    "046563686f120b706f646e65742f6563686f1a092f62696e2f6563686f1a0268692a00320b0a0010"
    "0018903f22002a0042006a007200800100880100900100a201001a00320042004a00520058006000"
    "68008201008a01009a0100c2010022020a00280038001a0c0800100018002000280038001a002200")


def test_deployment_kubectl_sent() -> None:
    assert pb.decode(_hex(DEPLOYMENT)) == {
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "echo", "image": "podnet/echo", "command": ["/bin/echo", "hi"],
                    "ports": [{"containerPort": 8080}], "resources": {}}]}},
            "strategy": {}},
        "status": {}}


# ---------------------------------------------------------------------- hand-built kinds


def test_pod_with_everything_kubectl_run_can_set() -> None:
    owner = ld(5, "apps/v1") + ld(1, "ReplicaSet") + ld(3, "rs") + ld(4, "u-1") + vi(6, 1)
    metadata = (ld(1, "web") + ld(2, "web-") + ld(3, "team-a") + ld(5, "uid-1") +
                ld(6, "42") + vi(7, 3) + ld(8, vi(1, 1_700_000_000) + vi(2, 5)) +
                vi(10, 0) + entry(11, "app", "web") + entry(11, "empty", "") +
                entry(12, "note", "hi") + ld(13, owner) + ld(14, "podnet.io/x"))
    env_from_field = ld(3, ld(1, ld(2, "status.podIP")))
    env_from_cm = ld(3, ld(3, ld(1, ld(1, "cm")) + ld(2, "k") + vi(3, 0)))
    container = (
        ld(1, "web") + ld(2, "podnet/echo") + ld(3, "/bin/echo") + ld(4, "a") + ld(4, "") +
        ld(6, ld(1, "http") + vi(3, 8080) + ld(4, "TCP")) +
        ld(7, ld(1, "A") + ld(2, "1")) + ld(7, ld(1, "IP") + ld(2, "") + env_from_field) +
        ld(7, ld(1, "C") + env_from_cm) +
        ld(8, ld(1, ld(1, "cpu") + ld(2, qty("500m"))) +
           ld(2, ld(1, "memory") + ld(2, qty("64Mi")))) +
        ld(9, ld(1, "data") + vi(2, 1) + ld(3, "/data")) +
        ld(11, ld(1, ld(2, ld(1, "/healthz") + ld(2, int_or_str("http")))) + vi(4, 5)) +
        ld(14, "IfNotPresent") + vi(16, 0) + ld(20, "") + ld(24, "Always"))
    spec = (
        ld(1, ld(1, "data") + ld(2, ld(2, ld(1, "") + ld(2, qty("1Gi"))))) +
        ld(2, container) + ld(3, "Never") + vi(4, 0) + ld(6, "ClusterFirst") +
        entry(7, "disk", "ssd") + ld(10, "node-1") + vi(11, 0) + ld(16, "web-0") +
        ld(17, "web") + ld(22, ld(1, "k") + ld(2, "Exists") + ld(4, "NoSchedule")) +
        ld(14, ld(4, varint(1000) + varint(2000)) + vi(4, 3000) + vi(2, 0)))
    got = pb.decode(envelope("v1", "Pod", ld(1, metadata) + ld(2, spec) + ld(3, ld(1, ""))))
    assert got == {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "name": "web", "generateName": "web-", "namespace": "team-a", "uid": "uid-1",
            "resourceVersion": "42", "generation": 3,
            "creationTimestamp": "2023-11-14T22:13:20Z", "deletionGracePeriodSeconds": 0,
            "labels": {"app": "web", "empty": ""}, "annotations": {"note": "hi"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                                 "uid": "u-1", "controller": True}],
            "finalizers": ["podnet.io/x"]},
        "spec": {
            "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}],
            "containers": [{
                "name": "web", "image": "podnet/echo", "command": ["/bin/echo"],
                "args": ["a", ""],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "A", "value": "1"},
                        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "C", "valueFrom": {"configMapKeyRef": {
                            "name": "cm", "key": "k", "optional": False}}}],
                "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}},
                "volumeMounts": [{"name": "data", "readOnly": True, "mountPath": "/data"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                   "periodSeconds": 5},
                "imagePullPolicy": "IfNotPresent", "restartPolicy": "Always"}],
            "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
            "dnsPolicy": "ClusterFirst", "nodeSelector": {"disk": "ssd"},
            "nodeName": "node-1", "hostname": "web-0", "subdomain": "web",
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
            "securityContext": {"supplementalGroups": [1000, 2000, 3000], "runAsUser": 0}},
        "status": {}}


def test_service_ports_and_session_affinity() -> None:
    port = ld(1, "web") + ld(2, "TCP") + vi(3, 80) + ld(4, int_or_str(8080)) + vi(5, 30080)
    spec = (ld(1, port) + ld(1, vi(3, 53) + ld(2, "UDP") + ld(4, int_or_str("dns"))) +
            entry(2, "app", "web") + ld(3, "None") + ld(4, "NodePort") + ld(7, "ClientIP") +
            ld(14, ld(1, vi(1, 60))) + ld(17, "SingleStack") + ld(18, "None"))
    got = pb.decode(envelope("v1", "Service", ld(1, meta("web")) + ld(2, spec)))
    assert got["spec"] == {
        "ports": [{"name": "web", "protocol": "TCP", "port": 80, "targetPort": 8080,
                   "nodePort": 30080},
                  {"port": 53, "protocol": "UDP", "targetPort": "dns"}],
        "selector": {"app": "web"}, "clusterIP": "None", "clusterIPs": ["None"],
        "type": "NodePort", "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
        "ipFamilyPolicy": "SingleStack"}


def test_replicaset_strategy_and_intorstring_percentages() -> None:
    rolling = ld(2, ld(1, int_or_str("25%")) + ld(2, int_or_str(0)))
    spec = vi(1, 2) + ld(4, ld(1, "RollingUpdate") + rolling) + vi(6, 0) + vi(9, 600)
    got = pb.decode(envelope("apps/v1", "Deployment", ld(1, meta("d")) + ld(2, spec)))
    assert got["spec"] == {"replicas": 2, "revisionHistoryLimit": 0,
                           "progressDeadlineSeconds": 600,
                           "strategy": {"type": "RollingUpdate", "rollingUpdate": {
                               "maxUnavailable": "25%", "maxSurge": 0}}}
    selector = ld(2, ld(1, "tier") + ld(2, "In") + ld(3, "web") + ld(3, "api"))
    rs = ld(1, meta("rs")) + ld(2, vi(1, 1) + ld(2, selector)) + ld(3, vi(1, 0) + vi(3, 7))
    assert pb.decode(envelope("apps/v1", "ReplicaSet", rs)) == {
        "kind": "ReplicaSet", "apiVersion": "apps/v1", "metadata": {"name": "rs"},
        "spec": {"replicas": 1, "selector": {"matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["web", "api"]}]}},
        "status": {"replicas": 0, "observedGeneration": 7}}


def test_delete_options_binding_scale_eviction() -> None:
    opts = vi(1, 0) + ld(2, ld(1, "uid-1")) + ld(4, "Foreground") + ld(5, "All")
    want = {"gracePeriodSeconds": 0, "preconditions": {"uid": "uid-1"},
            "propagationPolicy": "Foreground", "dryRun": ["All"]}
    for api_version in ("v1", "meta.k8s.io/v1"):
        got = pb.decode(envelope(api_version, "DeleteOptions", opts))
        assert got == {"kind": "DeleteOptions", "apiVersion": api_version, **want}
    binding = ld(1, meta("web")) + ld(2, ld(1, "Node") + ld(3, "node-2"))
    assert pb.decode(envelope("v1", "Binding", binding))["target"] == {
        "kind": "Node", "name": "node-2"}
    scale = ld(1, meta("d")) + ld(2, vi(1, 0)) + ld(3, vi(1, 3) + ld(2, "app=d"))
    assert pb.decode(envelope("autoscaling/v1", "Scale", scale)) == {
        "kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "d"},
        "spec": {"replicas": 0}, "status": {"replicas": 3, "selector": "app=d"}}
    eviction = ld(1, meta("web", ns=ld(3, "default"))) + ld(2, vi(1, 10))
    assert pb.decode(envelope("policy/v1", "Eviction", eviction))["deleteOptions"] == {
        "gracePeriodSeconds": 10}


def test_configmap_binary_and_namespace_finalizers() -> None:
    cm = ld(1, meta("c")) + entry(2, "k", "v") + entry(3, "bin", b"\x00\xff") + vi(4, 0)
    assert pb.decode(envelope("v1", "ConfigMap", cm)) == {
        "kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c"},
        "data": {"k": "v"}, "binaryData": {"bin": "AP8="}, "immutable": False}
    ns = ld(1, meta("n")) + ld(2, ld(1, "kubernetes")) + ld(3, ld(1, "Active"))
    assert pb.decode(envelope("v1", "Namespace", ns))["spec"] == {"finalizers": ["kubernetes"]}


# ---------------------------------------------------------------------- wire details


def test_negative_numbers_and_two_complement() -> None:
    container = ld(1, "c") + ld(6, vi(3, -1) + vi(2, -2))
    pod = ld(2, ld(2, container) + vi(4, -5) + vi(25, -(2**31)))
    got = pb.decode(envelope("v1", "Pod", pod))["spec"]
    assert got["containers"][0]["ports"] == [{"containerPort": -1, "hostPort": -2}]
    assert got["terminationGracePeriodSeconds"] == -5 and got["priority"] == -(2**31)
    # An int32 wider than 32 bits wraps as Go's int32 conversion does.
    assert pb.decode_message(pb.CONTAINER_PORT, vi(3, 2**32 + 7)) == {"containerPort": 7}


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    junk = (vi(99, 5) + tag(98, 1) + b"\x01" * 8 + tag(97, 5) + b"\x02" * 4 +
            ld(96, b"\xff\xfe anything") + ld(17, b"managedFields are not read"))
    raw = ld(1, meta("x") + junk) + junk + ld(2, junk)
    got = pb.decode(pb.MAGIC + ld(1, ld(1, "v1") + ld(2, "Namespace") + junk) + junk +
                    ld(2, raw))
    assert got == {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "x"},
                   "spec": {}}


def test_times() -> None:
    def created(time_msg: bytes) -> Any:
        return pb.decode_message(pb.OBJECT_META, ld(8, time_msg)).get("creationTimestamp")

    assert created(b"") is None                       # zero Time: JSON null, left out
    assert created(vi(1, 0) + vi(2, 0)) is None
    assert created(vi(1, 86400)) == "1970-01-02T00:00:00Z"
    assert created(vi(2, 1)) == "1970-01-01T00:00:00Z"  # nanos only: not zero
    assert created(vi(1, -86400)) == "1969-12-31T00:00:00Z"
    with pytest.raises(ProtobufError, match="out of range"):
        created(vi(1, 2**62))


def test_maps_repeats_and_overrides() -> None:
    # Map entries missing their key or value get the type's zero value.
    res = pb.decode_message(pb.RESOURCE_REQUIREMENTS,
                            ld(1, ld(1, "cpu")) + ld(2, ld(2, qty("1"))))
    assert res == {"limits": {"cpu": "0"}, "requests": {"": "1"}}
    labels = pb.decode_message(pb.OBJECT_META, ld(11, ld(1, "a")) + entry(11, "a", "b"))
    assert labels == {"labels": {"a": "b"}}  # a later entry for a key wins
    # A scalar seen twice: the last one wins, even when it is the zero value.
    assert pb.decode_message(pb.OBJECT_META, ld(1, "a") + ld(1, "b")) == {"name": "b"}
    assert pb.decode_message(pb.OBJECT_META, ld(1, "a") + ld(1, "")) == {}
    # A message seen twice merges, as protobuf requires.
    twice = ld(2, ld(3, "Never")) + ld(2, ld(6, "Default"))
    assert pb.decode_message(pb.POD, twice) == {
        "spec": {"restartPolicy": "Never", "dnsPolicy": "Default"}}
    # Packed and unpacked repeated varints mix.
    groups = ld(4, varint(1) + varint(2)) + vi(4, 3)
    assert pb.decode_message(pb.POD_SECURITY_CONTEXT, groups) == {
        "supplementalGroups": [1, 2, 3]}


def test_is_protobuf() -> None:
    assert pb.is_protobuf("application/vnd.kubernetes.protobuf")
    assert pb.is_protobuf("Application/VND.Kubernetes.Protobuf; charset=binary")
    assert not pb.is_protobuf("application/json")


# ---------------------------------------------------------------------- garbage

NS = ld(1, meta("n"))


@pytest.mark.parametrize(("body", "message"), [
    (b"", "magic"),
    (b"{\"kind\":\"Namespace\"}", "magic"),
    (b"k8s", "magic"),
    (pb.MAGIC, "does not name"),
    (pb.MAGIC + ld(2, NS), "does not name"),
    (pb.MAGIC + b"\x0a", "truncated varint"),
    (pb.MAGIC + b"\x0a\x80\x80", "truncated varint"),
    (pb.MAGIC + b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    (pb.MAGIC + b"\x08" + b"\xff" * 9 + b"\x7f", "does not fit in 64 bits"),
    (pb.MAGIC + b"\x0a\x05ab", "runs past the end"),
    (pb.MAGIC + b"\x0a" + varint(2**63), "runs past the end"),
    (pb.MAGIC + b"\x00\x00", "invalid field number 0"),
    (pb.MAGIC + b"\x0e", "invalid wire type 6"),
    (pb.MAGIC + b"\x0f", "invalid wire type 7"),
    (pb.MAGIC + b"\x0b", "group"),
    (pb.MAGIC + b"\x0c", "group"),
    (pb.MAGIC + tag(3, 1) + b"\x00" * 7, "runs past the end"),
    (pb.MAGIC + tag(3, 5) + b"\x00" * 3, "runs past the end"),
    (pb.MAGIC + vi(1, 5), "expected a length-delimited TypeMeta"),
    (pb.MAGIC + ld(1, ld(1, "v1") + ld(2, "Widget")), "cannot read Widget (v1)"),
    (envelope("apps/v2", "Deployment", b""), "cannot read Deployment (apps/v2)"),
    (envelope("v1", "Namespace", NS, encoding="gzip"), 'contentEncoding "gzip"'),
    (envelope("v1", "Namespace", NS, content_type="application/json"), "contentType"),
    (envelope("v1", "Namespace", NS + b"\x12\x09"), "runs past the end"),
    (envelope("v1", "Namespace", vi(1, 1)), "expected a length-delimited ObjectMeta"),
    (envelope("v1", "Namespace", ld(1, vi(1, 1))), "expected a length-delimited string"),
    (envelope("v1", "Namespace", ld(1, ld(7, "x"))), "expected a varint for a int64"),
    (envelope("v1", "Namespace", ld(1, ld(1, b"\xff\xfe"))), "not valid UTF-8"),
    (envelope("v1", "Namespace", ld(1, ld(8, vi(1, 2**62)))), "out of range"),
    (envelope("v1", "Namespace", ld(1, vi(11, 1))), "length-delimited map entry"),
    (envelope("v1", "Namespace", ld(1, ld(11, vi(1, 1)))), "expected a length-delimited"),
    (envelope("v1", "Pod", ld(2, ld(2, ld(6, ld(3, "x"))))), "expected a varint for a int32"),
    (envelope("v1", "Pod", ld(2, ld(14, ld(4, b"\x80")))), "truncated varint"),  # packed
])
def test_garbage_raises_protobuf_error(body: bytes, message: str) -> None:
    with pytest.raises(ProtobufError, match=re.escape(message)):
        pb.decode(body)


def test_error_messages_say_where() -> None:
    with pytest.raises(ProtobufError) as e:
        pb.decode(envelope("v1", "Pod", ld(2, ld(2, ld(1, b"\xff")))))
    assert "(in Pod.spec.containers.name, at byte 6)" in str(e.value)


def test_nesting_depth_is_limited() -> None:
    fields: dict[int, Field] = {}
    node = Msg("Node", fields)
    fields[1] = Field("child", node)  # a self-referencing schema, to reach the limit
    nested = b""
    for _ in range(pb.MAX_DEPTH + 5):
        nested = ld(1, nested)
    with pytest.raises(ProtobufError, match="nested deeper"):
        pb.decode_message(node, nested)
    shallow = b""
    for _ in range(pb.MAX_DEPTH - 2):
        shallow = ld(1, shallow)
    assert pb.decode_message(node, shallow)["child"]["child"]


def test_random_mutations_never_raise_anything_else_or_hang() -> None:
    rng = random.Random(20241127)
    seeds = [_hex(body) for body, _ in KUBECTL.values()] + [_hex(DEPLOYMENT)]
    deadline = time.monotonic() + 20
    for i in range(4000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(4)
            at = rng.randrange(4, len(data)) if len(data) > 4 else 4
            if op == 0 and len(data) > 4:
                data[at] = rng.randrange(256)
            elif op == 1:
                del data[at:]
            elif op == 2:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            else:
                data[at:at] = b"\xff" * rng.randint(1, 12)
        try:
            result = pb.decode(bytes(data))
        except ProtobufError:
            continue
        assert isinstance(result, dict) and result["kind"], i
    for _ in range(2000):
        noise = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        with pytest.raises(ProtobufError):
            pb.decode(noise if rng.random() < 0.3 else pb.MAGIC + noise + b"\x0b")
    assert time.monotonic() < deadline


def test_every_prefix_of_a_real_body_is_handled() -> None:
    body = _hex(DEPLOYMENT)
    for n in range(len(body)):
        try:
            pb.decode(body[:n])
        except ProtobufError:
            pass


# ---------------------------------------------------------------------- the API server hook


def test_api_server_decodes_protobuf_bodies() -> None:
    body, want = KUBECTL["create namespace foo"]
    assert decode_object(_hex(body), "application/vnd.kubernetes.protobuf") == want
    with pytest.raises(ApiError) as e:
        decode_object(pb.MAGIC + b"\x0a\x05ab", "application/vnd.kubernetes.protobuf")
    assert e.value.code == 400 and e.value.reason == "BadRequest"
    assert "not a valid Kubernetes protobuf object" in e.value.message
    assert "runs past the end" in e.value.message
    with pytest.raises(ApiError) as e:
        decode_object(b"<x/>", "application/xml")
    assert e.value.code == 415 and "application/vnd.kubernetes.protobuf" in e.value.message
