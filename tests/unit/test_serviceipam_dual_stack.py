"""Service IPAM on dual-stack and IPv6 clusters, as kube-apiserver allocates: ipFamilyPolicy
and ipFamilies defaulted and checked against the cluster's families, one ClusterIP per
family from that family's range, upgrades and downgrades on update, headless Services."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest

from controlplane.serviceipam import ServiceIpam
from podnet.apierrors import ApiError
from podnet.resources import BY_KIND
from podnet.validation import validate

SERVICES = BY_KIND["Service"]
DUAL = ["10.96.0.0/12", "fd00:10:96::/112"]


def service(name: str = "web", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"selector": {"app": "web"},
                            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"}, "spec": body}


class Cluster:
    """The API's path for a Service: validation, then service IPAM, then the store."""

    def __init__(self, cidrs: str | list[str]) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.ipam = ServiceIpam(cidrs, lambda: list(self.items.values()), random.Random(7))

    def apply(self, svc: dict[str, Any]) -> dict[str, Any]:
        old = self.items.get(svc["metadata"]["name"])
        v = validate("Service", svc, old=old)
        if v.errors:
            raise AssertionError([e.message() for e in v.errors])
        obj = v.obj
        self.ipam.admit("UPDATE" if old else "CREATE", SERVICES, obj, old)
        self.items[obj["metadata"]["name"]] = obj
        return obj

    def error(self, svc: dict[str, Any]) -> str:
        old = self.items.get(svc["metadata"]["name"])
        v = validate("Service", svc, old=old)
        if v.errors:
            return "; ".join(e.message() for e in v.errors)
        with pytest.raises(ApiError) as caught:
            self.ipam.admit("UPDATE" if old else "CREATE", SERVICES, v.obj, old)
        assert caught.value.code == 422
        return caught.value.message


def fams(spec: dict[str, Any]) -> tuple[str, list[str], list[str]]:
    return spec["ipFamilyPolicy"], spec["ipFamilies"], spec["clusterIPs"]


def in_range(ip: str, cidr: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)


def test_single_stack_is_the_default_even_on_a_dual_stack_cluster() -> None:
    c = Cluster(DUAL)
    spec = c.apply(service())["spec"]
    policy, families, ips = fams(spec)
    assert (policy, families, len(ips)) == ("SingleStack", ["IPv4"], 1)
    assert spec["clusterIP"] == ips[0] and in_range(ips[0], DUAL[0])


@pytest.mark.parametrize("policy", ["PreferDualStack", "RequireDualStack"])
def test_dual_stack_policies_get_both_families(policy: str) -> None:
    c = Cluster(DUAL)
    spec = c.apply(service(ipFamilyPolicy=policy))["spec"]
    assert spec["ipFamilies"] == ["IPv4", "IPv6"]
    assert in_range(spec["clusterIPs"][0], DUAL[0])
    assert in_range(spec["clusterIPs"][1], DUAL[1])
    assert spec["clusterIP"] == spec["clusterIPs"][0]


