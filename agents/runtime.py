"""Pods as coroutines: the agent's container runtime (what kubelet + a CRI would do).

A pod is a `RunningPod`: one IP from the node's podCIDR, one network stack shared by its
containers (`ctx.net`), and one task per container. A container's image names an
`async def fn(ctx)`; when it returns or raises, `restartPolicy` decides whether it runs
again, after a CrashLoopBackOff-style delay that doubles up to a cap. Status goes back to the
API through one coalescing writer per pod, so a crash loop cannot flood the control plane.

Deletion follows the kubelet flow: the API marks the pod with a deletionTimestamp, the
runtime cancels its containers (waiting at most terminationGracePeriodSeconds for them to
finish), releases the IP and then deletes the pod object for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from agents import probes, resolver
from agents.containerlog import ContainerLog
from agents.hostlocal import HostLocalIpam, PoolExhausted
from agents.images import ContainerContext, ImageError, PodInfo, StartError, resolve_image
from agents.images.entrypoint import expand
from agents.netstack import NodeNetwork, PodNet
from agents.podfiles import CLUSTER_DNS_IP, host_aliases, hosts_file, resolv_conf
from agents.serviceenv import service_env
from agents.toolbox import ExecTarget
from podnet.apierrors import ApiError
from podnet.client import ApiClient, ApiUnavailable
from podnet.informer import Informer
from podnet.resources import BY_KIND

log = structlog.get_logger()
PODS = BY_KIND["Pod"]
EVENTS = BY_KIND["Event"]

BACKOFF_INITIAL_S = 1.0   # kubelet uses 10 s doubling to 5 min; a teaching tool wants faster
BACKOFF_MAX_S = 30.0
BACKOFF_RESET_S = 60.0    # a container that ran this long starts its backoff again
STATUS_COALESCE_S = 0.05  # status changes this close together go to the API as one write
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICES_SYNC_WAIT_S = 5.0  # a container waits at most this long for the first Service list
# The `kubernetes` Service's variables, for a runtime that has no Service list (yet).
FALLBACK_SERVICE_ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
                        "KUBERNETES_PORT": "tcp://10.96.0.1:443"}


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerState:
    name: str
    image: str
    state: dict[str, Any] = field(default_factory=lambda: {
        "waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False

    def status(self, pod_uid: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.image,
            "imageID": f"podnet://{self.image}",
            "containerID": f"podnet://{pod_uid[:8]}-{self.name}",
            "ready": self.ready,
            "started": "running" in self.state,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }


class RunningPod:
    """One pod on this node: its IP, its network stack, its containers."""

    def __init__(self, runtime: PodRuntime, pod: dict[str, Any], ip: str, net: PodNet) -> None:
        meta = pod["metadata"]
        self.runtime = runtime
        self.pod = pod
        self.uid: str = meta["uid"]
        self.name: str = meta["name"]
        self.namespace: str = meta.get("namespace", "default")
        self.ip = ip
        self.ips = net.ips      # every pod IP, primary first (status.podIPs)
        self.net = net
        self.spec: dict[str, Any] = pod.get("spec") or {}
        self.hostname: str = self.spec.get("hostname") or self.name
        self.start_time = now_rfc3339()
        self.containers = {c["name"]: ContainerState(c["name"], c.get("image", ""))
                           for c in self.spec.get("containers", [])}
        self.logs = {name: ContainerLog() for name in self.containers}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.terminating = False
        self.log = log.bind(pod=self.name, namespace=self.namespace, pod_ip=ip)
        self._status_dirty = asyncio.Event()
        self._status_task: asyncio.Task[None] | None = None
        # What the API holds of this pod's status as far as this agent knows: the status it
        # last wrote and that write's resourceVersion, and a write still in flight.
        self._written: dict[str, Any] | None = None
        self._written_rv = 0
        self._sending: dict[str, Any] | None = None
        self._transitions: dict[str, tuple[str, str]] = {}  # condition -> (status, since)
        self.hurry = asyncio.Event()  # set when the grace period is cut short
        self.image_errors: dict[str, str] = {}  # container -> last image error reported
        self._envs: dict[str, dict[str, str]] = {}  # container -> environment of this start
        domain = runtime.cluster_domain
        self.files = {
            "/etc/hosts": hosts_file(self.ips, self.hostname, self.spec.get("subdomain"),
                                     self.namespace, domain, host_aliases(self.spec)),
            "/etc/resolv.conf": resolv_conf(self.spec, self.namespace, domain,
                                            runtime.dns_ip),
            "/etc/hostname": self.hostname + "\n",
            # The service account mount's namespace file, which scripts read to build names
            # (`nslookup svc.$(cat .../namespace)`). No token: the API is not reachable from
            # inside the emulated network, so podnet does not pretend it is.
            SERVICE_ACCOUNT_DIR + "/namespace": self.namespace,
        }
        # Names resolve as in the pod: its /etc/hosts, then its resolv.conf's nameserver
        # (the cluster DNS at 10.96.0.10) through its own network stack, with libc's
        # search-list and ndots rules.
        resolver.install(self.net, self.files["/etc/resolv.conf"], self.files["/etc/hosts"])

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._status_task = asyncio.create_task(self._status_writer(),
                                                name=f"pod-status:{self.namespace}/{self.name}")
        for spec in self.spec.get("containers", []):
            self.tasks[spec["name"]] = asyncio.create_task(
                self._run_container(spec), name=f"container:{self.namespace}/{self.name}/"
                                                f"{spec['name']}")
        self.mark_dirty()

    async def stop(self, grace_s: float) -> list[asyncio.Task[None]]:
        """Cancel every container; wait at most `grace_s` (less if `hurry` is set) for them
        to finish. Returns the containers that outlived the grace period."""
        self.terminating = True
        for task in self.tasks.values():
            task.cancel()
        pending: set[asyncio.Task[None]] = set(self.tasks.values())
        hurry = asyncio.create_task(self.hurry.wait(), name=f"pod-hurry:{self.name}")
        deadline = asyncio.get_running_loop().time() + max(grace_s, 0.01)
        try:
            while pending and not self.hurry.is_set():
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                done, _ = await asyncio.wait({*pending, hurry}, timeout=left,
                                             return_when=asyncio.FIRST_COMPLETED)
                pending -= done
        finally:
            hurry.cancel()
        for task in pending:
            # A coroutine cannot be SIGKILLed: its network is gone with the pod, and the
            # runtime keeps cancelling it until it gives up.
            self.log.warning("pod.container_ignored_cancel", task=task.get_name())
        for logbuf in self.logs.values():
            logbuf.close()
        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_task
        return list(pending)

    # ---- containers ------------------------------------------------------------------

    async def _probe(self, spec: dict[str, Any], state: ContainerState,
                     readiness: probes.Probe | None, liveness: probes.Probe | None,
                     run: asyncio.Task[int]) -> None:
        """Run the container's probes until it stops: readiness sets `ready`, a failing
        liveness probe kills the run (the restart policy decides what happens next)."""
        name = spec["name"]

        async def run_exec(argv: list[str]) -> int:
            from agents.toolbox import run_command

            return await run_command(self.exec_target(name), argv, None,
                                     lambda _: None, lambda _: None)

        async def loop(probe: probes.Probe, live: bool) -> None:
            verdict = probes.ProbeState(probe, passing=live)
            await asyncio.sleep(probe.initial_delay_s)
            while True:
                ok = await probes.check(probe, self.net, self.ip, run_exec)
                if verdict.record(ok):
                    self.log.info("container.probe", container=name, passing=verdict.passing,
                                  probe="liveness" if live else "readiness")
                    if live and not verdict.passing:
                        await self.runtime.event(self, "Warning", "Unhealthy",
                                                 f"Liveness probe failed for {name}")
                        run.cancel()
                        return
                    if not live:
                        state.ready = verdict.passing
                        self.mark_dirty()
                        if not verdict.passing:
                            await self.runtime.event(self, "Warning", "Unhealthy",
                                                     f"Readiness probe failed for {name}")
                await asyncio.sleep(probe.period_s)

        loops = [asyncio.create_task(loop(p, live), name=f"probe:{self.name}/{name}")
                 for p, live in ((readiness, False), (liveness, True)) if p is not None]
        try:
            if loops:
                await asyncio.gather(*loops)
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    def apply_spec_changes(self, pod: dict[str, Any]) -> None:
        """A running pod's spec changed: a container whose image changed is restarted with
        the new image, as kubelet does (the only container field a pod update may change)."""
        self.pod = pod
        new_spec = pod.get("spec") or {}
        for spec in new_spec.get("containers", []):
            name = spec.get("name")
            state = self.containers.get(name)
            if state is None or state.image == spec.get("image") or self.terminating:
                continue
            self.log.info("container.image_changed", container=name, image=spec.get("image"))
            state.image = spec.get("image", "")
            state.restart_count += 1
            old = self.tasks.get(name)
            if old is not None:
                old.cancel()
            self.spec = new_spec
            self.tasks[name] = asyncio.create_task(
                self._run_container(spec),
                name=f"container:{self.namespace}/{self.name}/{name}")
            task = asyncio.create_task(self.runtime.event(
                self, "Normal", "Killing",
                f"Container {name} definition changed, will be restarted"))
            self.runtime.own(task)

    def _env(self, spec: dict[str, Any]) -> dict[str, str]:
        """The container's environment, fixed when it starts (exec sees the same, as in a
        real container): HOSTNAME and PATH, the Service variables, then its own `env`."""
        cached = self._envs.get(spec["name"])
        if cached is not None:
            return dict(cached)
        env = {
            "HOSTNAME": self.hostname,
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }
        env.update(self.runtime.service_env(
            self.namespace, self.spec.get("enableServiceLinks") is not False))
        fields = {"metadata.name": self.name, "metadata.namespace": self.namespace,
                  "metadata.uid": self.uid, "spec.nodeName": self.runtime.node,
                  "status.podIP": self.ip, "status.hostIP": self.runtime.host_ip,
                  "spec.serviceAccountName": self.spec.get("serviceAccountName", "default")}
        for item in spec.get("env") or []:
            name = item.get("name")
            if not name:
                continue
            if "value" in item:
                # kubelet expands $(VAR) in a value from the variables defined before it.
                env[name] = expand(str(item.get("value") or ""), env)
            elif ref := (item.get("valueFrom") or {}).get("fieldRef"):
                env[name] = fields.get(str(ref.get("fieldPath")), "")
        return env

    def fix_env(self, spec: dict[str, Any]) -> None:
        """Compute the container's environment for this start (a restart computes it anew,
        so it then sees the Services created since, as kubelet's restarts do)."""
        self._envs.pop(spec["name"], None)
        self._envs[spec["name"]] = self._env(spec)

    def context(self, spec: dict[str, Any]) -> ContainerContext:
        labels = dict((self.pod.get("metadata") or {}).get("labels") or {})
        info = PodInfo(name=self.name, namespace=self.namespace, ip=self.ip,
                       node=self.runtime.node, labels=labels, hostname=self.hostname)
        name = spec["name"]
        env = self._env(spec)
        # kubelet expands $(VAR) from the variables it sets, not those the image or the
        # runtime adds (HOSTNAME, PATH).
        defined = {k: v for k, v in env.items() if k not in ("HOSTNAME", "PATH")}
        return ContainerContext(
            name=name, args=[expand(str(a), defined) for a in (spec.get("args") or [])],
            env=env, command=[expand(str(a), defined) for a in (spec.get("command") or [])],
            ports=list(spec.get("ports") or []), pod=info, net=self.net,
            log=self.log.bind(container=name), stdout=self.logs[name],
            image=str(spec.get("image", "")), target=self.exec_target(name))

    async def _run_container(self, spec: dict[str, Any]) -> None:
        name = spec["name"]
        state = self.containers[name]
        policy = self.spec.get("restartPolicy", "Always")
        backoff = BACKOFF_INITIAL_S
        clog = self.log.bind(container=name, image=spec.get("image"))
        while True:
            try:
                fn = resolve_image(spec.get("image", ""))
            except ImageError as e:
                state.state = {"waiting": {"reason": e.reason, "message": str(e)}}
                state.ready = False
                self.mark_dirty()
                if self.image_errors.get(name) != str(e):  # one event per distinct error
                    self.image_errors[name] = str(e)
                    clog.warning("container.image_error", error=str(e))
                    await self.runtime.event(
                        self, "Warning", "Failed",
                        f"Failed to pull image \"{spec.get('image')}\": {e}")
                await asyncio.sleep(backoff)
                if e.reason == "ErrImagePull":
                    state.state = {"waiting": {"reason": "ImagePullBackOff", "message": str(e)}}
                self.mark_dirty()
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            started = time.monotonic()
            await self.runtime.services_known()
            self.fix_env(spec)
            state.state = {"running": {"startedAt": now_rfc3339()}}
            try:
                readiness = probes.parse(spec.get("readinessProbe"), spec.get("ports") or [])
                liveness = probes.parse(spec.get("livenessProbe"), spec.get("ports") or [])
            except ValueError as e:  # validation lets few through; never crash the pod on one
                clog.warning("container.bad_probe", error=str(e))
                readiness = liveness = None
            state.ready = readiness is None  # with a readiness probe: not ready until it passes
            self.mark_dirty()
            clog.info("container.started", restart_count=state.restart_count)
            await self.runtime.event(self, "Normal", "Started", f"Started container {name}")
            exit_code, reason, message = 0, "Completed", ""
            run: asyncio.Task[int] = asyncio.create_task(
                _run_image(fn, self.context(spec)),
                name=f"run:{self.namespace}/{self.name}/{name}")
            prober = asyncio.create_task(
                self._probe(spec, state, readiness, liveness, run),
                name=f"probes:{self.namespace}/{self.name}/{name}")
            try:
                exit_code = await run
                if exit_code:
                    reason = "Error"
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    run.cancel()
                    state.ready = False
                    state.state = {"terminated": {
                        "exitCode": 137 if self.terminating else 143,
                        "reason": "Killed" if self.terminating else "Error",
                        "finishedAt": now_rfc3339(),
                        "startedAt": state.state["running"]["startedAt"]}}
                    raise
                # Only `run` was cancelled: the liveness probe killed it, as kubelet would.
                exit_code, reason, message = 137, "Error", "Liveness probe failed"
                self.logs[name].write("killed: liveness probe failed\n")
            except StartError as e:  # no such executable in the image: runc's answer
                exit_code, reason, message = 128, "StartError", str(e)
                clog.warning("container.start_error", error=message)
            except Exception as e:  # a user's container crashed: that is its exit status
                exit_code, reason, message = 1, "Error", f"{type(e).__name__}: {e}"
                self.logs[name].write(f"{message}\n")
                clog.warning("container.crashed", error=message)
            finally:
                prober.cancel()
            ran_s = time.monotonic() - started
            state.ready = False
            if self.terminating:
                return  # it returned while being stopped: that is not a crash to restart
            terminated = {"exitCode": exit_code, "reason": reason,
                          "startedAt": state.state["running"]["startedAt"],
                          "finishedAt": now_rfc3339()}
            if message:
                terminated["message"] = message
            restart = policy == "Always" or (policy == "OnFailure" and exit_code != 0)
            if not restart:
                state.state = {"terminated": terminated}
                self.mark_dirty()
                clog.info("container.exited", exit_code=exit_code)
                return
            if ran_s >= BACKOFF_RESET_S:
                backoff = BACKOFF_INITIAL_S
            state.last_state = {"terminated": terminated}
            state.state = {"waiting": {"reason": "CrashLoopBackOff",
                                       "message": f"back-off {backoff:.0f}s restarting failed "
                                                  f"container={name} pod={self.name}"}}
            state.restart_count += 1
            self.mark_dirty()
            await self.runtime.event(self, "Warning", "BackOff",
                                     "Back-off restarting failed container")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    # ---- status ----------------------------------------------------------------------

    def mark_dirty(self) -> None:
        self._status_dirty.set()

    def phase(self) -> str:
        states = list(self.containers.values())
        if any("running" in c.state for c in states):
            return "Running"
        if states and all("terminated" in c.state for c in states):
            if all(c.state["terminated"].get("exitCode") == 0 for c in states):
                return "Succeeded"
            return "Failed"
        if any("waiting" in c.state and c.state["waiting"].get("reason") == "CrashLoopBackOff"
               for c in states):
            return "Running"  # kubelet keeps a crash-looping pod Running
        return "Pending"

    def status(self) -> dict[str, Any]:
        ready = bool(self.containers) and all(c.ready for c in self.containers.values())
        ready_s = "True" if ready and not self.terminating else "False"

        def cond(kind: str, value: str) -> dict[str, Any]:
            # The transition time moves only when the condition's status does.
            previous = self._transitions.get(kind)
            if previous is None or previous[0] != value:
                previous = (value, now_rfc3339())
                self._transitions[kind] = previous
            return {"type": kind, "status": value, "lastProbeTime": None,
                    "lastTransitionTime": previous[1]}

        return {
            "phase": self.phase(),
            "conditions": [cond("PodReadyToStartContainers", "True"),
                           cond("Initialized", "True"), cond("Ready", ready_s),
                           cond("ContainersReady", ready_s), cond("PodScheduled", "True")],
            "hostIP": self.runtime.host_ip,
            "hostIPs": [{"ip": self.runtime.host_ip}],
            "podIP": self.ip,
            "podIPs": [{"ip": ip} for ip in self.ips],
            "startTime": self.start_time,
            "containerStatuses": [c.status(self.uid) for c in self.containers.values()],
        }

    def observe(self, pod: dict[str, Any]) -> None:
        """The API's copy of this pod, from the watch or a relist.

        When its status says something else than this agent last wrote, another writer has
        changed it (the node lifecycle controller marks the pods of a node it lost not Ready;
        the node may come back), so write this agent's view again, as kubelet's status
        manager resyncs. Our own writes and older news are recognised by resourceVersion and
        by content, so a steady pod costs no write.
        """
        if self.terminating or self._written is None:
            return  # nothing written yet: the writer will write anyway
        rv = _resource_version(pod)
        if rv is not None and rv <= self._written_rv:
            return
        stored = _status_digest(pod.get("status") or {})
        if stored == _status_digest(self._written) or (
                self._sending is not None and stored == _status_digest(self._sending)):
            return
        self.log.info("pod.status_resync", stored=stored[:2],
                      ours=_status_digest(self._written)[:2])
        self._written = None
        self.mark_dirty()

    async def _status_writer(self) -> None:
        """Send the latest status whenever it changed; one request in flight at a time."""
        while True:
            await self._status_dirty.wait()
            # Coalesce: a starting pod changes state several times within milliseconds
            # (created, containers running, ready); one write carries them all.
            await asyncio.sleep(STATUS_COALESCE_S)
            self._status_dirty.clear()
            status = self.status()
            if status == self._written:
                continue
            self._sending = status
            try:
                stored = await self.runtime.api.patch(PODS, self.namespace, self.name,
                                                      {"status": status}, subresource="status")
                self._written = status
                self._written_rv = _resource_version(stored) or 0
            except ApiError as e:
                if e.code == 404:
                    return  # the pod is gone; the watch will tell the runtime
                self.log.warning("pod.status_rejected", error=str(e))
            except ApiUnavailable as e:
                self.log.warning("pod.status_unsent", error=str(e))
                await asyncio.sleep(1.0)
                self._status_dirty.set()
            finally:
                self._sending = None

    # ---- exec ------------------------------------------------------------------------

    def exec_target(self, container: str) -> ExecTarget:
        spec = next(c for c in self.spec.get("containers", []) if c["name"] == container)
        prefix = self.runtime.network_cidr_route()
        routes = [("default", f"via {self.runtime.gateway} dev eth0"),
                  (self.runtime.pod_cidr, f"dev eth0 proto kernel scope link src {self.ip}")]
        if prefix:
            routes.insert(1, prefix)
        routes += self.runtime.v6_routes(self.net.ip6)
        return ExecTarget(net=self.net, pod=self.name, namespace=self.namespace,
                          node=self.runtime.node, pod_ip=self.ip, hostname=self.hostname,
                          env=self._env(spec), files=self.files, routes=routes)


