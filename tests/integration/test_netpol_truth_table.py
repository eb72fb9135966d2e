"""NetworkPolicy truth tables, in the style of the upstream `netpol` e2e suite and cyclonus.

Namespaces x, y, z (labelled ns=x|y|z) hold pods a, b, c (labelled pod=a|b|c) spread over 3
nodes; each pod serves TCP and UDP on ports 80 and 81 (tests/podapps/netpol_probe.py, with
the named ports serve-80-tcp, serve-81-tcp, serve-80-udp, serve-81-udp). For each case the
policies are applied with kubectl and every (source, destination, port, protocol), 9 x 9 x 4,
is probed from inside the source pod; the whole matrix must equal the one written here by hand
from the case's YAML and the Kubernetes rules:

- a connection is allowed when the source's egress allows it AND the destination's ingress
  allows it; a pod no policy selects (for that direction) allows everything;
- a selected pod allows the union of the rules of every policy selecting it;
- a pod cannot block traffic to itself (the docs' "exception: a pod cannot block access to
  itself"), so the diagonal is always allowed.

The cluster runs with `--policy-reject`: a denied connection is refused at once instead of
timing out, so a matrix takes about a second. Each case is reset by deleting every policy and
waiting until the matrix is all-allowed again.
"""

from __future__ import annotations

import asyncio
import io
import re
import string
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import pytest
from harness import RunningCluster, start_cluster, stop_cluster, wait_for
from netpol_probing import probe_all, probe_from

from podnet.execclient import exec_in_pod

pytestmark = pytest.mark.kubectl

NAMESPACES = ("x", "y", "z")
NAMES = ("a", "b", "c")
PORTS = (80, 81)
PROTOCOLS = ("tcp", "udp")
SERVICES = [(port, proto) for proto in PROTOCOLS for port in PORTS]
POLL_S = 20.0


class Pod(NamedTuple):
    ns: str
    name: str

    def __str__(self) -> str:
        return f"{self.ns}/{self.name}"


PODS = [Pod(ns, name) for ns in NAMESPACES for name in NAMES]
# Every node holds one pod of each namespace and of each name, so there are same-node and
# cross-node pairs of every kind.
NODE = {pod: f"node-{(i + j) % 3 + 1}" for i, ns in enumerate(NAMESPACES)
        for j, name in enumerate(NAMES) for pod in [Pod(ns, name)]}
xa, xb, xc, ya, yb, yc, za, zb, zc = PODS

Rule = Callable[[Pod, Pod, int, str], bool]
Key = tuple[Pod, Pod, int, str]


def anything(s: Pod, d: Pod, port: int, proto: str) -> bool:
    return True


@dataclass
class Step:
    """Apply `policies` (after running `kubectl` commands `run`), then expect: a connection
    s -> d on port/proto is allowed iff s == d or (egress(...) and ingress(...))."""
    policies: str = ""
    ingress: Rule = anything
    egress: Rule = anything
    run: list[list[str]] = field(default_factory=list)


@dataclass
class Case:
    name: str
    steps: list[Step]
    cleanup: list[list[str]] = field(default_factory=list)


