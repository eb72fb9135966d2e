"""Text filters for pipelines: grep, head, tail, wc, tr, cut, sort, uniq, tee, seq, sed.

They read the named files from the virtual filesystem, or stdin (`-` or no operand), line by
line, so `while true; do ...; done | grep -q x` stops as soon as grep has its answer. The
options are the everyday ones (listed per command); anything else is refused with the tool's
usage error and exit status rather than ignored. Messages follow GNU coreutils/grep/sed.
`sort` and `tail` hold their input, bounded by `MAX_HELD_BYTES`.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Callable

from agents.toolbox import vfs
from agents.toolbox.core import Command, Proc, abspath

MAX_HELD_BYTES = 16 << 20
MAX_LINE_BYTES = 1 << 20
_CLASSES = {"alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z",
            "lower": "a-z", "space": " \\t\\n\\r\\f\\v", "blank": " \\t", "xdigit": "0-9A-Fa-f",
            "punct": "!-/:-@\\[-`{-~", "print": " -~", "graph": "!-~", "cntrl": "\\x00-\\x1f"}


class UsageError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Inputs:
    """The lines of FILE... (or stdin), reporting missing files as `NAME: FILE: No such ...`."""

    def __init__(self, proc: Proc, name: str, operands: list[str], *,
                 quiet: bool = False) -> None:
        self.proc, self.name = proc, name
        self.operands = operands or ["-"]
        self.status = 0
        self.quiet = quiet

    def text_of(self, operand: str) -> str | None:
        path = abspath(operand, self.proc.target.cwd)
        files = self.proc.target.files
        if path in files:
            return files[path]
        if path == "/dev/null":
            return ""
        reason = "Is a directory" if vfs.is_dir(files, path) else "No such file or directory"
        if not self.quiet:
            self.proc.stderr.write(f"{self.name}: {operand}: {reason}\n")
        self.status = 2 if self.name == "grep" else 1
        return None

    async def lines_of(self, operand: str) -> AsyncIterator[str]:
        """Lines with their newline (the last may lack one)."""
        if operand == "-" or operand == "/dev/stdin":
            stdin = self.proc.stdin
            if stdin is None:
                return
            while True:
                try:
                    data = await stdin.readuntil(b"\n")
                except asyncio.IncompleteReadError as e:
                    if e.partial:
                        yield e.partial.decode("utf-8", "replace")
                    break
                except asyncio.LimitOverrunError:
                    data = await stdin.read(MAX_LINE_BYTES)
                yield data.decode("utf-8", "replace")
            return
        text = self.text_of(operand)
        if text:
            for line in text.splitlines(keepends=True):
                yield line

    async def lines(self) -> AsyncIterator[tuple[str, str]]:
        """(operand, line) for every line of every operand."""
        for operand in self.operands:
            async for line in self.lines_of(operand):
                yield operand, line


def _options(argv: list[str], flags: str, with_value: str,
             long: dict[str, str] | None = None) -> tuple[dict[str, list[str]], list[str]]:
    """getopt-style: combined flags (`-vic`), values (`-n 5`, `-n5`), `--` ends options."""
    opts: dict[str, list[str]] = {}
    operands: list[str] = []
    args = argv[1:]
    while args:
        arg = args.pop(0)
        if arg == "--":
            operands.extend(args)
            break
        if arg.startswith("--") and long is not None:
            key, eq, value = arg.partition("=")
            if key not in long:
                raise UsageError(f"unrecognized option '{arg}'", 2)
            short = long[key]
            if short in with_value and not eq:
                if not args:
                    raise UsageError(f"option '{key}' requires an argument", 2)
                value = args.pop(0)
            opts.setdefault(short, []).append(value)
            continue
        if arg.startswith("-") and len(arg) > 1 and not re.fullmatch(r"-\d+", arg):
            k = 1
            while k < len(arg):
                flag = arg[k]
                if flag in with_value:
                    value = arg[k + 1:]
                    if not value:
                        if not args:
                            raise UsageError(f"option requires an argument -- '{flag}'", 2)
                        value = args.pop(0)
                    opts.setdefault(flag, []).append(value)
                    break
                if flag not in flags:
                    raise UsageError(f"invalid option -- '{flag}'", 2)
                opts.setdefault(flag, []).append("")
                k += 1
            continue
        if re.fullmatch(r"-\d+", arg) and "#" in flags:
            opts.setdefault("#", []).append(arg[1:])
            continue
        operands.append(arg)
    return opts, operands


def _run(name: str) -> Callable[[Callable[[Proc, list[str]], object]], Command]:
    """Turn UsageError into `NAME: message` and its exit code."""
    def wrap(func: Callable[[Proc, list[str]], object]) -> Command:
        async def command(proc: Proc, argv: list[str]) -> int:
            try:
                result = await func(proc, argv)  # type: ignore[misc]
                return int(result)
            except UsageError as e:
                proc.stderr.write(f"{name}: {e.message}\n")
                return e.code
        command.__name__ = name
        return command
    return wrap


def posix_classes(pattern: str) -> str:
    return re.sub(r"\[:(\w+):\]", lambda m: _CLASSES.get(m.group(1), m.group(0)), pattern)


def bre_to_python(pattern: str) -> str:
    """A POSIX basic regular expression as a Python one: `\\( \\) \\{ \\} \\| \\+ \\?` are the
    operators there and plain `( ) { } | + ?` are literal."""
    out: list[str] = []
    k = 0
    while k < len(pattern):
        c = pattern[k]
        if c == "\\" and k + 1 < len(pattern):
            nxt = pattern[k + 1]
            out.append(nxt if nxt in "(){}|+?" else "\\" + nxt)
            k += 2
            continue
        if c == "[":
            end = pattern.find("]", k + 2 if pattern[k + 1:k + 2] in ("]", "^") else k + 1)
            while end > 0 and pattern[k:end].count("[:") > pattern[k:end].count(":]"):
                end = pattern.find("]", end + 1)
            if end > 0:
                out.append(pattern[k:end + 1])
                k = end + 1
                continue
        out.append("\\" + c if c in "(){}|+?" else c)
        k += 1
    return "".join(out)


def compile_regex(pattern: str, *, extended: bool, fixed: bool = False,
                  ignore_case: bool = False) -> re.Pattern[str]:
    if fixed:
        source = re.escape(pattern)
    else:
        source = posix_classes(pattern if extended else bre_to_python(pattern))
    try:
        return re.compile(source, re.IGNORECASE if ignore_case else 0)
    except re.error as e:
        raise UsageError(f"Invalid regular expression ({e.msg})", 2) from None


@_run("grep")
async def grep(proc: Proc, argv: list[str]) -> int:
    """grep [-qvicnlhHxwEFso] [-e PATTERN] PATTERN [FILE...]"""
    opts, operands = _options(argv, "qvicnlhHxwEFsoGr", "e",
                              {"--quiet": "q", "--invert-match": "v", "--ignore-case": "i",
                               "--count": "c", "--extended-regexp": "E"})
    patterns = opts.get("e", [])
    if not patterns:
        if not operands:
            raise UsageError("Usage: grep [OPTION]... PATTERNS [FILE]...", 2)
        patterns = [operands.pop(0)]
    pieces = [p for pat in patterns for p in pat.split("\n")]
    extended = "E" in opts or argv[0].endswith("egrep")
    regexes = [compile_regex(p, extended=extended, fixed="F" in opts, ignore_case="i" in opts)
               for p in pieces]
    inputs = Inputs(proc, "grep", operands, quiet="s" in opts)
    show_name = ("H" in opts or len(inputs.operands) > 1) and "h" not in opts
    counts: dict[str, int] = {}
    matched = False
    for operand in inputs.operands:
        count = 0
        number = 0
        async for line in inputs.lines_of(operand):
            number += 1
            body = line.rstrip("\n")
            hits = []
            for regex in regexes:
                if "x" in opts:
                    m = regex.fullmatch(body)
                    hits.extend([m] if m else [])
                elif "w" in opts:
                    hits.extend(m for m in regex.finditer(body) if _whole_word(body, m))
                else:
                    hits.extend(regex.finditer(body))
            if bool(hits) == ("v" in opts):
                continue
            matched = True
            count += 1
            if "q" in opts:
                return 0
            if "l" in opts:
                break
            if "c" in opts:
                continue
            prefix = (f"{'(standard input)' if operand == '-' else operand}:"
                      if show_name else "") + (f"{number}:" if "n" in opts else "")
            if "o" in opts and "v" not in opts:
                for m in sorted(hits, key=lambda m: m.start()):
                    if m.group(0):
                        proc.stdout.write(f"{prefix}{m.group(0)}\n")
            else:
                proc.stdout.write(f"{prefix}{body}\n")
            await proc.drain()
        counts[operand] = count
        if "l" in opts and count:
            proc.stdout.write(("(standard input)" if operand == "-" else operand) + "\n")
        elif "c" in opts:
            proc.stdout.write(f"{operand}:{count}\n" if show_name else f"{count}\n")
    if inputs.status:
        return 2
    return 0 if matched else 1


def _whole_word(text: str, m: re.Match[str]) -> bool:
    before = text[m.start() - 1] if m.start() else " "
    after = text[m.end()] if m.end() < len(text) else " "
    return not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_")


def _count_arg(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"invalid number of lines: '{value}'") from None


@_run("head")
async def head(proc: Proc, argv: list[str]) -> int:
    """head [-n N | -N] [-c N] [FILE...]"""
    opts, operands = _options(argv, "#qv", "nc", {"--lines": "n", "--bytes": "c"})
    inputs = Inputs(proc, "head", operands)
    if "c" in opts:
        limit = _count_arg("head", opts["c"][-1])
        for operand in inputs.operands:
            taken = 0
            async for line in inputs.lines_of(operand):
                piece = line[:max(limit - taken, 0)]
                proc.stdout.write(piece)
                taken += len(piece)
                if taken >= limit:
                    break
        return inputs.status
    count = _count_arg("head", (opts.get("n") or opts.get("#") or ["10"])[-1])
    for operand in inputs.operands:
        if len(inputs.operands) > 1:
            proc.stdout.write(f"==> {operand} <==\n")
        taken = 0
        if count > 0:
            async for line in inputs.lines_of(operand):
                proc.stdout.write(line)
                taken += 1
                if taken >= count:
                    break
    return inputs.status


@_run("tail")
async def tail(proc: Proc, argv: list[str]) -> int:
    """tail [-n N | -n +N | -N] [FILE...] (no -f: the files do not grow under a reader)"""
    opts, operands = _options(argv, "#qvfF", "nc", {"--lines": "n"})
    if "f" in opts or "F" in opts:
        raise UsageError("-f is not supported by podnet's tail (files do not grow under a "
                         "reader here)")
    arg = (opts.get("n") or opts.get("#") or ["10"])[-1]
    from_start = arg.startswith("+")
    count = _count_arg("tail", arg.lstrip("+"))
    inputs = Inputs(proc, "tail", operands)
    for operand in inputs.operands:
        if from_start:
            number = 0
            async for line in inputs.lines_of(operand):
                number += 1
                if number >= count:
                    proc.stdout.write(line)
            continue
        held: deque[str] = deque(maxlen=max(count, 0))
        size = 0
        async for line in inputs.lines_of(operand):
            if count:
                if len(held) == held.maxlen:
                    size -= len(held[0])
                held.append(line)
                size += len(line)
                if size > MAX_HELD_BYTES:
                    raise UsageError("memory exhausted (podnet limit 16 MiB)")
        proc.stdout.write("".join(held))
    return inputs.status


@_run("wc")
async def wc(proc: Proc, argv: list[str]) -> int:
    """wc [-lwc] [FILE...]"""
    opts, operands = _options(argv, "lwcm", "", {"--lines": "l", "--words": "w",
                                                "--bytes": "c", "--chars": "m"})
    wanted = [f for f in "lwc" if f in opts or (f == "c" and "m" in opts)] or ["l", "w", "c"]
    inputs = Inputs(proc, "wc", operands)
    rows: list[tuple[list[int], str | None]] = []
    totals = [0, 0, 0]
    for operand in inputs.operands:
        counts = [0, 0, 0]
        missing = operand != "-" and inputs.text_of(operand) is None
        if missing:
            continue
        async for line in inputs.lines_of(operand):
            counts[0] += line.endswith("\n")
            counts[1] += len(line.split())
            counts[2] += len(line.encode())
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
        rows.append((counts, None if operand == "-" and not operands else operand))
    if len(rows) > 1:
        rows.append((totals, "total"))
    index = {"l": 0, "w": 1, "c": 2}
    width = max((len(str(n)) for counts, _ in rows for n in counts), default=1)
    if len(wanted) > 1 and any(name is None for _, name in rows):
        width = max(width, 7)
    if len(wanted) == 1 and len(rows) == 1:
        width = 1
    for counts, name in rows:
        cells = " ".join(f"{counts[index[f]]:>{width}}" for f in wanted)
        proc.stdout.write(cells + (f" {name}" if name else "") + "\n")
    return inputs.status


def _expand_set(spec: str) -> list[str]:
    """tr's SET: ranges `a-z`, classes `[:upper:]`, escapes `\\n`."""
    chars: list[str] = []
    k = 0
    escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "f": "\f", "v": "\v", "0": "\0"}
    while k < len(spec):
        m = re.match(r"\[:(\w+):\]", spec[k:])
        if m:
            name = m.group(1)
            if name not in _CLASSES:
                raise UsageError(f"invalid character class '{name}'")
            chars.extend(sorted(set(re.findall(f"[{_CLASSES[name]}]",
                                               "".join(map(chr, range(128)))))))
            if name in ("upper", "lower"):
                chars[-26:] = sorted(chars[-26:])
            k += m.end()
            continue
        c = spec[k]
        if c == "\\" and k + 1 < len(spec):
            c = escapes.get(spec[k + 1], spec[k + 1])
            k += 1
        if k + 2 < len(spec) and spec[k + 1] == "-":
            end = spec[k + 2]
            if ord(end) < ord(c):
                raise UsageError(f"range-endpoints of '{c}-{end}' are in reverse collating "
                                 "sequence order")
            chars.extend(chr(x) for x in range(ord(c), ord(end) + 1))
            k += 3
            continue
        chars.append(c)
        k += 1
    return chars


