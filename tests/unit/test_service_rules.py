"""Services: validation and defaulting, ClusterIP allocation, and the desired Endpoints and
EndpointSlices computed from pods (pure functions), plus one in-process controller pass."""

from __future__ import annotations

import ipaddress
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controlplane.api import Api
from controlplane.endpoints import (
    ENDPOINT_SLICES,
    ENDPOINTS,
    MANAGED_BY,
    EndpointsController,
    desired_slices,
    endpoints_subsets,
    resolve_target_port,
)
from controlplane.serviceipam import ServiceIpam, ensure_system_services
from controlplane.store import Store
from podnet.apierrors import ApiError
from podnet.resources import BY_KIND
from podnet.validation import validate

SERVICES, PODS = BY_KIND["Service"], BY_KIND["Pod"]


def service(name: str = "web", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"selector": {"app": "web"},
                            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
            "spec": body}


def pod(name: str, ip: str, *, ready: bool = True, node: str = "node-1",
        labels: dict[str, str] | None = None, ports: list[dict[str, Any]] | None = None,
        terminating: bool = False, phase: str = "Running", **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": f"uid-{name}",
                            "labels": labels if labels is not None else {"app": "web"}}
    if terminating:
        meta["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "containers": [
                {"name": "c", "image": "podnet/echo",
                 "ports": ports if ports is not None else [{"name": "http",
                                                            "containerPort": 8080,
                                                            "protocol": "TCP"}]}], **spec},
            "status": {"phase": phase, "podIP": ip, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}]}}


def errors(kind: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    return [e.message() for e in validate(kind, obj, old=old).errors]


# --- validation ------------------------------------------------------------------------------

def test_service_defaults() -> None:
    v = validate("Service", service(ports=[{"port": 80}]))
    assert v.errors == []
    spec = v.obj["spec"]
    assert spec["type"] == "ClusterIP" and spec["sessionAffinity"] == "None"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    affinity = validate("Service", service(sessionAffinity="ClientIP")).obj["spec"]
    assert affinity["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}


@pytest.mark.parametrize(("spec", "expected"), [
    ({"ports": [{"name": "http", "port": 80}, {"name": "http", "port": 81}]},
     ['spec.ports[1].name: Duplicate value: "http"']),
    ({"ports": [{"port": 80}, {"port": 81}]}, ["spec.ports[0].name: Required value",
                                               "spec.ports[1].name: Required value"]),
    ({"ports": [{"port": 70000}]},
     ["spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
      "spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, "
      "inclusive"]),
    ({"ports": [{"port": 80, "protocol": "HTTP"}]},
     ['spec.ports[0].protocol: Unsupported value: "HTTP": supported values: "SCTP", "TCP", '
      '"UDP"']),
    ({"ports": [{"port": 80, "targetPort": "Web_Port"}]},
     ['spec.ports[0].targetPort: Invalid value: "Web_Port": must contain only alpha-numeric '
      "characters (a-z, 0-9), and hyphens (-)"]),
    ({"ports": []}, ["spec.ports: Required value"]),
    ({"clusterIP": "nope"},
     ['spec.clusterIP: Invalid value: "nope": must be a valid IP address, (e.g. 10.9.8.7 or '
      '2001:db8::ffff)']),
    ({"type": "Magic"}, ['spec.type: Unsupported value: "Magic": supported values: '
                         '"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"']),
    ({"type": "ExternalName"}, ["spec.externalName: Required value"]),
    ({"type": "NodePort", "clusterIP": "None"},
     ["spec.clusterIP: Invalid value: \"None\": may not be set to 'None' for NodePort "
      "services"]),
    ({"sessionAffinity": "ClientIP",
      "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}},
     ["spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: must be greater "
      "than 0 and less than 86400"]),
    ({"selector": {"app": "bad value!"}}, ["spec.selector: Invalid value: \"bad value!\": "]),
])
def test_service_errors(spec: dict[str, Any], expected: list[str]) -> None:
    got = errors("Service", service(**spec))
    assert len(got) == len(expected), got
    for message, prefix in zip(got, expected, strict=True):
        assert message.startswith(prefix), got


def test_headless_and_external_name_need_no_ports() -> None:
    assert errors("Service", service(clusterIP="None", ports=[])) == []
    assert errors("Service", service(type="ExternalName", externalName="example.com",
                                     ports=[])) == []


def test_service_name_is_a_dns1035_label() -> None:
    assert errors("Service", service(name="1web"))[0].startswith(
        'metadata.name: Invalid value: "1web": a DNS-1035 label')


def test_cluster_ip_is_immutable_but_empty_keeps_it() -> None:
    old = validate("Service", service(clusterIP="10.96.0.20")).obj
    assert errors("Service", service(clusterIP="10.96.0.21"), old) == [
        'spec.clusterIP: Invalid value: "10.96.0.21": field is immutable']
    assert errors("Service", service(), old) == []


def test_endpoints_and_slice_validation() -> None:
    ep = {"apiVersion": "v1", "kind": "Endpoints",
          "metadata": {"name": "x", "namespace": "default"},
          "subsets": [{"addresses": [{"ip": "10.1.1.1"}, {"ip": "bad"}],
                       "ports": [{"port": 80, "name": "a"}, {"port": 0, "name": "a"}]}]}
    assert errors("Endpoints", ep) == [
        'subsets[0].addresses[1].ip: Invalid value: "bad": must be a valid IP address, '
        "(e.g. 10.9.8.7 or 2001:db8::ffff)",
        'subsets[0].ports[1].name: Duplicate value: "a"',
        "subsets[0].ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive"]
    es = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
          "metadata": {"name": "x", "namespace": "default"},
          "endpoints": [{"addresses": ["10.1.1.1"]}, {"addresses": ["::1"]}]}
    assert errors("EndpointSlice", es) == [
        "addressType: Required value"]
    es["addressType"] = "IPv4"
    v = validate("EndpointSlice", es)
    assert [e.message() for e in v.errors] == [
        'endpoints[1].addresses[0]: Invalid value: "::1": must be an IPv4 address']
    assert v.obj["endpoints"][0]["conditions"] == {"ready": True}


def deployment(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "replicas": 3, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "echo", "image": "podnet/echo"}]}}}
    body.update(spec)
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"}, "spec": body}


