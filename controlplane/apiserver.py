"""The Kubernetes-shaped HTTP API, a thin aiohttp adapter around `controlplane.api.Api`.

Routing is generated from `podnet.resources.RESOURCES`: every resource is served at its
generic REST paths (`/api/v1/[namespaces/NS/]pods[/NAME[/SUB]]`, `/apis/G/V/...`), with list
and watch across namespaces (`/api/v1/pods`) and the legacy `/api/v1/watch/...` paths.
Discovery (legacy and aggregated), a small OpenAPI v3 stub (enough for kubectl's default
`--validate`), server-side Tables and `Status` errors follow reference/kubectl.md.

`pods/log`, `pods/exec` and `pods/portforward` are relayed to the node agent that runs the pod,
found through the `agent_address(node_name)` callable; the control plane authenticates to it
with the agent token. Everything except /version and the health probes needs a bearer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
import yaml
from aiohttp import web
from multidict import MultiDict

from controlplane import portforward
from controlplane.api import PODS, Api, WatchStream
from controlplane.tables import table
from podnet import apierrors, protobuf
from podnet.apierrors import ApiError
from podnet.auth import token_matches
from podnet.resources import RESOURCES, Resource, group_versions, lookup

log = structlog.get_logger()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AgentAddress = Callable[[str], tuple[str, int] | None]

# /podnet/cluster-info carries the cluster CA and its HMAC under the cluster secret, so an
# agent that holds only the secret can pin the CA before it sends any token (podnet/pki.py).
OPEN_PATHS = frozenset({"/version", "/healthz", "/readyz", "/livez", "/podnet/cluster-info"})
# The topology page authenticates its own requests (a login cookie or the bearer token): a
# browser following a link cannot send an Authorization header (controlplane/ui/).
SELF_AUTHENTICATED_PREFIX = "/podnet/ui/"
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
AGGREGATED_DISCOVERY = ("v2", "v2beta1")
POLL_S = 1.0             # how often an idle stream checks that its client is still there
BOOKMARK_EVERY_S = 30.0  # idle time before a BOOKMARK, when the client asked for them
AGENT_CONNECT_TIMEOUT_S = 5.0

VERSION = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.0-podnet",
    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23.0", "compiler": "gc",
    "platform": "linux/amd64",
}

# Verbs of subresources, as kube-apiserver lists them in discovery.
_SUBRESOURCE_VERBS: dict[str, tuple[str, tuple[str, ...]]] = {
    "status": ("", ("get", "patch", "update")),
    "log": ("", ("get",)),
    "exec": ("PodExecOptions", ("create", "get")),
    "portforward": ("PodPortForwardOptions", ("create", "get")),
    "binding": ("Binding", ("create",)),
    "scale": ("Scale", ("get", "patch", "update")),
}
# Subresources served in another group-version than their resource's (kubectl's scale client
# reads this from discovery to decode the Scale).
_SUBRESOURCE_GV: dict[str, tuple[str, str]] = {"scale": ("autoscaling", "v1")}
_WRITE_METHODS = ("POST", "PUT", "PATCH")
_OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


# ---------------------------------------------------------------------- responses

def _json_bytes(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(body: Any, status: int = 200, *, warnings: list[str] | None = None,
                  content_type: str = "application/json") -> web.Response:
    resp = web.Response(body=_json_bytes(body), status=status)
    # Set verbatim: aggregated discovery needs its media type parameters exactly as given.
    resp.headers["Content-Type"] = content_type
    for w in warnings or ():
        resp.headers.add("Warning", _warning_header(w))
    return resp


def _warning_header(text: str) -> str:
    """RFC 7234 warn-text, as kube-apiserver sends it: `299 - "text"`."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 - "{escaped}"'


def status_response(err: ApiError) -> web.Response:
    return json_response(err.status(), err.code)


def _success_status(code: int, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success", "code": code}
    if details:
        body["details"] = details
    return body


def _method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed",
                    "the server does not allow this method on the requested resource")


def _path_not_found(path: str) -> ApiError:
    return ApiError(404, "NotFound", f"the server could not find the requested resource "
                    f"(path {path})")


# ---------------------------------------------------------------------- request parsing

@dataclass(frozen=True)
class Target:
    """A resource URL: `/api/v1/namespaces/NS/pods/NAME/SUB` and its variants."""

    res: Resource
    namespace: str | None
    name: str | None
    sub: str | None
    legacy_watch: bool = False