def policy(ns: str, name: str, spec: str) -> str:
    """One NetworkPolicy document; `spec` is its YAML body."""
    return (f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            f"metadata: {{name: {name}, namespace: '{ns}'}}\nspec:\n"
            + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n---\n")


DENY_INGRESS_X = policy("x", "deny-ingress", """
    podSelector: {}
    policyTypes: [Ingress]
""")
DENY_EGRESS_X = policy("x", "deny-egress", """
    podSelector: {}
    policyTypes: [Egress]
""")
A_FROM_Y_TCP80 = policy("x", "a-from-y-tcp80", """
    podSelector: {matchLabels: {pod: a}}
    ingress:
    - from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
      ports: [{port: 80}]
""")


def tcp(port: int) -> Callable[[int, str], bool]:
    return lambda p, proto: p == port and proto == "tcp"


CASES = [
    # -- default deny and allow-all forms
    Case("deny all ingress in x", [Step(DENY_INGRESS_X, ingress=lambda s, d, p, r: d.ns != "x")]),
    Case("deny all egress in x", [Step(DENY_EGRESS_X, egress=lambda s, d, p, r: s.ns != "x")]),
    Case("deny all ingress and egress in x", [Step(policy("x", "deny-all", """
        podSelector: {}
        policyTypes: [Ingress, Egress]
    """), ingress=lambda s, d, p, r: d.ns != "x", egress=lambda s, d, p, r: s.ns != "x")]),
    Case("allow-all ingress unions with deny-all ingress", [
        Step(DENY_INGRESS_X, ingress=lambda s, d, p, r: d.ns != "x"),
        Step(policy("x", "allow-all-ingress", """
            podSelector: {}
            ingress: [{}]
        """))]),
    Case("allow-all egress unions with deny-all egress", [
        Step(DENY_EGRESS_X, egress=lambda s, d, p, r: s.ns != "x"),
        Step(policy("x", "allow-all-egress", """
            podSelector: {}
            policyTypes: [Egress]
            egress: [{}]
        """))]),
    Case("no policyTypes and no rules: ingress isolation of the selected pod only", [
        Step(policy("x", "isolate-a", """
            podSelector: {matchLabels: {pod: a}}
        """), ingress=lambda s, d, p, r: d != xa)]),
    Case("no policyTypes with egress rules: Ingress and Egress both apply", [
        Step(policy("x", "a-egress-in-x", """
            podSelector: {matchLabels: {pod: a}}
            egress: [{to: [{podSelector: {}}]}]
        """), ingress=lambda s, d, p, r: d != xa,
            egress=lambda s, d, p, r: s != xa or d.ns == "x")]),
    Case("specific podSelector isolates only that pod, both directions", [
        Step(policy("x", "isolate-b", """
            podSelector: {matchLabels: {pod: b}}
            policyTypes: [Ingress, Egress]
        """), ingress=lambda s, d, p, r: d != xb, egress=lambda s, d, p, r: s != xb)]),
    Case("allow from the same namespace, in every namespace", [Step(
        "".join(policy(ns, "same-ns", """
            podSelector: {}
            ingress: [{from: [{podSelector: {}}]}]
        """) for ns in NAMESPACES), ingress=lambda s, d, p, r: s.ns == d.ns)]),
    # -- peers: podSelector, namespaceSelector, AND vs OR, matchExpressions
    Case("podSelector peer: same namespace only", [Step(policy("x", "a-from-b", """
        podSelector: {matchLabels: {pod: a}}
        ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
    """), ingress=lambda s, d, p, r: d != xa or s == xb)]),
    Case("namespaceSelector peer", [Step(policy("x", "a-from-ns-y", """
        podSelector: {matchLabels: {pod: a}}
        ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]}]
    """), ingress=lambda s, d, p, r: d != xa or s.ns == "y")]),
    Case("namespaceSelector and podSelector in one peer: AND", [Step(policy("x", "a-from-yb", """
        podSelector: {matchLabels: {pod: a}}
        ingress:
        - from:
          - namespaceSelector: {matchLabels: {ns: "y"}}
            podSelector: {matchLabels: {pod: b}}
    """), ingress=lambda s, d, p, r: d != xa or s == yb)]),
    Case("namespaceSelector and podSelector as two peers: OR", [Step(policy("x", "a-y-or-b", """
        podSelector: {matchLabels: {pod: a}}
        ingress:
        - from:
          - namespaceSelector: {matchLabels: {ns: "y"}}
          - podSelector: {matchLabels: {pod: b}}
    """), ingress=lambda s, d, p, r: d != xa or s.ns == "y" or s == xb)]),
    Case("empty namespaceSelector: pods c of every namespace", [Step(policy("x", "from-any-c", """
        podSelector: {}
        ingress:
        - from:
          - namespaceSelector: {}
            podSelector: {matchLabels: {pod: c}}
    """), ingress=lambda s, d, p, r: d.ns != "x" or s.name == "c")]),
    Case("namespaceSelector on kubernetes.io/metadata.name In", [Step(policy("x", "from-yz", """
        podSelector: {}
        ingress:
        - from:
          - namespaceSelector:
              matchExpressions:
              - {key: kubernetes.io/metadata.name, operator: In, values: ["y", "z"]}
    """), ingress=lambda s, d, p, r: d.ns != "x" or s.ns in ("y", "z"))]),
    Case("matchExpressions In / NotIn on pods", [Step(policy("x", "bc-from-not-c", """
        podSelector:
          matchExpressions: [{key: pod, operator: In, values: [b, c]}]
        ingress:
        - from:
          - podSelector:
              matchExpressions: [{key: pod, operator: NotIn, values: [c]}]
    """), ingress=lambda s, d, p, r: d not in (xb, xc) or (s.ns == "x" and s.name != "c"))]),
    Case("matchExpressions Exists on pods, NotIn on namespaces", [Step(
        policy("x", "a-from-x", """
            podSelector: {matchLabels: {pod: a}}
            ingress: [{from: [{podSelector: {matchExpressions: [{key: pod, operator: Exists}]}}]}]
        """) + policy("x", "b-from-not-x", """
            podSelector: {matchLabels: {pod: b}}
            ingress:
            - from:
              - namespaceSelector:
                  matchExpressions: [{key: ns, operator: NotIn, values: ["x"]}]
        """), ingress=lambda s, d, p, r: (d != xa or s.ns == "x") and (d != xb or s.ns != "x"))]),
    Case("matchLabels and matchExpressions in one selector: AND", [Step(policy("x", "a-from-z", """
        podSelector: {matchLabels: {pod: a}}
        ingress:
        - from:
          - namespaceSelector:
              matchLabels: {kubernetes.io/metadata.name: "z"}
              matchExpressions: [{key: ns, operator: In, values: ["y", "z"]}]
    """), ingress=lambda s, d, p, r: d != xa or s.ns == "z")]),
    Case("empty namespaceSelector alone: every pod of every namespace", [Step(
        policy("x", "b-udp80-from-all", """
            podSelector: {matchLabels: {pod: b}}
            ingress:
            - from: [{namespaceSelector: {}}]
              ports: [{protocol: UDP, port: 80}]
        """), ingress=lambda s, d, p, r: d != xb or (p, r) == (80, "udp"))]),
    Case("empty from: every source, on the rule's ports", [Step(policy("x", "a-81-from-all", """
        podSelector: {matchLabels: {pod: a}}
        ingress:
        - from: []
          ports: [{port: 81}, {protocol: UDP, port: 81}]
    """), ingress=lambda s, d, p, r: d != xa or p == 81)]),
    # -- ports and protocols
    Case("port by number (TCP by default)", [Step(policy("x", "tcp-80", """
        podSelector: {}
        ingress: [{ports: [{port: 80}]}]
    """), ingress=lambda s, d, p, r: d.ns != "x" or (p, r) == (80, "tcp"))]),
    Case("UDP-only rule", [Step(policy("x", "udp-81", """
        podSelector: {}
        ingress: [{ports: [{protocol: UDP, port: 81}]}]
    """), ingress=lambda s, d, p, r: d.ns != "x" or (p, r) == (81, "udp"))]),
    Case("protocol without a port: every UDP port", [Step(policy("x", "udp-any", """
        podSelector: {}
        ingress: [{ports: [{protocol: UDP}]}]
    """), ingress=lambda s, d, p, r: d.ns != "x" or r == "udp")]),
    Case("named TCP port", [Step(policy("x", "a-serve-81-tcp", """
        podSelector: {matchLabels: {pod: a}}
        ingress: [{ports: [{port: serve-81-tcp}]}]
    """), ingress=lambda s, d, p, r: d != xa or (p, r) == (81, "tcp"))]),
    Case("named UDP port", [Step(policy("x", "a-serve-80-udp", """
        podSelector: {matchLabels: {pod: a}}
        ingress: [{ports: [{protocol: UDP, port: serve-80-udp}]}]
    """), ingress=lambda s, d, p, r: d != xa or (p, r) == (80, "udp"))]),
    Case("endPort range over both ports", [Step(policy("x", "tcp-80-81", """
        podSelector: {}
        ingress: [{ports: [{protocol: TCP, port: 80, endPort: 81}]}]
    """), ingress=lambda s, d, p, r: d.ns != "x" or r == "tcp")]),
    Case("endPort range starting at 81, UDP", [Step(policy("x", "udp-81-90", """
        podSelector: {}
        ingress: [{ports: [{protocol: UDP, port: 81, endPort: 90}]}]
    """), ingress=lambda s, d, p, r: d.ns != "x" or (p, r) == (81, "udp"))]),
    Case("peers and ports in one rule: AND", [Step(policy("x", "a-from-z-udp80", """
        podSelector: {matchLabels: {pod: a}}
        ingress:
        - from: [{namespaceSelector: {matchLabels: {ns: "z"}}}]
          ports: [{protocol: UDP, port: 80}]
    """), ingress=lambda s, d, p, r: d != xa or (s.ns == "z" and (p, r) == (80, "udp")))]),
    Case("two rules in one policy: OR", [Step(policy("x", "a-two-rules", """
        podSelector: {matchLabels: {pod: a}}
        ingress:
        - from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
          ports: [{port: 80}]
        - from: [{podSelector: {matchLabels: {pod: c}}}]
    """), ingress=lambda s, d, p, r: d != xa or (s.ns == "y" and (p, r) == (80, "tcp"))
         or s == xc)]),
    # -- several policies, other namespaces, updates
    Case("two policies selecting one pod union", [
        Step(A_FROM_Y_TCP80,
             ingress=lambda s, d, p, r: d != xa or (s.ns == "y" and tcp(80)(p, r))),
        Step(policy("x", "a-from-z-tcp81", """
            podSelector: {matchLabels: {pod: a}}
            ingress:
            - from: [{namespaceSelector: {matchLabels: {ns: "z"}}}]
              ports: [{port: 81}]
        """), ingress=lambda s, d, p, r: d != xa or (s.ns == "y" and tcp(80)(p, r))
             or (s.ns == "z" and tcp(81)(p, r)))]),
    Case("a policy applies only in its own namespace", [Step(policy("y", "isolate-a", """
        podSelector: {matchLabels: {pod: a}}
        policyTypes: [Ingress]
    """), ingress=lambda s, d, p, r: d != ya)]),
    Case("a changed policy replaces the old rules", [
        Step(policy("x", "a-from", """
            podSelector: {matchLabels: {pod: a}}
            ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]}]
        """), ingress=lambda s, d, p, r: d != xa or s.ns == "y"),
        Step(policy("x", "a-from", """
            podSelector: {matchLabels: {pod: a}}
            ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "z"}}}]}]
        """), ingress=lambda s, d, p, r: d != xa or s.ns == "z")]),
    Case("a pod's new label brings it into a podSelector", [
        Step(policy("x", "a-from-clients", """
            podSelector: {matchLabels: {pod: a}}
            ingress: [{from: [{podSelector: {matchLabels: {role: client}}}]}]
        """), ingress=lambda s, d, p, r: d != xa),
        Step(run=[["label", "pod", "-n", "x", "c", "role=client"]],
             ingress=lambda s, d, p, r: d != xa or s == xc)],
        cleanup=[["label", "pod", "-n", "x", "c", "role-"]]),
    Case("a namespace's new label brings it into a namespaceSelector", [
        Step(policy("x", "a-from-blue", """
            podSelector: {matchLabels: {pod: a}}
            ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]
        """), ingress=lambda s, d, p, r: d != xa),
        Step(run=[["label", "namespace", "z", "team=blue"]],
             ingress=lambda s, d, p, r: d != xa or s.ns == "z")],
        cleanup=[["label", "namespace", "z", "team-"]]),
    # -- egress
    Case("egress to one namespace", [Step(policy("x", "egress-to-y", """
        podSelector: {}
        policyTypes: [Egress]
        egress: [{to: [{namespaceSelector: {matchLabels: {ns: "y"}}}]}]
    """), egress=lambda s, d, p, r: s.ns != "x" or d.ns == "y")]),
    Case("egress to one pod of another namespace on one port", [Step(policy("x", "a-to-zb", """
        podSelector: {matchLabels: {pod: a}}
        policyTypes: [Egress]
        egress:
        - to:
          - namespaceSelector: {matchLabels: {ns: "z"}}
            podSelector: {matchLabels: {pod: b}}
          ports: [{port: 81}]
    """), egress=lambda s, d, p, r: s != xa or (d == zb and tcp(81)(p, r)))]),
    Case("egress by named port", [Step(policy("x", "b-to-serve-80-udp", """
        podSelector: {matchLabels: {pod: b}}
        policyTypes: [Egress]
        egress: [{ports: [{protocol: UDP, port: serve-80-udp}]}]
    """), egress=lambda s, d, p, r: s != xb or (p, r) == (80, "udp"))]),
    Case("egress of UDP only", [Step(policy("x", "udp-out", """
        podSelector: {}
        policyTypes: [Egress]
        egress: [{ports: [{protocol: UDP}]}]
    """), egress=lambda s, d, p, r: s.ns != "x" or r == "udp")]),
    Case("egress from x to y and ingress to y from x: both ends must allow", [Step(
        policy("x", "egress-to-y", """
            podSelector: {}
            policyTypes: [Egress]
            egress: [{to: [{namespaceSelector: {matchLabels: {ns: "y"}}}]}]
        """) + policy("y", "ingress-from-x", """
            podSelector: {}
            ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "x"}}}]}]
        """), egress=lambda s, d, p, r: s.ns != "x" or d.ns == "y",
        ingress=lambda s, d, p, r: d.ns != "y" or s.ns == "x")]),
    Case("ingress and egress rules in one policy", [Step(policy("x", "b-both", """
        podSelector: {matchLabels: {pod: b}}
        policyTypes: [Ingress, Egress]
        ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "z"}}}]}]
        egress: [{to: [{podSelector: {matchLabels: {pod: c}}}]}]
    """), ingress=lambda s, d, p, r: d != xb or s.ns == "z",
        egress=lambda s, d, p, r: s != xb or d == xc)]),
    # -- ipBlock (cidrs from the pods' real IPs and the nodes' podCIDRs)
    Case("ipBlock with except, ingress", [Step(policy("x", "a-from-node2-but-ya", """
        podSelector: {matchLabels: {pod: a}}
        ingress:
        - from:
          - ipBlock: {cidr: $cidr_node_2, except: [$ip_y_a/32]}
    """), ingress=lambda s, d, p, r: d != xa or (NODE[s] == "node-2" and s != ya))]),
    Case("ipBlock /32 peers, ingress", [Step(policy("y", "c-from-two-ips", """
        podSelector: {matchLabels: {pod: c}}
        ingress:
        - from:
          - ipBlock: {cidr: $ip_x_a/32}
          - ipBlock: {cidr: $ip_z_b/32}
    """), ingress=lambda s, d, p, r: d != yc or s in (xa, zb))]),
    Case("ipBlock with except, egress", [Step(policy("x", "not-to-node3", """
        podSelector: {}
        policyTypes: [Egress]
        egress:
        - to:
          - ipBlock: {cidr: 10.244.0.0/16, except: [$cidr_node_3]}
    """), egress=lambda s, d, p, r: s.ns != "x" or NODE[d] != "node-3")]),
    Case("ipBlock 0.0.0.0/0 except the pod network: no pod", [Step(policy("x", "outside-only", """
        podSelector: {}
        policyTypes: [Egress]
        egress:
        - to:
          - ipBlock: {cidr: 0.0.0.0/0, except: [10.244.0.0/16]}
    """), egress=lambda s, d, p, r: s.ns != "x")]),
]


# -- the cluster and the probes

PROBE_PORTS = """\
    ports:
    - {name: serve-80-tcp, containerPort: 80, protocol: TCP}
    - {name: serve-81-tcp, containerPort: 81, protocol: TCP}
    - {name: serve-80-udp, containerPort: 80, protocol: UDP}
    - {name: serve-81-udp, containerPort: 81, protocol: UDP}
"""


def manifests() -> str:
    docs = [f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: '{ns}', labels: {{ns: '{ns}'}}}}\n"
            for ns in NAMESPACES]
    docs += [f"apiVersion: v1\nkind: Pod\nmetadata: {{name: '{p.name}', namespace: '{p.ns}', "
             f"labels: {{pod: '{p.name}'}}}}\nspec:\n  nodeName: {NODE[p]}\n  containers:\n"
             f"  - name: probe\n    image: py:podapps.netpol_probe:serve\n{PROBE_PORTS}"
             for p in PODS]
    return "---\n".join(docs)


