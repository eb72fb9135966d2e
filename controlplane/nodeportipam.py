"""NodePort allocation as admission (kube-apiserver's node port allocator), next to service
IPAM: a NodePort or LoadBalancer Service is never stored without its ports, and two Services
can never share one. The rules live in `podnet.services.nodeports`; what is in use is read
from the stored Services at each allocation, so a restarted control plane keeps every port
and a deleted Service's ports are free again at once.

On update, a port that names no nodePort keeps the one it had (matched by port number and
protocol, else by name), as Kubernetes does, so `kubectl replace` of the original manifest
keeps the ports the cluster gave out. Changing the type back to ClusterIP drops them (see
`podnet.validation`, which clears type-dependent fields before validating an update).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog

from podnet.apierrors import ApiError, FieldError, invalid
from podnet.resources import Resource
from podnet.services.nodeports import (
    EXTERNAL_TYPES,
    Allocator,
    Owner,
    PortRange,
    needs_health_check,
    needs_node_ports,
    ports_of,
    used_ports,
)

log = structlog.get_logger()

Services = Callable[[], Iterable[Mapping[str, Any]]]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value else None


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _previous(port: dict[str, Any], old_ports: list[dict[str, Any]]) -> int | None:
    """The nodePort the same Service port had before this update."""
    for old in old_ports:
        if old.get("port") == port.get("port") and old.get("protocol") == port.get("protocol"):
            return _int(old.get("nodePort"))
    name = port.get("name")
    for old in old_ports:
        if name and old.get("name") == name and old.get("protocol") == port.get("protocol"):
            return _int(old.get("nodePort"))
    return None


class NodePortIpam:
    def __init__(self, ports: PortRange, services: Services,
                 rng: random.Random | None = None) -> None:
        self.allocator = Allocator(ports, rng)
        self.services = services

    def admit(self, op: str, res: Resource, obj: dict[str, Any],
              old: dict[str, Any] | None) -> None:
        if res.kind != "Service" or op not in ("CREATE", "UPDATE"):
            return
        spec = obj.get("spec")
        if not isinstance(spec, dict) or spec.get("type") not in EXTERNAL_TYPES:
            return
        meta = _d(obj.get("metadata"))
        owner: Owner = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        old_spec = _d(_d(old).get("spec"))
        was_external = old_spec.get("type") in EXTERNAL_TYPES
        old_ports = [p for p in old_spec.get("ports") or [] if isinstance(p, dict)]
        kept = set(ports_of(old_spec)) if was_external else set()
        used = {port: who for port, who in used_ports(self.services()).items()
                if who != owner}
        claimed: list[int] = []
        errors: list[FieldError] = []
        allocated: list[int] = []

        def claim(given: int, path: str) -> None:
            if given not in kept:   # unchanged ports were checked when they were given
                why = self.allocator.check(given, owner, used)
                if why is not None:
                    errors.append(FieldError(path, "Invalid value", why, given))
                    return
            claimed.append(given)

        def fresh(path: str) -> int:
            port = self.allocator.allocate(used, claimed)
            if port is None:
                raise ApiError(500, "InternalError", f"{path}: failed to allocate a nodePort: "
                               f"range is full ({self.allocator.range})")
            claimed.append(port)
            allocated.append(port)
            return port

        ports = spec.get("ports")
        for i, port in enumerate(ports if isinstance(ports, list) else []):
            if not isinstance(port, dict):
                continue
            path = f"spec.ports[{i}].nodePort"
            given = _int(port.get("nodePort"))
            if given is None and was_external:
                given = _previous(port, old_ports)
            if given is not None:
                claim(given, path)
                port["nodePort"] = given
            elif needs_node_ports(spec):
                port["nodePort"] = fresh(path)
        if needs_health_check(spec):
            given = _int(spec.get("healthCheckNodePort"))
            if given is None and needs_health_check(old_spec):
                given = _int(old_spec.get("healthCheckNodePort"))
            if given is not None:
                claim(given, "spec.healthCheckNodePort")
                spec["healthCheckNodePort"] = given
            else:
                spec["healthCheckNodePort"] = fresh("spec.healthCheckNodePort")
        if errors:
            raise invalid("Service", owner[1], errors)
        if allocated:
            log.info("nodeportipam.allocated", namespace=owner[0], service=owner[1],
                     node_ports=allocated)
