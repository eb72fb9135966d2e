"""StatefulSets, DaemonSets and Jobs on a real 2-node cluster, driven with the real kubectl:
ordered pods with stable names and DNS behind a headless Service, ordered scaling, a
DaemonSet that follows a node joining (a third `podnet agent`) and being deleted, Jobs that
complete (`kubectl wait --for=condition=complete`) or fail past their backoffLimit,
`kubectl get all`, cascading deletion, and kinds podnet does not serve refused clearly."""

from __future__ import annotations

import functools
import json
import signal
import ssl
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.query
import pytest
from harness import RunningCluster, wait_for

AGENT = [sys.executable, "-m", "agents"]

STATEFUL_SET = """\
apiVersion: v1
kind: Service
metadata:
  name: nginx
  labels:
    app: nginx
spec:
  ports:
  - port: 80
    name: web
  clusterIP: None
  selector:
    app: nginx
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  selector:
    matchLabels:
      app: nginx
  serviceName: "nginx"
  replicas: 2
  template:
    metadata:
      labels:
        app: nginx
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: nginx
        image: podnet/echo
        ports:
        - containerPort: 80
          name: web
        volumeMounts:
        - name: www
          mountPath: /usr/share/nginx/html
  volumeClaimTemplates:
  - metadata:
      name: www
    spec:
      accessModes: [ "ReadWriteOnce" ]
      resources:
        requests:
          storage: 1Gi
"""

DAEMON_SET = """\
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: node-agent
spec:
  selector:
    matchLabels: {app: node-agent}
  template:
    metadata:
      labels: {app: node-agent}
    spec:
      containers:
      - name: echo
        image: podnet/echo
"""