@dataclass
class Lab:
    cluster: RunningCluster
    ips: dict[Pod, str]
    values: dict[str, str]      # what $placeholders in policies stand for

    def kubectl(self, *args: str, input: str | None = None) -> str:
        result = self.cluster.kubectl(*args, input=input)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return str(result.stdout)

    def matrix(self) -> dict[Key, str]:
        """Every source pod probes every destination on every port and protocol, all at once:
        `.` answered by the destination, `X` no answer, `?` answered by another pod."""
        rows = probe_all(self.cluster, PODS, [self.ips[d] for d in PODS])
        out: dict[Key, str] = {}
        for src, found in zip(PODS, rows, strict=True):
            for dst in PODS:
                for port, proto in SERVICES:
                    outcome = found.get((self.ips[dst], port, proto), "missing")
                    out[(src, dst, port, proto)] = (
                        "." if outcome == f"ok {dst}" else "?" if outcome.startswith("ok ")
                        else "X")
        return out

    def remove_policies(self) -> None:
        self.kubectl("delete", "networkpolicy", "--all", "--all-namespaces")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    cluster = start_cluster(tmp_path_factory.mktemp("netpol"), 3, "--policy-reject")
    try:
        result = cluster.kubectl("apply", "-f", "-", input=manifests())
        assert result.returncode == 0, result.stderr
        ips = {p: cluster.running_pod(p.name, p.ns, timeout_s=60)["status"]["podIP"]
               for p in PODS}
        values = {f"ip_{p.ns}_{p.name}": ip for p, ip in ips.items()}
        values |= {f"cidr_{n['name'].replace('-', '_')}": n["podCIDR"]
                   for n in cluster.info["nodes"]}
        lab = Lab(cluster, ips, values)
        wait_for(lambda: all_allowed(lab.matrix()), 30, what="every pod answering every probe")
        yield lab
    finally:
        stop_cluster(cluster)