def test_ipv6_first_when_asked() -> None:
    c = Cluster(DUAL)
    spec = c.apply(service(ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv6"]))["spec"]
    assert spec["ipFamilies"] == ["IPv6", "IPv4"]
    assert in_range(spec["clusterIP"], DUAL[1]) and in_range(spec["clusterIPs"][1], DUAL[0])
    single = c.apply(service("v6", ipFamilies=["IPv6"]))["spec"]
    assert fams(single)[:2] == ("SingleStack", ["IPv6"])
    assert in_range(single["clusterIP"], DUAL[1])


def test_families_follow_given_cluster_ips() -> None:
    c = Cluster(DUAL)
    spec = c.apply(service(ipFamilyPolicy="RequireDualStack",
                           clusterIPs=["fd00:10:96::50", "10.96.0.50"]))["spec"]
    assert fams(spec) == ("RequireDualStack", ["IPv6", "IPv4"],
                          ["fd00:10:96::50", "10.96.0.50"])
    assert spec["clusterIP"] == "fd00:10:96::50"
    # one given, the other family allocated
    spec = c.apply(service("b", ipFamilyPolicy="PreferDualStack",
                           clusterIPs=["10.96.0.51"]))["spec"]
    assert spec["clusterIPs"][0] == "10.96.0.51" and in_range(spec["clusterIPs"][1], DUAL[1])


def test_require_dual_stack_on_a_single_stack_cluster_in_kubernetes_words() -> None:
    c = Cluster("10.96.0.0/12")
    assert c.error(service(ipFamilyPolicy="RequireDualStack")) == (
        'Service "web" is invalid: spec.ipFamilyPolicy: Invalid value: "RequireDualStack": '
        "this cluster is not configured for dual-stack services")
    # PreferDualStack just gets the one family there is
    assert fams(c.apply(service(ipFamilyPolicy="PreferDualStack"))["spec"])[:2] == (
        "PreferDualStack", ["IPv4"])


@pytest.mark.parametrize(("cidrs", "spec", "message"), [
    ("10.96.0.0/12", {"ipFamilies": ["IPv6"]},
     'spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster'),
    ("fd00:10:96::/112", {"clusterIP": "10.96.0.5"},
     'spec.clusterIPs[0]: Invalid value: []string{"10.96.0.5"}: IPv4 is not configured on '
     "this cluster"),
    (DUAL, {"ipFamilies": ["IPv4", "IPv6"]},
     'spec.ipFamilyPolicy: Invalid value: "SingleStack": must be \'RequireDualStack\' or '
     "'PreferDualStack' when multiple IP families are specified"),
    (DUAL, {"clusterIPs": ["10.96.0.5", "fd00:10:96::5"], "clusterIP": "10.96.0.5"},
     'spec.ipFamilyPolicy: Invalid value: "SingleStack": must be \'RequireDualStack\' or '
     "'PreferDualStack' when multiple cluster IPs are specified"),
    (DUAL, {"ipFamilyPolicy": "PreferDualStack", "clusterIPs": ["10.96.0.5", "fd00:99::5"]},
     'spec.clusterIPs: Invalid value: []string{"10.96.0.5", "fd00:99::5"}: failed to '
     "allocate IP fd00:99::5: provided IP is not in the valid range. The range of valid IPs "
     "is fd00:10:96::/112"),
])
def test_family_errors(cidrs: Any, spec: dict[str, Any], message: str) -> None:
    assert message in Cluster(cidrs).error(service(**spec))


def test_a_taken_address_in_either_family() -> None:
    c = Cluster(DUAL)
    c.apply(service("a", ipFamilyPolicy="PreferDualStack",
                    clusterIPs=["10.96.0.60", "fd00:10:96::60"]))
    assert c.error(service("b", ipFamilyPolicy="PreferDualStack",
                           clusterIPs=["10.96.0.61", "fd00:10:96:0::60"])) == (
        'Service "b" is invalid: spec.clusterIPs: Invalid value: []string{"10.96.0.61", '
        '"fd00:10:96:0::60"}: failed to allocate IP fd00:10:96:0::60: provided IP is already '
        "allocated")
    # the kube-dns address of the primary range stays reserved
    assert "already allocated" in c.error(service("c", clusterIP="10.96.0.10"))


def test_allocated_ipv6_addresses_are_distinct_and_above_the_static_band() -> None:
    c = Cluster(["fd00:10:96::/112", "10.96.0.0/12"])
    ips = {c.apply(service(f"s{i}"))["spec"]["clusterIP"] for i in range(40)}
    assert len(ips) == 40
    assert all(int(ipaddress.ip_address(ip)) - int(ipaddress.ip_address("fd00:10:96::"))
               >= 256 for ip in ips)
    assert c.ipam.kubernetes_ip == "fd00:10:96::1" and c.ipam.dns_ip == "fd00:10:96::a"


def test_ipv6_single_stack_cluster() -> None:
    c = Cluster("fd00:10:96::/112")
    spec = c.apply(service())["spec"]
    assert fams(spec)[:2] == ("SingleStack", ["IPv6"])
    assert in_range(spec["clusterIP"], "fd00:10:96::/112")
    spec = c.apply(service("p", ipFamilyPolicy="PreferDualStack"))["spec"]
    assert fams(spec)[:2] == ("PreferDualStack", ["IPv6"])
    # the last address of an IPv6 range is usable (no broadcast), the first is not
    assert c.ipam.check("fd00:10:96::ffff", ("default", "x"), {}) is None
    assert c.ipam.check("fd00:10:96::", ("default", "x"), {}) is not None


def test_headless() -> None:
    c = Cluster(DUAL)
    spec = c.apply(service("h", clusterIP="None"))["spec"]
    assert fams(spec) == ("SingleStack", ["IPv4"], ["None"])
    spec = c.apply(service("hp", clusterIP="None", ipFamilyPolicy="PreferDualStack"))["spec"]
    assert fams(spec) == ("PreferDualStack", ["IPv4", "IPv6"], ["None"])
    # selector-less headless: RequireDualStack by default, both families even on a
    # single-stack cluster (its endpoints are what the user writes)
    for cluster in (c, Cluster("10.96.0.0/12")):
        spec = cluster.apply(service("hs", clusterIP="None", selector=None))["spec"]
        assert fams(spec) == ("RequireDualStack", ["IPv4", "IPv6"], ["None"])
    assert "not configured for dual-stack" in Cluster("10.96.0.0/12").error(
        service("hr", clusterIP="None", ipFamilyPolicy="RequireDualStack"))


def test_upgrade_single_stack_to_prefer_dual_stack_adds_the_secondary() -> None:
    c = Cluster(DUAL)
    first = c.apply(service())["spec"]["clusterIP"]
    spec = c.apply(service(ipFamilyPolicy="PreferDualStack"))["spec"]  # kubectl replace
    assert spec["clusterIP"] == first
    assert spec["ipFamilies"] == ["IPv4", "IPv6"] and spec["clusterIPs"][0] == first
    assert in_range(spec["clusterIPs"][1], DUAL[1])
    again = c.apply(service(ipFamilyPolicy="PreferDualStack"))["spec"]
    assert again["clusterIPs"] == spec["clusterIPs"]  # re-applying changes nothing


def test_downgrade_needs_single_stack_and_keeps_the_primary() -> None:
    c = Cluster(DUAL)
    spec = c.apply(service(ipFamilyPolicy="RequireDualStack"))["spec"]
    primary = spec["clusterIPs"][0]
    down = dict(spec, ipFamilyPolicy="SingleStack")
    got = c.apply(service(**down))["spec"]
    assert fams(got) == ("SingleStack", ["IPv4"], [primary])
    # the released secondary is free again
    assert spec["clusterIPs"][1] not in c.ipam.used()


def test_releasing_the_secondary_without_single_stack_is_refused() -> None:
    c = Cluster(DUAL)
    spec = c.apply(service(ipFamilyPolicy="RequireDualStack"))["spec"]
    got = c.error(service(**dict(spec, clusterIPs=spec["clusterIPs"][:1],
                                 ipFamilies=["IPv4"])))
    assert "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": must be set to " \
           "'SingleStack' when releasing the secondary clusterIP" in got


def test_the_primary_cluster_ip_is_immutable() -> None:
    c = Cluster(DUAL)
    spec = c.apply(service(ipFamilyPolicy="PreferDualStack"))["spec"]
    ips = spec["clusterIPs"]
    got = c.error(service(**dict(spec, clusterIP="10.96.0.77",
                                 clusterIPs=["10.96.0.77", ips[1]])))
    assert got == ('spec.clusterIPs[0]: Invalid value: '
                   f'[]string{{"10.96.0.77", "{ips[1]}"}}: may not change once set')
    # changing clusterIP alone: clusterIPs follow it, and are refused the same way
    assert "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.77\"}: may not change " \
           "once set" in c.error(service(**dict(spec, clusterIP="10.96.0.77")))
    got = c.error(service(**dict(spec, ipFamilies=["IPv6", "IPv4"])))
    assert 'spec.ipFamilies[0]: Invalid value: []core.IPFamily{"IPv6", "IPv4"}: may not ' \
           "change once set" in got


def test_prefer_dual_stack_is_not_upgraded_by_a_cluster_change() -> None:
    single = Cluster("10.96.0.0/12")
    spec = single.apply(service(ipFamilyPolicy="PreferDualStack"))["spec"]
    dual = Cluster(DUAL)
    dual.items = single.items  # the same store, read by a dual-stack control plane
    again = dual.apply(service(**spec))["spec"]
    assert again["ipFamilies"] == ["IPv4"] and len(again["clusterIPs"]) == 1
    # asking again (RequireDualStack) upgrades it
    up = dual.apply(service(**dict(again, ipFamilyPolicy="RequireDualStack")))["spec"]
    assert up["ipFamilies"] == ["IPv4", "IPv6"] and len(up["clusterIPs"]) == 2


def test_to_external_name_and_back() -> None:
    c = Cluster(DUAL)
    spec = c.apply(service(ipFamilyPolicy="PreferDualStack"))["spec"]
    ext = c.apply(service(**dict(spec, type="ExternalName", externalName="a.example")))
    assert not {"clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"} & set(ext["spec"])
    back = c.apply(service(ipFamilyPolicy="PreferDualStack"))["spec"]
    assert back["ipFamilies"] == ["IPv4", "IPv6"] and len(back["clusterIPs"]) == 2


def test_ipv4_only_cluster_is_unchanged() -> None:
    c = Cluster("10.96.0.0/12")
    spec = c.apply(service(clusterIP="10.96.0.20"))["spec"]
    assert fams(spec) == ("SingleStack", ["IPv4"], ["10.96.0.20"])
    assert c.error(service("b", clusterIP="10.96.0.20")) == (
        'Service "b" is invalid: spec.clusterIP: Invalid value: "10.96.0.20": provided IP is '
        "already allocated")
