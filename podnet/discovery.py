"""Finding the control plane with mDNS/DNS-SD (`_podnet._tcp.local.`, via zeroconf).

The control plane advertises its API URL, its DNS host:port and the cluster name; an agent
started without `--controlplane` browses for that. What travels in the advertisement is only
addressing: never the secret. Nothing found this way is trusted by itself: the agent still
fetches cluster-info from every candidate and keeps the first whose HMAC verifies under its
cluster secret, so a rogue or foreign advertisement (another cluster on the same link) is
skipped rather than joined.

Zeroconf is bound to exactly one IPv4 address, never `InterfaceChoice.All`: on the build
machines the root namespace's other interfaces are a real network (see LAB.md), and under
`podnet up` the address is 127.0.0.1.

The top half is pure (TXT records, interface choice), the bottom half the thin I/O adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import structlog

log = structlog.get_logger()
T = TypeVar("T")

SERVICE_TYPE = "_podnet._tcp.local."
TXT_VERSION = "1"
# Keys a podnet advertisement carries. Anything else in a TXT record is ignored, and the
# advertiser refuses to publish anything but these (so a secret can never slip in).
TXT_KEYS = ("txtvers", "cluster", "api", "dns")


class DiscoveryError(Exception):
    """No usable control plane was found; the message says where we looked and what to do."""


@dataclass(frozen=True)
class Advertisement:
    """What the control plane publishes about itself."""

    cluster: str   # the cluster's name, for people telling several clusters apart
    api: str       # https://host:port of the API server
    dns: str       # host:port of the cluster DNS server (UDP+TCP)

    def txt(self) -> dict[str, str]:
        return {"txtvers": TXT_VERSION, "cluster": self.cluster, "api": self.api,
                "dns": self.dns}


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{what}: expected host:port, got {text!r}")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{what}: bad port in {text!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"{what}: port out of range in {text!r}")
    return host, number


def parse_txt(properties: Mapping[bytes, bytes | None]) -> Advertisement:
    """The Advertisement in a TXT record; ValueError (with the reason) when it is not a
    well-formed podnet advertisement of a version we understand."""
    txt: dict[str, str] = {}
    for key, value in properties.items():
        if value is not None:  # a key with no "=" is a boolean flag: none of ours
            txt[key.decode("utf-8", "replace").lower()] = value.decode("utf-8", "replace")
    if txt.get("txtvers") != TXT_VERSION:
        raise ValueError(f"txtvers: expected {TXT_VERSION!r}, got {txt.get('txtvers')!r}")
    missing = [k for k in ("cluster", "api", "dns") if not txt.get(k)]
    if missing:
        raise ValueError(f"missing TXT keys: {', '.join(missing)}")
    api = txt["api"]
    parts = urlsplit(api)
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"api: expected https://host:port, got {api!r}")
    try:
        if parts.port is None:
            raise ValueError
    except ValueError:
        raise ValueError(f"api: expected https://host:port, got {api!r}") from None
    _host_port(txt["dns"], "dns")
    return Advertisement(cluster=txt["cluster"], api=api.rstrip("/"), dns=txt["dns"])


def default_interface(listen_host: str) -> str | None:
    """The one address zeroconf binds to when none is configured: the address the process
    listens on, so mDNS stays on the network the process serves. None for a wildcard
    (0.0.0.0) or a name, where picking an interface would be a guess (the caller asks for
    `--mdns-interface`)."""
    try:
        ip = ipaddress.ip_address(listen_host)
    except ValueError:
        return None
    if not isinstance(ip, ipaddress.IPv4Address) or ip.is_unspecified:
        return None
    return str(ip)


def check_interface(value: str) -> str | None:
    """Why `value` is not a usable `--mdns-interface` (one IPv4 address), or None."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return f"expected one IPv4 address, got {value!r}"
    if not isinstance(ip, ipaddress.IPv4Address):
        return f"only IPv4 is supported, got {value!r}"
    if ip.is_unspecified or ip.is_multicast:
        # 0.0.0.0 would mean every interface: on these machines that includes the real link.
        return f"must be one interface's address, got {value!r}"
    return None


def controlplane_advertisement(cluster: str, interface: str, listen_host: str, api_port: int,
                               dns_host: str, dns_port: int) -> Advertisement:
    """What a control plane listening as given publishes on `interface`: a wildcard listen
    address is replaced by the interface's address, the one peers on that link can dial."""
    def reachable(host: str) -> str:
        return interface if host in ("0.0.0.0", "") else host

    return Advertisement(cluster=cluster, api=f"https://{reachable(listen_host)}:{api_port}",
                         dns=f"{reachable(dns_host)}:{dns_port}")