def expected(step: Step) -> dict[Key, str]:
    return {(s, d, port, proto): "." if s == d or (step.egress(s, d, port, proto)
                                                   and step.ingress(s, d, port, proto)) else "X"
            for s in PODS for d in PODS for port, proto in SERVICES}


def all_allowed(matrix: dict[Key, str]) -> bool:
    return all(v == "." for v in matrix.values())


def render(want: dict[Key, str], got: dict[Key, str]) -> str:
    """Expected and actual side by side: rows are sources, each column group a destination,
    its four cells tcp/80 tcp/81 udp/80 udp/81."""
    head = "     " + " ".join(f"{d!s:<4}" for d in PODS)
    lines = [f"{'expected':<51}actual   (cells: tcp/80 tcp/81 udp/80 udp/81; . allowed, "
             f"X denied, ? wrong pod answered)", f"{head}  {head}"]
    for s in PODS:
        cells = [" ".join("".join(m[(s, d, port, proto)] for port, proto in SERVICES)
                          for d in PODS) for m in (want, got)]
        mark = "   <- differs" if cells[0] != cells[1] else ""
        lines.append(f"{s!s:<5}{cells[0]}  {s!s:<5}{cells[1]}{mark}")
    wrong = [f"{s} -> {d}:{port}/{proto} expected {'allowed' if want[k] == '.' else 'denied'}"
             for k in want if want[k] != got[k] for s, d, port, proto in [k]]
    return "\n".join(lines + wrong[:20])