def test_deployment_defaults_and_errors() -> None:
    v = validate("Deployment", deployment())
    assert v.errors == []
    assert v.obj["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {
        "maxSurge": "25%", "maxUnavailable": "25%"}}
    assert v.obj["spec"]["template"]["spec"]["restartPolicy"] == "Always"
    assert errors("Deployment", deployment(replicas=-1)) == [
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0"]
    assert errors("Deployment", deployment(selector={"matchLabels": {"app": "other"}})) == [
        'spec.template.metadata.labels: Invalid value: map[string]string{"app":"web"}: '
        "`selector` does not match template `labels`"]
    bad_template = deployment()
    bad_template["spec"]["template"]["spec"]["containers"][0]["image"] = "py:1bad:fn"
    assert errors("Deployment", bad_template)[0].startswith(
        'spec.template.spec.containers[0].image: Invalid value: "py:1bad:fn"')
    assert errors("ReplicaSet", {**deployment(), "kind": "ReplicaSet",
                                 "spec": {"template": deployment()["spec"]["template"]}}) == [
        "spec.selector: Required value"]
    zero = deployment(strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}})
    assert errors("Deployment", zero) == [
        'spec.strategy.rollingUpdate.maxUnavailable: Invalid value: "0%": may not be 0 when '
        "`maxSurge` is 0"]
    old = validate("Deployment", deployment()).obj
    changed = deployment(selector={"matchLabels": {"app": "web", "x": "y"}})
    changed["spec"]["template"]["metadata"]["labels"]["x"] = "y"
    assert errors("Deployment", changed, old) == [
        'spec.selector: Invalid value: "{...}": field is immutable']


def test_config_map() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "c", "namespace": "default"},
          "data": {"ok.key": "x", "bad key": "y"}, "binaryData": {"ok.key": "eA=="}}
    got = errors("ConfigMap", cm)
    assert got[0].startswith('data[bad key]: Invalid value: "bad key": a valid config key')
    assert got[1] == 'binaryData[ok.key]: Invalid value: "ok.key": duplicate of key present ' \
                     "in data"


