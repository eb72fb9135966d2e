"""The NetworkPolicy engine against the Kubernetes semantics, one rule of the API at a time."""

from __future__ import annotations

from typing import Any

import pytest

from podnet.policy.engine import KUBE_DNS, Peer, PolicySet

X_A = Peer("10.244.1.10", "x", "a", {"pod": "a"}, {"ns": "x"},
           {"http": (80, "TCP"), "dns": (53, "UDP")}, node="n1")
X_B = Peer("10.244.2.10", "x", "b", {"pod": "b"}, {"ns": "x"}, {"http": (8080, "TCP")},
           node="n2")
Y_A = Peer("10.244.1.11", "y", "a", {"pod": "a"}, {"ns": "y"}, node="n1")
Y_B = Peer("10.244.2.11", "y", "b", {"pod": "b"}, {"ns": "y"}, node="n2")
Z_C = Peer("10.244.2.12", "z", "c", {"pod": "c"}, {"ns": "z", "team": "ops"}, node="n2")
OUTSIDE = Peer("192.168.7.7")
GATEWAY_N1 = Peer("10.244.1.1", node="n1")


def policy(name: str, spec: dict[str, Any], namespace: str = "x") -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"namespace": namespace, "name": name}, "spec": spec}


def ingress_ok(ps: PolicySet, src: Peer, dst: Peer, port: int = 80, proto: str = "TCP") -> bool:
    return ps.ingress(src, dst, port, proto).allowed


def egress_ok(ps: PolicySet, src: Peer, dst: Peer, port: int = 80, proto: str = "TCP") -> bool:
    return ps.egress(src, dst, port, proto).allowed