def check(lab: Lab, want: dict[Key, str], what: str) -> None:
    last: dict[Key, str] = {}

    def matches() -> bool:
        nonlocal last
        last = lab.matrix()
        return last == want
    try:
        wait_for(matches, POLL_S, interval_s=0.05, what=what)
        return
    except AssertionError:
        pass
    pytest.fail(f"{what}: the matrix never became the expected one within {POLL_S}s\n"
                f"{render(want, last)}", pytrace=False)


@pytest.mark.parametrize("case", CASES, ids=[re.sub(r"\W+", "-", c.name) for c in CASES])
def test_truth_table(lab: Lab, case: Case) -> None:
    try:
        for n, step in enumerate(case.steps, 1):
            for argv in step.run:
                lab.kubectl(*argv)
            if step.policies:
                yaml = string.Template(step.policies).substitute(lab.values)
                lab.kubectl("apply", "-f", "-", input=yaml)
            check(lab, expected(step), f"{case.name}, step {n}")
    finally:
        for argv in case.cleanup:
            lab.kubectl(*argv)
        lab.remove_policies()
        check(lab, expected(Step()), "every policy removed: all allowed again")


def test_every_step_changes_the_matrix() -> None:
    """Each step's expected matrix differs from the one before it (all-allowed before the
    first), so polling for it cannot pass before the step has taken effect."""
    assert len(CASES) >= 30
    for case in CASES:
        before = expected(Step())
        for n, step in enumerate(case.steps, 1):
            want = expected(step)
            assert want != before, f"{case.name}, step {n}: nothing to wait for"
            before = want


