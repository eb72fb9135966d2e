"""The Kubernetes docs' networking tutorials, applied unchanged (examples/tutorials/), with the
outcomes examples/tutorials/README.md promises, driven with the real kubectl on a 3-node
cluster as a learner would drive them."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import RunningCluster, start_cluster, stop_cluster, wait_for

TUTORIALS = Path(__file__).resolve().parents[2] / "examples" / "tutorials"
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")
pytestmark = pytest.mark.kubectl


@pytest.fixture(scope="module")
def k8s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("tutorials"), 3)
    try:
        apply(cluster, "busybox.yaml")
        ready(cluster, "busybox")
        yield cluster
    finally:
        stop_cluster(cluster)


def apply(cluster: RunningCluster, name: str) -> str:
    result = cluster.kubectl("apply", "-f", str(TUTORIALS / name))
    assert result.returncode == 0, result.stderr
    return result.stdout


def ok(cluster: RunningCluster, *args: str) -> str:
    result = cluster.kubectl(*args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def ready(cluster: RunningCluster, *pods: str, selector: str = "") -> None:
    what = ["-l", selector] if selector else list(pods)
    ok(cluster, "wait", "--for=condition=Ready", "pod", *what, "--timeout=60s")


def get(cluster: RunningCluster, *args: str) -> Any:
    return json.loads(ok(cluster, "get", *args, "-o", "json"))


def sh(cluster: RunningCluster, script: str, pod: str = "busybox") -> str:
    return ok(cluster, "exec", pod, "--", "sh", "-c", script)


def nslookup(cluster: RunningCluster, name: str) -> list[str]:
    """The addresses busybox's nslookup prints for `name` (not the server's own)."""
    out = ok(cluster, "exec", "busybox", "--", "nslookup", name)
    answer = out.split("Name:", 1)[1]
    return sorted(line.split()[-1] for line in answer.splitlines()
                  if line.startswith("Address"))


def pod_ips(cluster: RunningCluster, selector: str) -> dict[str, str]:
    pods = get(cluster, "pods", "-l", selector)["items"]
    return {p["metadata"]["name"]: p["status"]["podIP"] for p in pods
            if not p["metadata"].get("deletionTimestamp") and p["status"].get("podIP")}


def test_connecting_applications_with_services(k8s: RunningCluster) -> None:
    assert "deployment.apps/my-nginx created" in apply(k8s, "run-my-nginx.yaml")
    wait_for(lambda: len(pod_ips(k8s, "run=my-nginx")) == 2, 30, what="two my-nginx pods")
    ready(k8s, selector="run=my-nginx")
    # Each pod is reached directly by its own IP.
    for ip in pod_ips(k8s, "run=my-nginx").values():
        assert "<title>Welcome to nginx!</title>" in sh(k8s, f"wget -qO- http://{ip}/")
    assert "service/my-nginx created" in apply(k8s, "nginx-svc.yaml")
    svc = get(k8s, "svc", "my-nginx")
    cluster_ip = svc["spec"]["clusterIP"]
    assert ipaddress.ip_address(cluster_ip) in SERVICE_CIDR
    assert "80/TCP" in ok(k8s, "get", "svc", "my-nginx")
    want = sorted(f"{ip}:80" for ip in pod_ips(k8s, "run=my-nginx").values())

    def endpoints() -> list[str] | None:
        out = ok(k8s, "describe", "svc", "my-nginx")
        line = next((x for x in out.splitlines() if x.startswith("Endpoints:")), "")
        got = sorted(line.split(None, 1)[1].split(",")) if " " in line.strip() else []
        return got if got == want else None

    wait_for(endpoints, 20, what="my-nginx endpoints in describe")
    slices = get(k8s, "endpointslices", "-l", "kubernetes.io/service-name=my-nginx")["items"]
    assert sorted(a for s in slices for e in s["endpoints"] for a in e["addresses"]) == sorted(
        pod_ips(k8s, "run=my-nginx").values())
    # By name through cluster DNS, and through the ClusterIP to a pod.
    assert nslookup(k8s, "my-nginx") == [cluster_ip]
    assert "Welcome to nginx!" in sh(k8s, "wget -qO- http://my-nginx/")
    # The Service's variables reach pods created after it (the tutorial scales to 0 and back).
    ok(k8s, "scale", "deployment", "my-nginx", "--replicas=0")
    wait_for(lambda: not pod_ips(k8s, "run=my-nginx"), 30, what="my-nginx scaled to 0")
    ok(k8s, "scale", "deployment", "my-nginx", "--replicas=2")
    wait_for(lambda: len(pod_ips(k8s, "run=my-nginx")) == 2, 30, what="my-nginx back at 2")
    ready(k8s, selector="run=my-nginx")
    pod = sorted(pod_ips(k8s, "run=my-nginx"))[0]
    env = ok(k8s, "exec", pod, "--", "printenv")
    assert f"MY_NGINX_SERVICE_HOST={cluster_ip}" in env.splitlines()
    assert "MY_NGINX_SERVICE_PORT=80" in env.splitlines()
    assert "KUBERNETES_SERVICE_HOST=10.96.0.1" in env.splitlines()
    kube_dns = get(k8s, "services", "kube-dns", "--namespace=kube-system")
    assert kube_dns["spec"]["clusterIP"] == "10.96.0.10"


def pod_names(served: str) -> list[str]:
    """serve_hostname answers its name with no newline, so the page's loops print the names
    run together, as the real image does."""
    return re.findall(r"hostnames-[a-z0-9]+-[a-z0-9]{5}", served)


def test_debug_services(k8s: RunningCluster) -> None:
    apply(k8s, "hostnames.yaml")
    wait_for(lambda: len(pod_ips(k8s, "app=hostnames")) == 3, 30, what="three hostnames pods")
    ready(k8s, selector="app=hostnames")
    names = pod_ips(k8s, "app=hostnames")
    listed = ok(k8s, "get", "pods", "-l", "app=hostnames", "-o",
                'go-template={{range .items}}{{.status.podIP}}{{"\\n"}}{{end}}')
    assert sorted(listed.split()) == sorted(names.values())
    # Each pod serves its own name on 9376 (the page's loop, with our pod IPs).
    eps = " ".join(f"{ip}:9376" for ip in listed.split())
    served = sh(k8s, f"for ep in {eps}; do\n    wget -qO- $ep\ndone")
    assert sorted(pod_names(served)) == sorted(names)
    # The Service by DNS name, short, namespaced and fully qualified, and the API's Service.
    cluster_ip = get(k8s, "svc", "hostnames")["spec"]["clusterIP"]
    for name in ("hostnames", "hostnames.default", "hostnames.default.svc.cluster.local"):
        assert nslookup(k8s, name) == [cluster_ip], name
    assert nslookup(k8s, "kubernetes.default") == ["10.96.0.1"]
    resolv = sh(k8s, "cat /etc/resolv.conf").splitlines()
    assert "nameserver 10.96.0.10" in resolv
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert "options ndots:5" in resolv
    # Scripts build names from the service account's namespace file.
    assert nslookup(k8s, "hostnames." + sh(
        k8s, "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace")) == [cluster_ip]

    def by_ip() -> list[str] | None:
        out = pod_names(sh(k8s, f"for i in $(seq 1 3); do \n    wget -qO- {cluster_ip}:80\ndone"))
        return out if len(out) == 3 and set(out) <= set(names) else None

    answers = wait_for(by_ip, 20, what="three answers through the ClusterIP")
    assert len(set(answers)) == 3, answers      # round robin over the three pods
    endpoints = get(k8s, "endpoints", "hostnames")
    assert sorted(a["ip"] for s in endpoints["subsets"] for a in s["addresses"]) == sorted(
        names.values())
    assert {p["port"] for s in endpoints["subsets"] for p in s["ports"]} == {9376}
    # Break the selector as the page warns: no endpoints, and the ClusterIP refuses at once.
    ok(k8s, "patch", "svc", "hostnames", "-p", '{"spec":{"selector":{"app":"typo"}}}')
    wait_for(lambda: "<none>" in ok(k8s, "get", "endpoints", "hostnames"), 20,
             what="hostnames endpoints gone")
    failed = k8s.kubectl("exec", "busybox", "--", "wget", "-qO-", "-T", "3",
                         f"http://{cluster_ip}:80/")
    assert failed.returncode != 0


def test_dns_for_services_and_pods(k8s: RunningCluster) -> None:
    apply(k8s, "default-subdomain.yaml")
    ready(k8s, "busybox1", "busybox2")
    ips = pod_ips(k8s, "name=busybox")
    assert ok(k8s, "exec", "busybox1", "--", "hostname").strip() == "busybox-1"
    for pod, host in (("busybox1", "busybox-1"), ("busybox2", "busybox-2")):
        fqdn = f"{host}.default-subdomain.default.svc.cluster.local"
        assert wait_for(lambda fqdn=fqdn: nslookup(k8s, fqdn) or None, 20,
                        what=fqdn) == [ips[pod]]
    assert nslookup(k8s, "default-subdomain") == sorted(ips.values())
    apply(k8s, "custom-dns.yaml")
    ready(k8s, "dns-example")
    resolv = ok(k8s, "exec", "dns-example", "--", "cat", "/etc/resolv.conf").splitlines()
    assert resolv == ["nameserver 192.0.2.1",
                      "search ns1.svc.cluster-domain.example my.dns.search.suffix",
                      "options ndots:2 edns0"]


def test_host_aliases(k8s: RunningCluster) -> None:
    apply(k8s, "hostaliases-pod.yaml")
    def finished() -> dict[str, Any] | None:
        pod: dict[str, Any] = get(k8s, "pod", "hostaliases-pod")
        return pod if pod["status"].get("phase") == "Succeeded" else None
    pod = wait_for(finished, 30, what="hostaliases-pod Succeeded")
    ip = pod["status"]["podIP"]
    assert ok(k8s, "logs", "hostaliases-pod").splitlines() == [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
        f"{ip}\thostaliases-pod",
        "",
        "# Entries added by HostAliases.",
        "127.0.0.1\tfoo.local\tbar.local",
        "10.1.2.3\tfoo.remote\tbar.remote",
    ]
    bad = k8s.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad-alias"},
        "spec": {"hostAliases": [{"ip": "foo", "hostnames": ["Not_A_Name"]}],
                 "containers": [{"name": "c", "image": "busybox"}]}}))
    assert bad.returncode != 0
    assert 'spec.hostAliases[0].ip: Invalid value: "foo": must be a valid IP address' \
        in bad.stderr, bad.stderr
    assert 'spec.hostAliases[0].hostnames[0]: Invalid value: "Not_A_Name"' in bad.stderr
    assert k8s.kubectl("get", "pod", "bad-alias").returncode != 0


def _sts_pods(cluster: RunningCluster) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in get(cluster, "pods", "-l", "app=nginx")["items"]
            if not p["metadata"].get("deletionTimestamp")}


def _ready_since(pod: dict[str, Any]) -> str | None:
    for cond in pod.get("status", {}).get("conditions", []):
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return str(cond.get("lastTransitionTime"))
    return None


def test_statefulset_basics(k8s: RunningCluster) -> None:
    out = apply(k8s, "web.yaml")
    assert "service/nginx created" in out and "statefulset.apps/web created" in out
    wait_for(lambda: len(_sts_pods(k8s)) == 2 and all(map(_ready_since, _sts_pods(k8s).values())),
             60, what="web-0 and web-1 Ready")
    pods = _sts_pods(k8s)
    assert sorted(pods) == ["web-0", "web-1"]
    # OrderedReady: web-1 was created only once web-0 was Ready.
    assert pods["web-1"]["metadata"]["creationTimestamp"] >= str(_ready_since(pods["web-0"]))
    assert get(k8s, "service", "nginx")["spec"]["clusterIP"] == "None"
    assert get(k8s, "statefulset", "web")["status"]["readyReplicas"] == 2
    for i in (0, 1):
        assert ok(k8s, "exec", f"web-{i}", "--", "sh", "-c", "hostname").strip() == f"web-{i}"
    assert nslookup(k8s, "web-0.nginx") == [pods["web-0"]["status"]["podIP"]]
    assert nslookup(k8s, "web-1.nginx") == [pods["web-1"]["status"]["podIP"]]
    # Deleted pods come back with the same names, and the names follow them.
    old = {name: pod["metadata"]["uid"] for name, pod in pods.items()}
    ok(k8s, "delete", "pod", "-l", "app=nginx")

    def replaced() -> dict[str, dict[str, Any]] | None:
        now = _sts_pods(k8s)
        fresh = sorted(now) == ["web-0", "web-1"] and all(
            now[n]["metadata"]["uid"] != old[n] and _ready_since(now[n]) for n in now)
        return now if fresh else None

    pods = wait_for(replaced, 60, what="web-0 and web-1 recreated and Ready")
    wait_for(lambda: nslookup(k8s, "web-0.nginx") == [pods["web-0"]["status"]["podIP"]], 20,
             what="web-0.nginx resolving to the new pod")
    # Scale up in order, down from the highest ordinal.
    ok(k8s, "scale", "sts", "web", "--replicas=5")
    wait_for(lambda: len(_sts_pods(k8s)) == 5 and all(map(_ready_since, _sts_pods(k8s).values())),
             90, what="five web pods Ready")
    pods = _sts_pods(k8s)
    for i in range(2, 5):       # each new ordinal only once the one before it was Ready
        assert pods[f"web-{i}"]["metadata"]["creationTimestamp"] >= str(
            _ready_since(pods[f"web-{i - 1}"]))
    ok(k8s, "patch", "sts", "web", "-p", '{"spec":{"replicas":3}}')
    seen: list[list[str]] = []

    def scaled_down() -> bool:
        seen.append(sorted(_sts_pods(k8s)))
        return seen[-1] == ["web-0", "web-1", "web-2"]

    wait_for(scaled_down, 60, what="scaled down to web-0..web-2")
    # Never web-3 gone while web-4 is still there: the highest ordinal goes first.
    assert not [names for names in seen if "web-4" in names and "web-3" not in names], seen
