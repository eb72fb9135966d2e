"""Every toolbox command by name.

A new command (nslookup, dig, ping ...) is one module exposing
`COMMANDS: dict[str, Command]`, added to `_MODULES` below.
"""

from __future__ import annotations

from types import ModuleType

from agents.toolbox import (
    basic,
    curl,
    dnstools,
    fileutils,
    ip,
    nc,
    ping,
    printf,
    shtest,
    text,
    wget,
)
from agents.toolbox.core import Command

_MODULES: tuple[ModuleType, ...] = (basic, curl, dnstools, fileutils, ip, nc, ping, printf,
                                    shtest, text, wget)


def _collect(modules: tuple[ModuleType, ...]) -> dict[str, Command]:
    commands: dict[str, Command] = {}
    for module in modules:
        for name, command in module.COMMANDS.items():
            if name in commands:
                raise RuntimeError(f"toolbox command {name!r} is defined twice "
                                   f"(again in {module.__name__})")
            commands[name] = command
    return commands


COMMANDS: dict[str, Command] = _collect(_MODULES)