@_run("tr")
async def tr(proc: Proc, argv: list[str]) -> int:
    """tr [-d] [-s] [-c] SET1 [SET2] (stdin only, as tr has no file operands)"""
    opts, operands = _options(argv, "dscC", "")
    if not operands or (len(operands) < 2 and "d" not in opts and "s" not in opts):
        raise UsageError("missing operand" if not operands
                         else f"missing operand after '{operands[0]}'")
    set1 = _expand_set(operands[0])
    set2 = _expand_set(operands[1]) if len(operands) > 1 else []
    complement = "c" in opts or "C" in opts
    table: dict[int, str | None] = {}
    if "d" in opts:
        members = set(set1)
        squeeze = set(set2)
    else:
        if set2:
            padded = set2 + [set2[-1]] * (len(set1) - len(set2))
            table = {ord(a): b for a, b in zip(set1, padded, strict=False)}
        members = set()
        squeeze = set(set2 or set1)
    async for _, line in Inputs(proc, "tr", ["-"]).lines():
        if "d" in opts:
            line = "".join(c for c in line if (c in members) == complement)
        elif table:
            line = line.translate(table)
        if "s" in opts:
            line = re.sub("(.)\\1+", lambda m: m.group(1) if m.group(1) in squeeze
                          else m.group(0), line, flags=re.DOTALL)
        proc.stdout.write(line)
        await proc.drain()
    return 0


