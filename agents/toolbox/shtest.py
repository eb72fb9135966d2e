"""`test` / `[`: dash's test(1), pure logic plus the toolbox command.

Operators: `! ( ) -a -o`, strings `-z -n = != < >`, integers `-eq -ne -lt -le -gt -ge`, files
(in the virtual filesystem) `-e -f -d -s -r -w -x -h -L`. Like dash, `==` is not an operator
(bash's) and is reported as `unexpected operator`.
"""

from __future__ import annotations

from collections.abc import Mapping

from agents.toolbox import vfs
from agents.toolbox.core import Command, Proc

_UNARY_FILE = {"-e", "-f", "-d", "-s", "-r", "-w", "-x", "-h", "-L", "-b", "-c", "-p", "-S",
               "-g", "-u", "-k", "-t", "-O", "-G"}
_UNARY = _UNARY_FILE | {"-z", "-n"}
_BINARY = {"=", "!=", "<", ">", "-eq", "-ne", "-lt", "-le", "-gt", "-ge", "-nt", "-ot", "-ef"}


class TestError(Exception):
    pass


def _integer(text: str) -> int:
    stripped = text.strip(" \t")
    try:
        if not stripped or not stripped.lstrip("+-").isdigit():
            raise ValueError
        return int(stripped)
    except ValueError:
        raise TestError(f"Illegal number: {text}") from None


class _Test:
    def __init__(self, args: list[str], files: Mapping[str, str], cwd: str) -> None:
        self.args, self.k = args, 0
        self.files, self.cwd = files, cwd

    def more(self) -> bool:
        return self.k < len(self.args)

    def peek(self, ahead: int = 0) -> str | None:
        k = self.k + ahead
        return self.args[k] if k < len(self.args) else None

    def take(self) -> str:
        if not self.more():
            raise TestError("argument expected")
        self.k += 1
        return self.args[self.k - 1]

    def run(self) -> bool:
        if not self.args:
            return False
        value = self.or_()
        if self.more():
            # dash names the last word it understood, not the one it tripped over.
            raise TestError(f"{self.args[self.k - 1]}: unexpected operator")
        return value

    def or_(self) -> bool:
        value = self.and_()
        while self.peek() == "-o":
            self.k += 1
            right = self.and_()
            value = value or right
        return value

    def and_(self) -> bool:
        value = self.not_()
        while self.peek() == "-a":
            self.k += 1
            right = self.not_()
            value = value and right
        return value

    def not_(self) -> bool:
        if self.peek() == "!" and self.k + 1 < len(self.args) and self.peek(1) not in _BINARY:
            self.k += 1
            return not self.not_()
        return self.primary()

    def primary(self) -> bool:
        word = self.take()
        nxt = self.peek()
        if nxt in _BINARY:
            if self.k + 1 >= len(self.args):
                raise TestError(f"{nxt}: argument expected")
            self.k += 1
            return self.binary(word, nxt, self.take())
        if word == "(" and self.more():
            value = self.or_()
            if self.take() != ")":
                raise TestError("closing paren expected")
            return value
        if word in _UNARY and self.more():
            return self.unary(word, self.take())
        return word != ""

    def unary(self, op: str, operand: str) -> bool:
        if op == "-z":
            return operand == ""
        if op == "-n":
            return operand != ""
        path = vfs.resolve(self.cwd, operand) if operand else ""
        if not path:
            return False
        if op == "-e":
            return vfs.exists(self.files, path)
        if op == "-f":
            return path in self.files
        if op == "-d":
            return vfs.is_dir(self.files, path)
        if op == "-s":
            return bool(self.files.get(path)) or vfs.is_dir(self.files, path)
        if op in ("-r", "-w"):
            return vfs.exists(self.files, path)
        if op == "-x":
            return vfs.is_dir(self.files, path)
        if op == "-c":
            return path in vfs.DEVICES
        return False

    def binary(self, left: str, op: str, right: str) -> bool:
        if op == "=":
            return left == right
        if op == "!=":
            return left != right
        if op == "<":
            return left < right
        if op == ">":
            return left > right
        if op in ("-nt", "-ot", "-ef"):
            return False
        a, b = _integer(left), _integer(right)
        return {"-eq": a == b, "-ne": a != b, "-lt": a < b, "-le": a <= b, "-gt": a > b,
                "-ge": a >= b}[op]


def evaluate(argv: list[str], files: Mapping[str, str], cwd: str = "/") -> tuple[int, str | None]:
    """(status, error) for `test ARGS` or `[ ARGS ]` (argv[0] is the name): 0 true, 1 false,
    2 and a message (without the `sh: 1: [: ` prefix) on an error."""
    args = argv[1:]
    if argv[0] == "[":
        if not args or args[-1] != "]":
            return 2, "missing ]"
        args = args[:-1]
    try:
        return (0 if _Test(args, files, cwd).run() else 1), None
    except TestError as e:
        return 2, str(e)


async def test(proc: Proc, argv: list[str]) -> int:
    status, error = evaluate(argv, proc.target.files, proc.target.cwd)
    if error:
        proc.stderr.write(f"{argv[0]}: {error}\n")
    return status


COMMANDS: dict[str, Command] = {"test": test, "[": test}