# --- ClusterIP allocation ----------------------------------------------------------------------

class Services:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    def __call__(self) -> list[dict[str, Any]]:
        return list(self.items.values())

    def create(self, ipam: ServiceIpam, svc: dict[str, Any]) -> dict[str, Any]:
        obj = validate("Service", svc).obj
        ipam.admit("CREATE", SERVICES, obj, None)
        meta = obj["metadata"]
        self.items[(meta["namespace"], meta["name"])] = obj
        return obj


def test_cluster_ips_are_allocated_from_the_range_and_never_shared() -> None:
    services = Services()
    ipam = ServiceIpam("10.96.0.0/12", services, random.Random(1))
    ips = {services.create(ipam, service(f"s{i}"))["spec"]["clusterIP"] for i in range(50)}
    assert len(ips) == 50
    # Dynamic addresses come from above the lower band users pick static ones from.
    assert all(ipaddress.IPv4Address(ip) >= ipam.net.network_address + 256 for ip in ips)
    created = services.create(ipam, service("fixed", clusterIP="10.96.0.20"))
    assert created["spec"]["clusterIPs"] == ["10.96.0.20"]
    assert created["spec"]["ipFamilies"] == ["IPv4"]
    assert created["spec"]["ipFamilyPolicy"] == "SingleStack"


def test_cluster_ip_errors_name_the_field() -> None:
    services = Services()
    ipam = ServiceIpam("10.96.0.0/12", services)
    services.create(ipam, service("a", clusterIP="10.96.0.20"))
    for ip, why in [("10.0.0.5", "provided IP is not in the valid range. The range of valid "
                                 "IPs is 10.96.0.0/12"),
                    ("10.96.0.20", "provided IP is already allocated"),
                    ("10.96.0.10", "provided IP is already allocated"),
                    ("10.96.0.0", "provided IP is not in the valid range")]:
        with pytest.raises(ApiError) as caught:
            services.create(ipam, service("b", clusterIP=ip))
        assert caught.value.code == 422
        assert f'spec.clusterIP: Invalid value: "{ip}": {why}' in caught.value.message


def test_reserved_addresses_go_to_kubernetes_and_kube_dns() -> None:
    services = Services()
    ipam = ServiceIpam("10.96.0.0/12", services)
    dns = service("kube-dns", ports=[{"port": 53}])
    dns["metadata"]["namespace"] = "kube-system"
    assert services.create(ipam, dns)["spec"]["clusterIP"] == "10.96.0.10"
    kubernetes = service("kubernetes", ports=[{"port": 443}])
    assert services.create(ipam, kubernetes)["spec"]["clusterIP"] == "10.96.0.1"


def test_headless_and_external_name_get_no_cluster_ip() -> None:
    services = Services()
    ipam = ServiceIpam("10.96.0.0/12", services)
    headless = services.create(ipam, service("h", clusterIP="None"))["spec"]
    assert headless["clusterIP"] == "None" and headless["clusterIPs"] == ["None"]
    ext = services.create(ipam, service("e", type="ExternalName", externalName="a.example",
                                        ports=[]))["spec"]
    assert "clusterIP" not in ext and "clusterIPs" not in ext


def test_update_without_cluster_ip_keeps_it() -> None:
    services = Services()
    ipam = ServiceIpam("10.96.0.0/12", services)
    old = services.create(ipam, service("a"))
    new = validate("Service", service("a"), old=old).obj
    ipam.admit("UPDATE", SERVICES, new, old)
    assert new["spec"]["clusterIP"] == old["spec"]["clusterIP"]


def test_a_tiny_range_fills_up() -> None:
    services = Services()
    ipam = ServiceIpam("10.0.0.0/29", services)  # 6 usable hosts, .1 reserved (.10 is outside)
    for i in range(5):
        services.create(ipam, service(f"s{i}"))
    with pytest.raises(ApiError) as caught:
        services.create(ipam, service("full"))
    assert "range is full" in caught.value.message