def _ranges(spec: str) -> list[tuple[int, int]]:
    ranges = []
    for item in spec.split(","):
        m = re.fullmatch(r"(\d*)(-?)(\d*)", item)
        if m is None or not item or item == "-":
            raise UsageError(f"invalid field value '{item}'")
        start = int(m.group(1)) if m.group(1) else 1
        end = int(m.group(3)) if m.group(3) else (start if not m.group(2) else 1 << 30)
        if start == 0:
            raise UsageError("fields are numbered from 1")
        ranges.append((start, end))
    return ranges


@_run("cut")
async def cut(proc: Proc, argv: list[str]) -> int:
    """cut -f LIST [-d DELIM] [-s] | -c LIST [FILE...]"""
    opts, operands = _options(argv, "s", "dfcb", {"--delimiter": "d", "--fields": "f"})
    if "f" not in opts and "c" not in opts and "b" not in opts:
        raise UsageError("you must specify a list of bytes, characters, or fields")
    delim = (opts.get("d") or ["\t"])[-1]
    if len(delim) != 1:
        raise UsageError("the delimiter must be a single character")
    inputs = Inputs(proc, "cut", operands)
    async for _, line in inputs.lines():
        body = line.rstrip("\n")
        if "f" in opts:
            if delim not in body:
                if "s" not in opts:
                    proc.stdout.write(body + "\n")
                continue
            fields = body.split(delim)
            picked = [f for k, f in enumerate(fields, 1)
                      if any(a <= k <= b for a, b in _ranges(opts["f"][-1]))]
            proc.stdout.write(delim.join(picked) + "\n")
        else:
            spec = (opts.get("c") or opts.get("b") or [""])[-1]
            picked = [c for k, c in enumerate(body, 1)
                      if any(a <= k <= b for a, b in _ranges(spec))]
            proc.stdout.write("".join(picked) + "\n")
    return inputs.status


