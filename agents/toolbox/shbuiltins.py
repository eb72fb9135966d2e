"""The shell's builtins: commands that act on the shell itself (`cd`, `export`, `read`...).

Each is `async def name(sh, argv, io) -> status`. `SPECIAL` are POSIX's special builtins
(assignments before them stay; their errors end a non-interactive shell, as in dash);
`BUILTINS` the regular ones. Messages are dash's: `sh: 1: cd: can't cd to /nope`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

from agents.toolbox import printf as printf_mod
from agents.toolbox import shtest, vfs
from agents.toolbox.registry import COMMANDS
from agents.toolbox.shell import IO, SHELLS, Shell, _Break, _Continue, _Exit, _Fatal, _Return
from agents.toolbox.shparse import NAME_RE, RESERVED

Builtin = Callable[[Shell, list[str], IO], Awaitable[int]]
_SIGNALS = {"EXIT", "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1",
            "SEGV", "USR2", "PIPE", "ALRM", "TERM", "CHLD", "CONT", "STOP", "TSTP", "TTIN",
            "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS"}
_SIGNAL_NUMBERS = {"0": "EXIT", "1": "HUP", "2": "INT", "3": "QUIT", "9": "KILL", "15": "TERM"}
MAX_READ_LINE = 1 << 20


def _write(io: IO, text: str) -> None:
    io.out.write(text.encode())


def _count(sh: Shell, name: str, arg: str | None, default: int = 1) -> int:
    if arg is None:
        return default
    if not arg.isdigit():
        raise _Fatal(f"{name}: Illegal number: {arg}")
    return int(arg)


# ---- special builtins ----

async def colon(sh: Shell, argv: list[str], io: IO) -> int:
    return 0


async def break_(sh: Shell, argv: list[str], io: IO) -> int:
    count = _count(sh, argv[0], argv[1] if len(argv) > 1 else None)
    if count == 0:
        raise _Fatal(f"{argv[0]}: Illegal number: 0")
    if sh.loops:
        raise (_Break if argv[0] == "break" else _Continue)(min(count, sh.loops))
    return 0


async def eval_(sh: Shell, argv: list[str], io: IO) -> int:
    return await sh.eval_text(" ".join(argv[1:]), io)


async def dot(sh: Shell, argv: list[str], io: IO) -> int:
    if len(argv) < 2:
        return 0
    path = vfs.resolve(sh.cwd, argv[1])
    if path not in sh.files:
        raise _Fatal(f".: cannot open {argv[1]}: No such file")
    return await sh.eval_text(sh.files[path], io)


async def exec_(sh: Shell, argv: list[str], io: IO) -> int:
    if len(argv) == 1:
        return 0
    raise _Exit(await sh.invoke(argv[1:], [], io))


async def exit_(sh: Shell, argv: list[str], io: IO) -> int:
    raise _Exit(_count(sh, "exit", argv[1] if len(argv) > 1 else None, sh.status) & 0xFF)


def _assign_names(sh: Shell, argv: list[str]) -> list[str]:
    names = []
    for arg in argv[1:]:
        name, eq, value = arg.partition("=")
        if not NAME_RE.fullmatch(name):
            raise _Fatal(f"{argv[0]}: {name}: bad variable name")
        if eq:
            sh.setvar(name, value)
        names.append(name)
    return names


async def export(sh: Shell, argv: list[str], io: IO) -> int:
    argv = [a for a in argv if a != "-p"]
    if len(argv) == 1:
        for name in sorted(sh.exported):
            if name in sh.vars:
                _write(io, f"export {name}={_sq(sh.vars[name])}\n")
        return 0
    sh.exported.update(_assign_names(sh, argv))
    return 0


async def readonly(sh: Shell, argv: list[str], io: IO) -> int:
    argv = [a for a in argv if a != "-p"]
    if len(argv) == 1:
        for name in sorted(sh.readonly):
            _write(io, f"readonly {name}={_sq(sh.vars.get(name, ''))}\n")
        return 0
    sh.readonly.update(_assign_names(sh, argv))
    return 0


async def unset(sh: Shell, argv: list[str], io: IO) -> int:
    args = argv[1:]
    functions = False
    while args and args[0] in ("-f", "-v"):
        functions = args.pop(0) == "-f"
    for name in args:
        if functions:
            sh.funcs.pop(name, None)
        else:
            sh.unsetvar(name)
    return 0


_LONG_OPTIONS = {"errexit": "e", "xtrace": "x", "nounset": "u", "noglob": "f",
                 "pipefail": "pipefail"}
_IGNORED_FLAGS = set("vCmbhna")  # accepted, no effect here (verbose, noclobber, job control...)


async def set_(sh: Shell, argv: list[str], io: IO) -> int:
    args = argv[1:]
    if not args:
        for name in sorted(sh.vars):
            _write(io, f"{name}={_sq(sh.vars[name])}\n")
        return 0
    while args:
        arg = args[0]
        if arg == "--":
            sh.args = args[1:]
            return 0
        if arg in ("-o", "+o"):
            args.pop(0)
            if not args:
                for long, short in _LONG_OPTIONS.items():
                    _write(io, f"{long:<16}{'on' if sh.opts[short] else 'off'}\n")
                return 0
            option = args.pop(0)
            if option not in _LONG_OPTIONS:
                raise _Fatal(f"set: Illegal option -o {option}")
            sh.opts[_LONG_OPTIONS[option]] = arg == "-o"
            continue
        if len(arg) > 1 and arg[0] in "-+":
            for flag in arg[1:]:
                if flag in "euxf":
                    sh.opts[flag] = arg[0] == "-"
                elif flag not in _IGNORED_FLAGS:
                    raise _Fatal(f"set: Illegal option {arg[0]}{flag}")
            args.pop(0)
            continue
        sh.args = args
        return 0
    return 0


async def shift(sh: Shell, argv: list[str], io: IO) -> int:
    count = _count(sh, "shift", argv[1] if len(argv) > 1 else None)
    if count > len(sh.args):
        raise _Fatal("shift: can't shift that many")
    sh.args = sh.args[count:]
    return 0


async def return_(sh: Shell, argv: list[str], io: IO) -> int:
    raise _Return(_count(sh, "return", argv[1] if len(argv) > 1 else None, sh.status) & 0xFF)


def _signal(name: str) -> str | None:
    name = _SIGNAL_NUMBERS.get(name, name.upper())
    name = name[3:] if name.startswith("SIG") else name
    return name if name in _SIGNALS else None


async def trap(sh: Shell, argv: list[str], io: IO) -> int:
    """Traps are kept; only EXIT ever runs (no signals reach a coroutine shell)."""
    args = argv[1:]
    if not args:
        for name, action in sh.traps.items():
            _write(io, f"trap -- {_sq(action)} {name}\n")
        return 0
    if len(args) == 1 or (_signal(args[0]) is not None and args[0] != "-"):
        action, signals = "-", args if _signal(args[0]) else args[1:]
    else:
        action, signals = args[0], args[1:]
    status = 0
    for sig in signals:
        signal = _signal(sig)
        if signal is None:
            sh.report(f"trap: {sig}: bad trap", io)
            status = 1
        elif action == "-":
            sh.traps.pop(signal, None)
        else:
            sh.traps[signal] = action
    return status


# ---- regular builtins ----

async def true(sh: Shell, argv: list[str], io: IO) -> int:
    return 0


async def false(sh: Shell, argv: list[str], io: IO) -> int:
    return 1


async def echo(sh: Shell, argv: list[str], io: IO) -> int:
    """dash's echo (backslash escapes always interpreted), taking `-n`, `-e` and `-E` as
    options the way busybox's sh, the shell of these images, does: tutorials write
    `echo -e "GET / HTTP/1.1\r\n..." | nc web 80`, where dash would send a literal `-e`."""
    args = argv[1:]
    newline, escapes = True, True
    while args and re.fullmatch(r"-[neE]+", args[0]):
        for flag in args.pop(0)[1:]:
            if flag == "n":
                newline = False
            else:
                escapes = flag == "e"
    if not escapes:
        _write(io, " ".join(args) + ("\n" if newline else ""))
        return 0
    out: list[str] = []
    for k, arg in enumerate(args):
        text, stop = printf_mod.unescape(arg, in_b=True)
        out.append((" " if k else "") + text)
        if stop:
            _write(io, "".join(out))
            return 0
    _write(io, "".join(out) + ("\n" if newline else ""))
    return 0


async def printf(sh: Shell, argv: list[str], io: IO) -> int:
    if len(argv) < 2:
        sh.report("printf: usage: printf format [arg ...]", io)
        return 2
    text, errors = printf_mod.format_all(argv[1], argv[2:])
    _write(io, text)
    for error in errors:
        sh.report(f"printf: {error}", io)
    return 1 if errors else 0


async def test(sh: Shell, argv: list[str], io: IO) -> int:
    status, error = shtest.evaluate(argv, sh.files, sh.cwd)
    if error:
        sh.report(f"{argv[0]}: {error}", io)
    return status


async def cd(sh: Shell, argv: list[str], io: IO) -> int:
    args = [a for a in argv[1:] if a not in ("-L", "-P")]
    target = args[0] if args else sh.vars.get("HOME", "/root")
    if target == "-":
        target = sh.vars.get("OLDPWD", sh.cwd)
        _write(io, target + "\n")
    path = vfs.resolve(sh.cwd, target)
    if not vfs.is_dir(sh.files, path):
        sh.report(f"cd: can't cd to {target}", io)
        return 2
    sh.vars["OLDPWD"] = sh.cwd
    sh.cwd = path
    sh.vars["PWD"] = path
    return 0


async def pwd(sh: Shell, argv: list[str], io: IO) -> int:
    _write(io, sh.cwd + "\n")
    return 0


async def _read_line(stdin: asyncio.StreamReader | None, raw: bool) -> tuple[str, bool]:
    """One logical line (backslash-newline joins lines unless raw); (line, reached EOF)."""
    if stdin is None:
        return "", True
    text = ""
    while True:
        try:
            data = await stdin.readuntil(b"\n")
            eof = False
            data = data[:-1]
        except asyncio.IncompleteReadError as e:
            data, eof = e.partial, True
        except asyncio.LimitOverrunError as e:
            data, eof = await stdin.read(e.consumed), False
        text += data.decode("utf-8", "replace")
        if len(text) > MAX_READ_LINE:
            raise _Fatal(f"read: line is over {MAX_READ_LINE} bytes (podnet limit)")
        trailing = len(text) - len(text.rstrip("\\"))
        if raw or eof or trailing % 2 == 0:
            break
        text = text[:-1]  # backslash-newline: the line goes on
    if not raw:
        text = re.sub(r"\\(.)", r"\1", text)
    return text, eof


def split_read(text: str, count: int, ifs: str) -> list[str]:
    """`read A B C`: IFS splitting into at most `count` fields, the last taking the rest."""
    white = "".join(c for c in ifs if c in " \t\n")
    fields: list[str] = []
    k, n = 0, len(text)
    while k < n and text[k] in white:
        k += 1
    while len(fields) < count - 1 and k < n:
        start = k
        while k < n and text[k] not in ifs:
            k += 1
        fields.append(text[start:k])
        while k < n and text[k] in white:
            k += 1
        if k < n and text[k] in ifs and text[k] not in white:
            k += 1
            while k < n and text[k] in white:
                k += 1
    rest = text[k:].rstrip(white) if white else text[k:]
    if rest or len(fields) < count:
        fields.append(rest)
    return (fields + [""] * count)[:count]


async def read(sh: Shell, argv: list[str], io: IO) -> int:
    args = argv[1:]
    raw = False
    while args and args[0].startswith("-") and len(args[0]) > 1:
        opt = args.pop(0)
        if opt == "--":
            break
        if opt == "-r":
            raw = True
        elif opt == "-p":
            io.err.write((args.pop(0) if args else "").encode())
        else:
            sh.report(f"read: Illegal option {opt}", io)
            return 2
    if not args:
        sh.report("read: arg count", io)
        return 2
    for name in args:
        if not NAME_RE.fullmatch(name):
            sh.report(f"read: {name}: bad variable name", io)
            return 2
    line, eof = await _read_line(io.stdin, raw)
    for name, value in zip(args, split_read(line, len(args), sh.ifs()), strict=True):
        sh.setvar(name, value)
    return 1 if eof else 0


async def wait(sh: Shell, argv: list[str], io: IO) -> int:
    if len(argv) == 1:
        for task in list(sh.jobs.values()):
            await asyncio.wait({task})
        return 0
    status = 127
    for arg in argv[1:]:
        job = sh.jobs.get(int(arg)) if arg.isdigit() else None
        if job is None:
            status = 127
            continue
        await asyncio.wait({job})
        status = 143 if job.cancelled() or job.exception() else job.result()
    return status


async def kill(sh: Shell, argv: list[str], io: IO) -> int:
    """Only the shell's own background jobs can be killed (there are no other processes)."""
    status = 0
    for arg in argv[1:]:
        if (arg.startswith("-") and not arg[1:].isdigit()) or arg in ("-9", "-15", "-2", "-1"):
            continue
        task = sh.jobs.get(int(arg)) if arg.isdigit() else None
        if task is None or task.done():
            sh.report("kill: No such process", io) if arg.isdigit() else \
                sh.report(f"kill: invalid number '{arg}'", io)
            status = 1
        else:
            task.cancel()
    return status