def parse_resource_path(path: str) -> Target | None:
    """The Target of a resource path, or None when no resource is served there."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    legacy_watch = bool(rest) and rest[0] == "watch"
    if legacy_watch:
        rest = rest[1:]
    if not rest:
        return None
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3 and lookup(group, rest[2]) is not None:
        namespace, rest = rest[1], rest[2:]
    res = lookup(group, rest[0])
    if res is None or res.version != version or len(rest) > 3:
        return None
    if namespace is not None and not res.namespaced:
        return None
    if namespace is None and res.namespaced and len(rest) > 1:
        return None  # a namespaced object needs /namespaces/NS/ in its path
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and sub not in res.subresources:
        return None
    return Target(res, namespace, name, sub, legacy_watch)


def _accept_entries(request: web.Request) -> list[tuple[str, dict[str, str]]]:
    """The Accept header as (media type, parameters), in the client's order."""
    out: list[tuple[str, dict[str, str]]] = []
    for item in request.headers.get("Accept", "").split(","):
        fields = [f.strip() for f in item.split(";")]
        params = {}
        for f in fields[1:]:
            if "=" in f:
                k, v = f.split("=", 1)
                params[k.strip()] = v.strip()
        out.append((fields[0].lower(), params))
    return out


def wants_table(request: web.Request) -> bool:
    return any(p.get("as") == "Table" for _, p in _accept_entries(request))


def aggregated_discovery_version(request: web.Request) -> str | None:
    """"v2"/"v2beta1" when the client asks for aggregated discovery, else None."""
    for media, p in _accept_entries(request):
        if (media == "application/json" and p.get("as") == "APIGroupDiscoveryList"
                and p.get("g") == "apidiscovery.k8s.io" and p.get("v") in AGGREGATED_DISCOVERY):
            return p["v"]
    return None


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1")


def _dry_run(request: web.Request) -> bool:
    values = request.query.getall("dryRun", [])
    for v in values:
        if v != "All":
            raise apierrors.bad_request(f'unsupported dry run directive "{v}" (only "All")')
    return bool(values)


def _field_validation(request: web.Request) -> str:
    value = request.query.get("fieldValidation", "Warn") or "Warn"
    if value not in ("Strict", "Warn", "Ignore"):
        raise apierrors.bad_request(f'invalid fieldValidation "{value}": '
                                    "must be Strict, Warn or Ignore")
    return value


def _include_object(request: web.Request) -> str:
    value = request.query.get("includeObject", "Metadata") or "Metadata"
    if value not in ("None", "Metadata", "Object"):
        raise apierrors.bad_request(f'invalid includeObject "{value}": '
                                    "must be None, Metadata or Object")
    return value


def _int_param(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    if text in (None, ""):
        return None
    try:
        return int(text)
    except ValueError:
        raise apierrors.bad_request(f'{name} must be an integer, got "{text}"') from None


def decode_object(body: bytes, content_type: str) -> dict[str, Any]:
    """A JSON, YAML or Kubernetes protobuf request body, which must be one object."""
    media = content_type.split(";", 1)[0].strip().lower()
    if not body.strip():
        raise apierrors.bad_request("the request body is empty; expected an object")
    try:
        if media in ("application/yaml", "application/x-yaml", "text/yaml"):
            value = yaml.safe_load(body.decode("utf-8"))
        elif media in ("application/json", "", "application/octet-stream", "text/plain"):
            value = json.loads(body)
        elif media == protobuf.MEDIA_TYPE:
            # kubectl sends objects it builds itself (create namespace/deployment/...) this way.
            try:
                value = protobuf.decode(body)
            except protobuf.ProtobufError as e:
                raise apierrors.bad_request(
                    f"the request body is not a valid Kubernetes protobuf object: {e}") from None
        else:
            raise ApiError(415, "UnsupportedMediaType",
                           f'the body of the request was in an unknown format - accepted media '
                           f'types include: application/json, application/yaml, '
                           f'{protobuf.MEDIA_TYPE} (got "{content_type}")')
    except RecursionError:
        raise apierrors.bad_request("the request body is nested too deeply") from None
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise apierrors.bad_request(f"the request body is not valid "
                                    f"{'YAML' if 'yaml' in media else 'JSON'}: {e}") from None
    if not isinstance(value, dict):
        raise apierrors.bad_request("the request body must be an object, "
                                    f"not {type(value).__name__}")
    return value


# ---------------------------------------------------------------------- discovery

def _legacy_resource_entries(res: Resource) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {"name": res.plural, "singularName": res.singular,
                             "namespaced": res.namespaced, "kind": res.kind,
                             "verbs": list(res.verbs)}
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.categories:
        entry["categories"] = list(res.categories)
    out = [entry]
    for sub in res.subresources:
        kind, verbs = _SUBRESOURCE_VERBS.get(sub, ("", ("get",)))
        entry = {"name": f"{res.plural}/{sub}", "singularName": "",
                 "namespaced": res.namespaced, "kind": kind or res.kind, "verbs": list(verbs)}
        if sub in _SUBRESOURCE_GV:
            entry["group"], entry["version"] = _SUBRESOURCE_GV[sub]
        out.append(entry)
    return out


def resource_list(gv: str, resources: list[Resource]) -> dict[str, Any]:
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": [e for r in resources for e in _legacy_resource_entries(r)]}


def _aggregated_resource(res: Resource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": res.plural, "singularResource": res.singular,
        "scope": "Namespaced" if res.namespaced else "Cluster",
        "responseKind": {"group": res.group, "version": res.version, "kind": res.kind},
        "verbs": list(res.verbs),
    }
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.categories:
        entry["categories"] = list(res.categories)
    subs = []
    for sub in res.subresources:
        kind, verbs = _SUBRESOURCE_VERBS.get(sub, ("", ("get",)))
        group, version = _SUBRESOURCE_GV.get(sub, (res.group, res.version))
        subs.append({"subresource": sub, "verbs": list(verbs),
                     "responseKind": {"group": group, "version": version,
                                      "kind": kind or res.kind}})
    if subs:
        entry["subresources"] = subs
    return entry


def aggregated_discovery(core: bool, version: str) -> dict[str, Any]:
    groups: dict[str, dict[str, list[Resource]]] = {}
    for r in RESOURCES:
        if (r.group == "") == core:
            groups.setdefault(r.group, {}).setdefault(r.version, []).append(r)
    items = [{"metadata": {"name": g},
              "versions": [{"version": v, "freshness": "Current",
                            "resources": [_aggregated_resource(r) for r in rs]}
                           for v, rs in versions.items()]}
             for g, versions in groups.items()]
    return {"kind": "APIGroupDiscoveryList", "apiVersion": f"apidiscovery.k8s.io/{version}",
            "metadata": {}, "items": items}


def _api_group(group: str) -> dict[str, Any] | None:
    versions = sorted({r.version for r in RESOURCES if r.group == group})
    if not group or not versions:
        return None
    vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": vs,
            "preferredVersion": vs[0]}