# --- Endpoints and EndpointSlices from pods ----------------------------------------------------

def test_endpoints_split_ready_and_not_ready() -> None:
    pods = [pod("b", "10.244.1.3"), pod("a", "10.244.2.2"),
            pod("c", "10.244.1.4", ready=False),
            pod("gone", "10.244.1.5", terminating=True),
            pod("done", "10.244.1.6", phase="Succeeded"),
            pod("other", "10.244.1.7", labels={"app": "other"}),
            pod("no-ip", "")]
    subsets = endpoints_subsets(service(), pods)
    assert len(subsets) == 1
    assert [a["ip"] for a in subsets[0]["addresses"]] == ["10.244.1.3", "10.244.2.2"]
    assert [a["ip"] for a in subsets[0]["notReadyAddresses"]] == ["10.244.1.4"]
    assert subsets[0]["ports"] == [{"port": 8080, "protocol": "TCP", "name": "http"}]
    assert subsets[0]["addresses"][0]["targetRef"] == {
        "kind": "Pod", "namespace": "default", "name": "b", "uid": "uid-b"}
    assert subsets[0]["addresses"][0]["nodeName"] == "node-1"


def test_publish_not_ready_addresses_puts_everyone_in_ready() -> None:
    pods = [pod("a", "10.244.1.3", ready=False), pod("t", "10.244.1.4", terminating=True)]
    subsets = endpoints_subsets(service(publishNotReadyAddresses=True), pods)
    assert [a["ip"] for a in subsets[0]["addresses"]] == ["10.244.1.3", "10.244.1.4"]
    assert "notReadyAddresses" not in subsets[0]


def test_named_target_port_is_resolved_per_pod() -> None:
    svc = service(ports=[{"name": "web", "port": 80, "targetPort": "http",
                          "protocol": "TCP"}])
    pods = [pod("a", "10.244.1.3"),
            pod("b", "10.244.1.4", ports=[{"name": "http", "containerPort": 9000}]),
            pod("c", "10.244.1.5", ports=[])]  # no such port: not an endpoint
    assert resolve_target_port(pods[2], svc["spec"]["ports"][0]) is None
    subsets = endpoints_subsets(svc, pods)
    assert [(s["ports"][0]["port"], [a["ip"] for a in s["addresses"]]) for s in subsets] == [
        (8080, ["10.244.1.3"]), (9000, ["10.244.1.4"])]
    slices = desired_slices(svc, pods)
    assert [(s.port_bodies[0]["port"], len(s.endpoints)) for s in slices] == [(8080, 1),
                                                                             (9000, 1)]


def test_slices_carry_conditions_hostname_and_chunk() -> None:
    svc = service(name="db", clusterIP="None")
    pods = [pod("a", "10.244.1.3", hostname="a", subdomain="db"),
            pod("t", "10.244.1.4", terminating=True),
            pod("n", "10.244.1.5", ready=False)]
    (only,) = desired_slices(svc, pods)
    by_ip = {e["addresses"][0]: e for e in only.endpoints}
    assert by_ip["10.244.1.3"]["hostname"] == "a"
    assert by_ip["10.244.1.3"]["conditions"] == {"ready": True, "serving": True,
                                                 "terminating": False}
    assert by_ip["10.244.1.4"]["conditions"] == {"ready": False, "serving": True,
                                                 "terminating": True}
    assert by_ip["10.244.1.5"]["conditions"]["ready"] is False
    many = [pod(f"p{i}", f"10.244.1.{i + 10}") for i in range(5)]
    assert [len(s.endpoints) for s in desired_slices(service(), many, max_per_slice=2)] == [
        2, 2, 1]
    assert desired_slices(service(), [])[0].endpoints == ()


def test_services_without_selector_get_nothing() -> None:
    assert endpoints_subsets(service(selector=None), [pod("a", "10.244.1.3")]) == []


# --- the controller, in process ----------------------------------------------------------------

@pytest.fixture
async def api() -> AsyncIterator[Api]:
    store = Store.open(None)
    a = Api(store)
    ipam = ServiceIpam("10.96.0.0/12", lambda: store.scan(SERVICES))
    a.add_admission(ipam)
    a.bootstrap()
    await ensure_system_services(a, ipam)
    yield a
    store.close()


