"""Server-side Table rendering for `kubectl get` (Accept: application/json;as=Table). No I/O.

kubectl prints Table cells verbatim, so the server formats everything itself: AGE with kubectl's
own duration format, a pod's STATUS with the same precedence the kube printers use (waiting and
terminated reasons, init progress, Terminating), RESTARTS with the time of the last restart.
Columns with priority 1 are shown only by `-o wide`; kubectl filters them client-side, so every
column is always sent.

`row.object` carries what kubectl needs for `-A`, `--show-labels`, `-L` and `kind/` prefixes:
PartialObjectMetadata by default, the full object for `includeObject=Object` (`--sort-by`),
nothing for `includeObject=None`.

Renderers never raise on malformed objects: a missing or mistyped field prints as `<none>`,
`<unknown>` or `0` as kubectl would print a zero value.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from podnet.api.fault_rules import describe_effect, describe_endpoint
from podnet.resources import BY_KIND
from podnet.selectors import LabelSelector, SelectorError

__all__ = ["INCLUDE_OBJECT", "format_age", "row_object", "table"]

INCLUDE_OBJECT = ("Metadata", "Object", "None")


# --- durations -------------------------------------------------------------------------------

def format_age(seconds: float) -> str:
    """kubectl's HumanDuration: `91s`, `2m31s`, `120m`, `3h30m`, `47h`, `3d5h`, `400d`, `2y5d`."""
    secs = int(seconds)  # truncates toward zero like Go's int(d.Seconds())
    # Up to one second in the future reads as "0s": clocks of two machines are never exact.
    if secs < -1:
        return "<invalid>"
    if secs < 0:
        return "0s"
    if secs < 120:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        rest = secs % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = secs // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{hours // 24 // 365}y"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _since(value: Any, now: datetime) -> str:
    """An RFC 3339 timestamp as an age; `<unknown>` when absent, like kubectl."""
    when = _parse_time(value)
    if when is None:
        return "<unknown>"
    return format_age((now - when).total_seconds())


# --- safe accessors --------------------------------------------------------------------------

