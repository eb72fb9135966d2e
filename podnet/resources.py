"""The resource registry: every API resource podnet serves, described once.

Discovery documents, the OpenAPI stub, URL routing, Table printing and the store all read
this table, so adding a resource is one entry here plus its validation and columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Resource:
    """One REST resource, as Kubernetes discovery describes it."""

    plural: str                      # URL segment: "pods"
    kind: str                        # "Pod"
    group: str = ""                  # "" is the core group
    version: str = "v1"
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "log", "exec"
    verbs: tuple[str, ...] = ALL_VERBS
    field_selectors: tuple[str, ...] = field(default=("metadata.name", "metadata.namespace"))

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


_COMMON = ("metadata.name", "metadata.namespace")

RESOURCES: tuple[Resource, ...] = (
    Resource("namespaces", "Namespace", namespaced=False, short_names=("ns",),
             subresources=("status",), field_selectors=(*_COMMON, "status.phase")),
    Resource("nodes", "Node", namespaced=False, short_names=("no",), subresources=("status",),
             field_selectors=(*_COMMON, "spec.unschedulable")),
    Resource("pods", "Pod", short_names=("po",), categories=("all",),
             subresources=("status", "log", "exec", "portforward", "binding"),
             field_selectors=(*_COMMON, "spec.nodeName", "spec.restartPolicy",
                              "spec.schedulerName", "spec.serviceAccountName", "status.phase",
                              "status.podIP", "status.nominatedNodeName")),
    Resource("services", "Service", short_names=("svc",), categories=("all",),
             subresources=("status",),
             field_selectors=(*_COMMON, "spec.clusterIP", "spec.type")),
    Resource("endpoints", "Endpoints", short_names=("ep",)),
    Resource("configmaps", "ConfigMap", short_names=("cm",)),
    Resource("endpointslices", "EndpointSlice", group="discovery.k8s.io",
             field_selectors=(*_COMMON, "addressType")),
    Resource("daemonsets", "DaemonSet", group="apps", short_names=("ds",), categories=("all",),
             subresources=("status",)),
    Resource("deployments", "Deployment", group="apps", short_names=("deploy",),
             categories=("all",), subresources=("status", "scale"),
             field_selectors=(*_COMMON, "status.replicas")),
    Resource("replicasets", "ReplicaSet", group="apps", short_names=("rs",),
             categories=("all",), subresources=("status", "scale"),
             field_selectors=(*_COMMON, "status.replicas")),
    Resource("statefulsets", "StatefulSet", group="apps", short_names=("sts",),
             categories=("all",), subresources=("status", "scale")),
    Resource("controllerrevisions", "ControllerRevision", group="apps"),
    Resource("networkpolicies", "NetworkPolicy", group="networking.k8s.io",
             short_names=("netpol",)),
    # podnet's own kind (podnet/api/fault_rules.py): cluster-scoped, since its endpoints may
    # be nodes or whole namespaces.
    Resource("networkfaults", "NetworkFault", group="podnet.dev", version="v1alpha1",
             namespaced=False, short_names=("netfault",), subresources=("status",),
             field_selectors=_COMMON),
    Resource("jobs", "Job", group="batch", categories=("all",), subresources=("status",)),
    Resource("events", "Event", short_names=("ev",),
             field_selectors=(*_COMMON, "involvedObject.kind", "involvedObject.namespace",
                              "involvedObject.name", "involvedObject.uid",
                              "involvedObject.apiVersion", "involvedObject.resourceVersion",
                              "involvedObject.fieldPath", "reason", "reportingComponent",
                              "source", "type")),
)

BY_PLURAL: dict[tuple[str, str], Resource] = {(r.group, r.plural): r for r in RESOURCES}
BY_KIND: dict[str, Resource] = {r.kind: r for r in RESOURCES}


def lookup(group: str, plural: str) -> Resource | None:
    """The resource served at /api[s]/<group>/<version>/<plural>, or None."""
    return BY_PLURAL.get((group, plural))


def group_versions() -> dict[str, list[Resource]]:
    """Resources by group-version ("v1", "discovery.k8s.io/v1", ...)."""
    out: dict[str, list[Resource]] = {}
    for r in RESOURCES:
        out.setdefault(r.group_version, []).append(r)
    return out
