"""The pure parts of word expansion: field splitting, patterns, pathname expansion; no I/O.

The evaluator turns a word into `Piece`s (text, quoted, split) with None between the fields
that `"$@"` makes; `split_fields` applies IFS splitting to the pieces that came unquoted out of
an expansion (never to literal text: `IFS=:; echo a:b` prints `a:b`), giving fields of
`Seg`ments (text, quoted), and `glob` matches their unquoted `* ? [...]` against the virtual
filesystem.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping

from agents.toolbox import vfs

Seg = tuple[str, bool]  # (text, quoted)
Piece = tuple[str, bool, bool]  # (text, quoted, subject to field splitting)
DEFAULT_IFS = " \t\n"


def split_fields(pieces: Iterable[Piece | None], ifs: str) -> list[list[Seg]]:
    """Fields (each a list of segments, quoting kept for globbing) from expanded pieces."""
    fields: list[list[Seg]] = []
    cur: list[Seg] = []
    started = False
    white = "".join(c for c in ifs if c in " \t\n")
    for piece in pieces:
        if piece is None:  # a field boundary from "$@"
            fields.append(cur)
            cur, started = [], False
            continue
        text, quoted, split = piece
        if not split or not ifs:
            cur.append((text, quoted))
            started = started or quoted or bool(text)
            continue
        buf: list[str] = []
        for c in text:
            if c not in ifs:
                buf.append(c)
                continue
            if buf:
                cur.append(("".join(buf), False))
                buf = []
                started = True
            if c in white:
                if started:
                    fields.append(cur)
                    cur, started = [], False
            else:
                fields.append(cur)  # a non-white IFS character always ends a field
                cur, started = [], False
        if buf:
            cur.append(("".join(buf), False))
            started = True
    if started:
        fields.append(cur)
    return fields


def has_pattern(segs: Iterable[Seg]) -> bool:
    """Whether pathname expansion applies: an unquoted `*`, `?` or a closed `[...]` (a lone
    `[`, as in `[ -f x ]`, is an ordinary character)."""
    return any(not quoted and ("*" in text or "?" in text or _has_bracket(text))
               for text, quoted in segs)


def _has_bracket(text: str) -> bool:
    start = text.find("[")
    return start >= 0 and _bracket_end(text, start) > 0


def pattern_regex(segs: Iterable[Seg], *, pathname: bool = False) -> re.Pattern[str]:
    """A shell pattern as a regex: quoted text is literal; `*` and `?` do not cross `/` in
    pathname expansion."""
    any_char = "[^/]" if pathname else "."
    out: list[str] = []
    for text, quoted in segs:
        if quoted:
            out.append(re.escape(text))
            continue
        k = 0
        while k < len(text):
            c = text[k]
            if c == "*":
                out.append(any_char + "*")
            elif c == "?":
                out.append(any_char)
            elif c == "[":
                end = _bracket_end(text, k)
                if end < 0:
                    out.append(re.escape(c))
                else:
                    body = text[k + 1:end]
                    negate = body[:1] in ("!", "^")
                    if negate:
                        body = body[1:]
                    body = body.replace("\\", "\\\\").replace("[", "\\[")
                    out.append(f"[{'^' if negate else ''}{body}]")
                    k = end
            else:
                out.append(re.escape(c))
            k += 1
    return re.compile("".join(out), re.DOTALL)


def _bracket_end(text: str, start: int) -> int:
    k = start + 1
    if k < len(text) and text[k] in "!^":
        k += 1
    if k < len(text) and text[k] == "]":
        k += 1
    end = text.find("]", k)
    return end


def strip(value: str, segs: list[Seg], op: str) -> str:
    """`${x#p}`, `${x##p}`, `${x%p}`, `${x%%p}`."""
    regex = pattern_regex(segs)
    n = len(value)
    if op in ("#", "##"):
        order = range(n + 1) if op == "#" else range(n, -1, -1)
        for k in order:
            if regex.fullmatch(value[:k]):
                return value[k:]
    else:
        order = range(n, -1, -1) if op == "%" else range(n + 1)
        for k in order:
            if regex.fullmatch(value[k:]):
                return value[:k]
    return value


def glob(segs: list[Seg], files: Mapping[str, str], cwd: str) -> list[str]:
    """Pathnames matching the pattern, sorted; [] when none (the word then stays as written)."""
    text = "".join(t for t, _ in segs)
    absolute = text.startswith("/")
    base = "" if absolute else cwd.rstrip("/") + "/"
    regex = pattern_regex([(base, True), *segs], pathname=True)
    matches = []
    for path in vfs.listing(files):
        if path != "/" and regex.fullmatch(path):
            name = posixpath.basename(path)
            last = text.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(".") and not last.startswith("."):
                continue  # like sh, `*` does not match hidden files
            matches.append(path if absolute else path[len(base):])
    return sorted(matches)