def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _i(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return _d(obj.get("metadata"))


def _name(obj: dict[str, Any]) -> str:
    return _s(_meta(obj).get("name"))


def _age(obj: dict[str, Any], now: datetime) -> str:
    return _since(_meta(obj).get("creationTimestamp"), now)


def _or_none(text: str) -> str:
    return text or "<none>"


# --- columns ---------------------------------------------------------------------------------

Column = dict[str, Any]


def _col(name: str, description: str, *, priority: int = 0, type_: str = "string",
         format_: str = "") -> Column:
    return {"name": name, "type": type_, "format": format_, "description": description,
            "priority": priority}


_NAME = _col("Name", "Name must be unique within a namespace.", format_="name")
_AGE = _col("Age", "CreationTimestamp is a timestamp representing the server time when this "
            "object was created.")


# --- pods ------------------------------------------------------------------------------------

POD_COLUMNS = [
    _NAME,
    _col("Ready", "The aggregate readiness state of this pod for accepting traffic."),
    _col("Status", "The aggregate status of the containers in this pod."),
    _col("Restarts", "The number of times the containers in this pod have been restarted and "
         "when the last container in this pod has restarted."),
    _AGE,
    _col("IP", "The IP address assigned to the pod.", priority=1),
    _col("Node", "The name of the node the pod is assigned to.", priority=1),
    _col("Nominated Node", "The name of the node where the pod is nominated to run.",
         priority=1),
    _col("Readiness Gates", "The readiness gates of the pod.", priority=1),
]


def _exit_reason(term: dict[str, Any], prefix: str = "") -> str:
    if _s(term.get("reason")):
        return prefix + _s(term.get("reason"))
    if _i(term.get("signal")):
        return f"{prefix}Signal:{term['signal']}"
    return f"{prefix}ExitCode:{_i(term.get('exitCode'))}"


def _pod_row(pod: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = _d(pod.get("spec")), _d(pod.get("status"))
    containers = _l(spec.get("containers"))
    reason = _s(status.get("reason")) or _s(status.get("phase"))
    restarts, ready = 0, 0
    last_restart: datetime | None = None

    def note_restart(cs: dict[str, Any]) -> None:
        nonlocal restarts, last_restart
        restarts += _i(cs.get("restartCount"))
        finished = _parse_time(_d(_d(cs.get("lastState")).get("terminated")).get("finishedAt"))
        if finished and (last_restart is None or finished > last_restart):
            last_restart = finished

    init_specs = _l(spec.get("initContainers"))
    initializing = False
    for i, cs in enumerate(_l(status.get("initContainerStatuses"))):
        cs = _d(cs)
        note_restart(cs)
        state = _d(cs.get("state"))
        term, waiting = _d(state.get("terminated")), _d(state.get("waiting"))
        if term and _i(term.get("exitCode")) == 0:
            continue
        if term:
            reason = _exit_reason(term, "Init:")
        elif _s(waiting.get("reason")) and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break
    initialized = any(_d(c).get("type") == "Initialized" and _d(c).get("status") == "True"
                      for c in _l(status.get("conditions")))
    if not initializing or initialized:
        restarts, last_restart = 0, None
        has_running = False
        for cs in reversed(_l(status.get("containerStatuses"))):
            cs = _d(cs)
            note_restart(cs)
            state = _d(cs.get("state"))
            term, waiting = _d(state.get("terminated")), _d(state.get("waiting"))
            if _s(waiting.get("reason")):
                reason = waiting["reason"]
            elif _s(term.get("reason")):
                reason = term["reason"]
            elif term:
                reason = _exit_reason(term)
            elif cs.get("ready") is True and "running" in state:
                has_running = True
                ready += 1
        # A pod whose finished containers say Completed while others still run is Running.
        if reason == "Completed" and has_running:
            pod_ready = any(_d(c).get("type") == "Ready" and _d(c).get("status") == "True"
                            for c in _l(status.get("conditions")))
            reason = "Running" if pod_ready else "NotReady"
    meta = _meta(pod)
    if meta.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp"):
        reason = "Terminating"
    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({format_age((now - last_restart).total_seconds())} ago)"
    gates = _l(spec.get("readinessGates"))
    gates_text = "<none>"
    if gates:
        wanted = {_s(_d(g).get("conditionType")) for g in gates}
        true = sum(1 for c in _l(status.get("conditions"))
                   if _d(c).get("type") in wanted and _d(c).get("status") == "True")
        gates_text = f"{true}/{len(gates)}"
    return [
        _name(pod), f"{ready}/{len(containers)}", reason, restarts_text, _age(pod, now),
        # kubectl's IP column is the primary family's: podIPs[0], as Kubernetes prints it
        _or_none(_s(_d(_first(status.get("podIPs"))).get("ip")) or _s(status.get("podIP"))),
        _or_none(_s(spec.get("nodeName"))),
        _or_none(_s(status.get("nominatedNodeName"))), gates_text,
    ]


# --- nodes, namespaces, events ---------------------------------------------------------------

NODE_COLUMNS = [
    _NAME,
    _col("Status", "The status of the node"),
    _col("Roles", "The roles of the node"),
    _AGE,
    _col("Version", "Kubelet Version reported by the node."),
    _col("Internal-IP", "List of addresses reachable to the node.", priority=1),
    _col("External-IP", "List of addresses reachable to the node.", priority=1),
    _col("OS-Image", "OS Image reported by the node from /etc/os-release.", priority=1),
    _col("Kernel-Version", "Kernel Version reported by the node.", priority=1),
    _col("Container-Runtime", "Container Runtime Version reported by the node.", priority=1),
]

_ROLE_PREFIX = "node-role.kubernetes.io/"


def _node_row(node: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = _d(node.get("spec")), _d(node.get("status"))
    ready = next((_d(c) for c in _l(status.get("conditions")) if _d(c).get("type") == "Ready"),
                 None)
    states = ["Unknown" if ready is None else
              "Ready" if ready.get("status") == "True" else "NotReady"]
    if spec.get("unschedulable") is True:
        states.append("SchedulingDisabled")
    roles = set()
    for key, value in _d(_meta(node).get("labels")).items():
        if isinstance(key, str) and key.startswith(_ROLE_PREFIX) and key[len(_ROLE_PREFIX):]:
            roles.add(key[len(_ROLE_PREFIX):])
        elif key == "kubernetes.io/role" and _s(value):
            roles.add(value)
    info = _d(status.get("nodeInfo"))

    def address(kind: str) -> str:
        for a in _l(status.get("addresses")):
            if _d(a).get("type") == kind and _s(_d(a).get("address")):
                return str(a["address"])
        return "<none>"

    return [
        _name(node), ",".join(states), ",".join(sorted(roles)) or "<none>", _age(node, now),
        _s(info.get("kubeletVersion")), address("InternalIP"), address("ExternalIP"),
        _s(info.get("osImage")) or "<unknown>", _s(info.get("kernelVersion")) or "<unknown>",
        _s(info.get("containerRuntimeVersion")) or "<unknown>",
    ]


NAMESPACE_COLUMNS = [
    _NAME,
    _col("Status", "The status of the namespace"),
    _AGE,
]


def _namespace_row(ns: dict[str, Any], now: datetime) -> list[Any]:
    return [_name(ns), _s(_d(ns.get("status")).get("phase")), _age(ns, now)]


EVENT_COLUMNS = [
    _col("Last Seen", "The time since the event was last seen."),
    _col("Type", "Type of this event (Normal, Warning), new types could be added in the "
         "future."),
    _col("Reason", "The reason this event was generated."),
    _col("Object", "The object that this event is about."),
    _col("Subobject", "The subobject (fieldPath) this event is about.", priority=1),
    _col("Source", "The component reporting this event.", priority=1),
    _col("Message", "A human-readable description of the status of this operation."),
    _col("First Seen", "The time at which the event was first recorded.", priority=1),
    _col("Count", "The number of times this event has occurred.", priority=1,
         type_="integer"),
    _col("Name", "The name of the event.", priority=1),
]


def _event_row(ev: dict[str, Any], now: datetime) -> list[Any]:
    first = (_since(ev.get("firstTimestamp"), now) if _parse_time(ev.get("firstTimestamp"))
             else _since(ev.get("eventTime"), now))
    last = _since(ev.get("lastTimestamp"), now) if _parse_time(ev.get("lastTimestamp")) \
        else first
    count = _i(ev.get("count"))
    series = ev.get("series")
    if isinstance(series, dict):
        last = _since(series.get("lastObservedTime"), now)
        count = _i(series.get("count"))
    elif count == 0:
        count = 1
    involved = _d(ev.get("involvedObject"))
    kind = _s(involved.get("kind")).lower()
    target = f"{kind}/{involved['name']}" if _s(involved.get("name")) else kind
    source = _d(ev.get("source"))
    component = _s(source.get("component")) or _s(ev.get("reportingComponent"))
    instance = _s(source.get("host")) or _s(ev.get("reportingInstance"))
    return [
        last, _s(ev.get("type")), _s(ev.get("reason")), target,
        _s(involved.get("fieldPath")), f"{component}, {instance}" if instance else component,
        _s(ev.get("message")).strip(), first, count, _name(ev),
    ]


# --- services, endpoints, endpointslices -----------------------------------------------------

SERVICE_COLUMNS = [
    _NAME,
    _col("Type", "The type of the service."),
    _col("Cluster-IP", "The cluster IP address of the service."),
    _col("External-IP", "The external IP addresses of the service."),
    _col("Port(s)", "The ports of the service."),
    _AGE,
    _col("Selector", "Route service traffic to pods with label keys and values matching this "
         "selector.", priority=1),
    # podnet's one addition to Kubernetes' table, and only under -o wide: every ClusterIP,
    # so a dual-stack Service shows both families where a learner looks first.
    _col("Cluster-IPs", "The cluster IP addresses of the service, one per IP family.",
         priority=1),
]


def _first(value: Any) -> Any:
    """The first item of a list (None for an empty list or a non-list)."""
    items = _l(value)
    return items[0] if items else None


def _service_row(svc: dict[str, Any], now: datetime) -> list[Any]:
    spec = _d(svc.get("spec"))
    svc_type = _s(spec.get("type")) or "ClusterIP"
    external = [x for x in _l(spec.get("externalIPs")) if isinstance(x, str)]
    if svc_type == "LoadBalancer":
        for ing in _l(_d(_d(svc.get("status")).get("loadBalancer")).get("ingress")):
            addr = _s(_d(ing).get("ip")) or _s(_d(ing).get("hostname"))
            if addr:
                external.append(addr)
        external_text = ",".join(external) or "<pending>"
    elif svc_type == "ExternalName":
        external_text = _s(spec.get("externalName")) or "<none>"
    else:
        external_text = ",".join(external) or "<none>"
    ports = []
    for p in _l(spec.get("ports")):
        p = _d(p)
        proto = _s(p.get("protocol")) or "TCP"
        node_port = _i(p.get("nodePort"))
        ports.append(f"{_i(p.get('port'))}:{node_port}/{proto}" if node_port
                     else f"{_i(p.get('port'))}/{proto}")
    selector = _d(spec.get("selector"))
    selector_text = ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"
    return [
        # CLUSTER-IP is clusterIPs[0] alone, also for a dual-stack Service (Kubernetes'
        # printService); the wide-only CLUSTER-IPS column shows them all.
        _name(svc), svc_type,
        _or_none(_s(_first(spec.get("clusterIPs"))) or _s(spec.get("clusterIP"))),
        external_text,
        ",".join(ports) or "<none>", _age(svc, now), selector_text,
        _or_none(",".join(ip for ip in _l(spec.get("clusterIPs")) if isinstance(ip, str))
                 or _s(spec.get("clusterIP"))),
    ]


def _first_three(items: list[str], empty: str) -> str:
    if not items:
        return empty
    text = ",".join(items[:3])
    return f"{text} + {len(items) - 3} more..." if len(items) > 3 else text


ENDPOINTS_COLUMNS = [
    _NAME,
    _col("Endpoints", "Endpoints of the service."),
    _AGE,
]


def _endpoints_row(ep: dict[str, Any], now: datetime) -> list[Any]:
    items: list[str] = []
    for subset in _l(ep.get("subsets")):
        subset = _d(subset)
        addresses = [_s(_d(a).get("ip")) for a in _l(subset.get("addresses"))]
        ports = [_i(_d(p).get("port")) for p in _l(subset.get("ports"))]
        for address in addresses:
            if ports:
                items.extend(f"{address}:{port}" for port in ports)
            else:
                items.append(address)
    return [_name(ep), _first_three(items, "<none>"), _age(ep, now)]


ENDPOINTSLICE_COLUMNS = [
    _NAME,
    _col("AddressType", "The IP protocol for this slice."),
    _col("Ports", "The ports of this slice."),
    _col("Endpoints", "The endpoints of this slice."),
    _AGE,
]


def _endpointslice_row(es: dict[str, Any], now: datetime) -> list[Any]:
    ports = []
    for p in _l(es.get("ports")):
        port = _d(p).get("port")
        ports.append(str(port) if _i(port) else "<unset>")
    addresses = [str(a) for e in _l(es.get("endpoints")) for a in _l(_d(e).get("addresses"))]
    return [
        _name(es), _s(es.get("addressType")), ",".join(ports) or "<unset>",
        _first_three(addresses, "<unset>"), _age(es, now),
    ]


# --- deployments, replicasets ----------------------------------------------------------------

def _template_columns() -> list[Column]:
    return [
        _col("Containers", "Names of each container in the template.", priority=1),
        _col("Images", "Images referenced by each container in the template.", priority=1),
        _col("Selector", "Label selector for pods.", priority=1),
    ]


DEPLOYMENT_COLUMNS = [
    _NAME,
    _col("Ready", "Number of the pod with ready state"),
    _col("Up-to-date", "Total number of non-terminated pods targeted by this deployment that "
         "have the desired template spec.", type_="integer"),
    _col("Available", "Total number of available pods (ready for at least minReadySeconds) "
         "targeted by this deployment.", type_="integer"),
    _AGE,
    *_template_columns(),
]

REPLICASET_COLUMNS = [
    _NAME,
    _col("Desired", "Replicas is the number of desired replicas.", type_="integer"),
    _col("Current", "Replicas is the most recently observed number of replicas.",
         type_="integer"),
    _col("Ready", "The number of ready replicas for this replica set.", type_="integer"),
    _AGE,
    *_template_columns(),
]


def _template_cells(obj: dict[str, Any]) -> list[Any]:
    spec = _d(obj.get("spec"))
    containers = [_d(c) for c in _l(_d(_d(spec.get("template")).get("spec")).get("containers"))]
    try:
        selector = str(LabelSelector.from_spec(_d(spec.get("selector")))) or "<none>"
    except SelectorError:
        selector = "<error>"
    return [",".join(_s(c.get("name")) for c in containers),
            ",".join(_s(c.get("image")) for c in containers), selector]


def _replicas(spec: dict[str, Any]) -> int:
    # An unset spec.replicas defaults to 1 in the apps API.
    return _i(spec["replicas"]) if "replicas" in spec else 1


def _deployment_row(dep: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = _d(dep.get("spec")), _d(dep.get("status"))
    return [
        _name(dep), f"{_i(status.get('readyReplicas'))}/{_replicas(spec)}",
        _i(status.get("updatedReplicas")), _i(status.get("availableReplicas")), _age(dep, now),
        *_template_cells(dep),
    ]


def _replicaset_row(rs: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = _d(rs.get("spec")), _d(rs.get("status"))
    return [
        _name(rs), _replicas(spec), _i(status.get("replicas")),
        _i(status.get("readyReplicas")), _age(rs, now), *_template_cells(rs),
    ]


# --- statefulsets, daemonsets, jobs ----------------------------------------------------------

STATEFULSET_COLUMNS = [
    _NAME,
    _col("Ready", "Number of the pod with ready state"),
    _AGE,
    *_template_columns()[:2],
]


def _statefulset_row(sts: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = _d(sts.get("spec")), _d(sts.get("status"))
    return [_name(sts), f"{_i(status.get('readyReplicas'))}/{_replicas(spec)}", _age(sts, now),
            *_template_cells(sts)[:2]]


DAEMONSET_COLUMNS = [
    _NAME,
    _col("Desired", "The total number of nodes that should be running the daemon pod.",
         type_="integer"),
    _col("Current", "The number of nodes that are running at least 1 daemon pod and are "
         "supposed to run the daemon pod.", type_="integer"),
    _col("Ready", "The number of nodes that should be running the daemon pod and have one or "
         "more of the daemon pod running and ready.", type_="integer"),
    _col("Up-to-date", "The total number of nodes that are running updated daemon pod",
         type_="integer"),
    _col("Available", "The number of nodes that should be running the daemon pod and have one "
         "or more of the daemon pod running and available (ready for at least "
         "spec.minReadySeconds)", type_="integer"),
    _col("Node Selector", "NodeSelector is a selector which must be true for the pod to fit "
         "on a node."),
    _AGE,
    *_template_columns(),
]


def _daemonset_row(ds: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = _d(ds.get("spec")), _d(ds.get("status"))
    selector = _d(_d(_d(spec.get("template")).get("spec")).get("nodeSelector"))
    selector_text = ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"
    return [
        _name(ds), _i(status.get("desiredNumberScheduled")),
        _i(status.get("currentNumberScheduled")), _i(status.get("numberReady")),
        _i(status.get("updatedNumberScheduled")), _i(status.get("numberAvailable")),
        selector_text, _age(ds, now), *_template_cells(ds),
    ]


JOB_COLUMNS = [
    _NAME,
    _col("Status", "Status of the job."),
    _col("Completions", "The number of pods which reached phase Succeeded."),
    _col("Duration", "Time required to complete the job."),
    _AGE,
    *_template_columns(),
]


def _has_condition(obj: dict[str, Any], kind: str) -> bool:
    return any(_d(c).get("type") == kind and _d(c).get("status") == "True"
               for c in _l(_d(obj.get("status")).get("conditions")))


def _job_row(job: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = _d(job.get("spec")), _d(job.get("status"))
    succeeded = _i(status.get("succeeded"))
    if "completions" in spec and spec["completions"] is not None:
        completions = f"{succeeded}/{_i(spec['completions'])}"
    elif _i(spec.get("parallelism")) > 1:
        completions = f"{succeeded}/1 of {_i(spec['parallelism'])}"
    else:
        completions = f"{succeeded}/1"
    started = _parse_time(status.get("startTime"))
    finished = _parse_time(status.get("completionTime"))
    duration = ""
    if started is not None:
        duration = format_age(((finished or now) - started).total_seconds())
    # kubectl's precedence: terminal conditions first, then deletion, then the interim ones.
    if _has_condition(job, "Complete"):
        state = "Complete"
    elif _has_condition(job, "Failed"):
        state = "Failed"
    elif _meta(job).get("deletionTimestamp"):
        state = "Terminating"
    elif _has_condition(job, "Suspended"):
        state = "Suspended"
    elif _has_condition(job, "FailureTarget"):
        state = "FailureTarget"
    elif _has_condition(job, "SuccessCriteriaMet"):
        state = "SuccessCriteriaMet"
    else:
        state = "Running"
    return [_name(job), state, completions, duration, _age(job, now), *_template_cells(job)]


CONTROLLERREVISION_COLUMNS = [
    _NAME,
    _col("Controller", "Controller of the object"),
    _col("Revision", "Revision indicates the revision of the state represented by Data.",
         type_="integer"),
    _AGE,
]


def _controllerrevision_row(rev: dict[str, Any], now: datetime) -> list[Any]:
    owner = next((_d(r) for r in _l(_meta(rev).get("ownerReferences"))
                  if _d(r).get("controller") is True), {})
    group = _s(owner.get("apiVersion")).split("/")[0] if "/" in _s(owner.get("apiVersion")) \
        else ""
    controller = "<none>"
    if owner:
        kind = _s(owner.get("kind")).lower()
        controller = f"{kind}.{group}/{_s(owner.get('name'))}" if group else \
            f"{kind}/{_s(owner.get('name'))}"
    return [_name(rev), controller, _i(rev.get("revision")), _age(rev, now)]


# --- networkpolicies -------------------------------------------------------------------------

NETWORKPOLICY_COLUMNS = [
    _NAME,
    _col("Pod-Selector", "Pod selector is a label query over pods that should be selected by "
         "this network policy."),
    _AGE,
]


def _networkpolicy_row(policy: dict[str, Any], now: datetime) -> list[Any]:
    # kubectl's FormatLabelSelector: the selector string, `<none>` for the empty selector
    # (which selects every pod in the namespace).
    try:
        selector = str(LabelSelector.from_spec(_d(_d(policy.get("spec")).get("podSelector"))))
    except SelectorError:
        selector = "<error>"
    return [_name(policy), selector or "<none>", _age(policy, now)]


# --- networkfaults ---------------------------------------------------------------------------

NETWORKFAULT_COLUMNS = [
    _NAME,
    _col("From", "The traffic's source end: node/, pod/, svc/, ns/ or a label selector."),
    _col("To", "The traffic's destination end, spelled like From."),
    _col("Effect", "What the fault does: delay±jitter, loss, rate, or partition."),
    _col("Expires", "Time left before the control plane deletes the fault (spec.duration)."),
    _AGE,
    _col("Direction", "to: From->To only; from: To->From only; both.", priority=1),
    _col("Match", "Protocol and destination port the fault applies to.", priority=1),
    _col("Seed", "The seed of its loss and jitter (else derived from the cluster seed).",
         priority=1),
]


def _expires(fault: dict[str, Any], now: datetime) -> str:
    when = _parse_time(_d(fault.get("status")).get("expiresAt"))
    if when is None:
        return "<pending>" if _s(_d(fault.get("spec")).get("duration")) not in ("", "0", "0s") \
            and not _d(fault.get("status")) else "<none>"
    left = (when - now).total_seconds()
    return format_age(left) if left > 0 else "expired"


def _networkfault_row(fault: dict[str, Any], now: datetime) -> list[Any]:
    spec = _d(fault.get("spec"))
    port = spec.get("port")
    match = _s(spec.get("protocol")) or "all"
    if isinstance(port, int) and not isinstance(port, bool):
        match += f":{port}"
    seed = spec.get("seed")
    return [_name(fault), describe_endpoint(spec.get("from")), describe_endpoint(spec.get("to")),
            describe_effect(spec), _expires(fault, now), _age(fault, now),
            _s(spec.get("direction")) or "both", match,
            str(seed) if isinstance(seed, int) and not isinstance(seed, bool) else "<cluster>"]


# --- fallback and dispatch -------------------------------------------------------------------

GENERIC_COLUMNS = [_NAME, _AGE]


def _generic_row(obj: dict[str, Any], now: datetime) -> list[Any]:
    return [_name(obj), _age(obj, now)]


Renderer = Callable[[dict[str, Any], datetime], list[Any]]

PRINTERS: dict[str, tuple[list[Column], Renderer]] = {
    "Pod": (POD_COLUMNS, _pod_row),
    "Node": (NODE_COLUMNS, _node_row),
    "Namespace": (NAMESPACE_COLUMNS, _namespace_row),
    "Event": (EVENT_COLUMNS, _event_row),
    "Service": (SERVICE_COLUMNS, _service_row),
    "Endpoints": (ENDPOINTS_COLUMNS, _endpoints_row),
    "EndpointSlice": (ENDPOINTSLICE_COLUMNS, _endpointslice_row),
    "Deployment": (DEPLOYMENT_COLUMNS, _deployment_row),
    "ReplicaSet": (REPLICASET_COLUMNS, _replicaset_row),
    "StatefulSet": (STATEFULSET_COLUMNS, _statefulset_row),
    "DaemonSet": (DAEMONSET_COLUMNS, _daemonset_row),
    "Job": (JOB_COLUMNS, _job_row),
    "ControllerRevision": (CONTROLLERREVISION_COLUMNS, _controllerrevision_row),
    "NetworkPolicy": (NETWORKPOLICY_COLUMNS, _networkpolicy_row),
    "NetworkFault": (NETWORKFAULT_COLUMNS, _networkfault_row),
}

# Accept plurals and lower-case names too, so callers can pass what the URL had.
_ALIASES = {**{k.lower(): k for k in PRINTERS},
            **{k.lower() + "s": k for k in PRINTERS}, "endpoints": "Endpoints",
            "networkpolicies": "NetworkPolicy"}

_API_VERSIONS = {"Deployment": "apps/v1", "ReplicaSet": "apps/v1",
                 "EndpointSlice": "discovery.k8s.io/v1"}


def _canonical_kind(kind: str) -> str:
    return kind if kind in PRINTERS else _ALIASES.get(kind.lower(), kind)


def _api_version(kind: str) -> str:
    resource = BY_KIND.get(kind)
    return resource.api_version if resource else _API_VERSIONS.get(kind, "v1")


def row_object(kind: str, obj: dict[str, Any], include_object: str = "Metadata") -> \
        dict[str, Any] | None:
    """What goes in `row.object` for one object (None: leave the key out)."""
    if include_object == "None":
        return None
    if include_object == "Object":
        full = copy.deepcopy(obj)
        full.setdefault("kind", kind)
        full.setdefault("apiVersion", _api_version(kind))
        return full
    metadata = {k: copy.deepcopy(v) for k, v in _meta(obj).items() if k != "managedFields"}
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata}


def table(kind: str, objects: list[dict[str, Any]], *, include_object: str = "Metadata",
          now: datetime, resource_version: str) -> dict[str, Any]:
    """A `meta.k8s.io/v1` Table of `objects` (all of `kind`, e.g. "Pod" or "pods").

    `include_object` is the request's `includeObject` ("" means Metadata); anything other than
    Metadata/Object/None raises ValueError (a 400 for the API server).
    """
    mode = include_object or "Metadata"
    if mode not in INCLUDE_OBJECT:
        raise ValueError(f'invalid includeObject "{include_object}": must be one of '
                         "Metadata, Object, None")
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    canonical = _canonical_kind(kind)
    columns, render = PRINTERS.get(canonical, (GENERIC_COLUMNS, _generic_row))
    rows = []
    for obj in objects:
        obj = _d(obj)
        row: dict[str, Any] = {"cells": render(obj, now)}
        embedded = row_object(canonical, obj, mode)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": copy.deepcopy(columns),
        "rows": rows,
    }