async def _held_lines(inputs: Inputs) -> list[str]:
    lines: list[str] = []
    size = 0
    async for _, line in inputs.lines():
        size += len(line)
        if size > MAX_HELD_BYTES:
            raise UsageError("memory exhausted (podnet limit 16 MiB)")
        lines.append(line.rstrip("\n"))
    return lines


def _numeric(text: str) -> float:
    m = re.match(r"\s*[-+]?\d+(\.\d*)?", text)
    return float(m.group(0)) if m else 0.0


@_run("sort")
async def sort(proc: Proc, argv: list[str]) -> int:
    """sort [-n] [-r] [-u] [-k N] [-t SEP] [FILE...]"""
    opts, operands = _options(argv, "nrufhV", "kto", {"--reverse": "r", "--numeric-sort": "n"})
    inputs = Inputs(proc, "sort", operands)
    lines = await _held_lines(inputs)
    sep = opts["t"][-1] if "t" in opts else None
    key_field = 0
    if "k" in opts:
        m = re.match(r"\d+", opts["k"][-1])
        if m is None:
            raise UsageError(f"invalid number at field start: invalid count at start of "
                             f"'{opts['k'][-1]}'", 2)
        key_field = int(m.group(0))

    def key_text(line: str) -> str:
        if not key_field:
            return line
        field = key_field
        parts = line.split(sep) if sep else line.split()
        return (sep or " ").join(parts[field - 1:])

    if "n" in opts:
        lines.sort(key=lambda s: (_numeric(key_text(s)), s), reverse="r" in opts)
    elif "f" in opts:
        lines.sort(key=lambda s: key_text(s).lower(), reverse="r" in opts)
    else:
        lines.sort(key=key_text, reverse="r" in opts)
    if "u" in opts:
        unique: list[str] = []
        seen: set[str] = set()
        for s in lines:
            if key_text(s) not in seen:
                seen.add(key_text(s))
                unique.append(s)
        lines = unique
    out = "".join(s + "\n" for s in lines)
    if "o" in opts:
        proc.target.files[abspath(opts["o"][-1], proc.target.cwd)] = out
    else:
        proc.stdout.write(out)
    return inputs.status