def _resource_version(obj: dict[str, Any]) -> int | None:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


def _status_digest(status: dict[str, Any]) -> tuple[Any, ...]:
    """What of a pod status this agent asserts and others may overwrite: the phase, each
    condition's status and the pod IP (not timestamps, nor fields the API adds)."""
    conditions = tuple(sorted((str(c.get("type")), str(c.get("status")))
                              for c in status.get("conditions") or []))
    return status.get("phase"), conditions, status.get("podIP")


async def _run_image(fn: Callable[[ContainerContext], Awaitable[int | None]],
                     ctx: ContainerContext) -> int:
    """The container's exit code: what its coroutine returned (None is 0), as a process's
    status byte (`exit 256` is 0, `exit -1` is 255, as in a shell)."""
    code = await fn(ctx)
    if code is None:
        return 0
    if isinstance(code, bool) or not isinstance(code, int):
        ctx.log.warning("container.bad_exit_code", returned=repr(code)[:80])
        ctx.stdout.write(f"podnet: the image returned {type(code).__name__}, not an exit code; "
                         "treated as 0\n")
        return 0
    return code & 0xFF


class PodRuntime:
    """All pods on this node, kept in line with what the API says should run here."""

    def __init__(self, *, node: str, host_ip: str, pod_cidr: str, network: NodeNetwork,
                 api: ApiClient, cluster_domain: str = "cluster.local",
                 cluster_cidr: str = "10.244.0.0/16", pod_cidrs: Sequence[str] = (),
                 cluster_cidrs: Sequence[str] = (), dns_ip: str = CLUSTER_DNS_IP) -> None:
        self.node = node
        self.host_ip = host_ip
        self.pod_cidr = pod_cidr
        self.network = network
        self.api = api
        self.cluster_domain = cluster_domain
        self.cluster_cidr = cluster_cidr
        # kube-dns's ClusterIP (the 10th of the primary service CIDR, as the control plane
        # allocates it): what every ClusterFirst pod's resolv.conf names.
        self.dns_ip = dns_ip
        self.ipam = HostLocalIpam(pod_cidr)
        self.gateway = self.ipam.gateway
        # Dual-stack: one host-local allocator per podCIDR (Node spec.podCIDRs), the primary
        # first; a pod gets an address from each.
        self.ipams = [self.ipam, *(HostLocalIpam(c) for c in pod_cidrs if c != pod_cidr)]
        self.cluster_cidrs = [c for c in cluster_cidrs if c != cluster_cidr]
        self.pods: dict[str, RunningPod] = {}          # by uid
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._rejected: set[str] = set()               # uids refused at admission
        self._side_tasks: set[asyncio.Task[None]] = set()  # short-lived, owned here
        self._stragglers: set[asyncio.Task[None]] = set()  # containers that ignored cancel
        # Every Service, as listed and watched by the agent (set by its main; None in tests
        # that run a runtime alone): the source of the Service environment variables.
        self.services: Informer | None = None

    def service_env(self, namespace: str, links: bool) -> dict[str, str]:
        """kubelet's Service variables for a container in `namespace` (agents/serviceenv.py);
        only the `kubernetes` Service's while this agent has not listed Services yet."""
        if self.services is None or not self.services.synced.is_set():
            return dict(FALLBACK_SERVICE_ENV)
        return service_env(self.services.items.values(), namespace, links)

    async def services_known(self) -> None:
        """Wait (briefly) until Services have been listed once: kubelet does not start a
        container whose Service variables it cannot know yet."""
        if self.services is not None and not self.services.synced.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.services.synced.wait(), SERVICES_SYNC_WAIT_S)

    def network_cidr_route(self) -> tuple[str, str] | None:
        """The overlay: the rest of the cluster's pods, through this node (and its tunnels)."""
        return (self.cluster_cidr, f"via {self.gateway} dev eth0 proto podnet")

    def v6_routes(self, ip6: str | None) -> list[tuple[str, str]]:
        """`ip -6 route` of a pod with the IPv6 address `ip6` (none without one): the
        routes of the secondary family (the primary's are the ones above)."""
        if ip6 is None or ":" in self.pod_cidr:
            return []       # no IPv6, or IPv6 is the primary family (already listed)
        ipam = next(i for i in self.ipams if i.family == 6)
        routes = [(str(ipam.network), "dev eth0 proto kernel metric 256 pref medium")]
        routes += [(c, f"via {ipam.gateway} dev eth0 proto podnet metric 1024 pref medium")
                   for c in self.cluster_cidrs if ":" in c]
        routes.append(("default", f"via {ipam.gateway} dev eth0 metric 1024 pref medium"))
        return routes

    def find(self, namespace: str, name: str) -> RunningPod | None:
        for pod in self.pods.values():
            if pod.namespace == namespace and pod.name == name:
                return pod
        return None

    async def sync(self, pod: dict[str, Any]) -> None:
        """Make reality match one pod object from the API (ADDED or MODIFIED)."""
        meta = pod.get("metadata") or {}
        uid = meta.get("uid")
        if not uid or (pod.get("spec") or {}).get("nodeName") != self.node:
            return
        running = self.pods.get(uid)
        if meta.get("deletionTimestamp"):
            if uid in self._stopping and running is not None and \
                    meta.get("deletionGracePeriodSeconds") == 0:
                running.hurry.set()
            if uid not in self._stopping:
                grace = meta.get("deletionGracePeriodSeconds")
                grace_s = float(grace if grace is not None else 30)
                self._stopping[uid] = asyncio.create_task(
                    self._terminate(uid, pod, grace_s), name=f"pod-terminate:{meta.get('name')}")
            return
        if running is not None:
            running.apply_spec_changes(pod)
            running.observe(pod)
            return
        if uid in self._stopping:
            return
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") and uid not in self.pods:
            return  # finished before this agent (re)started; kubelet does not rerun it
        if uid in self._rejected:
            return
        self._start(pod)

    def _start(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        prefer = (pod.get("status") or {}).get("podIP")
        try:
            ip = self.ipam.allocate(meta["uid"], prefer=prefer)
            ips = [ip, *self._allocate_more(pod, meta["uid"])]
        except PoolExhausted:
            for ipam in self.ipams:
                ipam.release_owner(meta["uid"])
            # kubelet's admission answer to a pod beyond the node's capacity (only reachable
            # with spec.nodeName, as the scheduler honours allocatable pods).
            self._rejected.add(meta["uid"])
            task = asyncio.create_task(
                self._reject(pod, "OutOfpods",
                             "Pod was rejected: Node didn't have enough resource: pods"),
                name=f"pod-reject:{meta['name']}")
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)
            return
        hostname = (pod.get("spec") or {}).get("hostname") or meta["name"]
        net = self.network.attach(ip, pod=meta["name"], namespace=meta.get("namespace",
                                  "default"), hostname=hostname, ips=ips)
        running = RunningPod(self, pod, ip, net)
        self.pods[meta["uid"]] = running
        running.log.info("pod.started", reused_ip=ip == prefer)
        running.start()

    def _allocate_more(self, pod: dict[str, Any], uid: str) -> list[str]:
        """The pod's addresses of the other families (dual-stack), each its old one if free."""
        if len(self.ipams) == 1:
            return []
        old = [entry.get("ip") for entry in (pod.get("status") or {}).get("podIPs") or []
               if isinstance(entry, dict)]
        ips = []
        for ipam in self.ipams[1:]:
            prefer = next((a for a in old if isinstance(a, str) and (":" in a) ==
                           (ipam.family == 6)), None)
            ips.append(ipam.allocate(uid, prefer=prefer))
        return ips

    def own(self, task: asyncio.Task[Any]) -> None:
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _reject(self, pod: dict[str, Any], reason: str, message: str) -> None:
        meta = pod["metadata"]
        log.warning("pod.rejected", pod=meta["name"], reason=reason)
        status = {"phase": "Failed", "reason": reason, "message": message,
                  "hostIP": self.host_ip, "startTime": now_rfc3339()}
        try:
            await self.api.patch(PODS, meta.get("namespace"), meta["name"], {"status": status},
                                 subresource="status")
        except (ApiError, ApiUnavailable) as e:
            log.warning("pod.reject_unsent", pod=meta["name"], error=str(e))

    async def _terminate(self, uid: str, pod: dict[str, Any], grace_s: float) -> None:
        meta = pod["metadata"]
        try:
            running = self.pods.get(uid)
            if running is not None:
                await self.event(running, "Normal", "Killing",
                                 f"Stopping container{'s' if len(running.tasks) > 1 else ''} "
                                 + ", ".join(running.tasks))
                await self._remove(uid, grace_s)
            try:
                await self.api.delete(PODS, meta.get("namespace"), meta["name"],
                                      grace_period_seconds=0, uid=uid)
            except ApiError as e:
                if e.code not in (404, 409):
                    log.warning("pod.final_delete_failed", pod=meta["name"], error=str(e))
        finally:
            self._stopping.pop(uid, None)

    async def _remove(self, uid: str, grace_s: float) -> None:
        running = self.pods.get(uid)
        if running is None:
            return
        for straggler in await running.stop(grace_s):
            self._stragglers.add(straggler)
            straggler.add_done_callback(self._stragglers.discard)
        self.network.detach(running.ip)
        for ipam, ip in zip(self.ipams, running.ips, strict=False):
            ipam.release(ip)
        self.pods.pop(uid, None)
        running.log.info("pod.stopped")

    async def forget(self, uid: str) -> None:
        """The pod object is gone from the API: stop it now."""
        self._rejected.discard(uid)
        if uid in self._stopping:
            running = self.pods.get(uid)
            if running is not None:
                running.hurry.set()  # force-deleted while terminating: no more grace
            return
        await self._remove(uid, 0.0)

    async def resync(self, pods: list[dict[str, Any]]) -> None:
        """After a (re)list: stop what the API no longer has, start what it has."""
        wanted = {p["metadata"]["uid"] for p in pods if p.get("metadata", {}).get("uid")}
        for uid in list(self.pods):
            if uid not in wanted:
                await self.forget(uid)
        # Pods that had an IP ask for it first, so a new pod cannot take it from them.
        for pod in sorted(pods, key=lambda p: not (p.get("status") or {}).get("podIP")):
            await self.sync(pod)

    async def event(self, pod: RunningPod, kind: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event about a pod, without making the caller wait for it
        (events are advisory; a container must not start later because of one)."""
        task = asyncio.create_task(self._send_event(pod, kind, reason, message),
                                   name=f"event:{pod.name}:{reason}")
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _send_event(self, pod: RunningPod, kind: str, reason: str, message: str) -> None:
        now = now_rfc3339()
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{pod.name}.", "namespace": pod.namespace},
            "involvedObject": {"kind": "Pod", "namespace": pod.namespace, "name": pod.name,
                               "uid": pod.uid, "apiVersion": "v1"},
            "reason": reason, "message": message, "type": kind,
            "source": {"component": "podnet-agent", "host": self.node},
            "reportingComponent": "podnet-agent", "reportingInstance": self.node,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            await self.api.create(EVENTS, pod.namespace, body)
        except (ApiError, ApiUnavailable) as e:
            log.debug("event.unsent", reason=reason, error=str(e))

    async def close(self) -> None:
        for task in [*self._stopping.values(), *self._side_tasks, *self._stragglers]:
            task.cancel()
        for uid in list(self.pods):
            await self._remove(uid, 1.0)
