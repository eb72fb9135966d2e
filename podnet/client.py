"""A small asynchronous client for the podnet API, used by agents and the CLI.

It speaks the same REST conventions as kubectl: `/api/v1/...` paths, `Status` errors
(raised as `ApiError`), and `?watch=true` streams of JSON lines.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from podnet.addresses import cidr_families
from podnet.apierrors import ApiError
from podnet.resources import Resource


class ApiUnavailable(Exception):
    """The control plane could not be reached."""


def resource_path(res: Resource, namespace: str | None = None, name: str | None = None,
                  subresource: str | None = None) -> str:
    base = f"/api/{res.version}" if not res.group else f"/apis/{res.group}/{res.version}"
    if res.namespaced and namespace:
        base += f"/namespaces/{quote(namespace, safe='')}"
    path = f"{base}/{res.plural}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
        if subresource:
            path += f"/{subresource}"
    return path


class ApiClient:
    """One keep-alive session to the API server, authenticated with a bearer token."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.ssl_context = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.ssl_context) if self.ssl_context else None
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"Authorization": f"Bearer {self.token}",
                         "User-Agent": "podnet/0.1"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(self, method: str, path: str, *, body: Any = None,
                      params: dict[str, str] | None = None,
                      content_type: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        try:
            async with self.session.request(method, self.base_url + path, data=data,
                                            params=params, headers=headers,
                                            timeout=self._timeout) as resp:
                text = await resp.text()
                payload = json.loads(text) if text else None
                if resp.status >= 400:
                    raise _api_error(resp.status, payload, text)
                return payload
        except (aiohttp.ClientError, TimeoutError) as e:
            # ClientError covers a server that died mid-reply (ClientPayloadError), not only
            # refused connections: for a caller both mean "the control plane is not there".
            raise ApiUnavailable(f"cannot reach the control plane at {self.base_url}: "
                                 f"{e or type(e).__name__}") from None
        except ValueError as e:  # JSON that does not parse, or a body that is not text
            raise ApiUnavailable(f"bad response from {self.base_url}{path}: {e}") from None

    async def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", resource_path(res, namespace, name))
        return result

    async def list(self, res: Resource, namespace: str | None = None, *,
                   label_selector: str = "", field_selector: str = "") -> dict[str, Any]:
        params = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        result: dict[str, Any] = await self.request("GET", resource_path(res, namespace),
                                                    params=params)
        return result

    async def create(self, res: Resource, namespace: str | None, obj: dict[str, Any], *,
                     field_validation: str | None = None) -> dict[str, Any]:
        params = {"fieldValidation": field_validation} if field_validation else None
        result: dict[str, Any] = await self.request("POST", resource_path(res, namespace),
                                                    body=obj, params=params)
        return result

    async def replace(self, res: Resource, namespace: str | None, name: str,
                      obj: dict[str, Any], subresource: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "PUT", resource_path(res, namespace, name, subresource), body=obj)
        return result

    async def patch(self, res: Resource, namespace: str | None, name: str, patch: Any, *,
                    subresource: str | None = None,
                    content_type: str = "application/merge-patch+json",
                    field_validation: str | None = None) -> dict[str, Any]:
        params = {"fieldValidation": field_validation} if field_validation else None
        result: dict[str, Any] = await self.request(
            "PATCH", resource_path(res, namespace, name, subresource), body=patch,
            content_type=content_type, params=params)
        return result

    async def delete(self, res: Resource, namespace: str | None, name: str, *,
                     grace_period_seconds: int | None = None,
                     uid: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        result: dict[str, Any] = await self.request(
            "DELETE", resource_path(res, namespace, name), body=body)
        return result

    async def watch(self, res: Resource, namespace: str | None = None, *,
                    resource_version: str = "", field_selector: str = "",
                    label_selector: str = "",
                    timeout_s: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Yield watch events ({"type", "object"}) until the server ends the stream."""
        params = {"watch": "true", "allowWatchBookmarks": "true"}
        if resource_version:
            params["resourceVersion"] = resource_version
        if field_selector:
            params["fieldSelector"] = field_selector
        if label_selector:
            params["labelSelector"] = label_selector
        if timeout_s is not None:
            params["timeoutSeconds"] = str(timeout_s)
        try:
            async with self.session.get(
                    self.base_url + resource_path(res, namespace), params=params,
                    timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as resp:
                if resp.status >= 400:
                    text = await resp.text()
                    raise _api_error(resp.status, _maybe_json(text), text)
                # Lines can exceed aiohttp's default 64 KiB line limit for big objects.
                buffer = b""
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if line.strip():
                            yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise ApiUnavailable(f"watch of {res.plural} ended: {e or type(e).__name__}") \
                from None


@dataclass(frozen=True)
class ClusterInfo:
    """What a holder of the cluster secret learns from /podnet/cluster-info, verified."""

    ca_pem: bytes
    cluster_cidr: str
    service_cidr: str
    cluster_domain: str
    tunnel_address: str = ""    # host:port of the control plane's tunnel endpoint ("" = none)
    fault_seed: int = 0         # cluster-wide NetworkFault seed (`podnet up --seed`)
    # Every family's CIDRs, primary (== cluster_cidr / service_cidr) first; () = the primary
    # alone (a single-stack cluster, or a control plane that does not list them).
    cluster_cidrs: tuple[str, ...] = ()
    service_cidrs: tuple[str, ...] = ()

    @property
    def cluster_families(self) -> list[str]:
        return list(self.cluster_cidrs or (self.cluster_cidr,))

    @property
    def service_families(self) -> list[str]:
        return list(self.service_cidrs or (self.service_cidr,))

    def tunnel_dial_address(self, base_url: str) -> str:
        """Where to dial the control plane's tunnel endpoint ("" when it has none): a wildcard
        listen host (0.0.0.0) is replaced by the host this process reaches the API at."""
        host, sep, port = self.tunnel_address.rpartition(":")
        if not sep or not host or not port.isdigit():
            return ""
        if host in ("0.0.0.0", "::", "[::]"):
            api_host = urlsplit(base_url).hostname or "127.0.0.1"
            host = f"[{api_host}]" if ":" in api_host else api_host
        return f"{host}:{port}"


async def fetch_cluster_info(base_url: str, secret: bytes, *,
                             timeout_s: float = 5.0) -> ClusterInfo:
    """The cluster CA and addressing, accepted only if its HMAC under the secret verifies.

    The first request cannot verify the server (we do not have its CA yet), so it carries no
    credential; what it returns is trusted only through the HMAC (see podnet/pki.py).
    """
    from podnet.pki import verify_cluster_info

    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    url = base_url.rstrip("/") + "/podnet/cluster-info"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=insecure)) as s, \
                s.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            info = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise ApiUnavailable(f"cannot fetch the cluster CA from {url}: "
                             f"{e or type(e).__name__}") from None
    fields = ("ca", "clusterCIDR", "serviceCIDR", "clusterDomain")
    if not isinstance(info, dict) or not all(isinstance(info.get(f), str) for f in fields) \
            or not verify_cluster_info(secret, info):
        raise CaMismatch(f"the server at {base_url} did not prove it holds the cluster secret "
                         "(wrong --secret-file, or not a podnet control plane)")
    tunnel, seed = info.get("tunnelAddress"), info.get("faultSeed")
    return ClusterInfo(info["ca"].encode(), info["clusterCIDR"], info["serviceCIDR"],
                       info["clusterDomain"], tunnel if isinstance(tunnel, str) else "",
                       seed if isinstance(seed, int) and not isinstance(seed, bool) else 0,
                       tuple(cidr_families(info["clusterCIDR"], info.get("clusterCIDRs"))),
                       tuple(cidr_families(info["serviceCIDR"], info.get("serviceCIDRs"))))


class CaMismatch(Exception):
    """The control plane's CA is not vouched for by our cluster secret."""


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _api_error(status: int, payload: Any, text: str) -> ApiError:
    if isinstance(payload, dict) and payload.get("kind") == "Status":
        return ApiError(int(payload.get("code") or status), str(payload.get("reason", "")),
                        str(payload.get("message", "")), payload.get("details") or {})
    return ApiError(status, "Unknown", text.strip()[:500] or f"HTTP {status}")
