"""Validation and defaulting of `podnet.dev/v1alpha1` NetworkFaults, with field paths in the
API server's style. No I/O.

A NetworkFault is cluster-scoped (its endpoints may be nodes or whole namespaces):

    apiVersion: podnet.dev/v1alpha1
    kind: NetworkFault
    metadata: {name: slow-node-2}
    spec:
      from: {node: node-1}
      to: {selector: "app=web", namespace: default}
      direction: both          # to: from->to only; from: to->from only; both (default)
      protocol: all            # tcp | udp | all (default)
      port: 8080               # optional destination port
      delayMs: 100             # every effect is optional; 0 or absent means none
      jitterMs: 10
      lossPct: 5.0
      rateKbit: 1000
      partition: false
      seed: 42                 # optional; else derived from the cluster seed and the name
      duration: 30s            # optional Go duration; the fault is deleted when it expires
    status: {expiresAt: "2026-01-01T00:00:30Z", observedGeneration: 1}

`status` belongs to the control plane (controlplane/faultexpiry.py): each time the spec
changes (a new `metadata.generation`) it sets `expiresAt` to that moment plus `duration`
(or clears it) and records the generation it saw, so re-adding a fault restarts its clock.

An endpoint (`from`, `to`) names exactly one of `node`, `pod` ("ns/name"), `service`
("ns/name", traffic sent to its ClusterIP), `namespace` (every pod in it) or `selector` (a
label selector string over pods; `namespace` may accompany it to narrow it to one namespace,
without it the selector matches pods in every namespace).

Zero means zero: every effect at 0 is a valid fault that changes nothing, so writing 0 over
a value restores the link exactly (`podnet fault add NAME ... --delay-ms 0`). Jitter without
delay is allowed (the delay then varies between 0 and the jitter). A partition drops
everything, so it cannot be combined with the other effects. `duration` `0s` means "never
expires", the same as leaving it out.
"""

from __future__ import annotations

import math
import re
from typing import Any

from podnet.selectors import LabelSelector, SelectorError
from podnet.validation import (
    _TOP,
    BOOL,
    INT,
    NUM,
    STR,
    KindRules,
    Obj,
    _Ctx,
    _d,
    _int,
    _port_range,
    _shown,
    _supported,
    validate_dns_label,
    validate_name,
)

__all__ = ["DIRECTIONS", "EFFECTS", "ENDPOINT_KEYS", "FAULT_KINDS", "MAX_DELAY_MS",
           "MAX_RATE_KBIT", "NETWORK_FAULT", "PROTOCOLS", "DurationError", "describe_effect",
           "describe_endpoint", "parse_go_duration"]

DIRECTIONS = ("to", "from", "both")
PROTOCOLS = ("tcp", "udp", "all")
# The keys an endpoint may name; `namespace` may also accompany `selector`.
ENDPOINT_KEYS = ("node", "pod", "service", "namespace", "selector")
# Integer effects, then the one float and the switch (the order `describe_effect` prints).
EFFECTS = ("delayMs", "jitterMs", "lossPct", "rateKbit", "partition")

MAX_DELAY_MS = 60_000           # one minute, the fault model's own limit (podnet/faults/model.py)
MAX_RATE_KBIT = 100_000_000     # 100 Gbit/s: far above what the emulator moves
MAX_SEED = 2**63 - 1

_ENDPOINT = Obj({"node": STR, "pod": STR, "service": STR, "namespace": STR, "selector": STR})
NETWORK_FAULT = Obj({**_TOP, "spec": Obj({
    "from": _ENDPOINT, "to": _ENDPOINT, "direction": STR, "protocol": STR, "port": INT,
    "delayMs": INT, "jitterMs": INT, "lossPct": NUM, "rateKbit": INT, "partition": BOOL,
    "seed": INT, "duration": STR,
}), "status": Obj({"expiresAt": STR, "observedGeneration": INT})})


# --- Go durations ----------------------------------------------------------------------------

