"""Validation and defaulting of API objects, with Kubernetes' field paths and wording. No I/O.

`validate(kind, obj)` runs the same stages as the Kubernetes API server does after decoding:

1. **shape**: the object is walked against a compact schema of known fields per kind. A value of
   the wrong JSON type becomes a FieldError (never an exception); an unknown field is handled per
   `fieldValidation` (Strict: error, Warn: dropped with a warning, Ignore: dropped); `null` means
   "absent", as it does for Go's JSON decoder.
2. **defaulting** (restartPolicy Always, dnsPolicy ClusterFirst, ...), so the stored object reads
   like one from a real cluster.
3. **checks**: object metadata for every kind, then the kind's own check function, then (on
   update, when `old` is given) immutability rules.

Adding a kind is one `KindRules` entry in `KINDS`: a schema plus optional check/default/update
functions. Kinds without an entry get metadata validation only, and their other fields pass
through untouched.

Field paths are Kubernetes' (`spec.containers[0].ports[1].containerPort`), and messages read like
the real API server's, because kubectl users see them verbatim.

With `fieldValidation=Strict` the real API server answers unknown fields with a 400
`strict decoding error: unknown field "spec.foo"`; `Validated.unknown_fields` lists those paths so
the API server can choose that answer, while `errors` carries them as "Invalid value" FieldErrors.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from podnet.apierrors import FieldError
from podnet.selectors import (
    LabelSelector,
    SelectorError,
    label_key_errors,
    label_value_errors,
)

__all__ = [
    "IMAGE_BUILTINS",
    "KINDS",
    "KindRules",
    "ListOf",
    "Obj",
    "Validated",
    "parse_image",
    "validate",
    "validate_dns1035_label",
    "validate_dns_label",
    "validate_name",
]


@dataclass
class Validated:
    obj: dict[str, Any]          # defaulted copy (the input is never mutated)
    errors: list[FieldError]     # empty when valid
    warnings: list[str]          # e.g. 'unknown field "spec.foo"' (sent as Warning headers)
    unknown_fields: list[str] = field(default_factory=list)  # paths, whatever the mode


# --- names -----------------------------------------------------------------------------------

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")

_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


def _name_errors(name: Any, path: str, pattern: re.Pattern[str], max_len: int,
                 msg: str) -> list[FieldError]:
    if name is None or name == "":
        return [FieldError(path, "Required value")]
    if not isinstance(name, str):
        return [FieldError(path, "Invalid value", "must be a string", _shown(name))]
    errors = []
    if len(name) > max_len:
        errors.append(FieldError(path, "Invalid value",
                                 f"must be no more than {max_len} characters", name))
    if not pattern.fullmatch(name):
        errors.append(FieldError(path, "Invalid value", msg, name))
    return errors


def validate_name(name: str, path: str = "metadata.name") -> list[FieldError]:
    """DNS-1123 subdomain (pods, nodes, events...): at most 253 characters."""
    return _name_errors(name, path, _DNS1123_SUBDOMAIN, 253, _SUBDOMAIN_MSG)


def validate_dns_label(name: str, path: str = "metadata.name") -> list[FieldError]:
    """DNS-1123 label (namespaces, container names, hostnames): at most 63 characters."""
    return _name_errors(name, path, _DNS1123_LABEL, 63, _LABEL_MSG)


def validate_dns1035_label(name: str, path: str = "metadata.name") -> list[FieldError]:
    """DNS-1035 label (services): starts with a letter, at most 63 characters."""
    return _name_errors(name, path, _DNS1035_LABEL, 63, _DNS1035_MSG)


# --- images ----------------------------------------------------------------------------------

IMAGE_BUILTINS: frozenset[str] = frozenset({"podnet/echo", "podnet/toolbox", "podnet/pause"})
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def _is_identifier(part: str) -> bool:
    return part.isidentifier() and not keyword.iskeyword(part)


def parse_image(image: str) -> tuple[str, str]:
    """("builtin", "echo") for `podnet/echo[:tag]`; ("py", "pkg.mod:fn") for `py:pkg.mod:fn`.

    Raises ValueError with a message naming what is supported for anything else.
    """
    if not isinstance(image, str) or not image:
        raise ValueError("image must be a non-empty string")
    if image.startswith("py:"):
        target = image[3:]
        module, colon, func = target.rpartition(":")
        if not colon or not module:
            raise ValueError(f"image {image!r}: expected py:package.module:function")
        if not all(_is_identifier(p) for p in module.split(".")):
            raise ValueError(
                f"image {image!r}: {module!r} is not a dotted Python module path")
        if not _is_identifier(func):
            raise ValueError(f"image {image!r}: {func!r} is not a Python identifier")
        return "py", target
    repo, colon, tag = image.partition(":")
    if repo in IMAGE_BUILTINS and (not colon or _TAG.fullmatch(tag)):
        return "builtin", repo.split("/", 1)[1]
    if repo in IMAGE_BUILTINS:
        raise ValueError(f"image {image!r}: {tag!r} is not a valid tag")
    raise ValueError(
        f"unsupported image {image!r}: podnet runs pods as coroutines; use one of "
        f"{', '.join(sorted(IMAGE_BUILTINS))} (optionally with :tag) or "
        "py:package.module:function")


# --- schema ----------------------------------------------------------------------------------

# Leaf types: "str", "int", "bool", "num", "any", "strmap" (map of string to string),
# "intorstr" (a port that may be named).
@dataclass(frozen=True)
class Obj:
    """A JSON object with a fixed set of known fields (`open`: other fields pass through)."""

    fields: dict[str, Spec]
    open: bool = False


@dataclass(frozen=True)
class ListOf:
    item: Spec


Spec = str | Obj | ListOf

STR, INT, BOOL, NUM, ANY, STRMAP, INTORSTR = "str", "int", "bool", "num", "any", "strmap", \
    "intorstr"

_TYPE_NAMES = {STR: "string", INT: "integer", BOOL: "boolean", NUM: "number",
               STRMAP: "map of strings", INTORSTR: "integer or string"}


def _strs(*names: str) -> dict[str, Spec]:
    out: dict[str, Spec] = dict.fromkeys(names, STR)
    return out


OWNER_REFERENCE = Obj({**_strs("apiVersion", "kind", "name", "uid"),
                       "controller": BOOL, "blockOwnerDeletion": BOOL})

METADATA = Obj({
    **_strs("name", "generateName", "namespace", "uid", "resourceVersion", "creationTimestamp",
            "deletionTimestamp", "selfLink"),
    "labels": STRMAP, "annotations": STRMAP, "generation": INT,
    "deletionGracePeriodSeconds": INT, "ownerReferences": ListOf(OWNER_REFERENCE),
    "finalizers": ListOf(STR), "managedFields": ANY,
})

CONTAINER = Obj({
    **_strs("name", "image", "imagePullPolicy", "workingDir", "terminationMessagePath",
            "terminationMessagePolicy", "restartPolicy"),
    "command": ListOf(STR), "args": ListOf(STR),
    "env": ListOf(Obj({"name": STR, "value": STR, "valueFrom": ANY})),
    "envFrom": ANY,
    "ports": ListOf(Obj({"containerPort": INT, "name": STR, "protocol": STR, "hostPort": INT,
                         "hostIP": STR})),
    "resources": ANY, "resizePolicy": ANY,
    "readinessProbe": ANY, "livenessProbe": ANY, "startupProbe": ANY,
    "volumeMounts": ANY, "volumeDevices": ANY, "securityContext": ANY, "lifecycle": ANY,
    "stdin": BOOL, "stdinOnce": BOOL, "tty": BOOL,
})

POD_SPEC = Obj({
    "containers": ListOf(CONTAINER), "initContainers": ListOf(CONTAINER),
    "ephemeralContainers": ANY,
    **_strs("restartPolicy", "nodeName", "hostname", "subdomain", "dnsPolicy",
            "serviceAccountName", "serviceAccount", "schedulerName", "priorityClassName",
            "preemptionPolicy", "runtimeClassName"),
    "nodeSelector": STRMAP,
    "dnsConfig": Obj({"nameservers": ListOf(STR), "searches": ListOf(STR),
                      "options": ListOf(Obj({"name": STR, "value": STR}))}),
    "terminationGracePeriodSeconds": INT, "activeDeadlineSeconds": INT,
    "automountServiceAccountToken": BOOL, "priority": INT,
    "tolerations": ListOf(ANY), "affinity": ANY, "volumes": ANY, "securityContext": ANY,
    "hostNetwork": BOOL, "hostPID": BOOL, "hostIPC": BOOL, "shareProcessNamespace": BOOL,
    "enableServiceLinks": BOOL, "setHostnameAsFQDN": BOOL, "hostUsers": BOOL,
    "readinessGates": ListOf(Obj({"conditionType": STR})),
    "topologySpreadConstraints": ANY,
    "imagePullSecrets": ListOf(Obj({"name": STR})),
    "hostAliases": ListOf(Obj({"ip": STR, "hostnames": ListOf(STR)})),
    "overhead": ANY, "os": ANY, "schedulingGates": ANY,
    "resourceClaims": ANY,
})

_TOP: dict[str, Spec] = {"apiVersion": STR, "kind": STR, "metadata": METADATA}

# Status is written by agents and controllers and read by other controllers: its shape is
# checked (a condition that is not an object must never reach the scheduler), while fields
# podnet does not know yet pass through (open objects).
CONDITION = Obj({"type": STR, "status": STR, "reason": STR, "message": STR,
                 "lastHeartbeatTime": ANY, "lastTransitionTime": ANY, "lastProbeTime": ANY,
                 "observedGeneration": ANY}, open=True)
_IP = Obj({"ip": STR}, open=True)
POD_STATUS = Obj({
    "phase": STR, "reason": STR, "message": STR, "conditions": ListOf(CONDITION),
    "podIP": STR, "podIPs": ListOf(_IP), "hostIP": STR, "hostIPs": ListOf(_IP),
    "startTime": ANY, "qosClass": STR, "nominatedNodeName": STR,
    "containerStatuses": ListOf(Obj({"name": STR, "image": STR, "imageID": STR,
                                     "containerID": STR, "ready": BOOL, "started": BOOL,
                                     "restartCount": INT, "state": ANY, "lastState": ANY},
                                    open=True)),
    "initContainerStatuses": ListOf(ANY), "ephemeralContainerStatuses": ListOf(ANY),
}, open=True)
NODE_STATUS = Obj({
    "conditions": ListOf(CONDITION),
    "addresses": ListOf(Obj({"type": STR, "address": STR}, open=True)),
    "capacity": ANY, "allocatable": ANY, "daemonEndpoints": ANY, "nodeInfo": ANY,
    "phase": STR,
}, open=True)
POD = Obj({**_TOP, "spec": POD_SPEC, "status": POD_STATUS})
NODE = Obj({**_TOP, "spec": Obj({"podCIDR": STR, "podCIDRs": ListOf(STR), "providerID": STR,
                                 "unschedulable": BOOL, "taints": ListOf(ANY),
                                 "configSource": ANY, "externalID": STR}),
            "status": NODE_STATUS})
NAMESPACE = Obj({**_TOP, "spec": Obj({"finalizers": ListOf(STR)}),
                 "status": Obj({"phase": STR, "conditions": ANY})})
EVENT = Obj({
    **_TOP,
    "involvedObject": Obj(_strs("kind", "namespace", "name", "uid", "apiVersion",
                                "resourceVersion", "fieldPath")),
    **_strs("reason", "message", "type", "action", "reportingComponent", "reportingInstance",
            "firstTimestamp", "lastTimestamp"),
    "source": Obj(_strs("component", "host")),
    "count": INT, "eventTime": ANY, "series": ANY, "related": ANY,
})
# Kinds without their own entry: metadata is checked, everything else passes through.
GENERIC = Obj(_TOP, open=True)


# --- the walk --------------------------------------------------------------------------------

class _Ctx:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.errors: list[FieldError] = []
        self.warnings: list[str] = []
        self.unknown: list[str] = []

    def err(self, path: str, type_: str, detail: str = "", value: Any = None) -> None:
        self.errors.append(FieldError(path, type_, detail, value))

    def extend(self, errors: list[FieldError]) -> None:
        self.errors.extend(errors)


def _shown(value: Any) -> Any:
    """A value fit for an error message: scalars as is, containers abbreviated."""
    if isinstance(value, dict):
        return "{...}"
    if isinstance(value, list):
        return "[...]"
    return value


class GoSlice(list[Any]):
    """A list shown in an error message as kube-apiserver shows it (Go's %#v), e.g.
    `[]string{"10.96.0.5", "fd00::5"}`; still a plain list for JSON."""

    def __init__(self, items: Any, elem: str = "string") -> None:
        super().__init__(items)
        self.elem = elem

    def __str__(self) -> str:
        def one(v: Any) -> str:
            if self.elem == "core.PodIP":
                return f'core.PodIP{{IP:"{_d(v).get("ip", "")}"}}'
            return '"' + str(v).replace('"', '\\"') + '"'
        return f"[]{self.elem}{{" + ", ".join(one(v) for v in self) + "}"


class GoText:
    """A value kube-apiserver shows unquoted (a Go struct's %#v), e.g. core.PodIP{IP:"..."}."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GoText) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _conform(ctx: _Ctx, value: Any, spec: Spec, path: str) -> Any:
    """Check `value` against `spec`; return the cleaned value (unknown fields removed).

    A value of the wrong type is reported and returned unchanged: the check functions are
    written defensively, and keeping it in place keeps list indices (and so paths) stable.
    """
    if isinstance(spec, Obj):
        if not isinstance(value, dict):
            ctx.err(path, "Invalid value", f"expected object, got {_json_type(value)}",
                    _shown(value))
            return value
        out: dict[str, Any] = {}
        for key, item in value.items():
            sub = _join(path, str(key))
            if key not in spec.fields:
                if spec.open:
                    out[key] = item
                    continue
                ctx.unknown.append(sub)
                if ctx.mode == "Strict":
                    ctx.err(sub, "Invalid value", f'unknown field "{sub}"', _shown(item))
                elif ctx.mode == "Warn":
                    ctx.warnings.append(f'unknown field "{sub}"')
                continue
            if item is None:
                continue  # JSON null decodes as "not set"
            out[key] = _conform(ctx, item, spec.fields[key], sub)
        return out
    if isinstance(spec, ListOf):
        if not isinstance(value, list):
            ctx.err(path, "Invalid value", f"expected list, got {_json_type(value)}",
                    _shown(value))
            return value
        return [_conform(ctx, item, spec.item, f"{path}[{i}]") for i, item in enumerate(value)]
    if spec == ANY:
        return value
    if spec == STRMAP:
        if not isinstance(value, dict):
            ctx.err(path, "Invalid value", f"expected map of strings, got {_json_type(value)}",
                    _shown(value))
            return value
        for k, v in value.items():
            if not isinstance(v, str):
                ctx.err(f"{path}[{k}]", "Invalid value",
                        f"expected string, got {_json_type(v)}", _shown(v))
        return value
    ok = {
        STR: lambda v: isinstance(v, str),
        BOOL: lambda v: isinstance(v, bool),
        INT: lambda v: _int(v) is not None or (isinstance(v, float) and v.is_integer()),
        NUM: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        INTORSTR: lambda v: isinstance(v, str) or _int(v) is not None,
    }[spec](value)
    if not ok:
        ctx.err(path, "Invalid value", f"expected {_TYPE_NAMES[spec]}, got {_json_type(value)}",
                _shown(value))
        return value
    if spec == INT and isinstance(value, float):
        return int(value)  # 30.0 from a YAML/JSON encoder is the integer 30
    return value


# --- small safe accessors for the checks -----------------------------------------------------

def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _supported(path: str, value: Any, allowed: tuple[str, ...]) -> list[FieldError]:
    if not isinstance(value, str) or value in allowed:
        return []  # a non-string was already reported by the shape check
    listed = ", ".join(f'"{a}"' for a in allowed)
    return [FieldError(path, "Unsupported value", f"supported values: {listed}", _shown(value))]


def _port_range(path: str, value: Any) -> list[FieldError]:
    port = _int(value)
    if port is not None and not 1 <= port <= 65535:
        return [FieldError(path, "Invalid value", "must be between 1 and 65535, inclusive",
                           port)]
    return []


# --- metadata --------------------------------------------------------------------------------

_ANNOTATIONS_MAX_BYTES = 256 * 1024


def _check_labels(ctx: _Ctx, labels: Any, path: str) -> None:
    for key, value in _d(labels).items():
        for msg in label_key_errors(key):
            ctx.err(path, "Invalid value", msg, key)
        if isinstance(value, str):
            for msg in label_value_errors(value):
                ctx.err(path, "Invalid value", msg, value)


def _check_metadata(ctx: _Ctx, rules: KindRules, meta: Any) -> None:
    if not isinstance(meta, dict):
        if meta is None:
            ctx.err("metadata.name", "Required value", "name or generateName is required")
        return
    name, generate = meta.get("name"), meta.get("generateName")
    if not name and not generate:
        ctx.err("metadata.name", "Required value", "name or generateName is required")
    elif name:
        ctx.extend(rules.name_check(name, "metadata.name"))
    if isinstance(generate, str) and generate and not name:
        # A prefix: a trailing "-" is fine because random characters follow it.
        candidate = generate[:-1] + "a" if generate.endswith("-") else generate
        for e in rules.name_check(candidate, "metadata.generateName"):
            ctx.err(e.path, e.type, e.detail, generate)
    namespace = meta.get("namespace")
    if rules.namespaced:
        if not namespace:
            ctx.err("metadata.namespace", "Required value")
        else:
            ctx.extend(validate_dns_label(namespace, "metadata.namespace"))
    _check_labels(ctx, meta.get("labels"), "metadata.labels")
    annotations = _d(meta.get("annotations"))
    size = 0
    for key, value in annotations.items():
        for msg in label_key_errors(key.lower() if isinstance(key, str) else key):
            ctx.err("metadata.annotations", "Invalid value", msg, key)
        size += len(str(key).encode()) + len(str(value).encode())
    if size > _ANNOTATIONS_MAX_BYTES:
        ctx.err("metadata.annotations", "Too long",
                f"must have at most {_ANNOTATIONS_MAX_BYTES} bytes")
    for i, fin in enumerate(_l(meta.get("finalizers"))):
        if isinstance(fin, str):
            for msg in label_key_errors(fin):
                ctx.err(f"metadata.finalizers[{i}]", "Invalid value", msg, fin)
    controllers = 0
    for i, ref in enumerate(_l(meta.get("ownerReferences"))):
        if not isinstance(ref, dict):
            continue
        base = f"metadata.ownerReferences[{i}]"
        for key in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(key):
                ctx.err(f"{base}.{key}", "Invalid value", f"{key} must not be empty", "")
        controllers += ref.get("controller") is True
    if controllers > 1:
        ctx.err("metadata.ownerReferences", "Invalid value",
                "Only one reference can have Controller set to true", controllers)


def _check_metadata_update(ctx: _Ctx, meta: Any, old_meta: Any) -> None:
    meta, old_meta = _d(meta), _d(old_meta)
    for key in ("name", "namespace", "uid"):
        new, old = meta.get(key), old_meta.get(key)
        # An update body may leave uid unset; the server carries the stored one over.
        if key == "uid" and not new:
            continue
        if old is not None and new != old:
            ctx.err(f"metadata.{key}", "Invalid value", "field is immutable", _shown(new))


# --- Pod -------------------------------------------------------------------------------------

_PROTOCOLS = ("SCTP", "TCP", "UDP")
_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def _port_name_errors(path: str, name: str) -> list[FieldError]:
    problems = []
    if len(name) > 15:
        problems.append("must be no more than 15 characters")
    if not re.fullmatch(r"[-a-z0-9]+", name):
        problems.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in name:
        problems.append("must not contain consecutive hyphens")
    if not re.search(r"[a-z]", name):
        problems.append("must contain at least one letter (a-z)")
    if name.startswith("-") or name.endswith("-"):
        problems.append("must not begin or end with a hyphen")
    return [FieldError(path, "Invalid value", p, name) for p in problems]


def _env_name_ok(name: str) -> bool:
    return bool(name) and all(" " <= ch <= "~" and ch != "=" for ch in name)


def _check_container(ctx: _Ctx, c: dict[str, Any], path: str, names: set[str]) -> None:
    name = c.get("name")
    if not name:
        ctx.err(f"{path}.name", "Required value")
    elif isinstance(name, str):
        errs = validate_dns_label(name, f"{path}.name")
        ctx.extend(errs)
        if not errs and name in names:
            ctx.err(f"{path}.name", "Duplicate value", "", name)
        names.add(name)
    image = c.get("image")
    if not image:
        ctx.err(f"{path}.image", "Required value")
    elif isinstance(image, str):
        # As in Kubernetes the API accepts any reference: whether it can run is the node's
        # business (ErrImagePull, InvalidImageName), so that `kubectl describe` says why.
        # podnet's own `py:` references are checked here, where a typo is cheapest to see.
        if image != image.strip():
            ctx.err(f"{path}.image", "Invalid value",
                    "must not have leading or trailing whitespace", image)
        elif image.startswith("py:"):
            try:
                parse_image(image)
            except ValueError as exc:
                ctx.err(f"{path}.image", "Invalid value", str(exc), image)
    port_names: set[str] = set()
    for j, port in enumerate(_l(c.get("ports"))):
        if not isinstance(port, dict):
            continue
        ppath = f"{path}.ports[{j}]"
        if port.get("containerPort") is None:
            ctx.err(f"{ppath}.containerPort", "Required value")
        else:
            ctx.extend(_port_range(f"{ppath}.containerPort", port.get("containerPort")))
        host_port = _int(port.get("hostPort"))
        if host_port:  # 0 means "no host port"
            ctx.extend(_port_range(f"{ppath}.hostPort", host_port))
        ctx.extend(_supported(f"{ppath}.protocol", port.get("protocol"), _PROTOCOLS))
        pname = port.get("name")
        if isinstance(pname, str) and pname:
            ctx.extend(_port_name_errors(f"{ppath}.name", pname))
            if pname in port_names:
                ctx.err(f"{ppath}.name", "Duplicate value", "", pname)
            port_names.add(pname)
        host_ip = port.get("hostIP")
        if isinstance(host_ip, str) and host_ip:
            try:
                ipaddress.ip_address(host_ip)
            except ValueError:
                ctx.err(f"{ppath}.hostIP", "Invalid value", "must be a valid IP address",
                        host_ip)
    for j, env in enumerate(_l(c.get("env"))):
        if not isinstance(env, dict):
            continue
        epath = f"{path}.env[{j}]"
        ename = env.get("name")
        if not ename:
            ctx.err(f"{epath}.name", "Required value")
        elif isinstance(ename, str) and not _env_name_ok(ename):
            ctx.err(f"{epath}.name", "Invalid value",
                    "a valid environment variable name must consist only of printable ASCII "
                    "characters other than '='", ename)
        if env.get("value") and env.get("valueFrom") is not None:
            ctx.err(f"{epath}.valueFrom", "Invalid value",
                    "may not be specified when `value` is not empty", "")
    ctx.extend(_supported(f"{path}.imagePullPolicy", c.get("imagePullPolicy"), _PULL_POLICIES))
    ctx.extend(_supported(f"{path}.terminationMessagePolicy",
                          c.get("terminationMessagePolicy"), _TERMINATION_MESSAGE_POLICIES))


def _check_pod(ctx: _Ctx, obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        if spec is None:
            ctx.err("spec.containers", "Required value")
        return
    names: set[str] = set()
    for i, c in enumerate(_l(spec.get("initContainers"))):
        if isinstance(c, dict):
            _check_container(ctx, c, f"spec.initContainers[{i}]", names)
    containers = spec.get("containers")
    if not containers:
        ctx.err("spec.containers", "Required value")
    seen_ports: dict[tuple[int, str], str] = {}
    for i, c in enumerate(_l(containers)):
        if not isinstance(c, dict):
            continue
        _check_container(ctx, c, f"spec.containers[{i}]", names)
        # Containers share one network stack: two listeners on one port/protocol would clash.
        for j, port in enumerate(_l(c.get("ports"))):
            number = _int(_d(port).get("containerPort"))
            if number is None:
                continue
            proto = _d(port).get("protocol") or "TCP"
            port_key = (number, str(proto))
            where = f"spec.containers[{i}].ports[{j}]"
            if port_key in seen_ports:
                ctx.err(f"{where}.containerPort", "Duplicate value",
                        f"{proto} port {number} is already declared by {seen_ports[port_key]}",
                        number)
            else:
                seen_ports[port_key] = where
    ctx.extend(_supported("spec.restartPolicy", spec.get("restartPolicy"), _RESTART_POLICIES))
    ctx.extend(_supported("spec.dnsPolicy", spec.get("dnsPolicy"), _DNS_POLICIES))
    dns_config = spec.get("dnsConfig")
    if spec.get("dnsPolicy") == "None" and not _l(_d(dns_config).get("nameservers")):
        ctx.err("spec.dnsConfig", "Required value",
                "must provide `dnsConfig` when `dnsPolicy` is None")
    nameservers = _l(_d(dns_config).get("nameservers"))
    if len(nameservers) > 3:
        ctx.err("spec.dnsConfig.nameservers", "Invalid value",
                "must not have more than 3 nameservers", len(nameservers))
    for i, ns in enumerate(nameservers):
        if isinstance(ns, str):
            try:
                ipaddress.ip_address(ns)
            except ValueError:
                ctx.err(f"spec.dnsConfig.nameservers[{i}]", "Invalid value",
                        "must be valid IP address", ns)
    _check_labels(ctx, spec.get("nodeSelector"), "spec.nodeSelector")
    grace = _int(spec.get("terminationGracePeriodSeconds"))
    if grace is not None and grace < 0:
        ctx.err("spec.terminationGracePeriodSeconds", "Invalid value",
                "must be greater than or equal to 0", grace)
    deadline = _int(spec.get("activeDeadlineSeconds"))
    if deadline is not None and not 1 <= deadline <= 2**31 - 1:
        ctx.err("spec.activeDeadlineSeconds", "Invalid value",
                f"must be between 1 and {2**31 - 1}, inclusive", deadline)
    for key in ("hostname", "subdomain"):
        if spec.get(key):
            ctx.extend(validate_dns_label(spec[key], f"spec.{key}"))
    for i, alias in enumerate(_l(spec.get("hostAliases"))):    # ValidateHostAliases
        alias = _d(alias)
        where = f"spec.hostAliases[{i}]"
        if not isinstance(alias.get("ip"), str) or not alias["ip"]:
            ctx.err(f"{where}.ip", "Invalid value", _IP_MSG, alias.get("ip") or "")
        else:
            ctx.extend(_ip_errors(f"{where}.ip", alias["ip"]))
        for j, hostname in enumerate(_l(alias.get("hostnames"))):
            if isinstance(hostname, str):
                ctx.extend(validate_name(hostname, f"{where}.hostnames[{j}]"))
    for key in ("nodeName", "serviceAccountName"):
        if spec.get(key):
            ctx.extend(validate_name(spec[key], f"spec.{key}"))
    _check_pod_ips(ctx, _d(obj.get("status")))


def _check_pod_ips(ctx: _Ctx, status: dict[str, Any]) -> None:
    """status.podIPs: valid IPs, at most one per family, no duplicates (Kubernetes'
    validatePodIPs); IPv4 and IPv6 alike."""
    entries = [e for e in _l(status.get("podIPs")) if isinstance(e, dict)]
    ips = [e.get("ip") for e in entries]
    bad = False
    for i, ip in enumerate(ips):
        errs = _ip_errors(f"status.podIPs[{i}]", ip)
        bad = bad or bool(errs) or not isinstance(ip, str)
        ctx.extend(errs)
    if len(ips) > 1 and not bad:
        versions = [ipaddress.ip_address(str(ip)).version for ip in ips]
        if len(ips) > 2 or versions[0] == versions[1]:
            ctx.err("status.podIPs", "Invalid value",
                    "may specify no more than one IP for each IP family",
                    GoSlice(entries, "core.PodIP"))
        seen: set[str] = set()
        for i, ip in enumerate(ips):
            if str(ip) in seen:
                ctx.err(f"status.podIPs[{i}]", "Duplicate value", "",
                        GoText(f'core.PodIP{{IP:"{ip}"}}'))
            seen.add(str(ip))


_POD_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
    "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
    "set to 1 if it was previously negative)"
)


def _check_pod_update(ctx: _Ctx, obj: dict[str, Any], old: dict[str, Any]) -> None:
    new_spec = copy.deepcopy(_d(obj.get("spec")))
    old_spec = _d(old.get("spec"))
    # Overwrite what may change with the old values, then anything left different is forbidden.
    for key in ("containers", "initContainers"):
        new_list, old_list = _l(new_spec.get(key)), _l(old_spec.get(key))
        if len(new_list) == len(old_list):
            for new_c, old_c in zip(new_list, old_list, strict=True):
                if isinstance(new_c, dict) and isinstance(old_c, dict):
                    if "image" in old_c:
                        new_c["image"] = old_c["image"]
                    else:
                        new_c.pop("image", None)
    for key in ("activeDeadlineSeconds", "terminationGracePeriodSeconds"):
        if key in old_spec:
            new_spec[key] = old_spec[key]
        else:
            new_spec.pop(key, None)
    old_tol = _l(old_spec.get("tolerations"))
    new_tol = _l(new_spec.get("tolerations"))
    if all(t in new_tol for t in old_tol):
        if "tolerations" in old_spec:
            new_spec["tolerations"] = old_spec["tolerations"]
        else:
            new_spec.pop("tolerations", None)
    if new_spec != old_spec:
        changed = sorted(k for k in set(new_spec) | set(old_spec)
                         if new_spec.get(k) != old_spec.get(k))
        detail = _POD_UPDATE_FORBIDDEN + "\n  changed: " + ", ".join(f"spec.{k}" for k in changed)
        ctx.err("spec", "Forbidden", detail)


def _default_container(c: Any) -> None:
    if not isinstance(c, dict):
        return
    # Kubernetes would pick Always for untagged images; podnet images are coroutines that are
    # never pulled, so the project default is IfNotPresent throughout.
    c.setdefault("imagePullPolicy", "IfNotPresent")
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in _l(c.get("ports")):
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")


def _default_pod(obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("securityContext", {})
    for key in ("containers", "initContainers"):
        for c in _l(spec.get(key)):
            _default_container(c)


# --- Node, Namespace, Event ------------------------------------------------------------------

def _cidr_errors(path: str, value: Any) -> list[FieldError]:
    if not isinstance(value, str):
        return []
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return [FieldError(path, "Invalid value",
                           "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                           value)]
    if "/" not in value:
        return [FieldError(path, "Invalid value",
                           "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                           value)]
    return []


def _check_node(ctx: _Ctx, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    if spec.get("podCIDR"):
        ctx.extend(_cidr_errors("spec.podCIDR", spec["podCIDR"]))
    cidrs = _l(spec.get("podCIDRs"))
    bad = False
    for i, cidr in enumerate(cidrs):
        errs = _cidr_errors(f"spec.podCIDRs[{i}]", cidr)
        bad = bad or bool(errs) or not isinstance(cidr, str)
        ctx.extend(errs)
    # More than one: a dual-stack pair (Kubernetes' ValidateNode).
    if len(cidrs) > 1 and not bad:
        families = [ipaddress.ip_network(c, strict=False).version for c in cidrs]
        if len(cidrs) > 2 or families[0] == families[1]:
            ctx.err("spec.podCIDRs", "Invalid value",
                    "may specify no more than one CIDR for each IP family", GoSlice(cidrs))


def _check_node_update(ctx: _Ctx, obj: dict[str, Any], old: dict[str, Any]) -> None:
    spec, old_spec = _d(obj.get("spec")), _d(old.get("spec"))
    detail = 'node updates may not change podCIDR except from "" to valid'
    if old_spec.get("podCIDR") and spec.get("podCIDR") != old_spec["podCIDR"]:
        ctx.err("spec.podCIDR", "Forbidden", detail)
    if old_spec.get("podCIDRs") and spec.get("podCIDRs") != old_spec["podCIDRs"]:
        ctx.err("spec.podCIDRs", "Forbidden", detail)


def _default_namespace(obj: dict[str, Any]) -> None:
    status = obj.setdefault("status", {})
    if isinstance(status, dict):
        status.setdefault("phase", "Active")
    # Like kube-apiserver (since 1.21), on create and on every update: the label always names
    # the namespace, whatever a client sends, so NetworkPolicy namespaceSelectors can rely on it.
    meta = obj.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("name"), str) and meta["name"]:
        labels = meta.get("labels")
        if not isinstance(labels, dict):
            labels = meta["labels"] = {}
        labels["kubernetes.io/metadata.name"] = meta["name"]


def _check_event(ctx: _Ctx, obj: dict[str, Any]) -> None:
    involved_ns = _d(obj.get("involvedObject")).get("namespace")
    namespace = _d(obj.get("metadata")).get("namespace")
    if involved_ns and namespace and involved_ns != namespace:
        ctx.err("involvedObject.namespace", "Invalid value", "does not match event.namespace",
                involved_ns)
    count = _int(obj.get("count"))
    if count is not None and count < 0:
        ctx.err("count", "Invalid value", "must be greater than or equal to 0", count)


# --- Service, Endpoints, EndpointSlice --------------------------------------------------------

LABEL_SELECTOR = Obj({"matchLabels": STRMAP,
                      "matchExpressions": ListOf(Obj({"key": STR, "operator": STR,
                                                      "values": ListOf(STR)}))})
OBJECT_REFERENCE = Obj(_strs("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion",
                             "fieldPath"))
SERVICE_PORT = Obj({**_strs("name", "protocol", "appProtocol"), "port": INT,
                    "targetPort": INTORSTR, "nodePort": INT})
SERVICE = Obj({**_TOP, "spec": Obj({
    **_strs("type", "clusterIP", "externalName", "sessionAffinity", "externalTrafficPolicy",
            "internalTrafficPolicy", "ipFamilyPolicy", "loadBalancerIP", "loadBalancerClass"),
    "ports": ListOf(SERVICE_PORT), "selector": STRMAP, "clusterIPs": ListOf(STR),
    "ipFamilies": ListOf(STR), "externalIPs": ListOf(STR), "publishNotReadyAddresses": BOOL,
    "sessionAffinityConfig": Obj({"clientIP": Obj({"timeoutSeconds": INT})}),
    "loadBalancerSourceRanges": ListOf(STR), "healthCheckNodePort": INT,
    "allocateLoadBalancerNodePorts": BOOL, "trafficDistribution": STR,
}), "status": Obj({"loadBalancer": ANY, "conditions": ListOf(CONDITION)}, open=True)})

_ENDPOINT_ADDRESS = Obj({**_strs("ip", "hostname", "nodeName"), "targetRef": OBJECT_REFERENCE})
_ENDPOINT_PORT = Obj({**_strs("name", "protocol", "appProtocol"), "port": INT})
ENDPOINTS = Obj({**_TOP, "subsets": ListOf(Obj({
    "addresses": ListOf(_ENDPOINT_ADDRESS), "notReadyAddresses": ListOf(_ENDPOINT_ADDRESS),
    "ports": ListOf(_ENDPOINT_PORT)}))})
ENDPOINT_SLICE = Obj({**_TOP, "addressType": STR, "endpoints": ListOf(Obj({
    "addresses": ListOf(STR),
    "conditions": Obj({"ready": BOOL, "serving": BOOL, "terminating": BOOL}),
    **_strs("hostname", "nodeName", "zone"), "targetRef": OBJECT_REFERENCE,
    "deprecatedTopology": STRMAP, "hints": ANY})),
    "ports": ListOf(_ENDPOINT_PORT)})

_SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
_SESSION_AFFINITIES = ("ClientIP", "None")
_TRAFFIC_POLICIES = ("Cluster", "Local")
_IP_FAMILY_POLICIES = ("PreferDualStack", "RequireDualStack", "SingleStack")
_ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")
DEFAULT_AFFINITY_TIMEOUT_S = 10800  # 3 hours, as in Kubernetes
_MAX_AFFINITY_TIMEOUT_S = 86400
_IP_MSG = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"


def _ip_errors(path: str, value: Any) -> list[FieldError]:
    if not isinstance(value, str):
        return []
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return [FieldError(path, "Invalid value", _IP_MSG, value)]
    return []


def _target_port_errors(path: str, value: Any) -> list[FieldError]:
    if isinstance(value, str):
        return _port_name_errors(path, value)
    return _port_range(path, value)


def _default_service(obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    svc_type = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec.get("sessionAffinity") == "ClientIP":
        config = spec.setdefault("sessionAffinityConfig", {})
        if isinstance(config, dict):
            client = config.setdefault("clientIP", {})
            if isinstance(client, dict):
                client.setdefault("timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT_S)
    if svc_type != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if svc_type in ("NodePort", "LoadBalancer") or _l(spec.get("externalIPs")):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if svc_type == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    ips = _l(spec.get("clusterIPs"))
    if not spec.get("clusterIP") and ips and isinstance(ips[0], str):
        spec["clusterIP"] = ips[0]
    for port in _l(spec.get("ports")):
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            target = port.get("targetPort")
            if target is None or target == 0 or target == "":
                if _int(port.get("port")) is not None:
                    port["targetPort"] = port["port"]
    status = obj.setdefault("status", {})
    if isinstance(status, dict):
        status.setdefault("loadBalancer", {})


def _check_service(ctx: _Ctx, obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        ctx.err("spec.ports", "Required value")
        return
    svc_type = spec.get("type")
    ctx.extend(_supported("spec.type", svc_type, _SERVICE_TYPES))
    cluster_ip = spec.get("clusterIP")
    headless = cluster_ip == "None"
    external_name = svc_type == "ExternalName"
    ports = _l(spec.get("ports"))
    if not ports and not headless and not external_name:
        ctx.err("spec.ports", "Required value")
    names: set[str] = set()
    seen: set[tuple[int, str]] = set()
    node_ports: set[tuple[int, Any]] = set()
    for i, port in enumerate(ports):
        if not isinstance(port, dict):
            continue
        path = f"spec.ports[{i}]"
        name = port.get("name")
        if not name:
            if len(ports) > 1:
                ctx.err(f"{path}.name", "Required value")
        elif isinstance(name, str):
            errs = validate_dns_label(name, f"{path}.name")
            ctx.extend(errs)
            if not errs and name in names:
                ctx.err(f"{path}.name", "Duplicate value", "", name)
            names.add(name)
        number = _int(port.get("port"))
        if port.get("port") is None:
            ctx.err(f"{path}.port", "Required value")
        else:
            ctx.extend(_port_range(f"{path}.port", number))
        ctx.extend(_supported(f"{path}.protocol", port.get("protocol"), _PROTOCOLS))
        ctx.extend(_target_port_errors(f"{path}.targetPort", port.get("targetPort")))
        node_port = _int(port.get("nodePort"))
        if node_port:
            if svc_type not in ("NodePort", "LoadBalancer"):
                ctx.err(f"{path}.nodePort", "Forbidden",
                        f"may not be used when `type` is '{svc_type}'")
            else:
                errs = _port_range(f"{path}.nodePort", node_port)
                ctx.extend(errs)
                node_key = (node_port, port.get("protocol"))
                if not errs and node_key in node_ports:
                    ctx.err(f"{path}.nodePort", "Duplicate value", "", node_port)
                node_ports.add(node_key)
        if number is not None and isinstance(port.get("protocol"), str):
            port_key = (number, port["protocol"])
            if port_key in seen:
                ctx.err(path, "Duplicate value", "", f"{number}/{port['protocol']}")
            seen.add(port_key)
    if external_name:
        if cluster_ip:
            ctx.err("spec.clusterIP", "Forbidden", "may not be set for ExternalName services")
        for key in ("clusterIPs", "ipFamilies"):
            if _l(spec.get(key)):
                ctx.err(f"spec.{key}", "Forbidden", "may not be set for ExternalName services")
        if spec.get("ipFamilyPolicy") is not None:
            ctx.err("spec.ipFamilyPolicy", "Forbidden",
                    "may not be set for ExternalName services")
        ext = spec.get("externalName")
        if not ext:
            ctx.err("spec.externalName", "Required value")
        elif isinstance(ext, str):
            ctx.extend(validate_name(ext.rstrip("."), "spec.externalName"))
    else:
        if headless and svc_type in ("NodePort", "LoadBalancer"):
            ctx.err("spec.clusterIP", "Invalid value",
                    f"may not be set to 'None' for {svc_type} services", cluster_ip)
        _check_cluster_ips(ctx, spec)
    affinity = spec.get("sessionAffinity")
    ctx.extend(_supported("spec.sessionAffinity", affinity, _SESSION_AFFINITIES))
    config = spec.get("sessionAffinityConfig")
    if affinity == "ClientIP":
        timeout = _int(_d(_d(config).get("clientIP")).get("timeoutSeconds"))
        if timeout is not None and not 0 < timeout <= _MAX_AFFINITY_TIMEOUT_S:
            ctx.err("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "Invalid value",
                    f"must be greater than 0 and less than {_MAX_AFFINITY_TIMEOUT_S}", timeout)
    elif config:
        ctx.err("spec.sessionAffinityConfig", "Invalid value",
                f"must not be set when session affinity is {affinity}", _shown(config))
    for key in ("externalTrafficPolicy", "internalTrafficPolicy"):
        ctx.extend(_supported(f"spec.{key}", spec.get(key), _TRAFFIC_POLICIES))
    _check_external_traffic(ctx, spec)
    for i, ip in enumerate(_l(spec.get("externalIPs"))):
        ctx.extend(_ip_errors(f"spec.externalIPs[{i}]", ip))
    _check_labels(ctx, spec.get("selector"), "spec.selector")


_IP_FAMILIES = ("IPv4", "IPv6")


def _ip_version(ip: Any) -> int | None:
    try:
        return ipaddress.ip_address(ip).version if isinstance(ip, str) else None
    except ValueError:
        return None


def _check_cluster_ips(ctx: _Ctx, spec: dict[str, Any]) -> None:
    """clusterIP, clusterIPs, ipFamilies and ipFamilyPolicy on their own, as Kubernetes'
    ValidateServiceClusterIPsRelatedFields (what needs the cluster's families, such as
    RequireDualStack on a single-stack cluster, is service IPAM's: controlplane/serviceipam.py).

    A clusterIP given without clusterIPs is checked as `spec.clusterIP` (the API server
    copies it into clusterIPs); clusterIPs given are checked one by one."""
    cluster_ip = spec.get("clusterIP")
    given = _l(spec.get("clusterIPs"))
    ips = given or ([cluster_ip] if cluster_ip else [])
    if cluster_ip and given and given[0] != cluster_ip:
        ctx.err("spec.clusterIPs", "Invalid value", "first value must match `clusterIP`",
                GoSlice(given))
    elif not cluster_ip and given:
        ctx.err("spec.clusterIPs", "Invalid value",
                "must be empty when `clusterIP` is not specified", GoSlice(given))
    seen: set[str] = set()
    for i, family in enumerate(_l(spec.get("ipFamilies"))):
        ctx.extend(_supported(f"spec.ipFamilies[{i}]", family, _IP_FAMILIES))
        if isinstance(family, str) and family in seen:
            ctx.err(f"spec.ipFamilies[{i}]", "Duplicate value", "", family)
        seen.add(str(family))
    ctx.extend(_supported("spec.ipFamilyPolicy", spec.get("ipFamilyPolicy"),
                          _IP_FAMILY_POLICIES))
    bad = False
    for i, ip in enumerate(ips):
        if i == 0 and ip == "None":
            if len(ips) > 1:
                bad = True
                ctx.err("spec.clusterIPs", "Invalid value",
                        "'None' must be the first and only value", GoSlice(ips))
            continue
        errs = _ip_errors(f"spec.clusterIPs[{i}]" if given else "spec.clusterIP", ip)
        bad = bad or bool(errs) or not isinstance(ip, str)
        ctx.extend(errs)
    if len(ips) > 2:
        ctx.err("spec.clusterIPs", "Invalid value", "may only hold up to 2 values",
                GoSlice(ips))
    if bad:
        return  # the checks below would only repeat the bad address in other words
    if len(ips) > 1 and (len(ips) > 2 or _ip_version(ips[0]) == _ip_version(ips[1])):
        ctx.err("spec.clusterIPs", "Invalid value",
                "may specify no more than one IP for each IP family", GoSlice(ips))
    families = _l(spec.get("ipFamilies"))
    if ips and ips[0] != "None":
        for i, (ip, family) in enumerate(zip(ips, families, strict=False)):
            version = _ip_version(ip)
            if family == "IPv4" and version == 6:
                ctx.err(f"spec.clusterIPs[{i}]", "Invalid value",
                        f"expected an IPv4 value as indicated by `ipFamilies[{i}]`", ip)
            if family == "IPv6" and version != 6:
                ctx.err(f"spec.clusterIPs[{i}]", "Invalid value",
                        f"expected an IPv6 value as indicated by `ipFamilies[{i}]`", ip)


def _is_headless(spec: dict[str, Any]) -> bool:
    ips = _l(spec.get("clusterIPs"))
    return len(ips) == 1 and ips[0] == "None"


def _check_upgrade_downgrade(ctx: _Ctx, spec: dict[str, Any],
                             old_spec: dict[str, Any]) -> None:
    """What an update may do to clusterIPs and ipFamilies (Kubernetes'
    validateUpgradeDowngradeClusterIPs/IPFamilies): add a secondary, or remove it with
    ipFamilyPolicy SingleStack; never change the primary."""
    if "ExternalName" in (spec.get("type"), old_spec.get("type")):
        return
    new_headless, old_headless = _is_headless(spec), _is_headless(old_spec)
    policy = spec.get("ipFamilyPolicy")
    for key, what in (("clusterIPs", "clusterIP"), ("ipFamilies", "ipFamily")):
        if key == "clusterIPs" and old_headless and new_headless:
            continue
        if key == "ipFamilies" and (new_headless or old_headless):
            continue  # headless may change families; to/from headless is not checked here
        new, old = _l(spec.get(key)), _l(old_spec.get(key))
        shown = GoSlice(new, "string" if key == "clusterIPs" else "core.IPFamily")
        if len(new) == len(old):
            for i, value in enumerate(old):
                if value != new[i]:
                    # ipFamilies reports every change at index 0, as Kubernetes does
                    index = i if key == "clusterIPs" else 0
                    ctx.err(f"spec.{key}[{index}]", "Invalid value", "may not change once set",
                            shown)
        elif len(old) > len(new):
            if not new:
                if key == "clusterIPs":
                    ctx.err("spec.clusterIPs[0]", "Invalid value",
                            "primary clusterIP can not be unset", shown)
                elif not _l(spec.get("clusterIPs")):
                    ctx.err("spec.ipFamilies[0]", "Invalid value",
                            "primary ipFamily can not be unset", shown)
            elif new[0] != old[0]:
                ctx.err(f"spec.{key}[0]", "Invalid value", "may not change once set",
                        GoSlice(_l(spec.get("clusterIPs"))) if key == "ipFamilies" else shown)
            if len(new) == 1 and policy != "SingleStack":
                ctx.err("spec.ipFamilyPolicy", "Invalid value",
                        f"must be set to 'SingleStack' when releasing the secondary {what}",
                        policy)
        elif old and new[0] != old[0]:
            ctx.err(f"spec.{key}[0]", "Invalid value", "may not change once set",
                    GoSlice(_l(spec.get("clusterIPs"))) if key == "ipFamilies" else shown)


def _check_external_traffic(ctx: _Ctx, spec: dict[str, Any]) -> None:
    """The fields only traffic from outside the cluster uses (Kubernetes' rules)."""
    svc_type = spec.get("type")
    external = svc_type in ("NodePort", "LoadBalancer") or bool(_l(spec.get("externalIPs")))
    policy = spec.get("externalTrafficPolicy")
    if not external and policy:
        ctx.err("spec.externalTrafficPolicy", "Invalid value",
                "may only be set for externally-accessible services", policy)
    elif external and not policy:
        ctx.err("spec.externalTrafficPolicy", "Required value")
    health = _int(spec.get("healthCheckNodePort"))
    if health and not (svc_type == "LoadBalancer" and policy == "Local"):
        ctx.err("spec.healthCheckNodePort", "Invalid value", "may only be set when `type` is "
                "'LoadBalancer' and `externalTrafficPolicy` is 'Local'", health)
    elif health:
        ctx.extend(_port_range("spec.healthCheckNodePort", health))
    if "allocateLoadBalancerNodePorts" in spec and svc_type != "LoadBalancer":
        ctx.err("spec.allocateLoadBalancerNodePorts", "Forbidden",
                "may only be used when `type` is 'LoadBalancer'")


def _drop_type_dependent(obj: dict[str, Any], old: dict[str, Any]) -> None:
    """Before an update is validated: fields the new type does not use and the update left as
    they were are cleared (Kubernetes' dropTypeDependentFields), so changing a NodePort
    Service's type back to ClusterIP releases its node ports without naming them."""
    spec, old_spec = obj.get("spec"), _d(old.get("spec"))
    if not isinstance(spec, dict):
        return
    _prepare_cluster_ips(spec, old_spec)
    svc_type = spec.get("type") or "ClusterIP"
    if svc_type not in ("NodePort", "LoadBalancer"):
        old_by_key = {(p.get("port"), p.get("protocol") or "TCP"): p.get("nodePort")
                      for p in _l(old_spec.get("ports")) if isinstance(p, dict)}
        for port in _l(spec.get("ports")):
            if isinstance(port, dict) and "nodePort" in port and port["nodePort"] == \
                    old_by_key.get((port.get("port"), port.get("protocol") or "TCP")):
                del port["nodePort"]
        if not spec.get("externalIPs") and \
                spec.get("externalTrafficPolicy") == old_spec.get("externalTrafficPolicy"):
            spec.pop("externalTrafficPolicy", None)
    if not (svc_type == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local") \
            and spec.get("healthCheckNodePort") == old_spec.get("healthCheckNodePort"):
        spec.pop("healthCheckNodePort", None)
    if svc_type != "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") == \
            old_spec.get("allocateLoadBalancerNodePorts"):
        spec.pop("allocateLoadBalancerNodePorts", None)


def _prepare_cluster_ips(spec: dict[str, Any], old_spec: dict[str, Any]) -> None:
    """An update's clusterIP(s), ipFamilies and ipFamilyPolicy before it is validated, as
    kube-apiserver prepares them: what was allocated is kept when left out (so re-applying
    the original manifest works), clusterIPs follow a changed clusterIP, a switch to
    ExternalName drops them, and ipFamilyPolicy SingleStack on a dual-stack Service drops
    its secondary (a downgrade)."""
    old_type, new_type = old_spec.get("type") or "ClusterIP", spec.get("type") or "ClusterIP"
    old_ips, old_ip = _l(old_spec.get("clusterIPs")), old_spec.get("clusterIP") or ""
    given = _l(spec.get("clusterIPs"))
    if not spec.get("clusterIP") and given and isinstance(given[0], str):
        spec["clusterIP"] = given[0]  # the v1 default, applied as the request is decoded
    if old_type != "ExternalName" and new_type != "ExternalName":  # patchAllocatedValues
        if not spec.get("clusterIP") and old_ip:
            spec["clusterIP"] = old_ip
        if not _l(spec.get("clusterIPs")) and old_ips:
            spec["clusterIPs"] = list(old_ips)
    new_ip, new_ips = spec.get("clusterIP") or "", _l(spec.get("clusterIPs"))
    if old_ips and not new_ips and old_ip == new_ip:  # normalizeClusterIPs
        spec["clusterIPs"] = new_ips = list(old_ips)
    if old_ip != new_ip and new_ips == old_ips:
        if old_ip and not new_ip:
            spec.pop("clusterIPs", None)
        else:
            spec["clusterIPs"] = [new_ip]
    if old_type != "ExternalName" and new_type == "ExternalName":  # dropTypeDependentFields
        if (spec.get("clusterIP") or "") == old_ip and _l(spec.get("clusterIPs")) == old_ips:
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        if _l(spec.get("ipFamilies")) == _l(old_spec.get("ipFamilies")):
            spec.pop("ipFamilies", None)
        if spec.get("ipFamilyPolicy") == old_spec.get("ipFamilyPolicy"):
            spec.pop("ipFamilyPolicy", None)
    if old_spec.get("ipFamilyPolicy") in ("PreferDualStack", "RequireDualStack") \
            and spec.get("ipFamilyPolicy") == "SingleStack":  # a downgrade
        for key in ("clusterIPs", "ipFamilies"):
            if len(_l(spec.get(key))) > 1:
                spec[key] = spec[key][:1]


def _external_name_involved(spec: dict[str, Any], old_spec: dict[str, Any]) -> bool:
    return "ExternalName" in (spec.get("type"), old_spec.get("type"))


def _check_service_update(ctx: _Ctx, obj: dict[str, Any], old: dict[str, Any]) -> None:
    spec, old_spec = _d(obj.get("spec")), _d(old.get("spec"))
    new_ip, old_ip = spec.get("clusterIP"), old_spec.get("clusterIP")
    if _l(old_spec.get("clusterIPs")):
        _check_upgrade_downgrade(ctx, spec, old_spec)
    # An object stored without clusterIPs (never by podnet's API, which always sets them) is
    # checked on clusterIP alone: only a type change to or from ExternalName may release or
    # allocate one.
    elif new_ip and old_ip and new_ip != old_ip and not _external_name_involved(spec, old_spec):
        ctx.err("spec.clusterIP", "Invalid value", "field is immutable", new_ip)


def _check_endpoint_ports(ctx: _Ctx, ports: list[Any], path: str,
                          port_required: bool) -> None:
    names: set[str] = set()
    for j, port in enumerate(ports):
        if not isinstance(port, dict):
            continue
        ppath = f"{path}[{j}]"
        name = port.get("name")
        if not name:
            if len(ports) > 1 and port_required:
                ctx.err(f"{ppath}.name", "Required value")
        elif isinstance(name, str):
            errs = validate_dns_label(name, f"{ppath}.name")
            ctx.extend(errs)
            if not errs and name in names:
                ctx.err(f"{ppath}.name", "Duplicate value", "", name)
            names.add(name)
        if port.get("port") is None:
            if port_required:
                ctx.err(f"{ppath}.port", "Required value")
        else:
            ctx.extend(_port_range(f"{ppath}.port", port.get("port")))
        ctx.extend(_supported(f"{ppath}.protocol", port.get("protocol"), _PROTOCOLS))


def _default_endpoint_ports(ports: Any) -> None:
    for port in _l(ports):
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")


def _default_endpoints(obj: dict[str, Any]) -> None:
    for subset in _l(obj.get("subsets")):
        _default_endpoint_ports(_d(subset).get("ports"))


def _check_endpoints(ctx: _Ctx, obj: dict[str, Any]) -> None:
    for i, subset in enumerate(_l(obj.get("subsets"))):
        if not isinstance(subset, dict):
            continue
        base = f"subsets[{i}]"
        for key in ("addresses", "notReadyAddresses"):
            for j, addr in enumerate(_l(subset.get(key))):
                if not isinstance(addr, dict):
                    continue
                apath = f"{base}.{key}[{j}]"
                if not addr.get("ip"):
                    ctx.err(f"{apath}.ip", "Required value")
                else:
                    ctx.extend(_ip_errors(f"{apath}.ip", addr["ip"]))
                if addr.get("hostname"):
                    ctx.extend(validate_dns_label(addr["hostname"], f"{apath}.hostname"))
                if addr.get("nodeName"):
                    ctx.extend(validate_name(addr["nodeName"], f"{apath}.nodeName"))
        _check_endpoint_ports(ctx, _l(subset.get("ports")), f"{base}.ports", True)


def _default_endpoint_slice(obj: dict[str, Any]) -> None:
    _default_endpoint_ports(obj.get("ports"))
    for ep in _l(obj.get("endpoints")):
        if isinstance(ep, dict):
            conditions = ep.setdefault("conditions", {})
            # Kubernetes reads an unset `ready` as true ("unknown, assume ready").
            if isinstance(conditions, dict):
                conditions.setdefault("ready", True)


_MAX_SLICE_ENDPOINTS = 1000
_MAX_SLICE_ADDRESSES = 100
_MAX_SLICE_PORTS = 100


def _check_endpoint_slice(ctx: _Ctx, obj: dict[str, Any]) -> None:
    address_type = obj.get("addressType")
    if not address_type:
        ctx.err("addressType", "Required value")
    else:
        ctx.extend(_supported("addressType", address_type, _ADDRESS_TYPES))
    endpoints = _l(obj.get("endpoints"))
    if len(endpoints) > _MAX_SLICE_ENDPOINTS:
        ctx.err("endpoints", "Too many", f"must have at most {_MAX_SLICE_ENDPOINTS} items")
    for i, ep in enumerate(endpoints):
        if not isinstance(ep, dict):
            continue
        base = f"endpoints[{i}]"
        addresses = _l(ep.get("addresses"))
        if not addresses:
            ctx.err(f"{base}.addresses", "Required value", "must contain at least 1 address")
        elif len(addresses) > _MAX_SLICE_ADDRESSES:
            ctx.err(f"{base}.addresses", "Too many",
                    f"must have at most {_MAX_SLICE_ADDRESSES} items")
        for j, address in enumerate(addresses):
            if not isinstance(address, str):
                continue
            path = f"{base}.addresses[{j}]"
            if address_type == "FQDN":
                ctx.extend(validate_name(address, path))
                continue
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                ctx.err(path, "Invalid value", _IP_MSG, address)
                continue
            wanted = 4 if address_type == "IPv4" else 6
            if address_type in ("IPv4", "IPv6") and ip.version != wanted:
                ctx.err(path, "Invalid value", f"must be an {address_type} address", address)
        if ep.get("hostname"):
            ctx.extend(validate_dns_label(ep["hostname"], f"{base}.hostname"))
        if ep.get("nodeName"):
            ctx.extend(validate_name(ep["nodeName"], f"{base}.nodeName"))
    ports = _l(obj.get("ports"))
    if len(ports) > _MAX_SLICE_PORTS:
        ctx.err("ports", "Too many", f"must have at most {_MAX_SLICE_PORTS} items")
    _check_endpoint_ports(ctx, ports, "ports", False)


def _check_endpoint_slice_update(ctx: _Ctx, obj: dict[str, Any], old: dict[str, Any]) -> None:
    if old.get("addressType") and obj.get("addressType") != old["addressType"]:
        ctx.err("addressType", "Invalid value", "field is immutable",
                _shown(obj.get("addressType")))


# --- ConfigMap -------------------------------------------------------------------------------

CONFIG_MAP = Obj({**_TOP, "data": STRMAP, "binaryData": STRMAP, "immutable": BOOL})
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_CONFIG_MAP_MAX_BYTES = 1024 * 1024


def _check_config_map(ctx: _Ctx, obj: dict[str, Any]) -> None:
    size = 0
    data, binary = _d(obj.get("data")), _d(obj.get("binaryData"))
    for field_name, values in (("data", data), ("binaryData", binary)):
        for key, value in values.items():
            path = f"{field_name}[{key}]"
            if not isinstance(key, str) or not key or len(key) > 253 \
                    or not _CONFIG_KEY.fullmatch(key) or key in (".", ".."):
                ctx.err(path, "Invalid value",
                        "a valid config key must consist of alphanumeric characters, '-', '_' "
                        "or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used "
                        "for validation is '[-._a-zA-Z0-9]+')", _shown(key))
            if field_name == "binaryData" and key in data:
                ctx.err(path, "Invalid value", "duplicate of key present in data", _shown(key))
            size += len(str(key)) + len(str(value))
            if field_name == "binaryData" and isinstance(value, str):
                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    ctx.err(path, "Invalid value", "must be base64-encoded data", "...")
    if size > _CONFIG_MAP_MAX_BYTES:
        ctx.err("", "Too long", f"must have at most {_CONFIG_MAP_MAX_BYTES} bytes")


def _check_config_map_update(ctx: _Ctx, obj: dict[str, Any], old: dict[str, Any]) -> None:
    if old.get("immutable") is True:
        if obj.get("immutable") is not True:
            ctx.err("immutable", "Forbidden", "field is immutable when `immutable` is set")
        if obj.get("data") != old.get("data") or obj.get("binaryData") != old.get("binaryData"):
            ctx.err("data", "Forbidden", "field is immutable when `immutable` is set")


# --- Deployment, ReplicaSet ------------------------------------------------------------------

POD_TEMPLATE = Obj({"metadata": METADATA, "spec": POD_SPEC})
_INT_OR_PERCENT = INTORSTR
_WORKLOAD_STATUS = Obj({"replicas": INT, "readyReplicas": INT, "availableReplicas": INT,
                        "updatedReplicas": INT, "unavailableReplicas": INT,
                        "fullyLabeledReplicas": INT, "terminatingReplicas": INT,
                        "observedGeneration": INT, "collisionCount": INT,
                        "conditions": ListOf(CONDITION)}, open=True)
REPLICA_SET = Obj({**_TOP, "spec": Obj({
    "replicas": INT, "minReadySeconds": INT, "selector": LABEL_SELECTOR,
    "template": POD_TEMPLATE}), "status": _WORKLOAD_STATUS})
DEPLOYMENT = Obj({**_TOP, "spec": Obj({
    "replicas": INT, "minReadySeconds": INT, "selector": LABEL_SELECTOR,
    "template": POD_TEMPLATE, "revisionHistoryLimit": INT, "progressDeadlineSeconds": INT,
    "paused": BOOL,
    "strategy": Obj({"type": STR, "rollingUpdate": Obj({"maxSurge": _INT_OR_PERCENT,
                                                        "maxUnavailable": _INT_OR_PERCENT})}),
}), "status": _WORKLOAD_STATUS})

_SELECTOR_OPERATORS = ("DoesNotExist", "Exists", "In", "NotIn")
_PERCENT = re.compile(r"([0-9]+)%")


def _check_label_selector(ctx: _Ctx, selector: Any, path: str) -> None:
    sel = _d(selector)
    _check_labels(ctx, sel.get("matchLabels"), f"{path}.matchLabels")
    for i, expr in enumerate(_l(sel.get("matchExpressions"))):
        if not isinstance(expr, dict):
            continue
        epath = f"{path}.matchExpressions[{i}]"
        key, op, values = expr.get("key"), expr.get("operator"), _l(expr.get("values"))
        if not key:
            ctx.err(f"{epath}.key", "Required value")
        else:
            for msg in label_key_errors(key):
                ctx.err(f"{epath}.key", "Invalid value", msg, key)
        if not op:
            ctx.err(f"{epath}.operator", "Required value")
        ctx.extend(_supported(f"{epath}.operator", op, _SELECTOR_OPERATORS))
        if op in ("In", "NotIn") and not values:
            ctx.err(f"{epath}.values", "Required value",
                    "must be specified when `operator` is 'In' or 'NotIn'")
        if op in ("Exists", "DoesNotExist") and values:
            ctx.err(f"{epath}.values", "Forbidden",
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")


@dataclass(frozen=True)
class _Printed:
    """A value shown verbatim (unquoted) in an error message."""

    text: str

    def __str__(self) -> str:
        return self.text


def _go_map(labels: dict[str, Any]) -> _Printed:
    """A label map the way Kubernetes prints one in an error: map[string]string{"a":"b"}."""
    inner = ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
    return _Printed(f"map[string]string{{{inner}}}")


def _int_or_percent(ctx: _Ctx, value: Any, path: str) -> int | None:
    """The percentage (for "25%") or the integer; None (reported) when neither."""
    if value is None:
        return None
    if isinstance(value, str):
        m = _PERCENT.fullmatch(value)
        if m is None:
            ctx.err(path, "Invalid value", "a valid percent string must be a numeric string "
                    "followed by an ending '%' (e.g. '1%',  or '93%', regex used for "
                    "validation is '[0-9]+%')", value)
            return None
        return int(m.group(1))
    number = _int(value)
    if number is not None and number < 0:
        ctx.err(path, "Invalid value", "must be greater than or equal to 0", number)
    return number


def _check_template_pods(ctx: _Ctx, template: dict[str, Any], selector: Any,
                         restart_policies: tuple[str, ...]) -> None:
    """A workload's pod template: its labels (matched by `selector`, unless None), its pod
    spec by the pod rules with paths under spec.template, and the restart policies the
    workload allows."""
    labels = _d(_d(template.get("metadata")).get("labels"))
    _check_labels(ctx, labels, "spec.template.metadata.labels")
    if selector is not None:
        try:
            matches = LabelSelector.from_spec(_d(selector)).matches(
                {str(k): str(v) for k, v in labels.items()})
        except SelectorError:
            matches = True  # reported with its field path by the selector's own check
        if not matches:
            ctx.err("spec.template.metadata.labels", "Invalid value",
                    "`selector` does not match template `labels`", _go_map(labels))
    sub = _Ctx(ctx.mode)
    _check_pod(sub, {"spec": template.get("spec")})
    for e in sub.errors:
        path = "spec.template." + e.path if e.path.startswith("spec") else e.path
        ctx.err(path, e.type, e.detail, e.value)
    restart = _d(template.get("spec")).get("restartPolicy")
    if isinstance(restart, str) and restart not in restart_policies:
        ctx.err("spec.template.spec.restartPolicy", "Unsupported value",
                "supported values: " + ", ".join(f'"{p}"' for p in restart_policies), restart)


def _check_template(ctx: _Ctx, kind: str, spec: dict[str, Any]) -> None:
    template = spec.get("template")
    selector = spec.get("selector")
    before = len(ctx.errors)
    if selector is None:
        ctx.err("spec.selector", "Required value")
    else:
        _check_label_selector(ctx, selector, "spec.selector")
        sel = _d(selector)
        if not sel.get("matchLabels") and not sel.get("matchExpressions"):
            ctx.err("spec.selector", "Invalid value",
                    f"empty selector is invalid for {kind.lower()}", "null")
    if not isinstance(template, dict):
        ctx.err("spec.template", "Required value")
        return
    _check_template_pods(ctx, template, selector if len(ctx.errors) == before else None,
                         ("Always",))
    replicas = _int(spec.get("replicas"))
    if replicas is not None and replicas < 0:
        ctx.err("spec.replicas", "Invalid value", "must be greater than or equal to 0",
                replicas)
    ready = _int(spec.get("minReadySeconds"))
    if ready is not None and ready < 0:
        ctx.err("spec.minReadySeconds", "Invalid value",
                "must be greater than or equal to 0", ready)


def _default_template(spec: dict[str, Any]) -> None:
    spec.setdefault("replicas", 1)
    spec.setdefault("minReadySeconds", 0)
    template = spec.get("template")
    if isinstance(template, dict):
        template.setdefault("metadata", {})
        _default_pod(template)


def _default_replica_set(obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        _default_template(spec)


def _default_deployment(obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    _default_template(spec)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("maxSurge", "25%")
                rolling.setdefault("maxUnavailable", "25%")


def _check_replica_set(ctx: _Ctx, obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        ctx.err("spec.selector", "Required value")
        return
    _check_template(ctx, "ReplicaSet", spec)


def _check_deployment(ctx: _Ctx, obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        ctx.err("spec.selector", "Required value")
        return
    _check_template(ctx, "Deployment", spec)
    strategy = _d(spec.get("strategy"))
    stype = strategy.get("type")
    ctx.extend(_supported("spec.strategy.type", stype, ("Recreate", "RollingUpdate")))
    rolling = strategy.get("rollingUpdate")
    if stype == "Recreate" and rolling is not None:
        ctx.err("spec.strategy.rollingUpdate", "Forbidden",
                "may not be specified when strategy `type` is 'Recreate'")
    elif isinstance(rolling, dict):
        base = "spec.strategy.rollingUpdate"
        surge = _int_or_percent(ctx, rolling.get("maxSurge"), f"{base}.maxSurge")
        unavailable = _int_or_percent(ctx, rolling.get("maxUnavailable"),
                                      f"{base}.maxUnavailable")
        if surge == 0 and unavailable == 0:
            ctx.err(f"{base}.maxUnavailable", "Invalid value",
                    "may not be 0 when `maxSurge` is 0", rolling.get("maxUnavailable"))
        if isinstance(rolling.get("maxUnavailable"), str) and unavailable is not None \
                and unavailable > 100:
            ctx.err(f"{base}.maxUnavailable", "Invalid value",
                    "must not be greater than 100%", rolling["maxUnavailable"])
    limit = _int(spec.get("revisionHistoryLimit"))
    if limit is not None and limit < 0:
        ctx.err("spec.revisionHistoryLimit", "Invalid value",
                "must be greater than or equal to 0", limit)
    deadline = _int(spec.get("progressDeadlineSeconds"))
    if deadline is not None and deadline <= (_int(spec.get("minReadySeconds")) or 0):
        ctx.err("spec.progressDeadlineSeconds", "Invalid value",
                "must be greater than minReadySeconds", deadline)


def _check_selector_update(ctx: _Ctx, obj: dict[str, Any], old: dict[str, Any]) -> None:
    # apps/v1 made the selector immutable: a changed one would orphan every existing pod.
    new_sel = _d(obj.get("spec")).get("selector")
    old_sel = _d(old.get("spec")).get("selector")
    if old_sel is not None and new_sel != old_sel:
        ctx.err("spec.selector", "Invalid value", "field is immutable", _shown(new_sel))


# --- the kind table --------------------------------------------------------------------------

Check = Callable[[_Ctx, dict[str, Any]], None]
UpdateCheck = Callable[[_Ctx, dict[str, Any], dict[str, Any]], None]
Default = Callable[[dict[str, Any]], None]
NameCheck = Callable[[str, str], list[FieldError]]


@dataclass(frozen=True)
class KindRules:
    """How one kind is validated: add an entry to `KINDS` to support a new kind."""

    schema: Obj
    namespaced: bool = True
    name_check: NameCheck = validate_name
    check: Check | None = None
    default: Default | None = None
    check_update: UpdateCheck | None = None
    # An update's preparation before defaults and checks (it sees the old object).
    prepare_update: Callable[[dict[str, Any], dict[str, Any]], None] | None = None


KINDS: dict[str, KindRules] = {
    "Namespace": KindRules(NAMESPACE, namespaced=False, name_check=validate_dns_label,
                           default=_default_namespace),
    "Node": KindRules(NODE, namespaced=False, check=_check_node,
                      check_update=_check_node_update),
    "Pod": KindRules(POD, check=_check_pod, default=_default_pod,
                     check_update=_check_pod_update),
    "Event": KindRules(EVENT, check=_check_event),
    "Service": KindRules(SERVICE, name_check=validate_dns1035_label, check=_check_service,
                         default=_default_service, check_update=_check_service_update,
                         prepare_update=_drop_type_dependent),
    "Endpoints": KindRules(ENDPOINTS, check=_check_endpoints, default=_default_endpoints),
    "EndpointSlice": KindRules(ENDPOINT_SLICE, check=_check_endpoint_slice,
                               default=_default_endpoint_slice,
                               check_update=_check_endpoint_slice_update),
    "ConfigMap": KindRules(CONFIG_MAP, check=_check_config_map,
                           check_update=_check_config_map_update),
    "Deployment": KindRules(DEPLOYMENT, check=_check_deployment, default=_default_deployment,
                            check_update=_check_selector_update),
    "ReplicaSet": KindRules(REPLICA_SET, check=_check_replica_set,
                            default=_default_replica_set, check_update=_check_selector_update),
}

FIELD_VALIDATION_MODES = ("Strict", "Warn", "Ignore")


def _workload_rules(kind: str) -> KindRules | None:
    """StatefulSet, DaemonSet and Job rules (podnet/api/workload_rules.py), NetworkPolicy rules
    (podnet/api/netpol_rules.py), NetworkFault rules (podnet/api/fault_rules.py). They build on
    the helpers here, so they are imported on first use rather than at import time (no cycle)."""
    from podnet.api.fault_rules import FAULT_KINDS
    from podnet.api.netpol_rules import NETPOL_KINDS
    from podnet.api.workload_rules import WORKLOAD_KINDS

    return WORKLOAD_KINDS.get(kind) or NETPOL_KINDS.get(kind) or FAULT_KINDS.get(kind)


def validate(kind: str, obj: dict[str, Any], *, old: dict[str, Any] | None = None,
             field_validation: str = "Warn") -> Validated:
    """Shape-check, default and validate `obj` (a create, or an update when `old` is given).

    Never raises on a malformed object: every problem is a FieldError. Raises ValueError only
    for an unknown `field_validation` mode ("" means the default, Warn).
    """
    mode = field_validation or "Warn"
    if mode not in FIELD_VALIDATION_MODES:
        raise ValueError(f'invalid fieldValidation "{field_validation}": must be one of '
                         "Strict, Warn, Ignore")
    ctx = _Ctx(mode)
    if not isinstance(obj, dict):
        ctx.err("<root>", "Invalid value", f"expected object, got {_json_type(obj)}",
                _shown(obj))
        return Validated({}, ctx.errors, ctx.warnings)
    rules = KINDS.get(kind) or _workload_rules(kind)
    if rules is None:
        rules = KindRules(GENERIC)
    work = _conform(ctx, copy.deepcopy(obj), rules.schema, "")
    assert isinstance(work, dict)
    declared = work.get("kind")
    if isinstance(declared, str) and declared and declared != kind:
        ctx.err("kind", "Invalid value", f"must be {kind}", declared)
    meta = work.get("metadata")
    if not rules.namespaced and isinstance(meta, dict):
        # The API server clears the namespace of cluster-scoped objects before validating.
        meta.pop("namespace", None)
    if rules.prepare_update is not None and isinstance(old, dict):
        rules.prepare_update(work, old)
    if rules.default is not None:
        rules.default(work)
    _check_metadata(ctx, rules, meta)
    if rules.check is not None:
        rules.check(ctx, work)
    if old is not None and isinstance(old, dict):
        _check_metadata_update(ctx, meta, old.get("metadata"))
        if rules.check_update is not None:
            rules.check_update(ctx, work, old)
    return Validated(work, ctx.errors, ctx.warnings, ctx.unknown)