def api_group_list() -> dict[str, Any]:
    groups = sorted({r.group for r in RESOURCES if r.group})
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [g for g in (_api_group(name) for name in groups) if g]}


# ---------------------------------------------------------------------- OpenAPI stub

def _openapi_key(gv: str) -> str:
    return f"api/{gv}" if "/" not in gv else f"apis/{gv}"


def openapi_documents() -> dict[str, tuple[bytes, str]]:
    """Per group-version OpenAPI v3 stub (JSON bytes, hash) keyed by `api/v1`-style paths.

    Each kind gets a PATCH operation that carries its GVK and a `fieldValidation` parameter,
    which tells kubectl the server validates fields itself (reference/kubectl.md §5). No
    `requestBody`: kubectl then computes strategic merge patches from its built-in types.
    """
    docs: dict[str, tuple[bytes, str]] = {}
    for gv, resources in sorted(group_versions().items()):
        paths: dict[str, Any] = {}
        for r in resources:
            prefix = f"/api/{gv}" if not r.group else f"/apis/{gv}"
            ns = "/namespaces/{namespace}" if r.namespaced else ""
            paths[f"{prefix}{ns}/{r.plural}/{{name}}"] = {"patch": {
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version,
                                                    "kind": r.kind},
                "parameters": [{"name": "fieldValidation", "in": "query",
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK"}},
            }}
        doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
               "paths": paths, "components": {"schemas": {}}}
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        # kubectl caches a hashed document forever: the hash must follow the content.
        docs[_openapi_key(gv)] = (body, hashlib.sha512(body).hexdigest().upper())
    return docs


# ---------------------------------------------------------------------- the server

