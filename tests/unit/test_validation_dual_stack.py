"""Validation of the dual-stack fields, in kube-apiserver's words: a Service's clusterIPs,
ipFamilies and ipFamilyPolicy on their own (the cluster's families are service IPAM's),
Node podCIDRs and Pod podIPs one per family, IPv6 in Endpoints and EndpointSlices."""

from __future__ import annotations

from typing import Any

import pytest

from podnet.validation import validate


def errors(kind: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    return [e.message() for e in validate(kind, obj, old=old).errors]


def service(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"}, "spec": body}


@pytest.mark.parametrize("spec", [
    {"clusterIPs": ["10.96.0.5", "fd00:10:96::5"], "ipFamilyPolicy": "PreferDualStack"},
    {"clusterIP": "fd00:10:96::5", "clusterIPs": ["fd00:10:96::5", "10.96.0.5"],
     "ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "RequireDualStack"},
    {"ipFamilies": ["IPv6"]},
    {"clusterIP": "None", "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack"},
])
def test_valid_dual_stack_services(spec: dict[str, Any]) -> None:
    assert errors("Service", service(**spec)) == []


@pytest.mark.parametrize(("spec", "expected"), [
    ({"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.6"]},
     ['spec.clusterIPs: Invalid value: []string{"10.96.0.6"}: first value must match '
      "`clusterIP`"]),
    ({"clusterIPs": ["None", "10.96.0.5"]},
     ['spec.clusterIPs: Invalid value: []string{"None", "10.96.0.5"}: \'None\' must be the '
      "first and only value"]),
    ({"clusterIPs": ["10.96.0.5", "10.96.0.6"]},
     ['spec.clusterIPs: Invalid value: []string{"10.96.0.5", "10.96.0.6"}: may specify no '
      "more than one IP for each IP family"]),
    ({"clusterIPs": ["10.96.0.5", "fd00::5", "10.96.0.7"]},
     ['spec.clusterIPs: Invalid value: []string{"10.96.0.5", "fd00::5", "10.96.0.7"}: may '
      "only hold up to 2 values",
      'spec.clusterIPs: Invalid value: []string{"10.96.0.5", "fd00::5", "10.96.0.7"}: may '
      "specify no more than one IP for each IP family"]),
    ({"clusterIPs": ["10.96.0.5", "fd00::zz"]},
     ['spec.clusterIPs[1]: Invalid value: "fd00::zz": must be a valid IP address, (e.g. '
      "10.9.8.7 or 2001:db8::ffff)"]),
    ({"ipFamilies": ["IPv5"]},
     ['spec.ipFamilies[0]: Unsupported value: "IPv5": supported values: "IPv4", "IPv6"']),
    ({"ipFamilies": ["IPv6", "IPv6"]}, ['spec.ipFamilies[1]: Duplicate value: "IPv6"']),
    ({"ipFamilyPolicy": "BothPlease"},
     ['spec.ipFamilyPolicy: Unsupported value: "BothPlease": supported values: '
      '"PreferDualStack", "RequireDualStack", "SingleStack"']),
    ({"clusterIPs": ["10.96.0.5"], "ipFamilies": ["IPv6"]},
     ['spec.clusterIPs[0]: Invalid value: "10.96.0.5": expected an IPv6 value as indicated '
      "by `ipFamilies[0]`"]),
    ({"clusterIPs": ["10.96.0.5", "fd00::5"], "ipFamilies": ["IPv4", "IPv4"]},
     ['spec.ipFamilies[1]: Duplicate value: "IPv4"',
      'spec.clusterIPs[1]: Invalid value: "fd00::5": expected an IPv4 value as indicated by '
      "`ipFamilies[1]`"]),
    ({"type": "ExternalName", "externalName": "a.example", "ipFamilies": ["IPv4"],
      "ipFamilyPolicy": "SingleStack"},
     ["spec.ipFamilies: Forbidden: may not be set for ExternalName services",
      "spec.ipFamilyPolicy: Forbidden: may not be set for ExternalName services"]),
])
def test_service_family_errors(spec: dict[str, Any], expected: list[str]) -> None:
    assert errors("Service", service(**spec)) == expected


def stored(**spec: Any) -> dict[str, Any]:
    """A Service as the API stores it (after service IPAM)."""
    return validate("Service", service(**spec)).obj


def test_updates_may_add_or_release_the_secondary_only() -> None:
    old = stored(clusterIP="10.96.0.5", clusterIPs=["10.96.0.5"], ipFamilies=["IPv4"],
                 ipFamilyPolicy="SingleStack")
    # upgrade: add the secondary (IPAM allocates it); the primary stays
    assert errors("Service", service(ipFamilyPolicy="PreferDualStack"), old) == []
    assert errors("Service", service(clusterIPs=["10.96.0.5", "fd00:10:96::5"],
                                     ipFamilyPolicy="PreferDualStack"), old) == []
    assert errors("Service", service(clusterIPs=["10.96.0.6", "fd00:10:96::5"],
                                     ipFamilyPolicy="PreferDualStack"), old) == [
        'spec.clusterIPs[0]: Invalid value: []string{"10.96.0.6", "fd00:10:96::5"}: may not '
        "change once set"]
    dual = stored(clusterIP="10.96.0.5", clusterIPs=["10.96.0.5", "fd00:10:96::5"],
                  ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="PreferDualStack")
    # downgrade: SingleStack trims the secondary of an unchanged Service
    v = validate("Service", service(**dict(dual["spec"], ipFamilyPolicy="SingleStack")),
                 old=dual)
    assert v.errors == []
    assert v.obj["spec"]["clusterIPs"] == ["10.96.0.5"]
    assert v.obj["spec"]["ipFamilies"] == ["IPv4"]
    # releasing it without SingleStack is refused
    got = errors("Service", service(**dict(dual["spec"], clusterIPs=["10.96.0.5"],
                                           ipFamilies=["IPv4"])), dual)
    assert got == [
        "spec.ipFamilyPolicy: Invalid value: \"PreferDualStack\": must be set to "
        "'SingleStack' when releasing the secondary clusterIP",
        "spec.ipFamilyPolicy: Invalid value: \"PreferDualStack\": must be set to "
        "'SingleStack' when releasing the secondary ipFamily"]
    # the secondary may not change either
    assert errors("Service", service(**dict(dual["spec"],
                                            clusterIPs=["10.96.0.5", "fd00:10:96::6"])),
                  dual) == ['spec.clusterIPs[1]: Invalid value: []string{"10.96.0.5", '
                            '"fd00:10:96::6"}: may not change once set']


def test_re_applying_a_manifest_without_cluster_ips_keeps_them() -> None:
    dual = stored(clusterIP="10.96.0.5", clusterIPs=["10.96.0.5", "fd00:10:96::5"],
                  ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="PreferDualStack")
    v = validate("Service", service(), old=dual)
    assert v.errors == []
    assert v.obj["spec"]["clusterIPs"] == ["10.96.0.5", "fd00:10:96::5"]


def test_switching_to_external_name_drops_the_address_fields() -> None:
    dual = stored(clusterIP="10.96.0.5", clusterIPs=["10.96.0.5", "fd00:10:96::5"],
                  ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="PreferDualStack")
    v = validate("Service", {**dual, "spec": dict(dual["spec"], type="ExternalName",
                                                  externalName="a.example")}, old=dual)
    assert v.errors == []
    assert not {"clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"} & set(v.obj["spec"])


def node(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "spec": spec}


def test_node_pod_cidrs_one_per_family() -> None:
    assert errors("Node", node(podCIDR="10.244.1.0/24",
                               podCIDRs=["10.244.1.0/24", "fd00:10:244:1::/64"])) == []
    assert errors("Node", node(podCIDRs=["10.244.1.0/24", "10.244.2.0/24"])) == [
        'spec.podCIDRs: Invalid value: []string{"10.244.1.0/24", "10.244.2.0/24"}: may '
        "specify no more than one CIDR for each IP family"]
    assert errors("Node", node(podCIDRs=["10.244.1.0/24", "fd00::/64", "fd01::/64"]))[0] \
        .endswith("may specify no more than one CIDR for each IP family")
    assert errors("Node", node(podCIDRs=["fd00::/644"])) == [
        'spec.podCIDRs[0]: Invalid value: "fd00::/644": must be a valid CIDR value, (e.g. '
        "10.9.8.0/24 or 2001:db8::/64)"]


def pod(*ips: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "podnet/echo"}]},
            "status": {"podIP": ips[0] if ips else "", "podIPs": [{"ip": ip} for ip in ips]}}


