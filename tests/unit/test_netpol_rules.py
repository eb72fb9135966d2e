"""NetworkPolicy validation and defaulting (podnet/api/netpol_rules.py), and its Table row."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from controlplane.tables import table
from podnet.resources import lookup
from podnet.validation import validate

# The example policy of the Kubernetes docs' NetworkPolicy page.
DOCS_POLICY: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": "test-network-policy", "namespace": "default"},
    "spec": {
        "podSelector": {"matchLabels": {"role": "db"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{
            "from": [{"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                     {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                     {"podSelector": {"matchLabels": {"role": "frontend"}}}],
            "ports": [{"protocol": "TCP", "port": 6379}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                    "ports": [{"protocol": "TCP", "port": 5978}]}],
    },
}


def policy(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "default"}, "spec": spec}


def messages(obj: dict[str, Any]) -> list[str]:
    return [e.message() for e in validate("NetworkPolicy", obj).errors]


def ingress_from(*peers: Any) -> dict[str, Any]:
    return policy(podSelector={}, ingress=[{"from": list(peers)}])


def ingress_ports(*ports: Any) -> dict[str, Any]:
    return policy(podSelector={}, ingress=[{"ports": list(ports)}])


def test_the_docs_example_is_valid_and_kept_as_sent() -> None:
    result = validate("NetworkPolicy", copy.deepcopy(DOCS_POLICY))
    assert result.errors == []
    assert result.obj["spec"] == DOCS_POLICY["spec"]


def test_resource_is_served_as_kubernetes_discovery_describes_it() -> None:
    res = lookup("networking.k8s.io", "networkpolicies")
    assert res is not None
    assert (res.kind, res.version, res.namespaced, res.short_names, res.subresources) == \
        ("NetworkPolicy", "v1", True, ("netpol",), ())


@pytest.mark.parametrize(("spec", "types"), [
    ({}, ["Ingress"]),
    ({"ingress": [{}]}, ["Ingress"]),
    ({"egress": [{}]}, ["Ingress", "Egress"]),
    ({"egress": []}, ["Ingress"]),        # an empty list is no egress rule
    ({"egress": [{}], "policyTypes": ["Egress"]}, ["Egress"]),  # given types are kept
])
def test_policy_types_default_as_upstream(spec: dict[str, Any], types: list[str]) -> None:
    result = validate("NetworkPolicy", policy(**spec))
    assert result.errors == []
    assert result.obj["spec"]["policyTypes"] == types


def test_missing_pod_selector_is_the_empty_selector_and_protocol_defaults_to_tcp() -> None:
    obj = policy(ingress=[{"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}, {}]}])
    result = validate("NetworkPolicy", obj)
    assert result.errors == []
    spec = result.obj["spec"]
    assert spec["podSelector"] == {}
    assert spec["ingress"][0]["ports"] == [{"port": 80, "protocol": "TCP"},
                                           {"port": 53, "protocol": "UDP"},
                                           {"protocol": "TCP"}]


def test_no_spec_at_all_selects_every_pod_for_ingress() -> None:
    obj = {"metadata": {"name": "deny", "namespace": "default"}}
    result = validate("NetworkPolicy", obj)
    assert result.errors == []
    assert result.obj["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_ip_block_cidr_and_except() -> None:
    base = "spec.ingress[0].from[0].ipBlock"
    assert messages(ingress_from({"ipBlock": {"cidr": "10.0.0.0/33"}})) == [
        f'{base}.cidr: Invalid value: "10.0.0.0/33": must be a valid CIDR value, '
        "(e.g. 10.9.8.0/24 or 2001:db8::/64)"]
    assert messages(ingress_from({"ipBlock": {"cidr": "10.0.0.1"}}))[0].startswith(
        f'{base}.cidr: Invalid value: "10.0.0.1"')
    assert messages(ingress_from({"ipBlock": {}})) == [f"{base}.cidr: Required value"]
    # Host bits beyond the prefix are accepted (kube-apiserver's legacy leniency).
    assert messages(ingress_from({"ipBlock": {"cidr": "10.0.0.1/8"}})) == []
    bad = messages(ingress_from({"ipBlock": {"cidr": "10.0.0.0/8", "except": [
        "10.1.0.0/16", "11.0.0.0/16", "10.0.0.0/8", "nope", "fd00::/64"]}}))
    assert bad == [
        f'{base}.except[1]: Invalid value: "11.0.0.0/16": must be a strict subset of `cidr`',
        f'{base}.except[2]: Invalid value: "10.0.0.0/8": must be a strict subset of `cidr`',
        f'{base}.except[3]: Invalid value: "nope": must be a valid CIDR value, '
        "(e.g. 10.9.8.0/24 or 2001:db8::/64)",
        f'{base}.except[4]: Invalid value: "fd00::/64": must be a strict subset of `cidr`',
    ]


def test_peers_need_one_kind_and_ip_block_stands_alone() -> None:
    assert messages(ingress_from({})) == [
        "spec.ingress[0].from[0]: Required value: must specify a peer"]
    assert messages(ingress_from({"podSelector": {}, "ipBlock": {"cidr": "10.0.0.0/8"}})) == [
        "spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer"]
    # podSelector with namespaceSelector is one peer (AND), and fine.
    assert messages(ingress_from({"podSelector": {}, "namespaceSelector": {}})) == []
    egress = policy(egress=[{"to": [{}]}])
    assert messages(egress) == ["spec.egress[0].to[0]: Required value: must specify a peer"]


def test_ports() -> None:
    base = "spec.ingress[0].ports"
    assert messages(ingress_ports({"port": 0}, {"port": 65536})) == [
        f"{base}[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        f"{base}[1].port: Invalid value: 65536: must be between 1 and 65535, inclusive"]
    assert messages(ingress_ports({"port": "http"}, {"port": 32000, "endPort": 32768})) == []
    assert messages(ingress_ports({"port": "http", "endPort": 90})) == [
        f"{base}[0].endPort: Invalid value: 90: may not be specified when `port` is "
        "non-numeric"]
    # Upstream names port's value in this message; so does podnet.
    assert messages(ingress_ports({"port": 80, "endPort": 70})) == [
        f"{base}[0].endPort: Invalid value: 80: must be greater than or equal to `port`"]
    assert messages(ingress_ports({"endPort": 70})) == [
        f"{base}[0].endPort: Invalid value: 70: may not be specified when `port` is not "
        "specified"]
    assert messages(ingress_ports({"port": "web--x"})) == [
        f'{base}[0].port: Invalid value: "web--x": must not contain consecutive hyphens']
    assert messages(ingress_ports({"port": 80, "protocol": "ICMP"})) == [
        f'{base}[0].protocol: Unsupported value: "ICMP": supported values: "TCP", "UDP", '
        '"SCTP"']
    assert messages(ingress_ports({"port": "80"}))[0] == \
        f'{base}[0].port: Invalid value: "80": must contain at least one letter (a-z)'


def test_selectors_use_metav1_rules() -> None:
    obj = policy(podSelector={"matchLabels": {"bad key!": "v"}, "matchExpressions": [
        {"key": "tier", "operator": "In"},
        {"key": "tier", "operator": "Exists", "values": ["x"]},
        {"key": "tier", "operator": "Near", "values": ["x"]},
        {"key": "tier", "operator": "In", "values": ["not valid!"]},
    ]})
    got = messages(obj)
    assert got[0].startswith('spec.podSelector.matchLabels: Invalid value: "bad key!"')
    base = "spec.podSelector.matchExpressions"
    assert f"{base}[0].values: Required value: must be specified when `operator` is 'In' " \
        "or 'NotIn'" in got
    assert f"{base}[1].values: Forbidden: may not be specified when `operator` is 'Exists' " \
        "or 'DoesNotExist'" in got
    assert f'{base}[2].operator: Invalid value: "Near": not a valid selector operator' in got
    assert any(m.startswith(f'{base}[3].values[0]: Invalid value: "not valid!"') for m in got)
    nested = ingress_from({"namespaceSelector": {"matchExpressions": [{"key": "",
                                                                       "operator": "Exists"}]}})
    assert any(m.startswith("spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].key:")
               for m in messages(nested))


def test_policy_types() -> None:
    assert messages(policy(policyTypes=["Ingress", "Sideways"])) == [
        'spec.policyTypes[1]: Unsupported value: "Sideways": supported values: "Ingress", '
        '"Egress"']
    assert messages(policy(policyTypes=["Ingress", "Egress", "Ingress"])) == [
        'spec.policyTypes: Invalid value: "[...]": may not specify more than two policyTypes']


def test_wrong_types_are_field_errors_not_crashes() -> None:
    for spec in ({"ingress": "all"}, {"ingress": [{"from": "x"}]}, {"ingress": [{"from": [3]}]},
                 {"egress": [{"ports": [{"port": [1]}]}]}, {"podSelector": []},
                 {"ingress": [{"from": [{"ipBlock": {"cidr": 10}}]}]},
                 {"policyTypes": "Ingress"}):
        result = validate("NetworkPolicy", policy(**spec))
        assert result.errors, spec
        assert all(e.path.startswith("spec") for e in result.errors), spec


def test_unknown_fields_are_named() -> None:
    obj = ingress_from({"podSelektor": {}})
    result = validate("NetworkPolicy", obj, field_validation="Strict")
    assert "spec.ingress[0].from[0].podSelektor" in result.unknown_fields


def test_namespaces_always_carry_their_name_label() -> None:
    created = validate("Namespace", {"metadata": {"name": "team-a"}})
    assert created.obj["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-a"}
    old = created.obj
    forged = {"metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "x",
                                                        "team": "a"}}}
    updated = validate("Namespace", forged, old=old)
    assert updated.obj["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-a",
                                                 "team": "a"}


def test_table_shows_the_pod_selector_like_kubectl() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    docs = copy.deepcopy(DOCS_POLICY)
    docs["metadata"]["creationTimestamp"] = "2025-12-31T23:59:00Z"
    every = policy(podSelector={})
    every["metadata"]["name"] = "default-deny"
    expr = policy(podSelector={"matchExpressions": [{"key": "app", "operator": "In",
                                                     "values": ["a", "b"]}]})
    out = table("networkpolicies", [docs, every, expr], now=now, resource_version="1")
    assert [c["name"] for c in out["columnDefinitions"]] == ["Name", "Pod-Selector", "Age"]
    assert [r["cells"] for r in out["rows"]] == [
        ["test-network-policy", "role=db", "60s"],
        ["default-deny", "<none>", "<unknown>"],
        ["p", "app in (a,b)", "<unknown>"],
    ]
