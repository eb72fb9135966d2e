"""iproute2's `ip addr` and `ip route`, showing the pod's emulated interfaces.

A pod has `lo` and `eth0`. eth0 carries the pod IP in its node's /24 podCIDR; its MAC is
derived from the IP the way bridge CNIs do it (`0a:58:` + the four address bytes), so it is
stable across restarts and tells you the IP at a glance.

A dual-stack pod's eth0 also carries its IPv6 address (in the node's /64) and a link-local
one derived from the MAC (EUI-64), lo also `::1`; `-4` / `-6` show one family. A pod without
IPv6 shows what it always did (and `ip -6 ...` shows nothing, as with IPv6 disabled).
"""

from __future__ import annotations

import ipaddress

from agents.toolbox.core import Command, Proc

# iproute2 accepts any unambiguous prefix of an object or verb; these are the common spellings.
_ADDR_OBJECTS = ("a", "ad", "add", "addr", "addre", "addres", "address")
_ROUTE_OBJECTS = ("r", "ro", "rou", "rout", "route")
_SHOW_VERBS = ("show", "sh", "s", "list", "ls", "l", "lst")


_FOREVER = "       valid_lft forever preferred_lft forever"


def _lo(v4: bool, ip6: str | None) -> list[str]:
    lines = [
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default "
        "qlen 1000",
        "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00",
    ]
    if v4:
        lines += ["    inet 127.0.0.1/8 scope host lo", _FOREVER]
    if ip6 is not None:
        lines += ["    inet6 ::1/128 scope host", _FOREVER]
    return lines


def _mac(pod_ip: str) -> bytes:
    """`0a:58:` and the IPv4 address; an IPv6-only pod's last four address bytes."""
    return b"\x0a\x58" + ipaddress.ip_address(pod_ip).packed[-4:]


def _eth0(ip4: str | None, ip6: str | None, prefix6: int, primary: str) -> list[str]:
    mac = _mac(primary)
    lines = [
        "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP "
        "group default",
        f"    link/ether {':'.join(f'{b:02x}' for b in mac)} brd ff:ff:ff:ff:ff:ff",
    ]
    if ip4 is not None:
        iface = ipaddress.ip_interface(f"{ip4}/24")
        lines += [f"    inet {iface.with_prefixlen} brd {iface.network.broadcast_address} "
                  "scope global eth0", _FOREVER]
    if ip6 is not None:
        # EUI-64 from the MAC: flip the U/L bit, ff:fe in the middle.
        eui = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:]
        link_local = ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui)
        lines += [f"    inet6 {ip6}/{prefix6} scope global", _FOREVER,
                  f"    inet6 {link_local}/64 scope link", _FOREVER]
    return lines


def _split_options(args: list[str]) -> tuple[list[str], str]:
    """The arguments without the output options we accept but do not need (-o, -d ...),
    and the family asked for (`-4`, `-6`, `-f inet|inet6`): "4", "6" or "" (both)."""
    family = ""
    rest: list[str] = []
    it = iter(args)
    for a in it:
        if a in ("-4", "-6"):
            family = a[1]
        elif a in ("-f", "-family"):
            family = {"inet": "4", "inet6": "6"}.get(next(it, ""), family)
        elif a not in ("-o", "-oneline", "-d", "-details"):
            rest.append(a)
    return rest, family


async def _addr(proc: Proc, args: list[str], family: str = "") -> int:
    if args and args[0] in _SHOW_VERBS:
        args = args[1:]
    if args and args[0] == "dev":
        args = args[1:]
    net = proc.target.net
    ip4 = net.ip4 if family != "6" else None
    ip6 = net.ip6 if family != "4" else None
    devices = {"lo": _lo(ip4 is not None, ip6),
               "eth0": _eth0(ip4, ip6, net.prefixlen(ip6) if ip6 else 64, proc.target.pod_ip)}
    if family == "6" and ip6 is None:
        devices = {"lo": [], "eth0": []}
    if args:
        if args[0] not in devices:
            proc.stderr.write(f'Device "{args[0]}" does not exist.\n')
            return 1
        devices = {args[0]: devices[args[0]]}
    for lines in devices.values():
        if lines:
            proc.stdout.write("\n".join(lines) + "\n")
    return 0


def _is_v6_route(destination: str, rest: str) -> bool:
    via = rest.split()[1] if rest.startswith("via ") else ""
    return ":" in destination or ":" in via


async def _route(proc: Proc, args: list[str], family: str = "") -> int:
    if args and args[0] not in _SHOW_VERBS:
        proc.stderr.write(f'Command "{args[0]}" is unknown, try "ip route help".\n')
        return 255
    want6 = family == "6"   # `ip route` without -6 shows IPv4 routes, as iproute2 does
    for destination, rest in proc.target.routes:
        if _is_v6_route(destination, rest) != want6:
            continue
        # iproute2 ends each route line with a space.
        proc.stdout.write(f"{destination} {rest} \n")
    return 0


async def ip(proc: Proc, argv: list[str]) -> int:
    args, family = _split_options(argv[1:])
    if not args:
        proc.stderr.write("Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }\n"
                          "where  OBJECT := { address | route }\n")
        return 255
    obj, rest = args[0], args[1:]
    if obj in _ADDR_OBJECTS:
        return await _addr(proc, rest, family)
    if obj in _ROUTE_OBJECTS:
        return await _route(proc, rest, family)
    proc.stderr.write(f'Object "{obj}" is unknown, try "ip help".\n')
    return 255


COMMANDS: dict[str, Command] = {"ip": ip}
