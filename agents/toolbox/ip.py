"""iproute2's `ip addr` and `ip route`, showing the pod's emulated interfaces.

A pod has `lo` and `eth0`. eth0 carries the pod IP in its node's /24 podCIDR; its MAC is
derived from the IP the way bridge CNIs do it (`0a:58:` + the four address bytes), so it is
stable across restarts and tells you the IP at a glance.
"""

from __future__ import annotations

import ipaddress

from agents.toolbox.core import Command, Proc

# iproute2 accepts any unambiguous prefix of an object or verb; these are the common spellings.
_ADDR_OBJECTS = ("a", "ad", "add", "addr", "addre", "addres", "address")
_ROUTE_OBJECTS = ("r", "ro", "rou", "rout", "route")
_SHOW_VERBS = ("show", "sh", "s", "list", "ls", "l", "lst")


def _lo() -> list[str]:
    return [
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default "
        "qlen 1000",
        "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00",
        "    inet 127.0.0.1/8 scope host lo",
        "       valid_lft forever preferred_lft forever",
    ]


def _eth0(pod_ip: str) -> list[str]:
    iface = ipaddress.ip_interface(f"{pod_ip}/24")
    mac = "0a:58:" + ":".join(f"{b:02x}" for b in iface.ip.packed)
    return [
        "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP "
        "group default",
        f"    link/ether {mac} brd ff:ff:ff:ff:ff:ff",
        f"    inet {iface.with_prefixlen} brd {iface.network.broadcast_address} "
        "scope global eth0",
        "       valid_lft forever preferred_lft forever",
    ]


def _split_options(args: list[str]) -> list[str]:
    """Drop the family and output options we accept but do not need (-4, -o, -br ...)."""
    return [a for a in args if a not in ("-4", "-o", "-oneline", "-d", "-details")]


async def _addr(proc: Proc, args: list[str]) -> int:
    if args and args[0] in _SHOW_VERBS:
        args = args[1:]
    if args and args[0] == "dev":
        args = args[1:]
    devices = {"lo": _lo(), "eth0": _eth0(proc.target.pod_ip)}
    if args:
        if args[0] not in devices:
            proc.stderr.write(f'Device "{args[0]}" does not exist.\n')
            return 1
        devices = {args[0]: devices[args[0]]}
    for lines in devices.values():
        proc.stdout.write("\n".join(lines) + "\n")
    return 0


async def _route(proc: Proc, args: list[str]) -> int:
    if args and args[0] not in _SHOW_VERBS:
        proc.stderr.write(f'Command "{args[0]}" is unknown, try "ip route help".\n')
        return 255
    for destination, rest in proc.target.routes:
        # iproute2 ends each route line with a space.
        proc.stdout.write(f"{destination} {rest} \n")
    return 0


async def ip(proc: Proc, argv: list[str]) -> int:
    args = _split_options(argv[1:])
    if not args:
        proc.stderr.write("Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }\n"
                          "where  OBJECT := { address | route }\n")
        return 255
    obj, rest = args[0], args[1:]
    if obj in _ADDR_OBJECTS:
        return await _addr(proc, rest)
    if obj in _ROUTE_OBJECTS:
        return await _route(proc, rest)
    proc.stderr.write(f'Object "{obj}" is unknown, try "ip help".\n')
    return 255


COMMANDS: dict[str, Command] = {"ip": ip}