class DurationError(ValueError):
    """Not a Go duration string."""


_UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
            "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_MAX_DURATION_S = (2**63 - 1) / 1e9   # Go's time.Duration is int64 nanoseconds


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string (`30s`, `2m`, `1h30m`, `1.5h`, `300ms`); as Go's
    time.ParseDuration, a unit is required except for a bare `0`, and negative durations
    parse. Raises DurationError."""
    if not isinstance(text, str) or not text:
        raise DurationError(f"invalid duration {text!r}")
    rest, sign = text, 1.0
    if rest[0] in "+-":
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise DurationError(f"invalid duration {text!r}")
    total, pos = 0.0, 0
    while pos < len(rest):
        match = _DURATION_PART.match(rest, pos)
        if match is None or match.group(1) in ("", "."):
            unit_missing = match is None and re.fullmatch(r"[0-9.]+", rest[pos:]) is not None
            why = "missing unit in duration" if unit_missing else "invalid duration"
            raise DurationError(f"{why} {text!r}")
        total += float(match.group(1)) * _UNITS_S[match.group(2)]
        pos = match.end()
    if total > _MAX_DURATION_S:
        raise DurationError(f"invalid duration {text!r}: out of range")
    return sign * total


# --- printing (the Table and `podnet fault list` share these) --------------------------------

def describe_endpoint(endpoint: Any) -> str:
    """One endpoint as the CLI spells it: `node/node-1`, `pod/default/web-0`,
    `svc/default/web`, `ns/default`, `default:app=web`, `app=web` (every namespace)."""
    ep = _d(endpoint)
    for key, prefix in (("node", "node/"), ("pod", "pod/"), ("service", "svc/")):
        value = ep.get(key)
        if isinstance(value, str):
            return prefix + value
    selector, ns = ep.get("selector"), ep.get("namespace")
    if isinstance(selector, str):
        return f"{ns}:{selector}" if isinstance(ns, str) and ns else selector
    if isinstance(ns, str):
        return "ns/" + ns
    return "<none>"


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def describe_effect(spec: Any) -> str:
    """The effects of a fault in one short phrase: `delay=100ms±10ms loss=5% rate=1000kbit`,
    `partition`, or `none` when everything is zero."""
    spec = _d(spec)
    if spec.get("partition") is True:
        return "partition"
    parts = []
    delay, jitter = spec.get("delayMs") or 0, spec.get("jitterMs") or 0
    if delay or jitter:
        parts.append(f"delay={_number(delay)}ms" + (f"±{_number(jitter)}ms" if jitter else ""))
    if spec.get("lossPct"):
        parts.append(f"loss={_number(spec['lossPct'])}%")
    if spec.get("rateKbit"):
        parts.append(f"rate={_number(spec['rateKbit'])}kbit")
    return " ".join(parts) or "none"


# --- defaulting ------------------------------------------------------------------------------

def _default_network_fault(obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return  # reported by the checks
    spec.setdefault("direction", "both")
    spec.setdefault("protocol", "all")


# --- checks ----------------------------------------------------------------------------------

def _check_ns_name(ctx: _Ctx, value: str, path: str, what: str) -> None:
    """A `ns/name` reference (pods and services)."""
    ns, sep, name = value.partition("/")
    if not sep or not ns or not name or "/" in name:
        ctx.err(path, "Invalid value", f'must be "namespace/name" of a {what}', value)
        return
    for e in validate_dns_label(ns, path):
        ctx.err(path, "Invalid value", f"namespace: {e.detail}", value)
    for e in validate_name(name, path):
        ctx.err(path, "Invalid value", f"name: {e.detail}", value)


def _check_endpoint(ctx: _Ctx, endpoint: Any, path: str) -> None:
    if endpoint is None:
        ctx.err(path, "Required value",
                "must name one of: node, pod, service, namespace, selector")
        return
    if not isinstance(endpoint, dict):
        return  # reported by the shape check
    named = [k for k in ENDPOINT_KEYS if k in endpoint]
    if named == ["namespace", "selector"]:
        named = ["selector"]  # a selector narrowed to one namespace
    if not named:
        ctx.err(path, "Required value",
                "must name one of: node, pod, service, namespace, selector")
        return
    if len(named) > 1:
        ctx.err(path, "Invalid value",
                "must name exactly one of: node, pod, service, namespace, selector "
                "(namespace may accompany selector)", _shown(endpoint))
        return
    key = named[0]
    value = endpoint[key]
    if not isinstance(value, str):
        return  # reported by the shape check
    sub = f"{path}.{key}"
    if key == "node":
        ctx.extend(validate_name(value, sub))
    elif key in ("pod", "service"):
        _check_ns_name(ctx, value, sub, key)
    elif key == "selector":
        if not value.strip():
            ctx.err(sub, "Required value", "an empty selector would match every pod; "
                    "name the pods, or use node or namespace")
        else:
            try:
                LabelSelector.parse(value)
            except SelectorError as exc:
                ctx.err(sub, "Invalid value", str(exc), value)
    if "namespace" in endpoint and isinstance(endpoint["namespace"], str):
        ctx.extend(validate_dns_label(endpoint["namespace"], f"{path}.namespace"))


def _check_non_negative(ctx: _Ctx, spec: dict[str, Any], key: str, maximum: int) -> None:
    value = _int(spec.get(key))
    if value is None:
        return  # absent, or reported by the shape check
    if value < 0:
        ctx.err(f"spec.{key}", "Invalid value", "must be greater than or equal to 0", value)
    elif value > maximum:
        ctx.err(f"spec.{key}", "Invalid value", f"must be no more than {maximum}", value)


def _check_network_fault(ctx: _Ctx, obj: dict[str, Any]) -> None:
    if "spec" not in obj:
        ctx.err("spec", "Required value", "a NetworkFault needs from, to and its effects")
        return
    spec = _d(obj.get("spec"))
    _check_endpoint(ctx, spec.get("from"), "spec.from")
    _check_endpoint(ctx, spec.get("to"), "spec.to")
    ctx.extend(_supported("spec.direction", spec.get("direction"), DIRECTIONS))
    ctx.extend(_supported("spec.protocol", spec.get("protocol"), PROTOCOLS))
    if "port" in spec:
        ctx.extend(_port_range("spec.port", spec["port"]))
    _check_non_negative(ctx, spec, "delayMs", MAX_DELAY_MS)
    _check_non_negative(ctx, spec, "jitterMs", MAX_DELAY_MS)
    _check_non_negative(ctx, spec, "rateKbit", MAX_RATE_KBIT)
    _check_non_negative(ctx, spec, "seed", MAX_SEED)
    loss = spec.get("lossPct")
    if isinstance(loss, (int, float)) and not isinstance(loss, bool) and \
            (not math.isfinite(loss) or not 0 <= loss <= 100):
        ctx.err("spec.lossPct", "Invalid value", "must be between 0 and 100, inclusive", loss)
    if spec.get("partition") is True:
        others = [k for k in EFFECTS[:-1] if spec.get(k)]
        if others:
            ctx.err("spec.partition", "Forbidden",
                    f"a partition drops everything: {', '.join(others)} must be 0 with it")
    duration = spec.get("duration")
    if isinstance(duration, str):
        try:
            seconds = parse_go_duration(duration)
        except DurationError as exc:
            ctx.err("spec.duration", "Invalid value",
                    f"{exc} (a Go duration such as 30s, 2m or 1h30m)", duration)
        else:
            if seconds < 0:
                ctx.err("spec.duration", "Invalid value",
                        "must not be negative (0s or absent: never expires)", duration)


FAULT_KINDS: dict[str, KindRules] = {
    "NetworkFault": KindRules(NETWORK_FAULT, namespaced=False, check=_check_network_fault,
                              default=_default_network_fault),
}