class ApiServer:
    """Request handlers; one per application (see `build_app`)."""

    def __init__(self, api: Api, *, api_token: str, agent_token: str,
                 agent_address: AgentAddress | None, max_body_bytes: int) -> None:
        self.api = api
        self.api_token = api_token
        self.agent_token = agent_token
        self.info: dict[str, Any] | None = None
        self.agent_address = agent_address
        self.max_body_bytes = max_body_bytes
        self.openapi = openapi_documents()
        self.http: aiohttp.ClientSession | None = None
        self.streams: set[WatchStream] = set()
        self.sockets: set[web.WebSocketResponse] = set()
        self.forwards: set[portforward.ForwardSession] = set()

    # -------------------------------------------------------------- middleware

    @web.middleware
    async def errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        try:
            resp = await handler(request)
        except ApiError as e:
            resp = status_response(e)
        except web.HTTPRequestEntityTooLarge:
            resp = status_response(self._too_large())
        except web.HTTPException as e:  # aiohttp's own (e.g. a malformed upgrade request)
            resp = status_response(ApiError(e.status, e.reason.replace(" ", ""),
                                            e.text or e.reason))
        except Exception as e:  # the server must keep serving: answer 500, log the bug
            log.exception("api.internal_error", method=request.method, path=request.path,
                          error=repr(e))
            resp = status_response(ApiError(500, "InternalError",
                                            f"an internal error occurred: {e!r}"))
        log.debug("api.request", method=request.method, path=request.path,
                  query=request.query_string, status=resp.status,
                  duration_ms=round((time.monotonic() - started) * 1000, 2))
        return resp

    @web.middleware
    async def auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS \
                and not request.path.startswith(SELF_AUTHENTICATED_PREFIX):
            presented = request.headers.get("Authorization")
            if not (token_matches(presented, self.api_token)
                    or token_matches(presented, self.agent_token)):
                raise ApiError(401, "Unauthorized", "Unauthorized")
        return await handler(request)

    async def http_client(self, _: web.Application) -> AsyncIterator[None]:
        """The session used to reach agents (log and exec relays), owned by the app."""
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=AGENT_CONNECT_TIMEOUT_S))
        yield
        await self.http.close()
        self.http = None

    async def on_shutdown(self, _: web.Application) -> None:
        """End open watches and exec sessions so the runner's cleanup does not wait on them."""
        for stream in list(self.streams):
            stream.close()
        for ws in list(self.sockets):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")
        for session in list(self.forwards):
            await session.stop()

    # -------------------------------------------------------------- dispatch

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        special = self._special(path)
        if special is not None:
            if request.method not in ("GET", "HEAD"):
                raise _method_not_allowed()
            return await special(request)
        target = parse_resource_path(path)
        if target is None:
            if path.startswith("/openapi/v3/"):
                return self.openapi_doc(request, path.removeprefix("/openapi/v3/"))
            raise _path_not_found(request.path)
        return await self.resource(request, target)

    def _special(self, path: str) -> Handler | None:
        simple: dict[str, Handler] = {
            "/version": self.version, "/healthz": self.health, "/readyz": self.health,
            "/livez": self.health, "/api": self.api_versions, "/api/v1": self.core_resources,
            "/apis": self.api_groups, "/openapi/v3": self.openapi_root,
            "/openapi/v2": self.openapi_v2, "/podnet/cluster-info": self.cluster_info,
        }
        if path in simple:
            return simple[path]
        parts = path.strip("/").split("/")
        if parts[0] == "apis" and len(parts) in (2, 3):
            return self.group_discovery
        return None

    # -------------------------------------------------------------- fixed endpoints

    async def version(self, _: web.Request) -> web.StreamResponse:
        return json_response(VERSION)

    async def cluster_info(self, _: web.Request) -> web.StreamResponse:
        if self.info is None:
            raise _path_not_found("/podnet/cluster-info")
        return json_response(self.info)

    async def health(self, _: web.Request) -> web.StreamResponse:
        return web.Response(text="ok", content_type="text/plain")

    async def api_versions(self, request: web.Request) -> web.StreamResponse:
        aggregated = aggregated_discovery_version(request)
        if aggregated:
            return self._aggregated(aggregated, core=True)
        host = request.host or "127.0.0.1"
        return json_response({"kind": "APIVersions", "versions": ["v1"],
                              "serverAddressByClientCIDRs": [
                                  {"clientCIDR": "0.0.0.0/0", "serverAddress": host}]})

    async def api_groups(self, request: web.Request) -> web.StreamResponse:
        aggregated = aggregated_discovery_version(request)
        if aggregated:
            return self._aggregated(aggregated, core=False)
        return json_response(api_group_list())

    @staticmethod
    def _aggregated(version: str, *, core: bool) -> web.Response:
        # kubectl decides the format from the response Content-Type (kubectl.md §4).
        ctype = f"application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
        return json_response(aggregated_discovery(core, version), content_type=ctype)

    async def core_resources(self, _: web.Request) -> web.StreamResponse:
        return json_response(resource_list("v1", group_versions().get("v1", [])))

    async def group_discovery(self, request: web.Request) -> web.StreamResponse:
        parts = request.path.strip("/").split("/")
        if len(parts) == 2:
            group = _api_group(parts[1])
            if group is None:
                raise _path_not_found(request.path)
            return json_response(group)
        gv = f"{parts[1]}/{parts[2]}"
        resources = group_versions().get(gv)
        if not resources:
            raise _path_not_found(request.path)
        return json_response(resource_list(gv, resources))

    async def openapi_root(self, _: web.Request) -> web.StreamResponse:
        paths = {key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
                 for key, (_, digest) in self.openapi.items()}
        return json_response({"paths": paths})

    def openapi_doc(self, request: web.Request, key: str) -> web.StreamResponse:
        if key not in self.openapi:
            raise _path_not_found(request.path)
        body, digest = self.openapi[key]
        resp = web.Response(body=body, content_type="application/json")
        resp.headers["ETag"] = f'"{digest}"'
        return resp

    async def openapi_v2(self, request: web.Request) -> web.StreamResponse:
        # kubectl falls back to client-side validation (OpenAPI v2, protobuf) for a kind the v3
        # stub does not list. An empty document is a valid, empty protobuf message that holds
        # no schema, so kubectl skips validating a kind podnet does not serve and refuses it
        # with its own clear words (`no matches for kind "Ingress" in version
        # "networking.k8s.io/v1"`) instead of "error validating data: the server could not
        # find the requested resource".
        if _OPENAPI_V2_PROTOBUF in request.headers.get("Accept", ""):
            # (Go's mime parser rejects the "@" of the requested type in a Content-Type.)
            return web.Response(body=b"", content_type="application/octet-stream")
        raise _path_not_found(request.path)

    # -------------------------------------------------------------- resources

    async def resource(self, request: web.Request, t: Target) -> web.StreamResponse:
        method = request.method
        if t.legacy_watch:
            if method != "GET" or t.sub is not None:
                raise _method_not_allowed()
            return await self.watch(request, t)
        if t.sub is not None:
            return await self.subresource(request, t)
        if t.name is None:
            if method == "GET":
                return await (self.watch(request, t) if _flag(request, "watch")
                              else self.list(request, t))
            if method == "POST" and (t.namespace is not None or not t.res.namespaced):
                return await self.create(request, t)
            if method == "DELETE" and (t.namespace is not None or not t.res.namespaced):
                return await self.delete_collection(request, t)
            raise _method_not_allowed()
        handlers: dict[str, Handler] = {
            "GET": lambda r: (self.watch(r, t) if _flag(r, "watch") else self.get(r, t)),
            "PUT": lambda r: self.update(r, t),
            "PATCH": lambda r: self.patch(r, t),
            "DELETE": lambda r: self.delete(r, t),
        }
        if method not in handlers:
            raise _method_not_allowed()
        return await handlers[method](request)

    async def subresource(self, request: web.Request, t: Target) -> web.StreamResponse:
        method, sub = request.method, t.sub
        assert t.name is not None  # parse_resource_path puts SUB after NAME
        if sub == "status":
            if method == "GET":
                return await self.get(request, t)
            if method == "PUT":
                return await self.update(request, t)
            if method == "PATCH":
                return await self.patch(request, t)
        elif sub == "scale" and method in ("GET", "PUT", "PATCH"):
            return await self.scale(request, t)
        elif sub == "binding" and t.res is PODS and method == "POST":
            return await self.binding(request, t)
        elif sub == "log" and t.res is PODS and method == "GET":
            return await self.pod_log(request, t)
        elif sub == "exec" and t.res is PODS and method in ("GET", "POST"):
            return await self.pod_exec(request, t)
        elif sub == "portforward" and t.res is PODS and method in ("GET", "POST"):
            return await self.pod_portforward(request, t)
        raise _method_not_allowed()

    async def read_body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise self._too_large()
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large() from None

    def _too_large(self) -> ApiError:
        return ApiError(413, "RequestEntityTooLarge",
                        f"Request entity too large: limit is {self.max_body_bytes}")

    def _render(self, request: web.Request, res: Resource, body: dict[str, Any]) -> Any:
        """An object or list, as a Table when the client asked for one."""
        if not wants_table(request) or body.get("kind") == "Status":
            return body
        is_list = "items" in body and body.get("kind") == res.list_kind
        objects = body["items"] if is_list else [body]
        rv = (body.get("metadata") or {}).get("resourceVersion", "")
        return table(res.kind, objects, include_object=_include_object(request),
                     now=datetime.now(UTC), resource_version=str(rv))

    async def get(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None  # routed here only with a name
        obj = self.api.get(t.res, t.namespace, t.name)
        return json_response(self._render(request, t.res, obj))

    async def list(self, request: web.Request, t: Target) -> web.StreamResponse:
        if wants_table(request):
            _include_object(request)  # reject a bad value before doing the work
        body = self.api.list(t.res, t.namespace,
                             label_selector=request.query.get("labelSelector", ""),
                             field_selector=request.query.get("fieldSelector", ""))
        return json_response(self._render(request, t.res, body))

    async def create(self, request: web.Request, t: Target) -> web.StreamResponse:
        obj = decode_object(await self.read_body(request), request.content_type)
        created, warnings = await self.api.create(
            t.res, t.namespace, obj, field_validation=_field_validation(request),
            dry_run=_dry_run(request))
        return json_response(created, 201, warnings=warnings)

    async def update(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None  # routed here only with a name
        obj = decode_object(await self.read_body(request), request.content_type)
        updated, warnings = await self.api.update(
            t.res, t.namespace, t.name, obj, subresource=t.sub,
            field_validation=_field_validation(request), dry_run=_dry_run(request))
        return json_response(updated, 200, warnings=warnings)

    async def patch(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None  # routed here only with a name
        body = await self.read_body(request)
        patched, warnings, created = await self.api.patch(
            t.res, t.namespace, t.name, body, request.headers.get("Content-Type", ""),
            subresource=t.sub, field_validation=_field_validation(request),
            dry_run=_dry_run(request), field_manager=request.query.get("fieldManager", ""))
        return json_response(patched, 201 if created else 200, warnings=warnings)

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        body = await self.read_body(request)
        opts = decode_object(body, request.content_type) if body.strip() else {}
        grace = _int_param(request, "gracePeriodSeconds")
        if grace is not None:
            opts["gracePeriodSeconds"] = grace
        if _dry_run(request):
            opts["dryRun"] = ["All"]
        if not isinstance(opts.get("gracePeriodSeconds", 0), int | None):
            raise apierrors.bad_request("gracePeriodSeconds must be an integer")
        pre = opts.get("preconditions")
        if pre is not None and not isinstance(pre, dict):
            raise apierrors.bad_request("preconditions must be an object")
        if isinstance(pre, dict) and not isinstance(pre.get("uid", ""), str | None):
            raise apierrors.bad_request("preconditions.uid must be a string")
        return opts

    async def delete(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None  # routed here only with a name
        opts = await self._delete_options(request)
        pre = opts.get("preconditions") or {}
        propagation = request.query.get("propagationPolicy") or opts.get("propagationPolicy")
        if propagation is None and (opts.get("orphanDependents") is True
                                    or request.query.get("orphanDependents") == "true"):
            propagation = "Orphan"  # the older form of the same option
        gone = await self.api.delete(
            t.res, t.namespace, t.name, grace_period_seconds=opts.get("gracePeriodSeconds"),
            uid=pre.get("uid") if isinstance(pre, dict) else None,
            dry_run="All" in (opts.get("dryRun") or []),
            propagation=str(propagation) if propagation is not None else None)
        return json_response(gone)

    async def delete_collection(self, request: web.Request, t: Target) -> web.StreamResponse:
        opts = await self._delete_options(request)
        listed = self.api.list(t.res, t.namespace,
                               label_selector=request.query.get("labelSelector", ""),
                               field_selector=request.query.get("fieldSelector", ""))
        items = []
        for obj in listed["items"]:
            meta = obj["metadata"]
            with contextlib.suppress(ApiError):  # gone meanwhile, or protected: skip it
                items.append(await self.api.delete(
                    t.res, meta.get("namespace"), meta["name"],
                    grace_period_seconds=opts.get("gracePeriodSeconds"),
                    dry_run="All" in (opts.get("dryRun") or [])))
        listed["items"] = items
        return json_response(listed)

    async def scale(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None  # NAME/scale
        if request.method == "GET":
            return json_response(self.api.get_scale(t.res, t.namespace, t.name))
        body = await self.read_body(request)
        if request.method == "PUT":
            scale = await self.api.update_scale(
                t.res, t.namespace, t.name, decode_object(body, request.content_type),
                dry_run=_dry_run(request))
        else:
            scale = await self.api.patch_scale(
                t.res, t.namespace, t.name, body, request.headers.get("Content-Type", ""),
                dry_run=_dry_run(request))
        return json_response(scale)

    async def binding(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None and t.namespace is not None  # pods/NAME/binding
        body = decode_object(await self.read_body(request), request.content_type)
        target = body.get("target") or {}
        node = target.get("name") if isinstance(target, dict) else None
        meta = body.get("metadata") or {}
        if not isinstance(meta, dict):
            raise apierrors.bad_request("the binding's metadata must be an object")
        if meta.get("name") not in (None, "", t.name):
            raise apierrors.bad_request(f"the name of the binding ({meta['name']}) does not "
                                        f"match the pod ({t.name})")
        await self.api.bind(t.namespace, t.name, str(node or ""), uid=meta.get("uid"),
                            dry_run=_dry_run(request))
        return json_response(_success_status(201), 201)

    # -------------------------------------------------------------- watch

    async def watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        field_selector = request.query.get("fieldSelector", "")
        if t.name is not None:  # watching one object = a name field selector
            field_selector = ",".join(x for x in (f"metadata.name={t.name}", field_selector) if x)
        stream = self.api.watch(t.res, t.namespace,
                                resource_version=request.query.get("resourceVersion"),
                                label_selector=request.query.get("labelSelector", ""),
                                field_selector=field_selector)
        timeout = _int_param(request, "timeoutSeconds")
        as_table = wants_table(request)
        include = _include_object(request) if as_table else "Metadata"
        bookmarks = _flag(request, "allowWatchBookmarks")
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        self.streams.add(stream)
        try:
            await resp.prepare(request)
            await self._pump_watch(request, resp, stream, t.res, timeout, as_table, include,
                                   bookmarks)
        finally:
            self.streams.discard(stream)
            stream.close()
        return resp

    async def _pump_watch(self, request: web.Request, resp: web.StreamResponse,
                          stream: WatchStream, res: Resource, timeout_s: int | None,
                          as_table: bool, include: str, bookmarks: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s if timeout_s and timeout_s > 0 else None
        idle_since = loop.time()
        while True:
            wait = POLL_S if deadline is None else min(POLL_S, deadline - loop.time())
            if wait <= 0:
                break
            try:
                event = await asyncio.wait_for(stream.__anext__(), wait)
            except StopAsyncIteration:
                break
            except TimeoutError:
                if _client_gone(request):
                    return
                if bookmarks and loop.time() - idle_since >= BOOKMARK_EVERY_S and stream.idle:
                    idle_since = loop.time()
                    event = {"type": "BOOKMARK", "object": {
                        "kind": res.kind, "apiVersion": res.api_version,
                        "metadata": {"resourceVersion": str(self.api.store.rv)}}}
                else:
                    continue
            if as_table and event["type"] not in ("ERROR", "BOOKMARK"):
                obj = event["object"]
                event = {"type": event["type"], "object": table(
                    res.kind, [obj], include_object=include, now=datetime.now(UTC),
                    resource_version=str(obj["metadata"].get("resourceVersion", "")))}
            try:
                await resp.write(_json_bytes(event) + b"\n")
            except ConnectionError:
                return  # the client went away mid-write
            idle_since = loop.time()
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()

    # -------------------------------------------------------------- log and exec relays

    def _locate(self, pod: Mapping[str, Any], container: str | None) -> tuple[str, int, str]:
        """(host, port, container) of the agent running `pod`, or a 400 saying why not."""
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        name = meta.get("name", "")
        names = [c.get("name") for key in ("containers", "initContainers")
                 for c in spec.get(key) or [] if isinstance(c, dict)]
        if container and container not in names:
            raise apierrors.bad_request(f'container "{container}" not found in pod "{name}"')
        if not container:
            annotations = meta.get("annotations") or {}
            container = annotations.get("kubectl.kubernetes.io/default-container") or (
                names[0] if names else "")
        node = spec.get("nodeName")
        if not node:
            raise apierrors.bad_request(f'pod "{name}" is not running on any node yet')
        address = self.agent_address(str(node)) if self.agent_address else None
        if address is None:
            raise apierrors.bad_request(f'pod "{name}" is on node "{node}", but that node\'s '
                                        "agent address is unknown")
        return address[0], address[1], str(container)

    def _agent_url(self, request: web.Request, host: str, port: int, ns: str, name: str,
                   what: str, container: str, scheme: str = "http") -> str:
        query = MultiDict(request.query)
        if not query.get("container") and container:
            query["container"] = container
        qs = urllib.parse.urlencode(list(query.items()))
        return f"{scheme}://{host}:{port}/pods/{ns}/{name}/{what}?{qs}"

    async def pod_log(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None and t.namespace is not None  # pods/NAME/log
        pod = self.api.get(PODS, t.namespace, t.name)
        host, port, container = self._locate(pod, request.query.get("container"))
        url = self._agent_url(request, host, port, t.namespace, t.name, "log", container)
        assert self.http is not None  # set by the cleanup context
        headers = {"Authorization": f"Bearer {self.agent_token}"}
        try:
            upstream = await self.http.get(url, headers=headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            log.warning("api.agent_unreachable", node=pod["spec"].get("nodeName"), url=url,
                        error=repr(e))
            raise ApiError(502, "InternalError",
                           f'cannot reach the agent of node "{pod["spec"].get("nodeName")}" '
                           f"at {host}:{port}: {e}") from None
        async with upstream:
            if upstream.status != 200:
                return web.Response(status=upstream.status, body=await upstream.read(),
                                    content_type=upstream.content_type or "application/json")
            resp = web.StreamResponse(status=200, headers={
                "Content-Type": upstream.headers.get("Content-Type", "text/plain")})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await self._pump_log(request, resp, upstream)
        return resp

    async def _pump_log(self, request: web.Request, resp: web.StreamResponse,
                        upstream: aiohttp.ClientResponse) -> None:
        while True:
            try:
                chunk = await asyncio.wait_for(upstream.content.readany(), POLL_S)
            except TimeoutError:
                if _client_gone(request):
                    return
                continue
            except (aiohttp.ClientError, OSError) as e:
                log.info("api.log_relay_ended", error=repr(e))
                break
            if not chunk:
                break
            try:
                await resp.write(chunk)
            except ConnectionError:
                return
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()

    async def pod_exec(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None and t.namespace is not None  # pods/NAME/exec
        pod = self.api.get(PODS, t.namespace, t.name)
        host, port, container = self._locate(pod, request.query.get("container"))
        ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, autoping=True)
        ready = ws.can_prepare(request)
        if request.method != "GET" or not ready.ok:
            # kubectl falls back to SPDY (POST) when the upgrade fails; podnet speaks only
            # the WebSocket protocols, so say so instead of half-answering.
            raise apierrors.bad_request("podnet serves exec over WebSocket only "
                                        "(v5.channel.k8s.io / v4.channel.k8s.io); use kubectl "
                                        "1.30 or newer, without KUBECTL_REMOTE_COMMAND_"
                                        "WEBSOCKETS=false")
        await ws.prepare(request)
        # Nothing goes down to the client before this: see EXEC_SETTLE_S.
        settled_at = asyncio.get_running_loop().time() + EXEC_SETTLE_S
        self.sockets.add(ws)
        try:
            url = self._agent_url(request, host, port, t.namespace, t.name, "exec", container,
                                  scheme="http")
            await self._relay_exec(ws, url, ws.ws_protocol, str(pod["spec"].get("nodeName")),
                                   settled_at)
        finally:
            self.sockets.discard(ws)
            if not ws.closed:
                await ws.close()
        return ws

    async def _relay_exec(self, client: web.WebSocketResponse, url: str, protocol: str | None,
                          node: str, settled_at: float) -> None:
        """Relay frames verbatim both ways until one side ends; the agent's frames (its
        output, then its one Status) reach the client in order, and only then its close.
        Nothing is sent down before `settled_at` (see EXEC_SETTLE_S)."""
        assert self.http is not None  # set by the cleanup context
        try:
            agent = await self.http.ws_connect(
                url, protocols=(protocol,) if protocol else EXEC_PROTOCOLS,
                headers={"Authorization": f"Bearer {self.agent_token}"}, autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            log.warning("api.agent_unreachable", node=node, url=url, error=repr(e))
            await _exec_failure(client, f'cannot reach the agent of node "{node}": {e}',
                                settled_at)
            return
        async with agent:
            up = asyncio.create_task(_forward(client, agent), name="exec-relay-up")
            down = asyncio.create_task(_forward(agent, client, settled_at),
                                       name="exec-relay-down")
            try:
                await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (up, down):
                    task.cancel()
                await asyncio.gather(up, down, return_exceptions=True)
            if down.done() and not down.cancelled() and not client.closed:
                # The agent ended the session: pass its close code on (1000 normally).
                code = agent.close_code
                if code is None or code == aiohttp.WSCloseCode.ABNORMAL_CLOSURE:
                    await _exec_failure(client, f'lost the connection to the agent of node '
                                                f'"{node}"', settled_at)
                else:
                    await _settle(settled_at)  # a session without output: its close too
                    await client.close(code=code)
            elif not agent.closed:
                await agent.close()


    async def pod_portforward(self, request: web.Request, t: Target) -> web.StreamResponse:
        """`kubectl port-forward`: SPDY (plain or WebSocket-tunnelled), one agent WebSocket per
        forwarded connection (controlplane/portforward.py)."""
        assert t.name is not None and t.namespace is not None  # pods/NAME/portforward
        pod = self.api.get(PODS, t.namespace, t.name)
        phase = (pod.get("status") or {}).get("phase")
        if phase != "Running":
            raise apierrors.bad_request("unable to forward port because pod is not running. "
                                        f"Current status={phase}")
        host, port, _ = self._locate(pod, None)
        assert self.http is not None  # set by the cleanup context
        dial = portforward.agent_dialer(
            self.http, f"http://{host}:{port}/pods/{t.namespace}/{t.name}", self.agent_token)
        return await portforward.serve(
            request, dial, namespace=t.namespace, pod=t.name,
            uid=str(pod["metadata"].get("uid", "")), sessions=self.forwards,
            refuse=apierrors.bad_request)


WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse

# kubectl 1.30 to 1.33 (client-go's WebSocket executor before kubernetes#131203, fixed in
# 1.34) starts reading the connection before it has created its stdout/stderr/error streams:
# a frame that arrives in between is dropped ("Unknown stream id 1, discarding message"),
# and a close that does makes it fail with "error: closed all streams". Nothing the client
# sends tells when its streams exist (without stdin or a tty it sends nothing at all), so the
# relay sends nothing down, neither frames nor the close, until this long after the upgrade
# (about what a kubelet takes to start a process in a container anyway). A command whose
# output comes later is not delayed.
EXEC_SETTLE_S = 0.05


async def _settle(settled_at: float) -> None:
    delay = settled_at - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _forward(src: WebSocket, dst: WebSocket, settled_at: float | None = None) -> None:
    """Copy messages verbatim, in order, until `src` closes; the first not before
    `settled_at`."""
    async for msg in src:
        if settled_at is not None:
            await _settle(settled_at)
            settled_at = None
        if msg.type == aiohttp.WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif msg.type == aiohttp.WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif msg.type == aiohttp.WSMsgType.ERROR:
            log.info("api.exec_relay_error", error=repr(src.exception()))
            return


async def _exec_failure(ws: web.WebSocketResponse, message: str, settled_at: float) -> None:
    """End an exec session with a Failure Status on the error channel (kubectl prints it)."""
    status = {"metadata": {}, "status": "Failure", "message": message,
              "reason": "InternalError"}
    await _settle(settled_at)
    with contextlib.suppress(ConnectionError):
        await ws.send_bytes(b"\x03" + _json_bytes(status))
        await ws.close()


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def build_app(api: Api, *, api_token: str, agent_token: str,
              agent_address: AgentAddress | None = None,
              max_body_bytes: int = 3 * 1024 * 1024,
              cluster_info: dict[str, Any] | None = None,
              extra_routes: Callable[[web.Application], None] | None = None) -> web.Application:
    """The API server as an aiohttp application (run it with AppRunner/TCPSite).

    `cluster_info` is served without auth at /podnet/cluster-info (the CA and its HMAC).
    `extra_routes` adds routes matched before the Kubernetes API's catch-all (the topology
    page under /podnet/ui/, which authenticates its own requests).
    """
    server = ApiServer(api, api_token=api_token, agent_token=agent_token,
                       agent_address=agent_address, max_body_bytes=max_body_bytes)
    server.info = cluster_info
    app = web.Application(client_max_size=max_body_bytes,
                          middlewares=[server.errors, server.auth])
    if extra_routes is not None:
        extra_routes(app)
    app.router.add_route("*", "/{path:.*}", server.dispatch)
    app.cleanup_ctx.append(server.http_client)
    app.on_shutdown.append(server.on_shutdown)
    return app
