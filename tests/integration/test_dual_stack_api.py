"""Dual-stack at the API, with the real kubectl: `podnet up --dual-stack` (Nodes' podCIDRs one
per family, the signed cluster-info's CIDR lists), Services of each ipFamilyPolicy allocated
and refused as kube-apiserver does, `kubectl get svc -o wide` as Kubernetes prints it plus a
CLUSTER-IPS column, and a single-stack IPv6 control plane (`--cluster-cidr
fd00:10:244::/56 --service-cidr fd00:10:96::/112`).

Only the API is checked here (no pod traffic): IPv6 pod networking is the agents' part
(tests/integration/test_dual_stack_traffic.py). The IPv6-only cluster is a control plane
alone, with a Node registered through kubectl as an agent would, so it does not wait on
agents becoming Ready on an IPv6 podCIDR.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import RunningCluster, stop_cluster, wait_for

V4_PODS, V6_PODS = "10.244.0.0/16", "fd00:10:244::/56"
V4_SERVICES, V6_SERVICES = "10.96.0.0/12", "fd00:10:96::/112"


def podnet_up(state_dir: Path, nodes: int,
              *flags: str) -> tuple[RunningCluster, subprocess.CompletedProcess[str]]:
    """`podnet up --detach --no-demo` with `flags`."""
    cluster = RunningCluster(state_dir)
    result = cluster.podnet("up", "--detach", "--no-demo", "--nodes", str(nodes), *flags,
                            timeout_s=90)
    if result.returncode == 0:
        cluster.info = json.loads((state_dir / "cluster.json").read_text())
    return cluster, result


@pytest.fixture(scope="module")
def dual(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningCluster, str]]:
    """A 2-node `podnet up --dual-stack` cluster, and what `podnet up` printed."""
    cluster, result = podnet_up(tmp_path_factory.mktemp("dual"), 2, "--dual-stack")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield cluster, result.stdout
    finally:
        stop_cluster(cluster)


@pytest.fixture(scope="module")
def v6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """A single-stack IPv6 control plane (no agents), reached with kubectl."""
    from podnet.auth import api_token, load_secret
    from podnet.cluster import write_kubeconfig

    state_dir = tmp_path_factory.mktemp("v6")
    ready = state_dir / "controlplane.json"
    log = (state_dir / "controlplane.stderr").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlplane", "--state-dir", str(state_dir),
         "--listen-port", "0", "--no-advertise", "--ready-file", str(ready),
         "--cluster-cidr", V6_PODS, "--service-cidr", V6_SERVICES],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    try:
        info = wait_for(lambda: json.loads(ready.read_text()) if ready.exists() and
                        proc.poll() is None else None, 20, what="the IPv6 control plane")
        secret = load_secret(state_dir / "secret")
        write_kubeconfig(state_dir / "kubeconfig", info["api"], api_token(secret),
                         Path(info["ca_file"]).read_bytes())
        yield RunningCluster(state_dir, {"api": info["api"], "ca_file": info["ca_file"]})
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kubectl_ok(cluster: RunningCluster, *args: str, input: str | None = None) -> str:
    result = cluster.kubectl(*args, input=input)
    assert result.returncode == 0, result.stderr
    return result.stdout


def apply(cluster: RunningCluster, manifest: str) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", "-f", "-", input=textwrap.dedent(manifest))


def service(name: str, **spec: Any) -> str:
    body = {"selector": {"app": name}, "ports": [{"port": 80}], **spec}
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                       "spec": body})


def svc_spec(cluster: RunningCluster, name: str, namespace: str = "default") -> Any:
    return json.loads(kubectl_ok(cluster, "get", "svc", name, "-n", namespace,
                                 "-o", "json"))["spec"]


def in_net(ip: str, cidr: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)


# --- podnet up --dual-stack ------------------------------------------------------------------

def test_podnet_up_prints_both_pod_cidrs(dual: tuple[RunningCluster, str]) -> None:
    _, printed = dual
    assert "POD CIDRS" in printed
    assert "10.244.1.0/24,fd00:10:244:1::/64" in printed
    assert "10.244.2.0/24,fd00:10:244:2::/64" in printed


def test_nodes_have_a_pod_cidr_per_family(dual: tuple[RunningCluster, str]) -> None:
    cluster, _ = dual
    out = kubectl_ok(cluster, "get", "nodes", "-o",
                     'jsonpath={range .items[*]}{.metadata.name} {.spec.podCIDR} '
                     '{.spec.podCIDRs}{"\\n"}{end}')
    assert out.splitlines() == [
        'node-1 10.244.1.0/24 ["10.244.1.0/24","fd00:10:244:1::/64"]',
        'node-2 10.244.2.0/24 ["10.244.2.0/24","fd00:10:244:2::/64"]']


def test_cluster_info_lists_the_cidrs(dual: tuple[RunningCluster, str]) -> None:
    cluster, _ = dual
    code, info = cluster.api("GET", "/podnet/cluster-info")
    assert code == 200
    assert (info["clusterCIDR"], info["serviceCIDR"]) == (V4_PODS, V4_SERVICES)
    assert info["clusterCIDRs"] == [V4_PODS, V6_PODS]
    assert info["serviceCIDRs"] == [V4_SERVICES, V6_SERVICES]


def test_services_of_each_policy(dual: tuple[RunningCluster, str]) -> None:
    cluster, _ = dual
    manifests = [service("single"), service("prefer", ipFamilyPolicy="PreferDualStack"),
                 service("require", ipFamilyPolicy="RequireDualStack"),
                 service("v6first", ipFamilyPolicy="PreferDualStack",
                         ipFamilies=["IPv6", "IPv4"]),
                 service("v6only", ipFamilies=["IPv6"]),
                 service("headless", clusterIP="None", ipFamilyPolicy="PreferDualStack")]
    for m in manifests:
        result = apply(cluster, m)
        assert result.returncode == 0, result.stderr
    single = svc_spec(cluster, "single")
    assert (single["ipFamilyPolicy"], single["ipFamilies"]) == ("SingleStack", ["IPv4"])
    assert single["clusterIPs"] == [single["clusterIP"]]
    assert in_net(single["clusterIP"], V4_SERVICES)
    for name in ("prefer", "require"):
        spec = svc_spec(cluster, name)
        assert spec["ipFamilies"] == ["IPv4", "IPv6"]
        assert in_net(spec["clusterIPs"][0], V4_SERVICES)
        assert in_net(spec["clusterIPs"][1], V6_SERVICES)
    v6first = svc_spec(cluster, "v6first")
    assert v6first["ipFamilies"] == ["IPv6", "IPv4"]
    assert in_net(v6first["clusterIP"], V6_SERVICES)
    v6only = svc_spec(cluster, "v6only")
    assert v6only["ipFamilies"] == ["IPv6"] and in_net(v6only["clusterIP"], V6_SERVICES)
    headless = svc_spec(cluster, "headless")
    assert (headless["clusterIPs"], headless["ipFamilies"]) == (["None"], ["IPv4", "IPv6"])
    # -o jsonpath shows both ClusterIPs...
    prefer = svc_spec(cluster, "prefer")
    assert kubectl_ok(cluster, "get", "svc", "prefer", "-o", "jsonpath={.spec.clusterIPs}") \
        == json.dumps(prefer["clusterIPs"], separators=(",", ":"))
    # ...the table's CLUSTER-IP, as Kubernetes prints it, the primary one (clusterIPs[0]);
    # -o wide adds CLUSTER-IPS with both
    table = kubectl_ok(cluster, "get", "svc", "-o", "wide")
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert table.split()[:8] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)",
                                 "AGE", "SELECTOR", "CLUSTER-IPS"]
    assert rows["prefer"][2] == prefer["clusterIPs"][0]
    assert rows["prefer"][7] == ",".join(prefer["clusterIPs"])
    assert rows["v6first"][2] == v6first["clusterIPs"][0]
    assert rows["v6first"][7].split(",") == v6first["clusterIPs"]
    assert rows["headless"][2] == "None" and rows["headless"][7] == "None"
    assert rows["single"][1:3] == ["ClusterIP", single["clusterIP"]]
    assert rows["single"][7] == single["clusterIP"]
    assert rows["prefer"][6] == "app=prefer"
    # ...and without -o wide the table is Kubernetes' own, column for column
    plain = kubectl_ok(cluster, "get", "svc").splitlines()[0].split()
    assert plain == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    # ...and `kubectl describe` lists both, as it does against Kubernetes (`IPs:`)
    described = kubectl_ok(cluster, "describe", "svc", "prefer").splitlines()
    ips = next(line for line in described if line.startswith("IPs:"))
    assert ips.split(None, 1)[1].split(",") == prefer["clusterIPs"], ips
    assert any(line.split() == ["IP", "Family", "Policy:", "PreferDualStack"]
               for line in described), described


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dual-stack.yaml"


def test_the_dual_stack_example_as_the_readme_shows_it(dual: tuple[RunningCluster, str]) -> None:
    cluster, _ = dual
    kubectl_ok(cluster, "apply", "-f", str(EXAMPLE))
    prefer, v6only, both = (svc_spec(cluster, n) for n in ("echo-prefer", "echo-v6",
                                                               "echo-both"))
    assert prefer["ipFamilies"] == ["IPv4", "IPv6"]
    assert in_net(prefer["clusterIPs"][0], V4_SERVICES)
    assert in_net(prefer["clusterIPs"][1], V6_SERVICES)
    assert (v6only["ipFamilyPolicy"], v6only["ipFamilies"]) == ("SingleStack", ["IPv6"])
    assert both["ipFamilies"] == ["IPv6", "IPv4"] and both["clusterIP"] == both["clusterIPs"][0]
    assert in_net(both["clusterIP"], V6_SERVICES)
    rows = {line.split()[0]: line.split()
            for line in kubectl_ok(cluster, "get", "svc", "-o", "wide").splitlines()[1:]}
    assert rows["echo-prefer"][7] == ",".join(prefer["clusterIPs"])


def test_system_services_stay_single_stack_primary(dual: tuple[RunningCluster, str]) -> None:
    cluster, _ = dual
    for namespace, name, ip in (("default", "kubernetes", "10.96.0.1"),
                                ("kube-system", "kube-dns", "10.96.0.10")):
        spec = svc_spec(cluster, name, namespace)
        assert (spec["ipFamilyPolicy"], spec["ipFamilies"], spec["clusterIPs"]) == (
            "SingleStack", ["IPv4"], [ip])


def test_upgrade_and_downgrade_with_kubectl(dual: tuple[RunningCluster, str]) -> None:
    cluster, _ = dual
    assert apply(cluster, service("grow")).returncode == 0
    primary = svc_spec(cluster, "grow")["clusterIP"]
    kubectl_ok(cluster, "patch", "svc", "grow", "-p",
               '{"spec":{"ipFamilyPolicy":"PreferDualStack"}}')
    grown = svc_spec(cluster, "grow")
    assert grown["clusterIPs"][0] == primary and len(grown["clusterIPs"]) == 2
    assert grown["ipFamilies"] == ["IPv4", "IPv6"]
    kubectl_ok(cluster, "patch", "svc", "grow", "-p",
               '{"spec":{"ipFamilyPolicy":"SingleStack"}}')
    shrunk = svc_spec(cluster, "grow")
    assert (shrunk["clusterIPs"], shrunk["ipFamilies"]) == ([primary], ["IPv4"])
    result = cluster.kubectl("patch", "svc", "grow", "-p",
                             '{"spec":{"clusterIP":"10.96.0.99","clusterIPs":["10.96.0.99"]}}')
    assert result.returncode != 0
    assert ('The Service "grow" is invalid: spec.clusterIPs[0]: Invalid value: '
            '[]string{"10.96.0.99"}: may not change once set') in result.stderr


@pytest.mark.parametrize(("name", "spec", "message"), [
    ("taken", {"ipFamilyPolicy": "PreferDualStack",
               "clusterIPs": ["10.96.0.10", "fd00:10:96::5"]},
     'The Service "taken" is invalid: spec.clusterIPs: Invalid value: []string{"10.96.0.10", '
     '"fd00:10:96::5"}: failed to allocate IP 10.96.0.10: provided IP is already allocated'),
    ("outside", {"ipFamilyPolicy": "PreferDualStack",
                 "clusterIPs": ["10.96.0.40", "fd00:99::5"]},
     "failed to allocate IP fd00:99::5: provided IP is not in the valid range. The range of "
     "valid IPs is fd00:10:96::/112"),
    ("two4", {"ipFamilyPolicy": "PreferDualStack", "clusterIPs": ["10.96.0.30", "10.96.0.31"]},
     'The Service "two4" is invalid: spec.clusterIPs: Invalid value: []string{"10.96.0.30", '
     '"10.96.0.31"}: may specify no more than one IP for each IP family'),
    ("order", {"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv6", "IPv4"],
               "clusterIPs": ["10.96.0.32", "fd00:10:96::32"]},
     'spec.clusterIPs[0]: Invalid value: "10.96.0.32": expected an IPv6 value as indicated by '
     "`ipFamilies[0]`"),
    ("fams", {"ipFamilies": ["IPv4", "IPv6"]},
     'The Service "fams" is invalid: spec.ipFamilyPolicy: Invalid value: "SingleStack": must '
     "be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"),
])
def test_kubernetes_errors_on_a_dual_stack_cluster(dual: tuple[RunningCluster, str], name: str,
                                                   spec: dict[str, Any], message: str) -> None:
    cluster, _ = dual
    result = apply(cluster, service(name, **spec))
    assert result.returncode != 0
    assert message in result.stderr


# --- a single-stack IPv6 cluster -------------------------------------------------------------

def test_ipv6_cluster_services(v6: RunningCluster) -> None:
    assert apply(v6, service("web")).returncode == 0
    web = svc_spec(v6, "web")
    assert (web["ipFamilyPolicy"], web["ipFamilies"]) == ("SingleStack", ["IPv6"])
    assert in_net(web["clusterIP"], V6_SERVICES)
    assert apply(v6, service("prefer", ipFamilyPolicy="PreferDualStack")).returncode == 0
    assert svc_spec(v6, "prefer")["ipFamilies"] == ["IPv6"]
    dns = svc_spec(v6, "kube-dns", "kube-system")
    assert (dns["clusterIPs"], dns["ipFamilies"]) == (["fd00:10:96::a"], ["IPv6"])
    assert svc_spec(v6, "kubernetes")["clusterIP"] == "fd00:10:96::1"
    table = kubectl_ok(v6, "get", "svc", "web", "-o", "wide")
    assert table.splitlines()[1].split()[2] == web["clusterIP"]


@pytest.mark.parametrize(("name", "spec", "message"), [
    ("both", {"ipFamilyPolicy": "RequireDualStack"},
     'The Service "both" is invalid: spec.ipFamilyPolicy: Invalid value: "RequireDualStack": '
     "this cluster is not configured for dual-stack services"),
    ("four", {"ipFamilies": ["IPv4"]},
     'The Service "four" is invalid: spec.ipFamilies[0]: Invalid value: "IPv4": not '
     "configured on this cluster"),
    ("fixed", {"clusterIP": "10.96.0.50"},
     'The Service "fixed" is invalid: spec.clusterIPs[0]: Invalid value: []string{'
     '"10.96.0.50"}: IPv4 is not configured on this cluster'),
])
def test_ipv6_cluster_refuses_what_it_cannot_give(v6: RunningCluster, name: str,
                                                  spec: dict[str, Any], message: str) -> None:
    result = apply(v6, service(name, **spec))
    assert result.returncode != 0
    assert message in result.stderr


def test_the_dual_stack_example_on_an_ipv6_only_cluster(v6: RunningCluster) -> None:
    result = v6.kubectl("apply", "-f", str(EXAMPLE))
    assert result.returncode != 0       # echo-both: RequireDualStack cannot be met...
    # both of its faults at once, as kube-apiserver lists them
    assert result.stderr.splitlines() == [
        'The Service "echo-both" is invalid: ',
        '* spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not '
        'configured for dual-stack services',
        '* spec.ipFamilies[1]: Invalid value: "IPv4": not configured on this cluster'
    ], result.stderr
    assert svc_spec(v6, "echo-prefer")["ipFamilies"] == ["IPv6"]     # ...the others can
    assert svc_spec(v6, "echo-v6")["ipFamilies"] == ["IPv6"]
    assert v6.kubectl("get", "svc", "echo-both").returncode != 0


def test_ipv6_cluster_nodes_get_a_64(v6: RunningCluster) -> None:
    # registered as an agent does: the control plane's node IPAM assigns the podCIDR
    kubectl_ok(v6, "apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-3"}}))
    out = kubectl_ok(v6, "get", "node", "node-3", "-o",
                     "jsonpath={.spec.podCIDR} {.spec.podCIDRs}")
    assert out == 'fd00:10:244:3::/64 ["fd00:10:244:3::/64"]'
    code, info = v6.api("GET", "/podnet/cluster-info")
    assert code == 200
    assert (info["clusterCIDRs"], info["serviceCIDRs"]) == ([V6_PODS], [V6_SERVICES])


# --- flags ------------------------------------------------------------------------------------

def test_podnet_up_refuses_bad_cidr_flags_before_starting(tmp_path: Path) -> None:
    _, result = podnet_up(tmp_path, 1, "--cluster-cidr", "10.1.0.0/16,10.2.0.0/16")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "podnet up: --cluster-cidr: two CIDRs must be of different families (one IPv4, one "
        "IPv6), got 10.1.0.0/16 and 10.2.0.0/16")
    assert not (tmp_path / "cluster.json").exists()
    assert not (tmp_path / "logs").exists()  # nothing was started


# --- restarts ---------------------------------------------------------------------------------

def test_pod_cidrs_survive_restarts_and_a_cluster_going_dual_stack(tmp_path: Path) -> None:
    def node_cidrs(cluster: RunningCluster) -> str:
        return kubectl_ok(cluster, "get", "node", "node-1", "-o", "jsonpath={.spec.podCIDRs}")

    cluster, result = podnet_up(tmp_path, 1)  # IPv4 only
    try:
        assert result.returncode == 0, result.stderr
        assert node_cidrs(cluster) == '["10.244.1.0/24"]'
    finally:
        stop_cluster(cluster)
    # the same state dir, now dual-stack: node-1 keeps its IPv4 podCIDR and gets an IPv6 one
    # when its agent registers again
    for _ in range(2):  # and keeps both across one more restart
        cluster, result = podnet_up(tmp_path, 1, "--dual-stack")
        try:
            assert result.returncode == 0, result.stderr
            assert node_cidrs(cluster) == '["10.244.1.0/24","fd00:10:244:1::/64"]'
            assert "10.244.1.0/24,fd00:10:244:1::/64" in result.stdout
        finally:
            stop_cluster(cluster)