def test_pod_ips_of_both_families() -> None:
    assert errors("Pod", pod("10.244.1.5", "fd00:10:244:1::5")) == []
    assert errors("Pod", pod("fd00:10:244:1::5")) == []
    assert errors("Pod", pod("10.244.1.5", "10.244.1.6")) == [
        'status.podIPs: Invalid value: []core.PodIP{core.PodIP{IP:"10.244.1.5"}, '
        'core.PodIP{IP:"10.244.1.6"}}: may specify no more than one IP for each IP family']
    assert errors("Pod", pod("fd00::5", "fd00::5")) == [
        'status.podIPs: Invalid value: []core.PodIP{core.PodIP{IP:"fd00::5"}, '
        'core.PodIP{IP:"fd00::5"}}: may specify no more than one IP for each IP family',
        'status.podIPs[1]: Duplicate value: core.PodIP{IP:"fd00::5"}']
    assert errors("Pod", pod("10.244.1.5", "fd00::zz")) == [
        'status.podIPs[1]: Invalid value: "fd00::zz": must be a valid IP address, (e.g. '
        "10.9.8.7 or 2001:db8::ffff)"]


def test_ipv6_endpoints_and_slices() -> None:
    ep = {"apiVersion": "v1", "kind": "Endpoints",
          "metadata": {"name": "x", "namespace": "default"},
          "subsets": [{"addresses": [{"ip": "fd00:10:244:1::5"}, {"ip": "10.244.1.5"}],
                       "ports": [{"port": 80}]}]}
    assert errors("Endpoints", ep) == []
    es = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
          "metadata": {"name": "x", "namespace": "default"}, "addressType": "IPv6",
          "endpoints": [{"addresses": ["fd00:10:244:1::5"]}, {"addresses": ["10.244.1.5"]}]}
    assert errors("EndpointSlice", es) == [
        'endpoints[1].addresses[0]: Invalid value: "10.244.1.5": must be an IPv6 address']