@_run("uniq")
async def uniq(proc: Proc, argv: list[str]) -> int:
    """uniq [-c] [-d] [-u] [-i] [INPUT]"""
    opts, operands = _options(argv, "cdui", "")
    inputs = Inputs(proc, "uniq", operands[:1])
    previous: str | None = None
    count = 0

    def emit() -> None:
        if previous is None:
            return
        if ("d" in opts and count < 2) or ("u" in opts and count > 1):
            return
        proc.stdout.write(f"{count:>7} {previous}\n" if "c" in opts else previous + "\n")

    async for _, line in inputs.lines():
        body = line.rstrip("\n")
        same = previous is not None and (
            body.lower() == previous.lower() if "i" in opts else body == previous)
        if same:
            count += 1
            continue
        emit()
        previous, count = body, 1
    emit()
    return inputs.status


@_run("tee")
async def tee(proc: Proc, argv: list[str]) -> int:
    """tee [-a] [FILE...]: stdin to stdout and to each FILE as it arrives."""
    opts, operands = _options(argv, "ai", "")
    files = proc.target.files
    paths = []
    status = 0
    for operand in operands:
        path = abspath(operand, proc.target.cwd)
        if path == "/dev/null":
            continue
        why = vfs.can_create(files, path)
        if why:
            proc.stderr.write(f"tee: {operand}: {why}\n")
            status = 1
            continue
        if "a" not in opts:
            files[path] = ""
        paths.append(path)
    while chunk := await proc.read_stdin():
        proc.stdout.write(chunk)
        text = chunk.decode("utf-8", "replace")
        for path in paths:
            if len(files.get(path, "")) + len(text) > vfs.MAX_FILE_BYTES:
                proc.stderr.write(f"tee: {path}: No space left on device\n")
                status = 1
                continue
            files[path] = files.get(path, "") + text
        await proc.drain()
    return status