def instance_name(cluster: str, host: str, port: int) -> str:
    """A DNS-SD instance label unique per control plane on a host (the API port is)."""
    label = f"{cluster}-{socket.gethostname()}-{host}-{port}".replace(".", "-")
    return label[:63]


# ---------------------------------------------------------------------- I/O (zeroconf)

def _zeroconf(interface: str) -> Any:
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncZeroconf

    return AsyncZeroconf(interfaces=[interface], ip_version=IPVersion.V4Only)


class Advertiser:
    """Publishes one Advertisement on one interface until closed."""

    def __init__(self, ad: Advertisement, interface: str) -> None:
        self.ad = ad
        self.interface = interface
        self._zc: Any = None
        self._info: Any = None
        self._registering: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and start announcing. Probing the name takes about a second; it goes on in
        the background so the process is ready without waiting for it."""
        from zeroconf.asyncio import AsyncServiceInfo

        api = urlsplit(self.ad.api)
        host, port = str(api.hostname), int(api.port or 0)
        name = instance_name(self.ad.cluster, host, port)
        properties = self.ad.txt()
        assert set(properties) <= set(TXT_KEYS)
        self._info = AsyncServiceInfo(
            SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", port=port, properties=properties,
            # The A record: the API's own address, or the interface's when that is a name.
            addresses=[socket.inet_aton(default_interface(host) or self.interface)],
            server=f"{name}.local.")
        # Binding happens here, so a bad interface fails start() at once; registering probes
        # the name for about a second (zeroconf awaits that inside async_register_service),
        # so it runs as an owned task and the control plane is ready without waiting for it.
        self._zc = _zeroconf(self.interface)
        self._registering = asyncio.create_task(self._register(),
                                                name="zeroconf-register")

    async def _register(self) -> None:
        try:
            announced = await self._zc.async_register_service(self._info,
                                                              allow_name_change=True)
            await announced
        except asyncio.CancelledError:
            raise
        except Exception as e:  # advertising is best effort: log, keep serving
            log.warning("discovery.advertise_failed", interface=self.interface,
                        error=repr(e))
            return
        log.info("discovery.advertised", interface=self.interface, name=self._info.name,
                 api=self.ad.api, dns=self.ad.dns)

    async def close(self) -> None:
        if self._zc is None:
            return
        if self._registering is not None and not self._registering.done():
            self._registering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._registering
        with contextlib.suppress(Exception):  # best effort goodbye; the TTL expires anyway
            await asyncio.wait_for(self._zc.async_unregister_service(self._info), 2.0)
        await self._zc.async_close()
        self._zc = None


async def browse(interface: str, timeout_s: float,
                 accept: Callable[[Advertisement], Awaitable[T | None]]) -> tuple[
                     Advertisement, T]:
    """Browse `_podnet._tcp` on `interface` for up to `timeout_s`, offering every valid
    advertisement to `accept` (retrying ones it declined, since a control plane may still be
    starting) until it returns something. DiscoveryError when nothing was accepted."""
    from zeroconf import ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

    names: asyncio.Queue[str] = asyncio.Queue()
    seen: dict[str, Advertisement] = {}
    declined: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    zc = _zeroconf(interface)

    def changed(zeroconf: Any, service_type: str, name: str,
                state_change: ServiceStateChange) -> None:
        if state_change is not ServiceStateChange.Removed:
            names.put_nowait(name)

    browser = AsyncServiceBrowser(zc.zeroconf, [SERVICE_TYPE], handlers=[changed])
    try:
        while (left := deadline - loop.time()) > 0:
            try:
                name = await asyncio.wait_for(names.get(), min(left, 1.0))
            except TimeoutError:
                # Re-offer the ones declined so far (e.g. found before their API was up).
                for again in list(declined):
                    names.put_nowait(again)
                continue
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if not await info.async_request(zc.zeroconf, int(min(left, 3.0) * 1000)):
                continue
            try:
                ad = parse_txt(info.properties)
            except ValueError as e:
                log.info("discovery.ignored", name=name, reason=str(e))
                continue
            seen[name] = ad
            result = await accept(ad)
            if result is not None:
                log.info("discovery.found", name=name, api=ad.api, cluster=ad.cluster)
                return ad, result
            declined[name] = ad.api
    finally:
        await browser.async_cancel()
        await zc.async_close()
    if seen:
        raise DiscoveryError(
            f"found {len(seen)} podnet control plane(s) on {interface} "
            f"({', '.join(sorted(a.api for a in seen.values()))}) but none proved it holds "
            f"our cluster secret within {timeout_s:g} s (wrong --secret-file?); "
            "pass --controlplane URL")
    raise DiscoveryError(f"no podnet control plane found on {interface} within "
                         f"{timeout_s:g} s; pass --controlplane URL")

