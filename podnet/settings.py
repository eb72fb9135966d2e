"""Typed settings for every podnet process: defaults -> environment -> flags.

Each process's settings are one frozen dataclass. A field's metadata carries its help text;
the flag is the field name with dashes (`heartbeat_interval_s` -> `--heartbeat-interval-s`)
and the environment variable is `PODNET_` + the upper-cased name. Units live in the names.
`load()` validates once and raises `SettingsError` with one line a user can act on.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(Exception):
    """A bad setting; the message names the flag and what is wrong."""


def opt(default: Any, help: str, *, flag: str | None = None, short: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "flag": flag, "short": short})


def _flag(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("flag") or "--" + f.name.replace("_", "-"))


def _base_type(tp: Any) -> tuple[type, bool]:
    """(the concrete type, whether None is allowed) of an annotation like `int | None`."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                  cls: type[Any]) -> None:
    """Add one flag per field of the settings dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:  # derived from other settings (e.g. cluster_cidrs), not a flag
            continue
        tp, _ = _base_type(hints[f.name])
        env = "PODNET_" + f.name.upper()
        default = f.default if f.default is not dataclasses.MISSING else None
        names = [_flag(f)] + ([f.metadata["short"]] if f.metadata.get("short") else [])
        help_text = f"{f.metadata.get('help', '')} (env {env}; default: {default})"
        if tp is bool:
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(*names, dest=f.name, default=None, metavar=f.name.upper(),
                                help=help_text)


def _convert(name: str, flag: str, tp: type, raw: Any) -> Any:
    if isinstance(raw, tp) and not (tp is int and isinstance(raw, bool)):
        return raw
    text = str(raw).strip()
    try:
        if tp is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(text)
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if tp is Path:
            return Path(text).expanduser()
        return text
    except ValueError:
        raise SettingsError(f"{flag}: expected {tp.__name__}, got {text!r}") from None


def load(cls: type[T], args: argparse.Namespace | None = None,
         env: typing.Mapping[str, str] | None = None) -> T:
    """Build `cls` from defaults, then `PODNET_*` variables, then parsed flags."""
    env = os.environ if env is None else env
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(typing.cast(Any, cls)):
        if not f.init:
            continue
        tp, nullable = _base_type(hints[f.name])
        raw: Any = None
        if args is not None and getattr(args, f.name, None) is not None:
            raw = getattr(args, f.name)
        elif (v := env.get("PODNET_" + f.name.upper())) is not None:
            raw = v
        if raw is None:
            continue
        if nullable and str(raw).strip() == "":
            values[f.name] = None
            continue
        values[f.name] = _convert(f.name, _flag(f), tp, raw)
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check()
    return obj


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    """`podnet up`'s --dual-stack, --cluster-cidr, --service-cidr, --node-cidr-mask(-v6): the
    control plane's flags, which `podnet.up.network_args` checks and passes on."""
    parser.add_argument("--dual-stack", action="store_true",
                        help=f"IPv4/IPv6 dual-stack: adds {DEFAULT_CLUSTER_CIDR_V6} (a /64 per "
                             f"node) and {DEFAULT_SERVICE_CIDR_V6} to IPv4-only CIDRs")
    parser.add_argument("--cluster-cidr", metavar="CIDR[,CIDR]", default=None,
                        help="pod network, one CIDR or two of different families, primary "
                             "first (default 10.244.0.0/16)")
    parser.add_argument("--service-cidr", metavar="CIDR[,CIDR]", default=None,
                        help="Service ClusterIPs, one CIDR or two of different families, "
                             "primary first (default 10.96.0.0/12)")
    parser.add_argument("--node-cidr-mask", metavar="BITS", default=None,
                        help="prefix length of each node's IPv4 podCIDR (default 24)")
    parser.add_argument("--node-cidr-mask-v6", metavar="BITS", default=None,
                        help="prefix length of each node's IPv6 podCIDR (default 64)")


def _positive(value: float, flag: str) -> None:
    if value <= 0:
        raise SettingsError(f"{flag}: must be greater than 0, got {value}")


def _port(value: int, flag: str) -> None:
    if not 0 <= value <= 65535:
        raise SettingsError(f"{flag}: port must be 0..65535, got {value}")