JOBS = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: work
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: py:podapps:finish
---
apiVersion: batch/v1
kind: Job
metadata:
  name: broken
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: py:podapps:crash
"""


def kubectl_ok(cluster: RunningCluster, *args: str, input: str | None = None) -> str:
    result = cluster.kubectl(*args, input=input)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return str(result.stdout)


def get_json(cluster: RunningCluster, *args: str) -> Any:
    return json.loads(kubectl_ok(cluster, "get", *args, "-o", "json"))


def pods(cluster: RunningCluster, selector: str) -> list[dict[str, Any]]:
    return list(get_json(cluster, "pods", "-l", selector)["items"])


def ready(pod: dict[str, Any]) -> bool:
    return pod.get("status", {}).get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions", []))


def list_rv(cluster: RunningCluster, path: str) -> str:
    code, body = cluster.api("GET", path)
    assert code == 200, body
    return str(body["metadata"]["resourceVersion"])


def replay(cluster: RunningCluster, path: str, rv: str) -> list[tuple[str, dict[str, Any]]]:
    """Every watch event on `path` after `rv`, in the order the store made them."""
    sep = "&" if "?" in path else "?"
    req = urllib.request.Request(
        f"{cluster.info['api']}{path}{sep}watch=true&resourceVersion={rv}&timeoutSeconds=1",
        headers={"Authorization": f"Bearer {cluster.token}"})
    context = ssl.create_default_context(cafile=cluster.info["ca_file"])
    with urllib.request.urlopen(req, timeout=10, context=context) as resp:
        lines = resp.read().decode().splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    return [(e["type"], e["object"]) for e in events]


def first(events: list[tuple[str, dict[str, Any]]], name: str, what: str) -> int:
    """Index of the first event about pod `name` that shows `what`."""
    for i, (kind, obj) in enumerate(events):
        if obj["metadata"]["name"] != name:
            continue
        if what == "added" and kind == "ADDED":
            return i
        if what == "ready" and kind != "DELETED" and ready(obj):
            return i
        if what == "leaving" and (kind == "DELETED" or obj["metadata"].get("deletionTimestamp")):
            return i
        if what == "deleted" and kind == "DELETED":
            return i
    seen = [(k, o["metadata"]["name"]) for k, o in events]
    raise AssertionError(f"no {what} event for {name} in {seen}")


def dns_a(cluster: RunningCluster, name: str) -> list[str]:
    query = dns.message.make_query(name, "A")
    reply = dns.query.udp(query, cluster.info["dns"]["host"], port=cluster.info["dns"]["port"],
                          timeout=3)
    return sorted(str(rr) for rrset in reply.answer for rr in rrset)


PODS_PATH = "/api/v1/namespaces/default/pods?labelSelector=app%3Dnginx"


@pytest.fixture(scope="module")
def web(cluster: RunningCluster) -> Iterator[tuple[RunningCluster, str]]:
    rv = list_rv(cluster, PODS_PATH)
    out = kubectl_ok(cluster, "apply", "-f", "-", input=STATEFUL_SET)
    assert "statefulset.apps/web created" in out
    status = kubectl_ok(cluster, "rollout", "status", "sts/web", "--timeout=60s")
    assert "partitioned roll out complete: 2 new pods have been updated" in status
    yield cluster, rv


def test_statefulset_pods_start_in_order_with_stable_identity(
        web: tuple[RunningCluster, str]) -> None:
    cluster, rv = web
    events = replay(cluster, PODS_PATH, rv)
    # OrderedReady: web-1 is created only after web-0 is Running and Ready.
    assert first(events, "web-0", "ready") < first(events, "web-1", "added")
    by_name = {p["metadata"]["name"]: p for p in pods(cluster, "app=nginx")}
    assert sorted(by_name) == ["web-0", "web-1"]
    for n, name in enumerate(["web-0", "web-1"]):
        pod = by_name[name]
        labels = pod["metadata"]["labels"]
        assert labels["statefulset.kubernetes.io/pod-name"] == name
        assert labels["apps.kubernetes.io/pod-index"] == str(n)
        assert labels["controller-revision-hash"].startswith("web-")
        assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == (name, "nginx")
    sts = get_json(cluster, "sts", "web")
    status = sts["status"]
    assert (status["replicas"], status["readyReplicas"], status["updatedReplicas"],
            status["currentReplicas"], status["availableReplicas"]) == (2, 2, 2, 2, 2)
    assert status["currentRevision"] == status["updateRevision"] == \
        by_name["web-0"]["metadata"]["labels"]["controller-revision-hash"]
    assert sts["spec"]["podManagementPolicy"] == "OrderedReady"
    # No storage here, and the StatefulSet says so.
    described = kubectl_ok(cluster, "describe", "sts", "web")
    assert "NoStorage" in described and "volumeClaimTemplates (www)" in described
    assert "create Pod web-1 in StatefulSet web successful" in described


def test_statefulset_pods_have_dns_names(web: tuple[RunningCluster, str]) -> None:
    cluster, _ = web
    ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods(cluster, "app=nginx")}
    assert dns_a(cluster, "web-0.nginx.default.svc.cluster.local") == [ips["web-0"]]
    assert dns_a(cluster, "web-1.nginx.default.svc.cluster.local") == [ips["web-1"]]
    assert dns_a(cluster, "nginx.default.svc.cluster.local") == sorted(ips.values())
    # From inside a pod, by the short name its search path completes.
    kubectl_ok(cluster, "run", "tools", "--image=podnet/toolbox", "--restart=Never")
    cluster.running_pod("tools")
    out = kubectl_ok(cluster, "exec", "tools", "--", "nslookup", "web-0.nginx")
    assert "Name:\tweb-0.nginx.default.svc.cluster.local" in out
    assert f"Address: {ips['web-0']}" in out


def test_a_deleted_statefulset_pod_comes_back_with_its_name(
        web: tuple[RunningCluster, str]) -> None:
    cluster, _ = web
    old = cluster.running_pod("web-0")
    kubectl_ok(cluster, "delete", "pod", "web-0")

    def replaced() -> dict[str, Any] | None:
        pod = cluster.pod("web-0")
        if pod is None or pod["metadata"]["uid"] == old["metadata"]["uid"] or not ready(pod):
            return None
        return pod
    new = wait_for(replaced, 30, what="web-0 recreated, Running and Ready")
    assert new["spec"]["hostname"] == "web-0"
    wait_for(lambda: dns_a(cluster, "web-0.nginx.default.svc.cluster.local")
             == [new["status"]["podIP"]], 15, what="DNS follows the new web-0")


def test_statefulset_scales_up_and_down_in_order(web: tuple[RunningCluster, str]) -> None:
    cluster, _ = web
    rv = list_rv(cluster, PODS_PATH)
    kubectl_ok(cluster, "scale", "sts", "web", "--replicas=4")
    kubectl_ok(cluster, "rollout", "status", "sts/web", "--timeout=60s")
    events = replay(cluster, PODS_PATH, rv)
    assert first(events, "web-2", "ready") < first(events, "web-3", "added")
    rv = list_rv(cluster, PODS_PATH)
    kubectl_ok(cluster, "scale", "sts", "web", "--replicas=2")
    wait_for(lambda: sorted(p["metadata"]["name"] for p in pods(cluster, "app=nginx"))
             == ["web-0", "web-1"], 60, what="scaled down to web-0, web-1")
    events = replay(cluster, PODS_PATH, rv)
    # The highest ordinal goes first, and is gone before the next one is touched.
    assert first(events, "web-3", "deleted") < first(events, "web-2", "leaving")
    assert get_json(cluster, "sts", "web")["status"]["replicas"] == 2


def image_of(cluster: RunningCluster, name: str) -> str:
    pod = cluster.pod(name)
    return str(pod["spec"]["containers"][0]["image"]) if pod else ""


def test_staged_update_keeps_pods_below_the_partition_at_the_old_template(
        web: tuple[RunningCluster, str]) -> None:
    cluster, _ = web
    kubectl_ok(cluster, "patch", "sts", "web", "--type=json", "-p", json.dumps([
        {"op": "replace", "path": "/spec/updateStrategy/rollingUpdate/partition", "value": 1},
        {"op": "replace", "path": "/spec/template/spec/containers/0/image",
         "value": "podnet/echo:v2"}]))
    status = kubectl_ok(cluster, "rollout", "status", "sts/web", "--timeout=60s")
    assert "partitioned roll out complete: 1 new pods have been updated" in status
    assert (image_of(cluster, "web-0"), image_of(cluster, "web-1")) == ("podnet/echo",
                                                                        "podnet/echo:v2")
    # web-0 is below the partition: deleted, it comes back with the old template.
    old_uid = cluster.running_pod("web-0")["metadata"]["uid"]
    kubectl_ok(cluster, "delete", "pod", "web-0")
    wait_for(lambda: (cluster.pod("web-0") or {}).get("metadata", {}).get("uid") not in
             (None, old_uid), 30, what="web-0 recreated")
    assert image_of(cluster, "web-0") == "podnet/echo"
    history = kubectl_ok(cluster, "rollout", "history", "sts/web")
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    revisions = get_json(cluster, "controllerrevisions")["items"]
    assert sorted(r["revision"] for r in revisions
                  if r["metadata"]["name"].startswith("web-")) == [1, 2]


def owned_by(cluster: RunningCluster, name: str, uid: str) -> dict[str, Any] | None:
    pod = cluster.pod(name)
    if pod is None or not ready(pod):
        return None
    refs = pod["metadata"].get("ownerReferences") or []
    return pod if [r.get("uid") for r in refs] == [uid] else None


def test_orphaned_pods_are_adopted_by_a_new_statefulset(
        web: tuple[RunningCluster, str]) -> None:
    cluster, _ = web
    kubectl_ok(cluster, "apply", "-f", "-", input=STATEFUL_SET)  # back to one template
    kubectl_ok(cluster, "rollout", "status", "sts/web", "--timeout=60s")
    kept = cluster.running_pod("web-1")["metadata"]["uid"]
    out = kubectl_ok(cluster, "delete", "statefulset", "web", "--cascade=orphan")
    assert 'statefulset.apps "web" deleted' in out
    for name in ("web-0", "web-1"):  # still there, owned by nobody
        pod = cluster.running_pod(name)
        assert not pod["metadata"].get("ownerReferences"), pod["metadata"]
    kubectl_ok(cluster, "delete", "pod", "web-0")
    kubectl_ok(cluster, "apply", "-f", "-", input=STATEFUL_SET)
    uid = get_json(cluster, "sts", "web")["metadata"]["uid"]
    web1 = wait_for(lambda: owned_by(cluster, "web-1", uid), 30, what="web-1 adopted")
    assert web1["metadata"]["uid"] == kept
    wait_for(lambda: owned_by(cluster, "web-0", uid), 30, what="web-0 created again")


def start_agent(cluster: RunningCluster, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*AGENT, "--name", name, "--controlplane", cluster.info["api"],
         "--secret-file", str(cluster.state_dir / "secret"),
         "--state-dir", str(cluster.state_dir), "--listen-port", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True)


def stop_agent(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def daemon_nodes(cluster: RunningCluster) -> list[str] | None:
    found = pods(cluster, "app=node-agent")
    if not all(ready(p) for p in found):
        return None
    return sorted(p["spec"].get("nodeName", "") for p in found)


def test_daemonset_runs_one_pod_per_node_and_follows_nodes(cluster: RunningCluster) -> None:
    out = kubectl_ok(cluster, "apply", "-f", "-", input=DAEMON_SET)
    assert "daemonset.apps/node-agent created" in out
    status = kubectl_ok(cluster, "rollout", "status", "ds/node-agent", "--timeout=60s")
    assert 'daemon set "node-agent" successfully rolled out' in status
    assert wait_for(lambda: daemon_nodes(cluster), 30) == ["node-1", "node-2"]
    pod = pods(cluster, "app=node-agent")[0]
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                       "values": [pod["spec"]["nodeName"]]}]}]
    agent = start_agent(cluster, "node-3")
    try:
        wait_for(lambda: daemon_nodes(cluster) == ["node-1", "node-2", "node-3"] or
                 agent.poll() is not None, 60, what="a daemon pod on the new node-3")
        assert agent.poll() is None, agent.communicate()[1][-2000:]
        wait_for(lambda: get_json(cluster, "ds", "node-agent")["status"].get(
            "numberReady") == 3, 30, what="numberReady 3")
    finally:
        stop_agent(agent)
    kubectl_ok(cluster, "delete", "node", "node-3")
    wait_for(lambda: daemon_nodes(cluster) == ["node-1", "node-2"], 30,
             what="node-3's daemon pod gone with its Node")
    status_obj = get_json(cluster, "ds", "node-agent")["status"]
    assert (status_obj["desiredNumberScheduled"], status_obj["currentNumberScheduled"],
            status_obj["numberMisscheduled"]) == (2, 2, 0)


def test_jobs_complete_or_fail_and_kubectl_waits_for_them(cluster: RunningCluster) -> None:
    kubectl_ok(cluster, "apply", "-f", "-", input=JOBS)
    waited = cluster.kubectl("wait", "--for=condition=complete", "job/work", "--timeout=60s")
    assert waited.returncode == 0, waited.stderr
    assert "job.batch/work condition met" in waited.stdout
    job = get_json(cluster, "job", "work")
    assert job["status"]["succeeded"] == 3 and job["status"].get("active", 0) == 0
    assert [c["type"] for c in job["status"]["conditions"]] == ["SuccessCriteriaMet",
                                                                 "Complete"]
    assert job["status"]["completionTime"] and job["status"]["startTime"]
    uid = job["metadata"]["uid"]
    done = pods(cluster, f"batch.kubernetes.io/controller-uid={uid}")
    assert len(done) == 3 and all(p["status"]["phase"] == "Succeeded" for p in done)
    for p in done:
        assert p["metadata"]["labels"]["job-name"] == "work"
        assert p["metadata"]["name"].startswith("work-") and len(p["metadata"]["name"]) == 10
    waited = cluster.kubectl("wait", "--for=condition=failed", "job/broken", "--timeout=60s")
    assert waited.returncode == 0, waited.stderr
    broken = get_json(cluster, "job", "broken")["status"]
    failed = next(c for c in broken["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert broken["failed"] == 2  # backoffLimit 1: one retry, then Failed
    described = kubectl_ok(cluster, "describe", "job", "broken")
    assert "BackoffLimitExceeded" in described
    # `kubectl create job` sends the Job as protobuf.
    kubectl_ok(cluster, "create", "job", "quick", "--image=py:podapps:finish")
    kubectl_ok(cluster, "wait", "--for=condition=complete", "job/quick", "--timeout=60s")
    assert kubectl_ok(cluster, "logs", "job/quick") == "done\n"


def test_get_all_lists_every_workload_kind(cluster: RunningCluster) -> None:
    wait_for(lambda: cluster.kubectl("get", "job", "work").returncode == 0, 30)
    out = kubectl_ok(cluster, "get", "all")
    for expected in ("statefulset.apps/web", "daemonset.apps/node-agent", "job.batch/work",
                     "job.batch/broken", "service/nginx", "pod/web-0"):
        assert expected in out, out
    headers = [line.split() for line in out.splitlines() if line.startswith("NAME")]
    assert ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"] in headers
    assert ["NAME", "READY", "AGE"] in headers
    assert ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE",
            "SELECTOR", "AGE"] in headers
    job_line = next(line.split() for line in out.splitlines()
                    if line.startswith("job.batch/work"))
    assert job_line[1:3] == ["Complete", "3/3"]


def no_pods(cluster: RunningCluster, selector: str) -> bool:
    return not pods(cluster, selector)


def test_deleting_a_workload_deletes_its_pods(cluster: RunningCluster) -> None:
    wait_for(lambda: cluster.kubectl("get", "job", "work").returncode == 0, 30)
    for kind, selector in (("job/work", "job-name=work"), ("ds/node-agent", "app=node-agent"),
                           ("sts/web", "app=nginx")):
        if cluster.kubectl("get", kind).returncode != 0:
            continue  # an earlier test did not get that far: nothing to check here
        assert pods(cluster, selector), kind
        kubectl_ok(cluster, "delete", kind)
        wait_for(functools.partial(no_pods, cluster, selector), 60,
                 what=f"the pods of {kind} collected")


INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: minimal-ingress
spec:
  rules:
  - http:
      paths:
      - path: /testpath
        pathType: Prefix
        backend:
          service:
            name: test
            port:
              number: 80
"""