def _kind(sh: Shell, name: str) -> str | None:
    if name in RESERVED:
        return "keyword"
    if name in sh.funcs:
        return "function"
    if name in SPECIAL:
        return "special"
    if name in BUILTINS:
        return "builtin"
    if name in COMMANDS or name in SHELLS:
        return "command"
    return None


async def command(sh: Shell, argv: list[str], io: IO) -> int:
    args = argv[1:]
    if args and args[0] == "-p":
        args = args[1:]
    if args and args[0] in ("-v", "-V"):
        verbose = args[0] == "-V"
        status = 0
        for name in args[1:]:
            kind = _kind(sh, name)
            if kind is None:
                status = 127
                if verbose:
                    _write(io, f"{name}: not found\n")
                continue
            path = f"/usr/bin/{name}" if kind == "command" else name
            _write(io, f"{name} is {_describe(kind, path)}\n" if verbose else path + "\n")
        return status
    if not args:
        return 0
    if args[0] in SPECIAL:
        return await SPECIAL[args[0]](sh, args, io)
    if args[0] in BUILTINS:
        return await BUILTINS[args[0]](sh, args, io)
    return await sh.external(args, sh.environ(), io)


def _describe(kind: str, path: str) -> str:
    return {"keyword": "a shell keyword", "function": "a shell function",
            "special": "a special shell builtin", "builtin": "a shell builtin"}.get(kind, path)


