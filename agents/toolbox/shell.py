"""Dispatching argv to toolbox commands, and a very small `sh`.

`sh -c SCRIPT` (also `/bin/sh`, `bash`, `ash`, `dash`) runs ONE simple command: words are split
with POSIX quoting, `$NAME`/`${NAME}` expand from the container's environment, and the builtins
`exit [N]`, `exec CMD...` and `:` work. Pipes, lists, redirections and substitutions are refused
with exit 2 rather than half-emulated. `sh` with no `-c` reads such commands line by line from
stdin (or from a script file), which is what `echo hostname | kubectl exec -i POD -- sh` needs.

Errors use dash's wording (`sh: 1: NAME: not found`, exit 127), since that is what the usual
images' /bin/sh prints.
"""

from __future__ import annotations

import asyncio
import dataclasses
import posixpath
import re
from collections.abc import Awaitable, Callable, Mapping

from agents.toolbox.core import PATH_DIRS, ExecTarget, Proc, abspath
from agents.toolbox.registry import COMMANDS

SHELLS = frozenset({"sh", "bash", "ash", "dash"})
_UNSUPPORTED = set("|&;<>()`")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ShellError(Exception):
    """A script the mini shell cannot run; `code` is the shell's exit status."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _expand(script: str, i: int, env: Mapping[str, str]) -> tuple[str, int]:
    """Expand the parameter at script[i] == "$"; returns (value, index after it)."""
    rest = script[i + 1:]
    if rest.startswith("("):
        raise ShellError("podnet toolbox sh: command substitution is not supported")
    if rest.startswith("{"):
        end = rest.find("}")
        if end < 0:
            raise ShellError("Syntax error: Missing '}'")
        name = rest[1:end]
        if not _NAME_RE.fullmatch(name):
            raise ShellError(f"${{{name}}}: Bad substitution")
        return env.get(name, ""), i + end + 2
    if rest[:1] == "?":
        return "0", i + 2
    m = _NAME_RE.match(rest)
    if m is None:
        return "$", i + 1
    return env.get(m.group(0), ""), i + 1 + m.end()


def split_words(script: str, env: Mapping[str, str]) -> list[str]:
    """POSIX-ish word splitting of one simple command (quotes, backslashes, $VAR)."""
    words: list[str] = []
    current: list[str] = []
    started = False  # a word has begun, even if empty so far ('' is a word)

    def flush() -> None:
        nonlocal current, started
        if started:
            words.append("".join(current))
        current, started = [], False

    i, n = 0, len(script)
    while i < n:
        c = script[i]
        if c in " \t\n":
            flush()
            i += 1
        elif c == "#" and not started:
            break  # a comment runs to the end of the line
        elif c == "'":
            end = script.find("'", i + 1)
            if end < 0:
                raise ShellError("Syntax error: Unterminated quoted string")
            current.append(script[i + 1:end])
            started, i = True, end + 1
        elif c == '"':
            started, i = True, i + 1
            while True:
                if i >= n:
                    raise ShellError("Syntax error: Unterminated quoted string")
                c = script[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n and script[i + 1] in '$`"\\':
                    current.append(script[i + 1])
                    i += 2
                elif c == "$":
                    value, i = _expand(script, i, env)
                    current.append(value)
                elif c == "`":
                    raise ShellError("podnet toolbox sh: command substitution is not supported")
                else:
                    current.append(c)
                    i += 1
        elif c == "\\":
            if i + 1 < n and script[i + 1] != "\n":
                current.append(script[i + 1])
                started = True
            i += 2
        elif c == "$":
            value, i = _expand(script, i, env)
            # An unquoted expansion is split into fields on whitespace.
            fields = value.split()
            if value[:1].isspace():
                flush()
            for k, part in enumerate(fields):
                if k:
                    flush()
                current.append(part)
                started = True
            if value[-1:].isspace():
                flush()
        elif c in _UNSUPPORTED:
            raise ShellError(f"podnet toolbox sh runs one simple command; '{c}' is not supported")
        else:
            current.append(c)
            started = True
            i += 1
    flush()
    return words


def command_name(word: str) -> str | None:
    """`curl` or `/usr/bin/curl` -> "curl"; a path outside PATH_DIRS -> None."""
    if "/" not in word:
        return word
    path = abspath(word)
    if posixpath.dirname(path) not in PATH_DIRS:
        return None
    return posixpath.basename(path)


async def dispatch(proc: Proc, argv: list[str], line: int = 1) -> int:
    """Run argv as its command does; 127 with dash's message when there is none."""
    if not argv:
        return 0
    name = command_name(argv[0])
    if name in SHELLS:
        return await _sh(proc, argv)
    command = COMMANDS.get(name) if name is not None else None
    if command is None:
        proc.stderr.write(f"sh: {line}: {argv[0]}: not found\n")
        return 127
    return await command(proc, argv)