def _cidr(value: str, flag: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        raise SettingsError(f"{flag}: {e}") from None


# What `--dual-stack` adds when only IPv4 CIDRs are given (the defaults).
DEFAULT_CLUSTER_CIDR_V6 = "fd00:10:244::/56"
DEFAULT_SERVICE_CIDR_V6 = "fd00:10:96::/112"
# kube-apiserver refuses a service CIDR with more than 20 host bits for IPv6 (and a
# prefix shorter than /108); the IPv4 limit is a /12 as today's default shows.
_SERVICE_V6_MIN_PREFIX = 108


def split_cidrs(text: str) -> list[str]:
    """The comma-separated CIDRs of a flag, stripped; empty parts dropped."""
    return [c.strip() for c in text.split(",") if c.strip()]


def check_cidrs(cidrs: list[str],
                flag: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """One CIDR, or two of different families (primary first), as kube-controller-manager
    and kube-apiserver accept them; one line naming the flag otherwise."""
    if not cidrs:
        raise SettingsError(f"{flag}: a CIDR is required, e.g. 10.244.0.0/16")
    if len(cidrs) > 2:
        raise SettingsError(f"{flag}: at most two CIDRs (one IPv4, one IPv6), got {len(cidrs)}")
    nets = [_cidr(c, flag) for c in cidrs]
    if len(nets) == 2 and nets[0].version == nets[1].version:
        raise SettingsError(f"{flag}: two CIDRs must be of different families (one IPv4, one "
                            f"IPv6), got {cidrs[0]} and {cidrs[1]}")
    return nets


@dataclass(frozen=True)
class ControlPlaneSettings:
    listen_host: str = opt("127.0.0.1", "address the API server listens on")
    listen_port: int = opt(0, "API server port (0 picks a free one)")
    tunnel_port: int = opt(0, "port of the tunnel endpoint agents carry ClusterIP traffic to, "
                              "on the listen host (0 picks a free one)")
    state_dir: Path = opt(Path(".podnet"), "directory for the store, logs and run files")
    secret_file: Path | None = opt(None, "cluster secret file (default: STATE_DIR/secret)")
    cluster_cidr: str = opt("10.244.0.0/16", "pod network: one CIDR, or two comma-separated "
                                             "of different families (the first is the primary "
                                             "family); each node gets one podCIDR per family")
    node_cidr_mask: int = opt(24, "prefix length of each node's IPv4 podCIDR")
    node_cidr_mask_v6: int = opt(64, "prefix length of each node's IPv6 podCIDR")
    service_cidr: str = opt("10.96.0.0/12", "virtual IPs for ClusterIP Services: one CIDR, or "
                                            "two comma-separated of different families")
    dual_stack: bool = opt(False, f"add the IPv6 CIDRs ({DEFAULT_CLUSTER_CIDR_V6}, "
                                  f"{DEFAULT_SERVICE_CIDR_V6}) to IPv4-only --cluster-cidr and "
                                  "--service-cidr")
    service_node_port_range: str = opt("30000-32767", "ports NodePort Services get on every "
                                                      "node (A-B, A+N or one port)")
    cluster_domain: str = opt("cluster.local", "cluster DNS domain")
    node_monitor_grace_s: float = opt(8.0, "a node silent this long goes NotReady")
    node_monitor_period_s: float = opt(1.0, "how often the node lifecycle controller looks")
    pod_eviction_timeout_s: float = opt(10.0, "pods of a node not Ready this long are deleted "
                                              "(their ReplicaSets replace them elsewhere)")
    tls_san: str = opt("", "extra names/IPs for the API certificate, comma-separated "
                           "(e.g. the compose service name)")
    ready_file: Path | None = opt(None, "write {pid, address} here as JSON once serving")
    dns_host: str = opt("127.0.0.1", "address the cluster DNS server listens on (UDP+TCP)")
    dns_port: int = opt(0, "cluster DNS port on the host (0 picks a free one)")
    dns_strict: bool = opt(False, "exact Kubernetes DNS: no <pod>.<ns>.svc names for pods "
                                  "without a Service of that name")
    dns_upstream: str | None = opt(None, "ip[:port] that answers names outside the cluster "
                                         "domain (default: none, they get NXDOMAIN)")
    advertise: bool = opt(True, "advertise this control plane with mDNS (_podnet._tcp.local.) "
                                "so agents started without --controlplane find it")
    mdns_interface: str = opt("", "the one IPv4 address mDNS is bound to (default: the listen "
                                  "host; required with a wildcard listen host)")
    cluster_name: str = opt("podnet", "cluster name published in the mDNS advertisement")
    # The cluster-wide fault seed. It travels in the signed cluster-info
    # (GET /podnet/cluster-info, key "faultSeed"), which every agent already fetches and
    # verifies at start: agents read it as `podnet.client.ClusterInfo.fault_seed`; the
    # control plane's own components (the ClusterIP proxy) take it from these settings.
    # A NetworkFault without `spec.seed` seeds its RNG from this and its name.
    fault_seed: int = opt(0, "cluster-wide seed of network fault loss and jitter (a fault "
                             "without spec.seed derives its own from this and its name), "
                             "0..2^63-1", flag="--fault-seed")
    # Derived in __post_init__, primary first; `cluster_cidr`/`service_cidr` are then
    # rewritten to the primary alone, so code that knows one family keeps working.
    cluster_cidrs: list[str] = field(init=False, default_factory=list, compare=False)
    service_cidrs: list[str] = field(init=False, default_factory=list, compare=False)

    def __post_init__(self) -> None:
        # Never raises: check() validates, so a bad value gets its one-line error there.
        for name, v6 in (("cluster", DEFAULT_CLUSTER_CIDR_V6),
                         ("service", DEFAULT_SERVICE_CIDR_V6)):
            cidrs = split_cidrs(getattr(self, f"{name}_cidr"))
            if self.dual_stack and len(cidrs) == 1 and ":" not in cidrs[0]:
                cidrs.append(v6)
            object.__setattr__(self, f"{name}_cidrs", cidrs)
            object.__setattr__(self, f"{name}_cidr", cidrs[0] if cidrs else "")

    @property
    def is_dual_stack(self) -> bool:
        return len(self.cluster_cidrs) == 2

    @property
    def san_list(self) -> list[str]:
        return [n.strip() for n in self.tls_san.split(",") if n.strip()]

    def check(self) -> None:
        _port(self.listen_port, "--listen-port")
        _port(self.tunnel_port, "--tunnel-port")
        _port(self.dns_port, "--dns-port")
        if self.dns_upstream:
            host, _, port = self.dns_upstream.rpartition(":")
            try:
                ipaddress.ip_address(host or self.dns_upstream)
                _port(int(port) if host else 53, "--dns-upstream")
            except ValueError:
                raise SettingsError(f"--dns-upstream: expected ip[:port], got "
                                    f"{self.dns_upstream!r}") from None
        if self.advertise:
            from podnet.discovery import check_interface, default_interface

            if self.mdns_interface and (err := check_interface(self.mdns_interface)):
                raise SettingsError(f"--mdns-interface: {err}")
            if not self.mdns_interface and default_interface(self.listen_host) is None:
                raise SettingsError(f"--mdns-interface: listening on {self.listen_host!r}, so "
                                    "say which address to advertise on (or --no-advertise)")
        from podnet.names import dns1123_label_error

        if err := dns1123_label_error(self.cluster_name):
            raise SettingsError(f"--cluster-name: {err}")
        if not 0 <= self.fault_seed <= 2**63 - 1:
            raise SettingsError(f"--fault-seed: must be 0..2^63-1, got {self.fault_seed}")
        _positive(self.node_monitor_grace_s, "--node-monitor-grace-s")
        _positive(self.node_monitor_period_s, "--node-monitor-period-s")
        _positive(self.pod_eviction_timeout_s, "--pod-eviction-timeout-s")
        clusters = check_cidrs(self.cluster_cidrs, "--cluster-cidr")
        services = check_cidrs(self.service_cidrs, "--service-cidr")
        # Pods and Services of a family need both ranges: kube-apiserver and
        # kube-controller-manager must agree on the cluster's families, primary first.
        fams = [",".join(f"IPv{n.version}" for n in nets) for nets in (services, clusters)]
        if fams[0] != fams[1]:
            raise SettingsError(f"--service-cidr: its families ({fams[0]}) must match "
                                f"--cluster-cidr's ({fams[1]}), in the same order")
        for net in services:
            if net.version == 6 and net.prefixlen < _SERVICE_V6_MIN_PREFIX:
                raise SettingsError(f"--service-cidr: an IPv6 service CIDR must be "
                                    f"/{_SERVICE_V6_MIN_PREFIX} or longer, got {net}")
        from podnet.services.nodeports import RangeError, parse_range

        try:
            parse_range(self.service_node_port_range)
        except RangeError as e:
            raise SettingsError(f"--service-node-port-range: {e}") from None
        for net in clusters:
            # IPv6: at most 16 bits more than the cluster CIDR, as kube-controller-manager's
            # CIDR set allows (2^16 node ranges), and room for pods in each.
            flag, mask, top = (("--node-cidr-mask", self.node_cidr_mask, 30) if net.version == 4
                               else ("--node-cidr-mask-v6", self.node_cidr_mask_v6,
                                     min(net.prefixlen + 16, 120)))
            if not net.prefixlen < mask <= top:
                raise SettingsError(f"{flag}: must be between {net.prefixlen + 1} and {top}, "
                                    f"got {mask}")

    @property
    def secret_path(self) -> Path:
        return self.secret_file or self.state_dir / "secret"


@dataclass(frozen=True)
class AgentSettings:
    name: str = opt("", "node name (required), e.g. node-1")
    controlplane: str = opt("", "control plane API URL, e.g. https://127.0.0.1:6443")
    listen_host: str = opt("127.0.0.1", "address the agent listens on (exec, logs; later gossip)")
    listen_port: int = opt(0, "agent port (0 picks a free one)")
    advertise_host: str | None = opt(None, "address other processes use to reach this agent "
                                           "(default: the listen host)")
    state_dir: Path = opt(Path(".podnet"), "directory for logs and run files")
    secret_file: Path | None = opt(None, "cluster secret file (default: STATE_DIR/secret)")
    heartbeat_interval_s: float = opt(2.0, "how often the agent renews its Node's Ready status")
    peers: str = opt("", "other agents to join gossip through, comma-separated host:port "
                         "(besides the agents the control plane lists)")
    ready_file: Path | None = opt(None, "write {pid, address} here as JSON once registered")
    mdns_interface: str = opt("", "with no --controlplane: the one IPv4 address to look for it "
                                  "on with mDNS (default: the advertise or listen host)")
    discovery_timeout_s: float = opt(10.0, "with no --controlplane: how long to look for it")
    policy_reject: bool = opt(False, "refuse connections a NetworkPolicy denies (ECONNREFUSED "
                                     "at once) instead of dropping them (the client times out)")

    def check(self) -> None:
        if not self.name:
            raise SettingsError("--name: a node name is required, e.g. --name node-1")
        from podnet.names import dns1123_label_error

        if err := dns1123_label_error(self.name):
            raise SettingsError(f"--name: {err}")
        if not self.controlplane:  # empty: found with mDNS (podnet/discovery.py)
            from podnet.discovery import check_interface

            if self.mdns_interface and (err := check_interface(self.mdns_interface)):
                raise SettingsError(f"--mdns-interface: {err}")
            if not self.discovery_interface:
                raise SettingsError("--mdns-interface: cannot tell which address to look for "
                                    "the control plane on; pass --mdns-interface ADDRESS or "
                                    "--controlplane URL")
            _positive(self.discovery_timeout_s, "--discovery-timeout-s")
        elif not self.controlplane.startswith("https://"):
            raise SettingsError(f"--controlplane: expected an https:// URL, got "
                                f"{self.controlplane!r}")
        _port(self.listen_port, "--listen-port")
        _positive(self.heartbeat_interval_s, "--heartbeat-interval-s")

    @property
    def secret_path(self) -> Path:
        return self.secret_file or self.state_dir / "secret"

    @property
    def discovery_interface(self) -> str | None:
        """The address mDNS browsing is bound to (None: none can be chosen safely)."""
        from podnet.discovery import default_interface

        return self.mdns_interface or default_interface(self.advertise_host or self.listen_host)

    @property
    def peer_list(self) -> list[str]:
        return [p.strip() for p in self.peers.split(",") if p.strip()]
