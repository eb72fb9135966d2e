"""Shell arithmetic `$((...))` as dash does it: signed 64-bit integers, C precedence; no I/O.

Operators: `( )`, unary `+ - ! ~`, `* / %`, `+ -`, `<< >>`, `< <= > >=`, `== !=`, `&`, `^`, `|`,
`&&`, `||`, `? :`, and assignment `= *= /= %= += -= <<= >>= &= ^= |=`. Numbers are decimal,
`0x` hex or leading-`0` octal; a bare name is the variable's value (empty or unset: 0).
Errors raise `ArithError` with dash's wording (`division by zero`, `expecting primary`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

_TOKEN_RE = re.compile(r"\s*(?:(0[xX][0-9a-fA-F]+|\d+)|([A-Za-z_][A-Za-z0-9_]*)|"
                       r"(<<=|>>=|<<|>>|<=|>=|==|!=|&&|\|\||[*/%+\-&^|]=|[-+*/%<>=!~&^|?:()]))")
_BINARY: list[set[str]] = [{"||"}, {"&&"}, {"|"}, {"^"}, {"&"}, {"==", "!="},
                           {"<", "<=", ">", ">="}, {"<<", ">>"}, {"+", "-"}, {"*", "/", "%"}]
_ASSIGN = {"=", "*=", "/=", "%=", "+=", "-=", "<<=", ">>=", "&=", "^=", "|="}
MAX_NESTING = 64


class ArithError(Exception):
    pass


class IllegalNumber(ArithError):
    """A variable whose value is not a number (dash words it without the expression)."""


def _wrap(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _number(text: str) -> int:
    if text[:2] in ("0x", "0X"):
        return int(text[2:], 16)
    if len(text) > 1 and text[0] == "0":
        try:
            return int(text, 8)
        except ValueError:
            raise ArithError("expecting EOF") from None
    return int(text)


def _apply(op: str, a: int, b: int) -> int:
    if op in ("/", "%"):
        if b == 0:
            raise ArithError("division by zero")
        q = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)  # C truncates toward 0
        return _wrap(q if op == "/" else a - q * b)
    if op in ("<<", ">>"):
        b &= 63
        return _wrap(a << b) if op == "<<" else a >> b
    table: dict[str, Callable[[int, int], int]] = {
        "+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y,
        "<": lambda x, y: int(x < y), "<=": lambda x, y: int(x <= y),
        ">": lambda x, y: int(x > y), ">=": lambda x, y: int(x >= y),
        "==": lambda x, y: int(x == y), "!=": lambda x, y: int(x != y),
        "&": lambda x, y: x & y, "^": lambda x, y: x ^ y, "|": lambda x, y: x | y,
    }
    return _wrap(table[op](a, b))


class _Evaluator:
    def __init__(self, text: str, get: Callable[[str], str], put: Callable[[str, str], None]):
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN_RE.match(text, pos)
            if m is None:
                if not text[pos:].strip():
                    break
                raise ArithError("expecting EOF")
            pos = m.end()
            if m.group(1):
                self.tokens.append(("num", m.group(1)))
            elif m.group(2):
                self.tokens.append(("name", m.group(2)))
            else:
                self.tokens.append(("op", m.group(3)))
        self.k = 0
        self.get, self.put = get, put
        self.depth = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.k] if self.k < len(self.tokens) else ("eof", "")

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        self.k += 1
        return tok

    def value_of(self, name: str) -> int:
        text = self.get(name).strip()
        if not text:
            return 0
        try:
            return _wrap(int(text, 0) if not re.fullmatch(r"0\d+", text) else int(text, 8))
        except ValueError:
            raise IllegalNumber(f"Illegal number: {text}") from None

    def run(self, evaluate: bool = True) -> int:
        value = self.expr(evaluate)
        if self.peek()[0] != "eof":
            raise ArithError("expecting EOF")
        return value

    def expr(self, ev: bool) -> int:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ArithError("expression nested too deep")
        try:
            kind, text = self.peek()
            nxt = self.tokens[self.k + 1] if self.k + 1 < len(self.tokens) else ("eof", "")
            if kind == "name" and nxt[0] == "op" and nxt[1] in _ASSIGN:
                self.k += 2
                value = self.expr(ev)
                if ev:
                    if nxt[1] != "=":
                        value = _apply(nxt[1][:-1], self.value_of(text), value)
                    self.put(text, str(value))
                return value
            return self.ternary(ev)
        finally:
            self.depth -= 1

    def ternary(self, ev: bool) -> int:
        cond = self.binary(0, ev)
        if self.peek() != ("op", "?"):
            return cond
        self.take()
        yes = self.expr(ev and cond != 0)
        if self.take() != ("op", ":"):
            raise ArithError("expecting ':'")
        no = self.expr(ev and cond == 0)
        return yes if cond else no

    def binary(self, level: int, ev: bool) -> int:
        if level == len(_BINARY):
            return self.unary(ev)
        left = self.binary(level + 1, ev)
        while (tok := self.peek())[0] == "op" and tok[1] in _BINARY[level]:
            self.take()
            op = tok[1]
            if op == "&&":
                right = self.binary(level + 1, ev and left != 0)
                left = int(left != 0 and right != 0)
            elif op == "||":
                right = self.binary(level + 1, ev and left == 0)
                left = int(left != 0 or right != 0)
            else:
                right = self.binary(level + 1, ev)
                left = _apply(op, left, right) if ev else 0
        return left

    def unary(self, ev: bool) -> int:
        kind, text = self.take()
        if kind == "op" and text in ("+", "-", "!", "~"):
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise ArithError("expression nested too deep")
            value = self.unary(ev)
            self.depth -= 1
            return {"+": value, "-": _wrap(-value), "!": int(value == 0), "~": ~value}[text]
        if kind == "op" and text == "(":
            value = self.expr(ev)
            if self.take() != ("op", ")"):
                raise ArithError("expecting ')'")
            return value
        if kind == "num":
            return _wrap(_number(text))
        if kind == "name":
            return self.value_of(text) if ev else 0
        raise ArithError("expecting primary")


def evaluate(text: str, get: Callable[[str], str], put: Callable[[str, str], None]) -> int:
    """The value of `text` (already parameter-expanded); `get`/`put` read and set variables."""
    return _Evaluator(text, get, put).run()
