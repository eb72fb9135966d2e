"""NetworkPolicy through the real kubectl: apply the Kubernetes docs' example, get, describe,
a refused policy (422 naming the field, nothing stored changes), namespace name labels."""

from __future__ import annotations

import json

from harness import RunningCluster

DOCS_POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 5978
"""

DENY_ALL = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress}
spec:
  podSelector: {}
"""


def test_docs_example_get_and_describe(cluster: RunningCluster) -> None:
    applied = cluster.kubectl("apply", "-f", "-", input=DOCS_POLICY)
    assert applied.returncode == 0, applied.stderr
    assert "networkpolicy.networking.k8s.io/test-network-policy created" in applied.stdout
    deny = cluster.kubectl("apply", "-f", "-", input=DENY_ALL)
    assert deny.returncode == 0, deny.stderr

    listed = cluster.kubectl("get", "netpol")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["NAME", "POD-SELECTOR", "AGE"]
    assert {tuple(r[:2]) for r in rows[1:]} == {("test-network-policy", "role=db"),
                                               ("default-deny-ingress", "<none>")}

    stored = json.loads(cluster.kubectl("get", "networkpolicy", "default-deny-ingress",
                                        "-o", "json", check=True).stdout)
    assert stored["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}

    described = cluster.kubectl("describe", "netpol", "test-network-policy")
    assert described.returncode == 0, described.stderr
    text = described.stdout
    for expected in ("PodSelector:     role=db", "Allowing ingress traffic:",
                     "To Port: 6379/TCP", "CIDR: 172.17.0.0/16", "Except: 172.17.1.0/24",
                     "NamespaceSelector: project=myproject", "PodSelector: role=frontend",
                     "Allowing egress traffic:", "To Port: 5978/TCP", "CIDR: 10.0.0.0/24",
                     "Policy Types: Ingress, Egress"):
        assert expected in text, f"{expected!r} not in:\n{text}"


def test_invalid_policy_is_refused_with_field_paths_and_nothing_changes(
        cluster: RunningCluster) -> None:
    cluster.kubectl("apply", "-f", "-", input=DOCS_POLICY, check=True)
    before = json.loads(cluster.kubectl("get", "netpol", "test-network-policy", "-o", "json",
                                        check=True).stdout)
    bad = DOCS_POLICY.replace("cidr: 172.17.0.0/16", "cidr: 172.17.0.0/33").replace(
        "port: 5978", "port: 5978\n      endPort: 10")
    refused = cluster.kubectl("apply", "-f", "-", input=bad)
    assert refused.returncode != 0
    assert 'The NetworkPolicy "test-network-policy" is invalid' in refused.stderr
    assert 'spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "172.17.0.0/33"' \
        in refused.stderr
    assert "spec.egress[0].ports[0].endPort: Invalid value: 5978: must be greater than or " \
        "equal to `port`" in refused.stderr
    after = json.loads(cluster.kubectl("get", "netpol", "test-network-policy", "-o", "json",
                                       check=True).stdout)
    assert after == before

    # A new object that is invalid is not stored at all; the API answers 422 with causes.
    code, body = cluster.api("POST", "/apis/networking.k8s.io/v1/namespaces/default/"
                             "networkpolicies",
                             {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                              "metadata": {"name": "mixed"},
                              "spec": {"ingress": [{"from": [
                                  {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}})
    assert code == 422
    assert body["details"]["causes"] == [{
        "reason": "FieldValueForbidden",
        "message": "Forbidden: may not specify both ipBlock and another peer",
        "field": "spec.ingress[0].from[0]"}]
    missing = cluster.kubectl("get", "netpol", "mixed")
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_namespaces_carry_their_name_label(cluster: RunningCluster) -> None:
    cluster.kubectl("create", "namespace", "team-a", check=True)
    # A user cannot take the label away or change it: the server puts it back.
    cluster.kubectl("label", "ns", "team-a", "kubernetes.io/metadata.name=other", "--overwrite",
                    check=True)
    cluster.kubectl("label", "ns", "kube-system", "kubernetes.io/metadata.name-", check=True)
    listed = json.loads(cluster.kubectl("get", "ns", "-o", "json", check=True).stdout)
    labels = {ns["metadata"]["name"]: ns["metadata"].get("labels", {})
              for ns in listed["items"]}
    for name in ("default", "kube-system", "kube-public", "kube-node-lease", "team-a"):
        assert labels[name].get("kubernetes.io/metadata.name") == name, labels