# -- DNS and ClusterIPs

def run_in(lab: Lab, pod: Pod, *argv: str) -> tuple[int, str]:
    out, err = io.BytesIO(), io.BytesIO()
    code = asyncio.run(exec_in_pod(lab.cluster.info["api"], lab.cluster.token, pod.ns, pod.name,
                                   None, list(argv), stdin=False, stdout=out, stderr=err,
                                   ssl_context=lab.cluster.ssl))
    return code, (out.getvalue() + err.getvalue()).decode(errors="replace")


WEB_IN_Y = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: 'y'}
spec:
  selector: {pod: a}
  ports:
  - {name: tcp, port: 8080, targetPort: 80}
  - {name: udp, port: 8080, targetPort: 80, protocol: UDP}
"""
ALLOW_DNS_X = policy("x", "allow-dns", """
    podSelector: {}
    policyTypes: [Egress]
    egress:
    - to:
      - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
        podSelector: {matchLabels: {k8s-app: kube-dns}}
      ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
""")
EGRESS_X_TO_Y = policy("x", "egress-to-y", """
    podSelector: {}
    policyTypes: [Egress]
    egress: [{to: [{namespaceSelector: {matchLabels: {ns: "y"}}}]}]
""")


@pytest.fixture
def web(lab: Lab) -> Iterator[str]:
    """A ClusterIP Service web.y (port 8080) in front of y/a's port 80; its ClusterIP."""
    lab.kubectl("apply", "-f", "-", input=WEB_IN_Y)
    try:
        yield lab.kubectl("get", "service", "web", "-n", "y", "-o",
                          "jsonpath={.spec.clusterIP}")
    finally:
        lab.remove_policies()
        lab.kubectl("delete", "service", "web", "-n", "y")
        check(lab, expected(Step()), "every policy removed: all allowed again")