async def type_(sh: Shell, argv: list[str], io: IO) -> int:
    status = 0
    for name in argv[1:]:
        kind = _kind(sh, name)
        if kind is None:
            _write(io, f"{name}: not found\n")
            status = 127
        else:
            _write(io, f"{name} is {_describe(kind, f'/usr/bin/{name}')}\n")
    return status


async def local(sh: Shell, argv: list[str], io: IO) -> int:
    if not sh.locals:
        raise _Fatal("local: not in a function")
    frame = sh.locals[-1]
    for arg in argv[1:]:
        name, eq, value = arg.partition("=")
        if not NAME_RE.fullmatch(name):
            raise _Fatal(f"local: {name}: bad variable name")
        if name not in frame:
            frame[name] = sh.vars.get(name)
        if eq:
            sh.setvar(name, value)
    return 0


async def umask(sh: Shell, argv: list[str], io: IO) -> int:
    if len(argv) == 1:
        _write(io, "0022\n")
    return 0


async def refused(sh: Shell, argv: list[str], io: IO) -> int:
    raise _Fatal(f"{argv[0]}: not supported by podnet sh")


def _sq(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


SPECIAL: dict[str, Builtin] = {
    ":": colon, "break": break_, "continue": break_, "eval": eval_, ".": dot, "exec": exec_,
    "exit": exit_, "export": export, "readonly": readonly, "unset": unset, "set": set_,
    "shift": shift, "return": return_, "trap": trap,
}
BUILTINS: dict[str, Builtin] = {
    "true": true, "false": false, "echo": echo, "printf": printf, "test": test, "[": test,
    "cd": cd, "pwd": pwd, "read": read, "wait": wait, "kill": kill, "command": command,
    "type": type_, "local": local, "umask": umask, "getopts": refused,
}