CRON_JOB = """\
apiVersion: batch/v1
kind: CronJob
metadata:
  name: hello
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
          - name: hello
            image: busybox
            command: [sh, -c, date; echo Hello from the Kubernetes cluster]
          restartPolicy: OnFailure
"""

CUSTOM_RESOURCE = """\
apiVersion: stable.example.com/v1
kind: CronTab
metadata:
  name: my-new-cron-object
spec:
  cronSpec: "* * * * */5"
  image: my-awesome-cron-image
"""


def test_kinds_podnet_does_not_serve_are_refused_clearly(cluster: RunningCluster) -> None:
    kubectl_ok(cluster, "create", "configmap", "before", "--from-literal=a=b")
    before = get_json(cluster, "configmap", "before")["metadata"]["resourceVersion"]
    for manifest, kind, version in ((INGRESS, "Ingress", "networking.k8s.io/v1"),
                                    (CRON_JOB, "CronJob", "batch/v1"),
                                    (CUSTOM_RESOURCE, "CronTab", "stable.example.com/v1")):
        result = cluster.kubectl("apply", "-f", "-", input=manifest)
        assert result.returncode != 0
        assert f'no matches for kind "{kind}" in version "{version}"' in result.stderr, \
            result.stderr
    assert cluster.kubectl("get", "ingress").returncode != 0
    code, body = cluster.api("POST", "/apis/batch/v1/namespaces/default/cronjobs",
                             {"apiVersion": "batch/v1", "kind": "CronJob",
                              "metadata": {"name": "x"}})
    assert code == 404 and body["kind"] == "Status"
    # A file mixing kinds: kubectl applies what the server serves and reports the rest.
    mixed = textwrap.dedent("""\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: mixed}
        data: {a: b}
        ---
        """) + INGRESS
    result = cluster.kubectl("apply", "-f", "-", input=mixed)
    assert result.returncode != 0 and "configmap/mixed created" in result.stdout
    assert 'no matches for kind "Ingress"' in result.stderr
    assert get_json(cluster, "configmap", "before")["metadata"]["resourceVersion"] == before
