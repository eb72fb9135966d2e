"""Validation and defaulting of `networking.k8s.io/v1` NetworkPolicies, with Kubernetes' field
paths, defaults and wording (kube-apiserver 1.32). No I/O.

Defaults, as the API server applies them:
- `spec.podSelector` is always present (`{}`, every pod in the namespace, when left out: the
  Go type is a plain struct, so a missing selector and an empty one are the same object);
- `spec.policyTypes` defaults to `["Ingress"]`, plus `"Egress"` when `spec.egress` has a rule
  (an empty `egress: []` does not count, exactly as upstream);
- a port's `protocol` defaults to `TCP`.

Checks, in upstream's order (so the 422 lists causes as kube-apiserver does): the pod
selector, then each ingress rule's ports and peers, each egress rule's ports and peers, then
`policyTypes`. A port is a number 1-65535 or an IANA service name; `endPort` needs a numeric
`port` and must not be below it; a peer names at least one of `podSelector`,
`namespaceSelector` (these two combine as AND) or `ipBlock`, and an `ipBlock` stands alone; an
`except` entry must be a strict subset of the block's `cidr`.

The whole spec may change on update (NetworkPolicy has no immutable spec fields).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from podnet.selectors import label_key_errors, label_value_errors
from podnet.validation import (
    _TOP,
    INT,
    INTORSTR,
    STR,
    STRMAP,
    KindRules,
    ListOf,
    Obj,
    _check_labels,
    _Ctx,
    _d,
    _int,
    _l,
    _port_name_errors,
    _port_range,
    _shown,
    _supported,
)

__all__ = ["NETPOL_KINDS", "NETWORK_POLICY", "POLICY_TYPES", "PROTOCOLS"]

PROTOCOLS = ("TCP", "UDP", "SCTP")        # upstream's order in its "supported values"
POLICY_TYPES = ("Ingress", "Egress")

_SELECTOR = Obj({"matchLabels": STRMAP,
                 "matchExpressions": ListOf(Obj({"key": STR, "operator": STR,
                                                 "values": ListOf(STR)}))})
_PEER = Obj({"podSelector": _SELECTOR, "namespaceSelector": _SELECTOR,
             "ipBlock": Obj({"cidr": STR, "except": ListOf(STR)})})
_PORT = Obj({"protocol": STR, "port": INTORSTR, "endPort": INT})
NETWORK_POLICY = Obj({**_TOP, "spec": Obj({
    "podSelector": _SELECTOR,
    "policyTypes": ListOf(STR),
    "ingress": ListOf(Obj({"from": ListOf(_PEER), "ports": ListOf(_PORT)})),
    "egress": ListOf(Obj({"to": ListOf(_PEER), "ports": ListOf(_PORT)})),
})})

_CIDR_MSG = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"


# --- defaulting ------------------------------------------------------------------------------

def _default_network_policy(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return  # reported by the shape check
    spec.setdefault("podSelector", {})
    if not spec.get("policyTypes"):
        types = ["Ingress"]
        if _l(spec.get("egress")):
            types.append("Egress")
        spec["policyTypes"] = types
    for direction in ("ingress", "egress"):
        for rule in _l(spec.get(direction)):
            for port in _l(_d(rule).get("ports")):
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")


# --- checks ----------------------------------------------------------------------------------

def _check_selector(ctx: _Ctx, selector: Any, path: str) -> None:
    """metav1 ValidateLabelSelector, with label values in `values` checked (new objects)."""
    sel = _d(selector)
    _check_labels(ctx, sel.get("matchLabels"), f"{path}.matchLabels")
    for i, expr in enumerate(_l(sel.get("matchExpressions"))):
        if not isinstance(expr, dict):
            continue
        epath = f"{path}.matchExpressions[{i}]"
        op, values = expr.get("operator"), _l(expr.get("values"))
        if op in ("In", "NotIn"):
            if not values:
                ctx.err(f"{epath}.values", "Required value",
                        "must be specified when `operator` is 'In' or 'NotIn'")
        elif op in ("Exists", "DoesNotExist"):
            if values:
                ctx.err(f"{epath}.values", "Forbidden",
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        else:
            ctx.err(f"{epath}.operator", "Invalid value", "not a valid selector operator",
                    _shown(op if op is not None else ""))
        key = expr.get("key")
        if isinstance(key, str) or key is None:
            for msg in label_key_errors(key or ""):
                ctx.err(f"{epath}.key", "Invalid value", msg, key or "")
        for j, value in enumerate(values):
            if isinstance(value, str):
                for msg in label_value_errors(value):
                    ctx.err(f"{epath}.values[{j}]", "Invalid value", msg, value)


def _check_port(ctx: _Ctx, port: Any, path: str) -> None:
    if not isinstance(port, dict):
        return
    ctx.extend(_supported(f"{path}.protocol", port.get("protocol"), PROTOCOLS))
    number, end = port.get("port"), _int(port.get("endPort"))
    if number is None:
        if end is not None:
            ctx.err(f"{path}.endPort", "Invalid value",
                    "may not be specified when `port` is not specified", end)
    elif _int(number) is not None:
        ctx.extend(_port_range(f"{path}.port", number))
        if end is not None:
            if end < number:
                # Upstream reports `port`'s value here, not endPort's: kept as it is.
                ctx.err(f"{path}.endPort", "Invalid value",
                        "must be greater than or equal to `port`", number)
            ctx.extend(_port_range(f"{path}.endPort", end))
    elif isinstance(number, str):
        if end is not None:
            ctx.err(f"{path}.endPort", "Invalid value",
                    "may not be specified when `port` is non-numeric", end)
        ctx.extend(_port_name_errors(f"{path}.port", number))


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """A CIDR as kube-apiserver parses it: a prefix length is required, host bits may be set
    (legacy leniency: "10.0.0.1/8" is 10.0.0.0/8)."""
    if "/" not in text:
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _check_ip_block(ctx: _Ctx, block: Any, path: str) -> None:
    block = _d(block)
    cidr = block.get("cidr")
    if not cidr:
        ctx.err(f"{path}.cidr", "Required value")
        return
    if not isinstance(cidr, str):
        return
    net = _network(cidr)
    if net is None:
        ctx.err(f"{path}.cidr", "Invalid value", _CIDR_MSG, cidr)
        return
    for i, text in enumerate(_l(block.get("except"))):
        if not isinstance(text, str):
            continue
        epath = f"{path}.except[{i}]"
        inner = _network(text)
        if inner is None:
            ctx.err(epath, "Invalid value", _CIDR_MSG, text)
            continue
        if inner.version != net.version or inner.network_address not in net \
                or inner.prefixlen <= net.prefixlen:
            ctx.err(epath, "Invalid value", "must be a strict subset of `cidr`", text)


def _check_peer(ctx: _Ctx, peer: Any, path: str) -> None:
    if not isinstance(peer, dict):
        return
    count = 0
    for key in ("podSelector", "namespaceSelector"):
        if key in peer:
            count += 1
            _check_selector(ctx, peer[key], f"{path}.{key}")
    if "ipBlock" in peer:
        count += 1
        _check_ip_block(ctx, peer["ipBlock"], f"{path}.ipBlock")
    if count == 0:
        ctx.err(path, "Required value", "must specify a peer")
    elif count > 1 and "ipBlock" in peer:
        ctx.err(path, "Forbidden", "may not specify both ipBlock and another peer")


def _check_network_policy(ctx: _Ctx, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    _check_selector(ctx, spec.get("podSelector"), "spec.podSelector")
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(_l(spec.get(direction))):
            rule = _d(rule)
            rpath = f"spec.{direction}[{i}]"
            for j, port in enumerate(_l(rule.get("ports"))):
                _check_port(ctx, port, f"{rpath}.ports[{j}]")
            for j, peer in enumerate(_l(rule.get(peers))):
                _check_peer(ctx, peer, f"{rpath}.{peers}[{j}]")
    types = _l(spec.get("policyTypes"))
    if len(types) > len(POLICY_TYPES):
        ctx.err("spec.policyTypes", "Invalid value", "may not specify more than two policyTypes",
                _shown(types))
        return
    for i, ptype in enumerate(types):
        ctx.extend(_supported(f"spec.policyTypes[{i}]", ptype, POLICY_TYPES))


NETPOL_KINDS: dict[str, KindRules] = {
    "NetworkPolicy": KindRules(NETWORK_POLICY, check=_check_network_policy,
                               default=_default_network_policy),
}
