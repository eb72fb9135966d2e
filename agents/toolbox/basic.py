"""Small coreutils-style commands: echo, true, false, sleep, cat, env, printenv, hostname."""

from __future__ import annotations

import asyncio
import re

from agents.toolbox import vfs
from agents.toolbox.core import Command, Proc, abspath


async def true(proc: Proc, argv: list[str]) -> int:
    return 0


async def false(proc: Proc, argv: list[str]) -> int:
    return 1


_ECHO_ESCAPES = {"\\": "\\", "a": "\a", "b": "\b", "e": "\x1b", "f": "\f", "n": "\n",
                 "r": "\r", "t": "\t", "v": "\v"}
_ECHO_ESCAPE_RE = re.compile(r"\\(0[0-7]{0,3}|x[0-9a-fA-F]{1,2}|c|.)", re.DOTALL)


def _echo_unescape(text: str) -> tuple[str, bool]:
    """coreutils `echo -e` escapes; returns (text, stopped at \\c)."""
    out: list[str] = []
    pos = 0
    for m in _ECHO_ESCAPE_RE.finditer(text):
        out.append(text[pos:m.start()])
        pos = m.end()
        esc = m.group(1)
        if esc == "c":
            return "".join(out), True
        if esc[0] == "0":
            out.append(chr(int(esc[1:] or "0", 8) & 0xFF))
        elif esc[0] == "x":
            out.append(chr(int(esc[1:], 16)))
        else:
            out.append(_ECHO_ESCAPES.get(esc, "\\" + esc))
    out.append(text[pos:])
    return "".join(out), False


async def echo(proc: Proc, argv: list[str]) -> int:
    """coreutils echo: leading `-n`, `-e`, `-E` (and combinations like `-ne`) are options."""
    args = argv[1:]
    newline, escapes = True, False
    while args and re.fullmatch(r"-[neE]+", args[0]):
        for flag in args.pop(0)[1:]:
            if flag == "n":
                newline = False
            else:
                escapes = flag == "e"
    text = " ".join(args)
    if escapes:
        text, stopped = _echo_unescape(text)
        if stopped:
            proc.stdout.write(text)
            return 0
    proc.stdout.write(text + ("\n" if newline else ""))
    return 0


_SLEEP_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


async def sleep(proc: Proc, argv: list[str]) -> int:
    """coreutils sleep: the sum of NUMBER[smhd] operands, or `infinity`."""
    if len(argv) < 2:
        proc.stderr.write("sleep: missing operand\nTry 'sleep --help' for more information.\n")
        return 1
    total = 0.0
    for arg in argv[1:]:
        if arg in ("inf", "infinity"):
            total = float("inf")
            continue
        m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)([smhd]?)", arg)
        if m is None:
            proc.stderr.write(f"sleep: invalid time interval '{arg}'\n"
                              "Try 'sleep --help' for more information.\n")
            return 1
        total += float(m.group(1)) * _SLEEP_UNITS[m.group(2)]
    if total == float("inf"):
        await asyncio.Event().wait()  # until the session is cancelled
    await asyncio.sleep(total)
    return 0


async def cat(proc: Proc, argv: list[str]) -> int:
    """cat FILE... from the virtual filesystem; no operand or `-` copies stdin."""
    files = proc.target.files
    status = 0
    for name in argv[1:] or ["-"]:
        if name == "-":
            while chunk := await proc.read_stdin():
                proc.stdout.write(chunk)
                await proc.drain()
            continue
        path = abspath(name, proc.target.cwd)
        if path in files:
            proc.stdout.write(files[path])
        elif vfs.is_dir(files, path):
            proc.stderr.write(f"cat: {name}: Is a directory\n")
            status = 1
        else:
            proc.stderr.write(f"cat: {name}: No such file or directory\n")
            status = 1
    return status


async def env(proc: Proc, argv: list[str]) -> int:
    """`env` prints the environment; `env NAME=VALUE... CMD ARGS` runs CMD with it changed."""
    args = argv[1:]
    environ = dict(proc.target.env)
    while args and "=" in args[0] and not args[0].startswith("="):
        name, _, value = args.pop(0).partition("=")
        environ[name] = value
    if args:
        # Imported here: the shell imports every command module, env among them.
        from agents.toolbox.shell import run_in_env
        return await run_in_env(proc, environ, args)
    for name, value in environ.items():
        proc.stdout.write(f"{name}={value}\n")
    return 0


async def printenv(proc: Proc, argv: list[str]) -> int:
    """printenv [NAME...]: exit 1 when any NAME is unset."""
    environ = proc.target.env
    if len(argv) == 1:
        for name, value in environ.items():
            proc.stdout.write(f"{name}={value}\n")
        return 0
    status = 0
    for name in argv[1:]:
        if name in environ:
            proc.stdout.write(environ[name] + "\n")
        else:
            status = 1
    return status


async def hostname(proc: Proc, argv: list[str]) -> int:
    """net-tools hostname: the name, `-i` the address, `-I` all addresses; setting is refused."""
    target = proc.target
    args = argv[1:]
    if not args:
        proc.stdout.write(target.hostname + "\n")
    elif args[0] in ("-s", "--short"):
        proc.stdout.write(target.hostname.split(".")[0] + "\n")
    elif args[0] in ("-f", "--fqdn", "--long"):
        proc.stdout.write(target.hostname + "\n")
    elif args[0] in ("-i", "--ip-address"):
        proc.stdout.write(target.pod_ip + "\n")
    elif args[0] in ("-I", "--all-ip-addresses"):
        proc.stdout.write(target.pod_ip + " \n")  # net-tools leaves a space after each address
    elif args[0].startswith("-"):
        proc.stderr.write(f"hostname: invalid option -- '{args[0].lstrip('-')[:1]}'\n"
                          "Usage: hostname [-v] [-b] {hostname|-F file}\n")
        return 1
    else:
        proc.stderr.write("hostname: you must be root to change the host name\n")
        return 1
    return 0


COMMANDS: dict[str, Command] = {
    "true": true,
    "false": false,
    "echo": echo,
    "sleep": sleep,
    "cat": cat,
    "env": env,
    "printenv": printenv,
    "hostname": hostname,
}
