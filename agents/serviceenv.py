"""Service environment variables: what kubelet puts in every container's environment. No I/O.

Before cluster DNS, containers found Services through Docker-link-style variables, and
kubelet still sets them (the "Connecting Applications with Services" tutorial shows them with
`printenv | grep SERVICE`). For every Service with a ClusterIP in the pod's namespace (unless
the pod sets `enableServiceLinks: false`), and always for the `kubernetes` Service of the
`default` namespace, a Service `my-nginx` with port 80/TCP gives:

    MY_NGINX_SERVICE_HOST=10.96.12.34        MY_NGINX_SERVICE_PORT=80
    MY_NGINX_PORT=tcp://10.96.12.34:80       MY_NGINX_PORT_80_TCP=tcp://10.96.12.34:80
    MY_NGINX_PORT_80_TCP_PROTO=tcp  MY_NGINX_PORT_80_TCP_PORT=80  MY_NGINX_PORT_80_TCP_ADDR=...

plus `MY_NGINX_SERVICE_PORT_<NAME>=80` for each named port. Only Services that exist when the
container starts are in its environment: a pod started before its Service never sees it
(the tutorial deletes and recreates its pods for that reason). The container's own `env`
entries win over these, as in kubelet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from podnet.addresses import hostport

MASTER_NAMESPACE = "default"
MASTER_SERVICES = frozenset({"kubernetes"})


def _name(text: str) -> str:
    return text.replace("-", "_").upper()


def _cluster_ip(spec: Mapping[str, Any]) -> str | None:
    ip = spec.get("clusterIP")
    if not isinstance(ip, str) or not ip or ip == "None":
        return None     # headless, ExternalName, or not allocated yet: no variables
    return ip


def variables_of(service: Mapping[str, Any]) -> dict[str, str]:
    """The variables one Service contributes (empty if it has no ClusterIP or no ports)."""
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    name, ip = meta.get("name"), _cluster_ip(spec)
    ports = [p for p in spec.get("ports") or [] if isinstance(p, Mapping)
             and isinstance(p.get("port"), int) and not isinstance(p.get("port"), bool)]
    if not isinstance(name, str) or not name or ip is None or not ports:
        return {}
    prefix = _name(name)
    host = f"[{ip}]" if ":" in ip else ip
    env = {f"{prefix}_SERVICE_HOST": ip, f"{prefix}_SERVICE_PORT": str(ports[0]["port"])}
    for port in ports:
        if isinstance(port.get("name"), str) and port["name"]:
            env[f"{prefix}_SERVICE_PORT_{_name(port['name'])}"] = str(port["port"])
    for i, port in enumerate(ports):
        raw = port.get("protocol")
        protocol = raw if isinstance(raw, str) and raw else "TCP"
        url = f"{protocol.lower()}://{hostport(host, port['port'])}"
        if i == 0:
            env[f"{prefix}_PORT"] = url     # Docker links single out the first port
        base = f"{prefix}_PORT_{port['port']}_{protocol.upper()}"
        env[base] = url
        env[f"{base}_PROTO"] = protocol.lower()
        env[f"{base}_PORT"] = str(port["port"])
        env[f"{base}_ADDR"] = ip
    return env


def service_env(services: Iterable[Mapping[str, Any]], namespace: str,
                enable_service_links: bool = True) -> dict[str, str]:
    """The Service variables for a container of a pod in `namespace` (kubelet's rules)."""
    chosen: dict[str, Mapping[str, Any]] = {}
    for service in services:
        meta = service.get("metadata") or {}
        name, ns = meta.get("name"), meta.get("namespace")
        if not isinstance(name, str) or _cluster_ip(service.get("spec") or {}) is None:
            continue
        if ns == MASTER_NAMESPACE and name in MASTER_SERVICES:
            chosen.setdefault(name, service)
        elif ns == namespace and enable_service_links:
            chosen[name] = service      # the pod's own namespace wins a name clash
    env: dict[str, str] = {}
    for name in sorted(chosen):
        env.update(variables_of(chosen[name]))
    return env