def test_dns_egress_trap(lab: Lab, web: str) -> None:
    """Default-deny egress also denies DNS (kube-dns is a pod in kube-system, like any other):
    the lookup of a Service fails until a rule allows UDP/TCP 53 to kube-dns; and the lookup
    working does not mean the connection does, which needs its own egress rule."""
    assert run_in(lab, xa, "nslookup", "web.y")[0] == 0
    lab.kubectl("apply", "-f", "-", input=DENY_EGRESS_X)
    wait_for(lambda: run_in(lab, xa, "nslookup", "web.y")[0] != 0, POLL_S,
             what="nslookup from x/a failing under default-deny egress")
    assert run_in(lab, yb, "nslookup", "web.y")[0] == 0       # other namespaces: untouched
    lab.kubectl("apply", "-f", "-", input=ALLOW_DNS_X)

    def answered() -> str | None:
        code, out = run_in(lab, xa, "nslookup", "web.y")
        return out if code == 0 else None
    out = wait_for(answered, POLL_S, what="nslookup from x/a working again with the kube-dns rule")
    assert web in out
    # DNS answers, but the Service's endpoint is still out of x's egress.
    outcome = asyncio.run(probe_from(lab.cluster, "x", "a", [web], [8080], ["tcp"]))
    assert outcome[(web, 8080, "tcp")] == "refused"
    lab.kubectl("apply", "-f", "-", input=EGRESS_X_TO_Y)
    wait_for(lambda: asyncio.run(probe_from(lab.cluster, "x", "a", [web], [8080], ["tcp"]))
             [(web, 8080, "tcp")] == "ok y/a", POLL_S,
             what="x/a reaching web.y through its ClusterIP")