@_run("seq")
async def seq(proc: Proc, argv: list[str]) -> int:
    """seq [-s SEP] [-w] [FIRST [INCREMENT]] LAST"""
    args = argv[1:]
    sep, width = "\n", False
    while args and re.fullmatch(r"-[sw].*", args[0]):
        opt = args.pop(0)
        if opt.startswith("-s"):
            sep = opt[2:] or (args.pop(0) if args else "\n")
        else:
            width = True
    if not 1 <= len(args) <= 3:
        raise UsageError("missing operand" if not args else f"extra operand '{args[3]}'")
    try:
        numbers = [float(a) for a in args]
    except ValueError:
        bad = next(a for a in args if not re.fullmatch(r"[-+]?\d*\.?\d+(e[-+]?\d+)?", a))
        raise UsageError(f"invalid floating point argument: '{bad}'") from None
    first, step, last = (1.0, 1.0, numbers[0]) if len(numbers) == 1 else (
        (numbers[0], 1.0, numbers[1]) if len(numbers) == 2 else tuple(numbers))
    if step == 0:
        raise UsageError(f"invalid Zero increment value: '{args[1]}'")
    decimals = max((len(a.split(".")[1]) if "." in a else 0) for a in args)
    pad = max(len(f"{first:.{decimals}f}"), len(f"{last:.{decimals}f}")) if width else 0
    value, k, out = first, 0, []
    while (value <= last) if step > 0 else (value >= last):
        out.append(f"{value:0{pad}.{decimals}f}")
        k += 1
        value = first + k * step
        if len(out) >= 4096:
            proc.stdout.write(sep.join(out) + sep)
            out = []
            await proc.drain()
    if out:
        proc.stdout.write(sep.join(out) + "\n")
    elif k and sep != "\n":
        proc.stdout.write("\n")
    return 0


@_run("sed")
async def sed(proc: Proc, argv: list[str]) -> int:
    """sed [-n] [-E|-r] [-i] [-e] SCRIPT [FILE...]: commands `s/RE/REPL/[gpI]`, `p`, `d`, `q`,
    `=`, each with an optional address (`N`, `$`, `/RE/`)."""
    opts, operands = _options(argv, "nErsi", "e", {"--quiet": "n", "--regexp-extended": "E"})
    scripts = opts.get("e", [])
    if not scripts:
        if not operands:
            raise UsageError("Usage: sed [OPTION]... {script-only-if-no-other-script} "
                             "[input-file]...")
        scripts = [operands.pop(0)]
    program = _sed_parse("\n".join(scripts), extended="E" in opts or "r" in opts)
    inputs = Inputs(proc, "sed", operands)
    quiet = "n" in opts
    if "i" in opts:
        for operand in operands:
            text = inputs.text_of(operand)
            if text is None:
                continue
            out: list[str] = []
            _sed_run(program, text.splitlines(keepends=True), quiet, out.append, [0])
            proc.target.files[abspath(operand, proc.target.cwd)] = "".join(out)
        return inputs.status
    # One line behind, so that `$` knows the last line when it comes.
    counter = [0]
    held: list[str] = []
    async for _, line in inputs.lines():
        held.append(line)
        if len(held) > 1:
            if _sed_run(program, held[:-1], quiet, proc.stdout.write, counter, last=False):
                return inputs.status
            held = held[-1:]
            await proc.drain()
    _sed_run(program, held, quiet, proc.stdout.write, counter)
    return inputs.status


_SedCommand = tuple[object, str, tuple[re.Pattern[str], str, str] | None]