async def _simple(proc: Proc, script: str, line: int) -> int:
    """One line of shell: word-split it, then builtins or a command."""
    try:
        words = split_words(script, proc.target.env)
    except ShellError as e:
        proc.stderr.write(f"sh: {line}: {e.message}\n")
        return e.code
    while words and words[0] == "exec":
        words = words[1:]
    if not words or words[0] == ":":
        return 0
    if words[0] == "exit":
        code = 0
        if len(words) > 1:
            if not words[1].isdigit():
                proc.stderr.write(f"sh: {line}: exit: Illegal number: {words[1]}\n")
                raise _Exit(2)
            code = int(words[1]) & 0xFF
        raise _Exit(code)
    return await dispatch(proc, words, line)


async def _run_lines(proc: Proc, next_line: Callable[[], Awaitable[str | None]]) -> int:
    status, number = 0, 0
    try:
        while (text := await next_line()) is not None:
            number += 1
            status = await _simple(proc, text, number)
    except _Exit as e:
        return e.code
    return status


def _lines_of(text: str) -> Callable[[], Awaitable[str | None]]:
    lines = iter(text.split("\n"))

    async def next_line() -> str | None:
        return next(lines, None)

    return next_line


async def _sh(proc: Proc, argv: list[str]) -> int:
    args = argv[1:]
    # Options before the script: -c takes the script; -e, -x, -u ... are accepted and ignored.
    while args and args[0].startswith("-") and args[0] not in ("-", "--"):
        flags = args.pop(0)
        if "c" in flags:
            if not args:
                proc.stderr.write(f"{argv[0]}: 0: -c requires an argument\n")
                return 2
            return await _run_lines(proc, _lines_of(args[0]))
    if args and args[0] not in ("-", "--"):
        path = abspath(args[0])
        if path not in proc.target.files:
            proc.stderr.write(f"{argv[0]}: 0: cannot open {args[0]}: No such file\n")
            return 2
        return await _run_lines(proc, _lines_of(proc.target.files[path]))
    return await _run_lines(proc, lambda: _stdin_line(proc))


async def _stdin_line(proc: Proc) -> str | None:
    if proc.stdin is None:
        return None
    try:
        data = await proc.stdin.readuntil(b"\n")
    except asyncio.IncompleteReadError as e:
        data = e.partial
    except asyncio.LimitOverrunError:
        data = await proc.stdin.read(65536)
    return data.decode("utf-8", "replace") if data else None


async def run_in_env(proc: Proc, environ: dict[str, str], argv: list[str]) -> int:
    """Run argv with a changed environment (`env NAME=VALUE CMD`)."""
    target: ExecTarget = dataclasses.replace(proc.target, env=environ)
    child = Proc(target, argv, stdin=proc.stdin, stdout=proc.stdout.write,
                 stderr=proc.stderr.write, tty=proc.tty, drain=proc.drain)
    return await dispatch(child, argv)