DENY_INGRESS = policy("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
DENY_EGRESS = policy("deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]})


# --- isolation ------------------------------------------------------------------------------


def test_no_policy_allows_everything_by_default() -> None:
    ps = PolicySet([])
    egress, ingress = ps.judge(Y_A, X_A, 80, "TCP")
    assert egress.allowed and ingress.allowed
    assert ingress.reason == "no policy selects this pod: allowed by default"
    assert ingress.policy is None and ingress.selected_by == ()


def test_default_deny_ingress_isolates_every_pod_of_its_namespace_only() -> None:
    ps = PolicySet([DENY_INGRESS])
    v = ps.ingress(Y_A, X_A, 80, "TCP")
    assert not v.allowed
    assert v.reason == ("denied: x/deny-ingress selects this pod for ingress and no rule "
                        "allows it")
    assert v.selected_by == ("x/deny-ingress",)
    assert not ingress_ok(ps, X_B, X_A)  # same namespace too
    assert ingress_ok(ps, X_A, Y_A)  # pods in y are not selected
    assert egress_ok(ps, X_A, Y_A)  # ingress-only policy: egress stays open


def test_default_deny_egress() -> None:
    ps = PolicySet([DENY_EGRESS])
    assert not egress_ok(ps, X_A, Y_A)
    assert not egress_ok(ps, X_A, OUTSIDE)
    assert ingress_ok(ps, Y_A, X_A)
    assert egress_ok(ps, Y_A, X_A)


def test_pod_selector_picks_which_pods_are_isolated() -> None:
    ps = PolicySet([policy("only-a", {"podSelector": {"matchLabels": {"pod": "a"}}})])
    assert not ingress_ok(ps, Y_A, X_A)
    assert ingress_ok(ps, Y_A, X_B)
    assert ps.selecting(X_A, "ingress") == ("x/only-a",)
    assert ps.selecting(X_B, "ingress") == ()


def test_policy_types_default_to_ingress_plus_egress_when_egress_rules_exist() -> None:
    ingress_only = PolicySet([policy("p", {"podSelector": {}})])
    assert not ingress_ok(ingress_only, Y_A, X_A)
    assert egress_ok(ingress_only, X_A, Y_A)
    with_egress = PolicySet([policy("p", {
        "podSelector": {}, "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})])
    assert not ingress_ok(with_egress, Y_A, X_A)  # Ingress implied, no ingress rules
    assert egress_ok(with_egress, X_A, X_B)
    assert not egress_ok(with_egress, X_A, Y_A)
    # An empty egress list does not add Egress (the API defaults on len(egress) != 0).
    empty_egress = PolicySet([policy("p", {"podSelector": {}, "egress": []})])
    assert egress_ok(empty_egress, X_A, Y_A)


def test_egress_only_policy_types_leaves_ingress_open_even_with_ingress_rules() -> None:
    ps = PolicySet([policy("p", {
        "podSelector": {}, "policyTypes": ["Egress"], "ingress": [],
        "egress": [{"to": [{"podSelector": {}}]}]})])
    assert ingress_ok(ps, Y_A, X_A)
    assert egress_ok(ps, X_A, X_B)
    assert not egress_ok(ps, X_A, Y_A)


def test_allow_all_forms() -> None:
    ps = PolicySet([
        DENY_INGRESS, DENY_EGRESS,
        policy("allow-all-in", {"podSelector": {}, "ingress": [{}]}),
        policy("allow-all-out", {"podSelector": {}, "egress": [{}],
                                 "policyTypes": ["Egress"]}),
    ])
    v = ps.ingress(OUTSIDE, X_A, 443, "UDP")
    assert v.allowed and v.policy == "x/allow-all-in" and v.rule == "spec.ingress[0]"
    assert v.selected_by == ("x/allow-all-in", "x/deny-ingress")
    assert egress_ok(ps, X_A, OUTSIDE, 9, "UDP")


def test_empty_from_and_empty_ports_lists_mean_everything() -> None:
    ps = PolicySet([policy("p", {"podSelector": {}, "ingress": [{"from": [], "ports": []}]})])
    assert ingress_ok(ps, OUTSIDE, X_A, 1234, "UDP")


def test_policies_union() -> None:
    ps = PolicySet([
        policy("from-a", {"podSelector": {}, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
        policy("from-y", {"podSelector": {}, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    ])
    v = ps.ingress(X_A, X_B, 80, "TCP")
    assert v.allowed and v.policy == "x/from-a" and v.rule == "spec.ingress[0].from[0]"
    v = ps.ingress(Y_B, X_B, 80, "TCP")
    assert v.allowed and v.policy == "x/from-y"
    assert not ingress_ok(ps, Z_C, X_B)


def test_both_directions_must_allow() -> None:
    ps = PolicySet([DENY_EGRESS])
    egress, ingress = ps.judge(X_A, Y_A, 80, "TCP")
    assert not egress.allowed and egress.direction == "egress"
    assert ingress.allowed and ingress.direction == "ingress"


# --- peers ----------------------------------------------------------------------------------


def from_peers(*peers: dict[str, Any]) -> PolicySet:
    return PolicySet([policy("p", {"podSelector": {}, "ingress": [{"from": list(peers)}]})])


def test_pod_selector_alone_means_the_policy_namespace() -> None:
    ps = from_peers({"podSelector": {"matchLabels": {"pod": "a"}}})
    assert ingress_ok(ps, X_A, X_B)
    assert not ingress_ok(ps, Y_A, X_B)  # same labels, other namespace


def test_empty_pod_selector_means_every_pod_of_the_policy_namespace() -> None:
    ps = from_peers({"podSelector": {}})
    assert ingress_ok(ps, X_A, X_B)
    assert not ingress_ok(ps, Y_A, X_B)
    assert not ingress_ok(ps, OUTSIDE, X_B)


def test_namespace_selector_alone_means_every_pod_there() -> None:
    ps = from_peers({"namespaceSelector": {"matchLabels": {"ns": "y"}}})
    assert ingress_ok(ps, Y_A, X_B)
    assert ingress_ok(ps, Y_B, X_B)
    assert not ingress_ok(ps, X_A, X_B)
    everywhere = from_peers({"namespaceSelector": {}})
    assert ingress_ok(everywhere, Z_C, X_B)
    assert not ingress_ok(everywhere, OUTSIDE, X_B)  # selectors never match non-pods


def test_namespace_selector_by_name_label() -> None:
    ps = from_peers({"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "z"}}})
    assert ingress_ok(ps, Peer("10.244.3.3", "z", "q"), X_B)  # label added from the name
    assert not ingress_ok(ps, Y_A, X_B)


def test_namespace_and_pod_selector_in_one_peer_is_and() -> None:
    ps = from_peers({"namespaceSelector": {"matchLabels": {"ns": "y"}},
                     "podSelector": {"matchLabels": {"pod": "a"}}})
    assert ingress_ok(ps, Y_A, X_B)
    assert not ingress_ok(ps, Y_B, X_B)  # right namespace, wrong pod
    assert not ingress_ok(ps, X_A, X_B)  # right pod, wrong namespace


def test_namespace_and_pod_selector_as_separate_peers_is_or() -> None:
    ps = from_peers({"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                    {"podSelector": {"matchLabels": {"pod": "a"}}})
    assert ingress_ok(ps, Y_B, X_B)  # the namespace alone
    assert ingress_ok(ps, X_A, X_B)  # the pod alone (in x)
    assert not ingress_ok(ps, Z_C, X_B)
    v = ps.ingress(X_A, X_B, 80, "TCP")
    assert v.rule == "spec.ingress[0].from[1]"


def test_match_expressions() -> None:
    def ps(expr: dict[str, Any]) -> PolicySet:
        return from_peers({"namespaceSelector": {}, "podSelector": {"matchExpressions": [expr]}})

    within = ps({"key": "pod", "operator": "In", "values": ["a", "c"]})
    assert ingress_ok(within, Y_A, X_B) and ingress_ok(within, Z_C, X_B)
    assert not ingress_ok(within, Y_B, X_B)
    outside = ps({"key": "pod", "operator": "NotIn", "values": ["a"]})
    assert ingress_ok(outside, Y_B, X_B) and not ingress_ok(outside, Y_A, X_B)
    unlabelled = Peer("10.244.3.9", "y", "bare")
    assert ingress_ok(outside, unlabelled, X_B)  # NotIn matches a missing label
    exists = ps({"key": "pod", "operator": "Exists"})
    assert ingress_ok(exists, Y_A, X_B) and not ingress_ok(exists, unlabelled, X_B)
    absent = ps({"key": "pod", "operator": "DoesNotExist"})
    assert ingress_ok(absent, unlabelled, X_B) and not ingress_ok(absent, Y_A, X_B)


def test_namespace_match_expressions_with_match_labels() -> None:
    ps = from_peers({"namespaceSelector": {
        "matchLabels": {"team": "ops"},
        "matchExpressions": [{"key": "ns", "operator": "In", "values": ["z"]}]}})
    assert ingress_ok(ps, Z_C, X_B)
    assert not ingress_ok(ps, Y_A, X_B)


def test_ip_block_with_except() -> None:
    ps = from_peers({"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.7.0/24"]}})
    assert ingress_ok(ps, Peer("192.168.1.5"), X_A)
    assert not ingress_ok(ps, OUTSIDE, X_A)  # 192.168.7.7 is excepted
    assert not ingress_ok(ps, Peer("10.0.0.1"), X_A)
    assert not ingress_ok(ps, Peer("fd00::1"), X_A)
    assert not ingress_ok(ps, Peer("not-an-ip"), X_A)


def test_ip_block_matches_pod_ips_too() -> None:
    ps = from_peers({"ipBlock": {"cidr": "10.244.1.0/24"}})
    assert ingress_ok(ps, Y_A, X_B)  # 10.244.1.11: a pod, matched by IP (Calico semantics)
    assert not ingress_ok(ps, Y_B, X_B)  # 10.244.2.11


def test_ip_block_for_egress() -> None:
    ps = PolicySet([policy("out", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}]})])
    assert egress_ok(ps, X_A, OUTSIDE)
    assert not egress_ok(ps, X_A, Y_A)


def test_ipv6_ip_block() -> None:
    ps = from_peers({"ipBlock": {"cidr": "fd00::/8", "except": ["fd00:1::/32"]}})
    assert ingress_ok(ps, Peer("fd00::7"), X_A)
    assert not ingress_ok(ps, Peer("fd00:1::7"), X_A)
    assert not ingress_ok(ps, Peer("10.1.1.1"), X_A)


# --- ports ----------------------------------------------------------------------------------


def with_ports(*ports: dict[str, Any], egress: bool = False) -> PolicySet:
    if egress:
        return PolicySet([policy("p", {"podSelector": {}, "policyTypes": ["Egress"],
                                       "egress": [{"ports": list(ports)}]})])
    return PolicySet([policy("p", {"podSelector": {}, "ingress": [{"ports": list(ports)}]})])


def test_numbered_port_and_default_protocol_tcp() -> None:
    ps = with_ports({"port": 80})
    v = ps.ingress(Y_A, X_A, 80, "TCP")
    assert v.allowed and v.rule == "spec.ingress[0]" and "ports[0]" in v.reason
    assert not ingress_ok(ps, Y_A, X_A, 81, "TCP")
    assert not ingress_ok(ps, Y_A, X_A, 80, "UDP")


def test_protocol_udp_and_lowercase_traffic_protocol() -> None:
    ps = with_ports({"port": 53, "protocol": "UDP"})
    assert ingress_ok(ps, Y_A, X_A, 53, "udp")
    assert not ingress_ok(ps, Y_A, X_A, 53, "tcp")


def test_protocol_without_port_means_every_port_of_it() -> None:
    ps = with_ports({"protocol": "UDP"})
    assert ingress_ok(ps, Y_A, X_A, 1, "UDP") and ingress_ok(ps, Y_A, X_A, 65535, "UDP")
    assert not ingress_ok(ps, Y_A, X_A, 80, "TCP")


def test_sctp_rules_never_match_tcp_or_udp_traffic() -> None:
    ps = with_ports({"protocol": "SCTP"})
    assert not ingress_ok(ps, Y_A, X_A, 80, "TCP")
    assert not ingress_ok(ps, Y_A, X_A, 80, "UDP")


def test_end_port_range_is_inclusive() -> None:
    ps = with_ports({"port": 32000, "endPort": 32768})
    assert not ingress_ok(ps, Y_A, X_A, 31999)
    assert ingress_ok(ps, Y_A, X_A, 32000)
    assert ingress_ok(ps, Y_A, X_A, 32768)
    assert not ingress_ok(ps, Y_A, X_A, 32769)


def test_named_port_resolves_against_the_destination_for_ingress() -> None:
    ps = with_ports({"port": "http"})
    assert ingress_ok(ps, Y_A, X_A, 80)  # x/a names 80 "http"
    assert ingress_ok(ps, Y_A, X_B, 8080)  # x/b names 8080 "http"
    assert not ingress_ok(ps, Y_A, X_B, 80)
    assert not ingress_ok(ps, Y_A, Peer("10.244.1.99", "x", "noports"), 80)


def test_named_port_resolves_against_the_destination_for_egress() -> None:
    ps = with_ports({"port": "http"}, egress=True)
    assert egress_ok(ps, X_B, X_A, 80)  # the peer's (destination's) "http", not the source's
    assert not egress_ok(ps, X_B, X_A, 8080)
    assert not egress_ok(ps, X_A, OUTSIDE, 80)  # a non-pod has no named ports


def test_named_port_needs_the_same_protocol() -> None:
    assert not with_ports({"port": "dns"}).ingress(Y_A, X_A, 53, "UDP").allowed
    assert with_ports({"port": "dns", "protocol": "UDP"}).ingress(Y_A, X_A, 53, "UDP").allowed


def test_ports_and_peers_both_have_to_match() -> None:
    ps = PolicySet([policy("p", {"podSelector": {}, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}], "ports": [{"port": 80}]},
        {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 81}]},
    ]})])
    assert ingress_ok(ps, X_A, X_B, 80)
    assert not ingress_ok(ps, X_A, X_B, 81)
    v = ps.ingress(X_B, X_A, 81, "TCP")
    assert v.allowed and v.rule == "spec.ingress[1].from[0]"
    assert not ingress_ok(ps, X_B, X_A, 80)


# --- exceptions and special peers -----------------------------------------------------------


def test_a_pod_can_always_reach_itself() -> None:
    ps = PolicySet([DENY_INGRESS, DENY_EGRESS])
    assert ingress_ok(ps, X_A, X_A) and egress_ok(ps, X_A, X_A)


def test_a_pods_own_node_is_always_allowed_other_nodes_are_not() -> None:
    ps = PolicySet([DENY_INGRESS, DENY_EGRESS])
    v = ps.ingress(GATEWAY_N1, X_A, 80, "TCP")
    assert v.allowed and "own node" in v.reason
    assert egress_ok(ps, X_A, GATEWAY_N1)
    assert not ingress_ok(ps, GATEWAY_N1, X_B)  # x/b runs on n2


def test_policy_does_not_apply_to_non_pods() -> None:
    ps = PolicySet([DENY_INGRESS, DENY_EGRESS])
    v = ps.ingress(X_A, OUTSIDE, 80, "TCP")
    assert v.allowed and "not a pod" in v.reason


def test_dns_egress_trap_and_its_usual_fix() -> None:
    only_b = policy("only-b", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})
    assert not egress_ok(PolicySet([only_b]), X_A, KUBE_DNS, 53, "UDP")
    fixed = PolicySet([only_b, policy("allow-dns", {
        "podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"namespaceSelector": {"matchLabels": {
                        "kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]})])
    v = fixed.egress(X_A, KUBE_DNS, 53, "UDP")
    assert v.allowed and v.policy == "x/allow-dns" and v.rule == "spec.egress[0].to[0]"
    assert fixed.egress(X_A, KUBE_DNS, 53, "TCP").allowed
    assert not fixed.egress(X_A, KUBE_DNS, 80, "TCP").allowed
    by_name = PolicySet([DENY_EGRESS, policy("dns", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}]})])
    assert by_name.egress(X_A, KUBE_DNS, 53, "UDP").allowed


# --- robustness -----------------------------------------------------------------------------


def test_malformed_objects_are_contained_and_reported() -> None:
    ps = PolicySet([
        {"metadata": {"name": "no-namespace"}, "spec": {}},
        {"nonsense": True},
        policy("bad-selector", {"podSelector": {"matchExpressions": [
            {"key": "a", "operator": "Near"}]}}),
        policy("bad-peers", {"podSelector": {}, "ingress": [{"from": [
            {}, {"ipBlock": {"cidr": "300.1.1.1/8"}}, "x",
            {"podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
        policy("bad-ports", {"podSelector": {}, "ingress": [
            {"ports": [{"protocol": "ICMP"}, {"port": 1.5}, {"port": 1, "endPort": "x"}]}]}),
    ])
    assert ps.names == ["x/bad-peers", "x/bad-ports"]
    joined = "\n".join(ps.errors)
    assert "x/bad-selector: spec.podSelector" in joined
    assert "x/bad-peers: spec.ingress[0].from[0]: must specify a peer" in joined
    assert "spec.ingress[0].from[1].ipBlock.cidr" in joined
    assert "x/bad-ports: spec.ingress[0].ports[0].protocol" in joined
    assert "spec.ingress[0].ports[1].port" in joined
    assert "spec.ingress[0].ports[2].endPort" in joined
    # Broken entries match nothing; the good peer still works.
    assert ingress_ok(ps, X_A, X_B, 80)
    assert not ingress_ok(ps, Y_A, X_B, 80)


@pytest.mark.parametrize("spec", [None, [], "x", {"podSelector": "all"},
                                  {"podSelector": {}, "policyTypes": "Ingress"},
                                  {"podSelector": {}, "ingress": "all"},
                                  {"podSelector": {}, "ingress": [{"from": "x", "ports": 5}]}])
def test_garbage_spec_never_raises(spec: Any) -> None:
    ps = PolicySet([policy("g", spec)])
    ps.judge(Y_A, X_A, 80, "TCP")
    assert ps.errors


def test_verdict_word_and_peer_str() -> None:
    v = PolicySet([]).ingress(Y_A, X_A, 80, "TCP")
    assert v.word == "allowed"
    assert str(X_A) == "x/a (10.244.1.10)" and str(OUTSIDE) == "192.168.7.7"
    assert KUBE_DNS.is_pod and not OUTSIDE.is_pod