def _sed_parse(script: str, *, extended: bool) -> list[_SedCommand]:
    commands: list[_SedCommand] = []
    k = 0
    n = len(script)

    def delimited(start: int, delim: str) -> tuple[str, int]:
        out: list[str] = []
        j = start
        while j < n and script[j] != delim:
            if script[j] == "\\" and j + 1 < n:
                out.append(script[j:j + 2] if script[j + 1] != delim else delim)
                j += 2
                continue
            out.append(script[j])
            j += 1
        if j >= n:
            raise UsageError(f"-e expression #1, char {j}: unterminated `s' command")
        return "".join(out), j + 1

    while k < n:
        while k < n and script[k] in " \t\n;":
            k += 1
        if k >= n:
            break
        address: object = None
        m = re.match(r"\d+|\$", script[k:])
        if m:
            address = int(m.group(0)) if m.group(0) != "$" else "$"
            k += m.end()
        elif script[k] == "/":
            text, k = delimited(k + 1, "/")
            address = compile_regex(text, extended=extended)
        if k >= n:
            raise UsageError(f"-e expression #1, char {k}: missing command")
        cmd = script[k]
        k += 1
        if cmd == "s":
            delim = script[k]
            pattern, k = delimited(k + 1, delim)
            repl, k = delimited(k, delim)
            m = re.match(r"[gpI0-9]*", script[k:])
            flags = m.group(0) if m else ""
            k += len(flags)
            regex = compile_regex(pattern, extended=extended, ignore_case="I" in flags)
            commands.append((address, "s", (regex, repl, flags)))
        elif cmd in "pdq=":
            commands.append((address, cmd, None))
        else:
            raise UsageError(f"-e expression #1, char {k}: unknown command: `{cmd}'")
    return commands


def _sed_replacement(repl: str, m: re.Match[str]) -> str:
    out: list[str] = []
    k = 0
    while k < len(repl):
        c = repl[k]
        if c == "\\" and k + 1 < len(repl):
            nxt = repl[k + 1]
            if nxt.isdigit():
                out.append(m.group(int(nxt)) or "")
            else:
                out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
            k += 2
            continue
        out.append(m.group(0) if c == "&" else c)
        k += 1
    return "".join(out)


def _sed_substitute(regex: re.Pattern[str], repl: str, flags: str,
                    body: str) -> tuple[str, int]:
    """`s/RE/REPL/FLAGS` on one line: (new line, whether it substituted)."""
    nth = int(re.sub(r"\D", "", flags) or 0)
    seen = 0
    done = 0

    def substitute(m: re.Match[str]) -> str:
        nonlocal seen, done
        seen += 1
        if nth and seen != nth:
            return m.group(0)
        done += 1
        return _sed_replacement(repl, m)

    new = regex.sub(substitute, body, count=0 if "g" in flags or nth else 1)
    return new, done


def _sed_run(program: list[_SedCommand], lines: list[str], quiet: bool,
             write: Callable[[str], object], counter: list[int], *, last: bool = True) -> bool:
    """Run the program over `lines` (`counter` holds the line number so far); true when `q`
    ended it."""
    for index, line in enumerate(lines):
        is_last = last and index == len(lines) - 1
        body, newline = (line[:-1], "\n") if line.endswith("\n") else (line, "")
        counter[0] += 1
        number = counter[0]
        deleted = False
        for address, cmd, detail in program:
            if address is not None:
                if address == "$" and not is_last:
                    continue
                if isinstance(address, int) and address != number:
                    continue
                if isinstance(address, re.Pattern) and not address.search(body):
                    continue
            if cmd == "s" and detail is not None:
                regex, repl, flags = detail
                new, count = _sed_substitute(regex, repl, flags, body)
                if count:
                    body = new
                    if "p" in flags:
                        write(body + "\n")
            elif cmd == "p":
                write(body + "\n")
            elif cmd == "=":
                write(f"{number}\n")
            elif cmd == "d":
                deleted = True
                break
            elif cmd == "q":
                if not quiet:
                    write(body + newline)
                return True
        if not deleted and not quiet:
            write(body + newline)
    return False


COMMANDS: dict[str, Command] = {
    "grep": grep, "egrep": grep, "head": head, "tail": tail, "wc": wc, "tr": tr, "cut": cut,
    "sort": sort, "uniq": uniq, "tee": tee, "seq": seq, "sed": sed,
}
