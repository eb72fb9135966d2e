"""`printf FORMAT [ARG...]` as dash's builtin and coreutils print it; pure formatting + command.

Conversions `%s %b %c %d %i %u %o %x %X %e %E %f %g %G %%` with flags, width and precision
(`*` taken from the arguments); backslash escapes in FORMAT; the format is reused while
arguments remain. A non-numeric argument to a numeric conversion is reported and counts as 0
(exit 1), as in dash.
"""

from __future__ import annotations

import re

from agents.toolbox.core import Command, Proc

_SPEC_RE = re.compile(r"%([-+ #0]*)(\*|\d+)?(?:\.(\*|\d*))?([diouxXcsbeEfgG%])?")
_ESCAPES = {"\\": "\\", "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
            "v": "\v", '"': '"', "'": "'"}
MAX_OUTPUT = 1 << 20


def unescape(text: str, *, in_b: bool = False) -> tuple[str, bool]:
    """Backslash escapes; (text, stop) where stop is true after `\\c` (only in %b)."""
    out: list[str] = []
    k = 0
    while k < len(text):
        c = text[k]
        if c != "\\" or k + 1 >= len(text):
            out.append(c)
            k += 1
            continue
        nxt = text[k + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            k += 2
        elif nxt == "c" and in_b:
            return "".join(out), True
        elif nxt in "01234567":
            start = k + 2 if (in_b and nxt == "0") else k + 1
            m = re.match(r"[0-7]{1,3}", text[start:])
            digits = m.group(0) if m else "0"
            out.append(chr(int(digits, 8) & 0xFF))
            k = start + len(digits) if m else start
        else:
            out.append("\\" + nxt)
            k += 2
    return "".join(out), False


def _number(arg: str, errors: list[str]) -> int:
    if arg[:1] in ("'", '"'):
        return ord(arg[1]) if len(arg) > 1 else 0
    text = arg.strip()
    try:
        if re.fullmatch(r"[+-]?0[xX][0-9a-fA-F]+", text):
            return int(text, 16)
        if re.fullmatch(r"[+-]?0[0-7]+", text):
            return int(text, 8)
        return int(text) if text else 0
    except ValueError:
        errors.append(f"{arg}: expected numeric value")
        return 0


def _float(arg: str, errors: list[str]) -> float:
    try:
        return float(arg) if arg.strip() else 0.0
    except ValueError:
        errors.append(f"{arg}: expected numeric value")
        return 0.0


def format_all(fmt: str, args: list[str]) -> tuple[str, list[str]]:
    """(output, error messages)."""
    out: list[str] = []
    errors: list[str] = []
    args = list(args)
    size = 0
    while True:
        used = False
        pos = 0
        for m in _SPEC_RE.finditer(fmt):
            text, stop = unescape(fmt[pos:m.start()])
            out.append(text)
            pos = m.end()
            flags, width, precision, conv = m.groups()
            if conv is None:
                errors.append(f"%{fmt[m.end():m.end() + 1]}: invalid directive")
                return "".join(out), errors
            if conv == "%":
                out.append("%")
                continue
            if width == "*":
                width = str(_number(args.pop(0), errors)) if args else "0"
                used = True
            if precision == "*":
                precision = str(_number(args.pop(0), errors)) if args else "0"
                used = True
            arg = args.pop(0) if args else None
            used = used or arg is not None
            spec = "%" + flags + (width or "") + ("." + precision if precision is not None else "")
            if conv == "s":
                out.append((spec + "s") % (arg or ""))
            elif conv == "b":
                text, stop = unescape(arg or "", in_b=True)
                out.append((spec + "s") % text)
                if stop:
                    return "".join(out), errors
            elif conv == "c":
                out.append((spec + "s") % (arg or "")[:1])
            elif conv in "diouxX":
                value = _number(arg or "0", errors)
                if conv == "u" and value < 0:
                    value += 1 << 64
                out.append((spec + ("d" if conv in "iu" else conv)) % value)
            else:
                out.append((spec + conv) % _float(arg or "0", errors))
            size += sum(len(x) for x in out[-2:])
            if size > MAX_OUTPUT:
                errors.append("output too long (podnet limit 1 MiB)")
                return "".join(out), errors
        text, _ = unescape(fmt[pos:])
        out.append(text)
        if not args or not used:
            return "".join(out), errors


async def printf(proc: Proc, argv: list[str]) -> int:
    if len(argv) < 2:
        proc.stderr.write("printf: usage: printf format [arg ...]\n")
        return 2
    text, errors = format_all(argv[1], argv[2:])
    proc.stdout.write(text)
    for error in errors:
        proc.stderr.write(f"printf: {error}\n")
    return 1 if errors else 0


COMMANDS: dict[str, Command] = {"printf": printf}
