"""The NetworkPolicy YAML of the Kubernetes docs' Network Policies page
(https://kubernetes.io/docs/concepts/services-networking/network-policies/), applied unchanged
from examples/netpol/docs/, with the outcomes the page states. Pods, namespaces and labels are
arranged around the policies, never the other way round:

- the page's test-network-policy allows ingress from the ipBlock 172.17.0.0/16 except
  172.17.1.0/24, so one cluster runs its pod network in 172.17.0.0/16 (node-1 gets
  172.17.1.0/24, the excepted block; node-2 and node-3 172.17.2.0/24 and 172.17.3.0/24);
- its egress goes to 10.0.0.0/24 only, so a second cluster runs its pods in 10.0.0.0/22 with
  /25 node blocks: node-1's 10.0.0.128/25 is inside 10.0.0.0/24, the other nodes' are not.

Every pod runs tests/podapps/netpol_probe.py, serving TCP and UDP on the ports its args name.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import RunningCluster, start_cluster, stop_cluster, wait_for
from netpol_probing import probe_all

pytestmark = pytest.mark.kubectl

DOCS = Path(__file__).resolve().parents[2] / "examples" / "netpol" / "docs"
POLL_S = 20.0


@dataclass
class Docs:
    cluster: RunningCluster
    ips: dict[str, str]             # "ns/pod" -> pod IP

    def kubectl(self, *args: str, input: str | None = None) -> str:
        result = self.cluster.kubectl(*args, input=input)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return str(result.stdout)

    def apply(self, name: str, namespace: str | None = None) -> None:
        self.kubectl("apply", *(["-n", namespace] if namespace else []), "-f", str(DOCS / name))

    def expect(self, want: dict[tuple[str, str, int, str], bool], what: str) -> None:
        """Poll until every (src, dst, port, proto) in `want` is allowed (answered by dst) or
        denied as given; on time-out, fail listing the probes that differ."""
        sources = sorted({src for src, _, _, _ in want})
        targets = sorted({self.ips[dst] for _, dst, _, _ in want})
        ports = sorted({port for _, _, port, _ in want})
        got: dict[tuple[str, str, int, str], bool] = {}

        def matches() -> bool:
            rows = probe_all(self.cluster, [(s.split("/")[0], s.split("/")[1]) for s in sources],
                             targets, ports)
            found = dict(zip(sources, rows, strict=True))
            for key in want:
                src, dst, port, proto = key
                got[key] = found[src].get((self.ips[dst], port, proto)) == f"ok {dst}"
            return got == want
        try:
            wait_for(matches, POLL_S, interval_s=0.05, what=what)
            return
        except AssertionError:
            pass
        wrong = [f"{src} -> {dst}:{port}/{proto} expected {'allowed' if want[k] else 'denied'}"
                 for k in want if got.get(k) != want[k] for src, dst, port, proto in [k]]
        pytest.fail(f"{what}: within {POLL_S}s, still\n  " + "\n  ".join(wrong), pytrace=False)


def probe_pod(ns: str, name: str, node: str, ports: list[int],
              labels: str = "{}") -> tuple[str, str]:
    """("ns/name", the Pod's manifest) for a probe pod serving `ports` on `node`."""
    args = ", ".join(f'"{p}"' for p in ports)
    return f"{ns}/{name}", textwrap.dedent(f"""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: {name}, namespace: {ns}, labels: {labels}}}
        spec:
          nodeName: {node}
          containers:
          - {{name: probe, image: "py:podapps.netpol_probe:serve", args: [{args}]}}
        ---
        """)


def start(tmp: Path, env: dict[str, str], namespaces: str,
          pods: list[tuple[str, str]]) -> Docs:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        cluster = start_cluster(tmp, 3, "--policy-reject")
    try:
        result = cluster.kubectl("apply", "-f", "-",
                                 input=namespaces + "".join(yaml for _, yaml in pods))
        assert result.returncode == 0, result.stderr
        ips = {}
        for key, _ in pods:
            ns, name = key.split("/")
            ips[key] = cluster.running_pod(name, ns, timeout_s=60)["status"]["podIP"]
        return Docs(cluster, ips)
    except BaseException:
        stop_cluster(cluster)
        raise


NAMESPACES_172 = """\
apiVersion: v1
kind: Namespace
metadata: {name: myproject, labels: {project: myproject}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
"""


@pytest.fixture(scope="module")
def net172(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docs]:
    """Pods in 172.17.0.0/16: node-1 holds the excepted 172.17.1.0/24."""
    pods = [
        probe_pod("default", "db", "node-2", [6379, 80], "{role: db}"),
        probe_pod("default", "frontend", "node-1", [80], "{role: frontend}"),
        probe_pod("default", "plain", "node-1", [80]),
        probe_pod("default", "plain3", "node-3", [80]),
        probe_pod("myproject", "client", "node-1", [80]),
        probe_pod("other", "near", "node-1", [80]),
        probe_pod("other", "far", "node-3", [80]),
        probe_pod("other", "db", "node-2", [6379, 80], "{role: db}"),
        probe_pod("demo", "p", "node-1", [80]),
        probe_pod("demo", "q", "node-2", [80]),
    ]
    docs = start(tmp_path_factory.mktemp("netpol-docs-172"),
                 {"PODNET_CLUSTER_CIDR": "172.17.0.0/16"}, NAMESPACES_172, pods)
    try:
        assert docs.ips["default/frontend"].startswith("172.17.1.")
        assert docs.ips["default/plain3"].startswith("172.17.3.")
        yield docs
    finally:
        stop_cluster(docs.cluster)


@pytest.fixture(scope="module")
def net10(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docs]:
    """Pods in 10.0.0.0/22 with /25 node blocks: only node-1's pods are in 10.0.0.0/24."""
    ports = [5978, 5979, 32000, 32768, 32769, 80]
    pods = [
        probe_pod("default", "db", "node-2", [80], "{role: db}"),
        probe_pod("default", "inside", "node-1", ports),
        probe_pod("default", "outside", "node-3", ports),
    ]
    docs = start(tmp_path_factory.mktemp("netpol-docs-10"),
                 {"PODNET_CLUSTER_CIDR": "10.0.0.0/22", "PODNET_NODE_CIDR_MASK": "25"}, "",
                 pods)
    try:
        assert docs.ips["default/inside"].startswith("10.0.0.")
        assert not docs.ips["default/outside"].startswith("10.0.0.")
        yield docs
    finally:
        stop_cluster(docs.cluster)


def reset(docs: Docs, *namespaces: str) -> None:
    for ns in namespaces:
        docs.kubectl("delete", "networkpolicy", "--all", "-n", ns)


def test_default_deny_ingress_then_allow_all_ingress(net172: Docs) -> None:
    """"Default deny all ingress traffic": every pod in the namespace is isolated for
    ingress, egress is unchanged; "allow all ingress" then opens it again even with the
    deny policy in place."""
    try:
        net172.apply("network-policy-default-deny-ingress.yaml", "demo")
        net172.expect({("demo/p", "demo/q", 80, "tcp"): False,
                       ("demo/p", "demo/q", 80, "udp"): False,
                       ("other/far", "demo/p", 80, "tcp"): False,
                       ("demo/p", "other/far", 80, "tcp"): True,
                       ("demo/p", "other/far", 80, "udp"): True}, "default-deny-ingress")
        net172.apply("network-policy-allow-all-ingress.yaml", "demo")
        net172.expect({("demo/p", "demo/q", 80, "tcp"): True,
                       ("demo/p", "demo/q", 80, "udp"): True,
                       ("other/far", "demo/p", 80, "tcp"): True}, "allow-all-ingress")
    finally:
        reset(net172, "demo")


def test_default_deny_egress_then_allow_all_egress(net172: Docs) -> None:
    """"Default deny all egress traffic": no pod of the namespace sends anything, ingress is
    unchanged; "allow all egress" then opens it again."""
    try:
        net172.apply("network-policy-default-deny-egress.yaml", "demo")
        net172.expect({("demo/p", "demo/q", 80, "tcp"): False,
                       ("demo/p", "other/far", 80, "tcp"): False,
                       ("demo/p", "other/far", 80, "udp"): False,
                       ("other/far", "demo/p", 80, "tcp"): True,
                       ("other/far", "demo/p", 80, "udp"): True}, "default-deny-egress")
        net172.apply("network-policy-allow-all-egress.yaml", "demo")
        net172.expect({("demo/p", "demo/q", 80, "tcp"): True,
                       ("demo/p", "other/far", 80, "tcp"): True,
                       ("demo/p", "other/far", 80, "udp"): True}, "allow-all-egress")
    finally:
        reset(net172, "demo")


def test_default_deny_all(net172: Docs) -> None:
    """"Default deny all ingress and all egress traffic"."""
    try:
        net172.apply("network-policy-default-deny-all.yaml", "demo")
        net172.expect({("demo/p", "demo/q", 80, "tcp"): False,
                       ("demo/p", "other/far", 80, "tcp"): False,
                       ("other/far", "demo/p", 80, "tcp"): False,
                       ("other/far", "demo/p", 80, "udp"): False,
                       ("other/far", "default/plain", 80, "tcp"): True}, "default-deny-all")
    finally:
        reset(net172, "demo")


def test_network_policy_ingress(net172: Docs) -> None:
    """test-network-policy, ingress: role=db pods in "default" accept TCP 6379 from pods
    labelled role=frontend in "default", from any pod of a namespace labelled
    project=myproject, and from 172.17.0.0/16 except 172.17.1.0/24; nothing else."""
    try:
        net172.apply("networkpolicy.yaml")
        want = {
            ("default/frontend", "default/db", 6379, "tcp"): True,   # podSelector (node-1)
            ("myproject/client", "default/db", 6379, "tcp"): True,   # namespaceSelector
            ("default/plain3", "default/db", 6379, "tcp"): True,     # ipBlock 172.17.3.x
            ("other/far", "default/db", 6379, "tcp"): True,          # ipBlock 172.17.3.x
            ("default/plain", "default/db", 6379, "tcp"): False,     # 172.17.1.x: except
            ("other/near", "default/db", 6379, "tcp"): False,        # 172.17.1.x: except
            ("default/frontend", "default/db", 80, "tcp"): False,    # only port 6379
            ("default/frontend", "default/db", 6379, "udp"): False,  # only TCP
            ("myproject/client", "default/db", 80, "tcp"): False,
            # the policy selects role=db pods of its own namespace only
            ("other/near", "other/db", 6379, "tcp"): True,
            ("other/near", "other/db", 80, "tcp"): True,
            # pods the policy does not select are not isolated
            ("other/near", "default/frontend", 80, "tcp"): True,
        }
        net172.expect(want, "test-network-policy, ingress")
    finally:
        reset(net172, "default")


def test_network_policy_egress_in_172(net172: Docs) -> None:
    """test-network-policy, egress: role=db pods may connect only to 10.0.0.0/24 on TCP 5978,
    so in a 172.17.0.0/16 pod network they reach no pod at all (while the replies of the
    connections their ingress rule allows still flow)."""
    try:
        net172.apply("networkpolicy.yaml")
        net172.expect({("default/db", "default/frontend", 80, "tcp"): False,
                       ("default/db", "other/far", 80, "tcp"): False,
                       ("default/db", "other/far", 80, "udp"): False,
                       ("default/frontend", "default/db", 6379, "tcp"): True},
                      "test-network-policy, egress")
    finally:
        reset(net172, "default")


def test_network_policy_egress(net10: Docs) -> None:
    """test-network-policy, egress: "allows connections from any pod in the default namespace
    with the label role=db to CIDR 10.0.0.0/24 on TCP port 5978"."""
    try:
        net10.apply("networkpolicy.yaml")
        net10.expect({("default/db", "default/inside", 5978, "tcp"): True,
                      ("default/db", "default/inside", 5979, "tcp"): False,
                      ("default/db", "default/inside", 80, "tcp"): False,
                      ("default/db", "default/inside", 5978, "udp"): False,
                      ("default/db", "default/outside", 5978, "tcp"): False,
                      ("default/inside", "default/outside", 5979, "tcp"): True},
                     "test-network-policy, egress")
    finally:
        reset(net10, "default")


def test_multiport_egress(net10: Docs) -> None:
    """multi-port-egress: role=db pods may connect to 10.0.0.0/24 on TCP ports 32000 to 32768
    (endPort), both ends included."""
    try:
        net10.apply("networkpolicy-multiport-egress.yaml")
        net10.expect({("default/db", "default/inside", 32000, "tcp"): True,
                      ("default/db", "default/inside", 32768, "tcp"): True,
                      ("default/db", "default/inside", 32769, "tcp"): False,
                      ("default/db", "default/inside", 5978, "tcp"): False,
                      ("default/db", "default/inside", 32000, "udp"): False,
                      ("default/db", "default/outside", 32000, "tcp"): False},
                     "multi-port-egress")
    finally:
        reset(net10, "default")


def test_the_yaml_is_the_docs_own() -> None:
    """Each file names its source on its first line and is otherwise the page's YAML."""
    files = sorted(DOCS.glob("*.yaml"))
    assert len(files) == 7
    for f in files:
        first = f.read_text().splitlines()[0]
        assert first.startswith("# Source: https://kubernetes.io/docs/concepts/"
                                "services-networking/network-policies/"), f