async def test_controller_writes_endpoints_and_slices_once(api: Api) -> None:
    assert api.get(SERVICES, "kube-system", "kube-dns")["spec"]["clusterIP"] == "10.96.0.10"
    assert api.get(SERVICES, "default", "kubernetes")["spec"]["clusterIP"] == "10.96.0.1"
    assert "subsets" not in api.get(ENDPOINTS, "default", "kubernetes")
    svc = service()
    del svc["metadata"]["uid"]
    await api.create(SERVICES, "default", svc)
    for p in (pod("a", "10.244.1.3"), pod("b", "10.244.2.3")):
        await api.create(PODS, "default", p)
        await api.patch(PODS, "default", p["metadata"]["name"],
                        json.dumps({"status": p["status"]}).encode(),
                        "application/merge-patch+json", subresource="status")
    controller = EndpointsController(api)
    await controller.reconcile()
    ep = api.get(ENDPOINTS, "default", "web")
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == ["10.244.1.3", "10.244.2.3"]
    slices = api.list(ENDPOINT_SLICES, "default",
                      label_selector="kubernetes.io/service-name=web")["items"]
    assert len(slices) == 1
    labels = slices[0]["metadata"]["labels"]
    assert labels["endpointslice.kubernetes.io/managed-by"] == MANAGED_BY
    assert slices[0]["metadata"]["ownerReferences"][0]["kind"] == "Service"
    rv = api.store.rv
    await controller.reconcile()
    assert api.store.rv == rv  # nothing changed: nothing written
    await api.delete(PODS, "default", "a")
    await controller.reconcile()
    ep = api.get(ENDPOINTS, "default", "web")
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == ["10.244.2.3"]
    # Deleting the Service removes what the controller made.
    await api.delete(SERVICES, "default", "web")
    await controller.reconcile()
    assert api.store.peek(ENDPOINTS, "default", "web") is None
    assert api.list(ENDPOINT_SLICES, "default")["items"] == []


async def test_hand_made_endpoints_are_kept(api: Api) -> None:
    await api.create(SERVICES, "default", service("manual", selector=None))
    await api.create(ENDPOINTS, "default", {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "manual"},
        "subsets": [{"addresses": [{"ip": "10.244.1.200"}], "ports": [{"port": 9376}]}]})
    controller = EndpointsController(api)
    await controller.reconcile()
    ep = api.get(ENDPOINTS, "default", "manual")
    assert ep["subsets"][0]["addresses"] == [{"ip": "10.244.1.200"}]


def test_hand_made_endpoints_are_mirrored_into_slices() -> None:
    from controlplane.endpoints import MANAGED_BY_LABEL, MIRRORED_BY, mirrored_slices

    svc = {"metadata": {"name": "db", "namespace": "prod", "uid": "u1"}, "spec": {}}
    endpoints = {"subsets": [
        {"addresses": [{"ip": "10.244.1.5", "hostname": "db-0"}],
         "notReadyAddresses": [{"ip": "10.244.2.6"}],
         "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]},
        {"addresses": [{"ip": "10.244.3.7"}, {"ip": 7}], "ports": [{"port": 9000}]}]}
    slices = mirrored_slices(svc, endpoints)
    assert sorted(slices) == ["db-mirror-0", "db-mirror-1"]
    first = slices["db-mirror-0"]
    assert first["metadata"]["labels"]["kubernetes.io/service-name"] == "db"
    assert first["metadata"]["labels"][MANAGED_BY_LABEL] == MIRRORED_BY
    assert [(e["addresses"], e["conditions"]["ready"]) for e in first["endpoints"]] == [
        (["10.244.1.5"], True), (["10.244.2.6"], False)]
    assert first["endpoints"][0]["hostname"] == "db-0"
    assert first["ports"] == [{"name": "pg", "port": 5432, "protocol": "TCP"}]
    assert [e["addresses"] for e in slices["db-mirror-1"]["endpoints"]] == [["10.244.3.7"]]
    assert mirrored_slices(svc, {}) == {}
