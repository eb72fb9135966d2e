"""Container probes (readinessProbe, livenessProbe, startupProbe), run as kubelet runs them.

A probe is `httpGet` (success: a status from 200 to 399), `tcpSocket` (success: the connection
opens) or `exec` (success: exit code 0, a toolbox command inside the pod). It runs from inside
the pod's own network stack against the pod IP, every `periodSeconds`, after
`initialDelaySeconds`; `successThreshold` successes in a row make it pass and
`failureThreshold` failures in a row make it fail, as in Kubernetes. Parsing is pure; running a
probe needs the pod's network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agents.netstack import PodNet
from podnet.addresses import hostport


@dataclass(frozen=True)
class Probe:
    kind: str                      # "http" | "tcp" | "exec"
    port: int = 0
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3


def _port(value: Any, ports: list[dict[str, Any]]) -> int:
    """A probe port: a number, or the name of one of the container's ports."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        for port in ports:
            if port.get("name") == value and isinstance(port.get("containerPort"), int):
                return int(port["containerPort"])
    raise ValueError(f"probe port {value!r} is not a number or a named container port")


def _positive(spec: dict[str, Any], key: str, default: float, minimum: float) -> float:
    value = spec.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return default
    return max(float(value), minimum)


def parse(spec: Any, ports: list[dict[str, Any]]) -> Probe | None:
    """The probe a container spec asks for, or None. Raises ValueError on a probe that
    cannot run (the runtime reports it on the container, as kubelet would)."""
    if not isinstance(spec, dict):
        return None
    timing = {
        "initial_delay_s": _positive(spec, "initialDelaySeconds", 0, 0),
        "period_s": _positive(spec, "periodSeconds", 10, 1),
        "timeout_s": _positive(spec, "timeoutSeconds", 1, 1),
        "success_threshold": int(_positive(spec, "successThreshold", 1, 1)),
        "failure_threshold": int(_positive(spec, "failureThreshold", 3, 1)),
    }
    if isinstance(spec.get("httpGet"), dict):
        http = spec["httpGet"]
        headers = tuple((str(h.get("name")), str(h.get("value", "")))
                        for h in http.get("httpHeaders") or [] if isinstance(h, dict))
        return Probe("http", port=_port(http.get("port"), ports),
                     path=str(http.get("path") or "/"), headers=headers, **timing)  # type: ignore[arg-type]
    if isinstance(spec.get("tcpSocket"), dict):
        return Probe("tcp", port=_port(spec["tcpSocket"].get("port"), ports),
                     **timing)  # type: ignore[arg-type]
    if isinstance(spec.get("exec"), dict):
        command = spec["exec"].get("command") or []
        if not isinstance(command, list) or not command:
            raise ValueError("exec probe has no command")
        return Probe("exec", command=tuple(str(c) for c in command),
                     **timing)  # type: ignore[arg-type]
    raise ValueError("probe has no httpGet, tcpSocket or exec handler")


async def check(probe: Probe, net: PodNet, ip: str,
                run_exec: Callable[[list[str]], Awaitable[int]]) -> bool:
    """Run the probe once; True on success. Never raises for a failing target."""
    try:
        return await asyncio.wait_for(_check(probe, net, ip, run_exec), probe.timeout_s)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
        return False


async def _check(probe: Probe, net: PodNet, ip: str,
                 run_exec: Callable[[list[str]], Awaitable[int]]) -> bool:
    if probe.kind == "exec":
        return await run_exec(list(probe.command)) == 0
    reader, writer = await net.open_connection(ip, probe.port)
    try:
        if probe.kind == "tcp":
            return True
        head = "".join(f"{k}: {v}\r\n" for k, v in probe.headers)
        writer.write(f"GET {probe.path} HTTP/1.1\r\nHost: {hostport(ip, probe.port)}\r\n"
                     f"User-Agent: kube-probe/1.32\r\nConnection: close\r\n{head}\r\n"
                     .encode())
        await writer.drain()
        status = (await reader.readline()).split()
        return len(status) >= 2 and status[1].isdigit() and 200 <= int(status[1]) < 400
    finally:
        writer.close()


@dataclass
class ProbeState:
    """Thresholds applied to a stream of results (pure)."""

    probe: Probe
    passing: bool = False
    successes: int = 0
    failures: int = 0
    changed: bool = field(default=False, repr=False)

    def record(self, ok: bool) -> bool:
        """Apply one result; returns whether the verdict changed."""
        before = self.passing
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.probe.success_threshold:
                self.passing = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= self.probe.failure_threshold:
                self.passing = False
        return self.passing != before