def test_clusterip_is_judged_against_the_endpoint(lab: Lab, web: str) -> None:
    """Through a ClusterIP, ingress is judged at the backend pod with the client pod as source,
    and egress against the endpoint (y/a, port 80), not the Service's virtual IP and port; for
    TCP and for UDP."""
    lab.kubectl("apply", "-f", "-", input=policy("y", "a-from-z", """
        podSelector: {matchLabels: {pod: a}}
        ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "z"}}}]}]
    """) + policy("z", "c-to-y-only", """
        podSelector: {matchLabels: {pod: c}}
        policyTypes: [Egress]
        egress:
        - to: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
          ports: [{port: 80}]
    """))
    # True: answered by y/a through the Service; False: no answer.
    want = {(xb, "tcp"): False, (xb, "udp"): False,     # y/a's ingress: only from z
            (yb, "tcp"): False, (yb, "udp"): False,
            (zb, "tcp"): True, (zb, "udp"): True,
            (zc, "tcp"): True,                          # z/c's egress: TCP 80 of y's pods
            (zc, "udp"): False}
    sources = [xb, yb, zb, zc]
    got: dict[tuple[Pod, str], bool] = {}

    def matches() -> bool:
        rows = probe_all(lab.cluster, sources, [web], [8080], PROTOCOLS)
        for src, row in zip(sources, rows, strict=True):
            for proto in PROTOCOLS:
                got[(src, proto)] = row[(web, 8080, proto)] == "ok y/a"
        return got == want
    try:
        wait_for(matches, POLL_S, what="ClusterIP verdicts")
        return
    except AssertionError:
        pass
    pytest.fail(f"through the ClusterIP, within {POLL_S}s still: " + ", ".join(
        f"{src} {proto} {'answered' if got.get((src, proto)) else 'not answered'}"
        for (src, proto) in want if got.get((src, proto)) != want[(src, proto)]),
        pytrace=False)
