"""Parsing the POSIX shell language (a dash-shaped subset) into a syntax tree; no I/O.

`parse(script)` returns a `Seq` or raises `ShSyntaxError` whose message is dash's
(`Syntax error: "done" unexpected`, `Syntax error: end of file unexpected (expecting "fi")`,
`Syntax error: Unterminated quoted string`). `incomplete` on the error says the script only
ended too early, which lets an interactive shell ask for another line.

Grammar covered: lists (`;`, newline, `&`, `&&`, `||`, `!`), pipelines, `{ }`, `( )`, `if`,
`while`, `until`, `for`, `case`, function definitions `name() body`, simple commands with
assignments and redirections (`<`, `>`, `>>`, `>|`, `<>`, `N>&M`, `N<&M`, `N>&-`, here-documents
`<<` and `<<-`). Words keep their structure (quotes, `$NAME`, `${NAME op word}`, `$(...)`,
backquotes, `$((...))`) for the evaluator to expand. Refused with a clear syntax error: bash's
`[[`, `((`, `${NAME/...}`, `<(...)`, and nesting deeper than `MAX_DEPTH`.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

MAX_DEPTH = 64  # nested compound commands / substitutions; a hostile script cannot recurse on
# Parsing runs at roughly 6 us a byte: 256 KiB (far beyond any real script) is ~1.5 s of CPU,
# which the shell spends in a worker thread for big inputs.
MAX_SCRIPT_BYTES = 256 << 10

RESERVED = frozenset({"if", "then", "else", "elif", "fi", "do", "done", "case", "esac",
                      "while", "until", "for", "{", "}", "!", "in"})
_META = frozenset(" \t\n;&|<>()")
_OP_START = frozenset(";&|<>()")
_IO_NUMBER_RE = re.compile(r"\d{1,9}(?=[<>])")
_PLAIN_RUN_RE = re.compile(r"[^\s;&|<>()\\'\"$`}]+")  # characters with no meaning in a word
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPECIAL_PARAMS = set("@*#?$!-0123456789")
_REDIR_OPS = (">>", ">&", ">|", "<<-", "<<", "<&", "<>", ">", "<")
_CONTROL_OPS = ("&&", "||", ";;", ";", "&", "|", "(", ")")


class ShSyntaxError(Exception):
    def __init__(self, message: str, line: int, *, incomplete: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.incomplete = incomplete


# ---- words -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Lit:
    text: str
    quoted: bool


@dataclass(frozen=True)
class Param:
    """`$name`, `${name}`, `${#name}`, `${name OP word}` (OP: :- - := = :? ? :+ + # ## % %%)."""

    name: str
    quoted: bool
    op: str | None = None
    arg: Word | None = None
    length: bool = False


@dataclass(frozen=True)
class CmdSub:
    body: Seq
    quoted: bool


@dataclass(frozen=True)
class Arith:
    expr: Word
    quoted: bool


Part = Lit | Param | CmdSub | Arith


@dataclass(frozen=True)
class Word:
    parts: tuple[Part, ...]

    def literal(self) -> str | None:
        """The text when the word is one unquoted literal (reserved words, names)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Lit) and not self.parts[0].quoted:
            return self.parts[0].text
        return None


# ---- commands ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Redir:
    fd: int
    op: str  # one of _REDIR_OPS
    target: Word
    heredoc: Word | None = None  # the body, for << and <<-


@dataclass
class Simple:
    assigns: list[tuple[str, Word]]
    words: list[Word]
    redirs: list[Redir]
    line: int


@dataclass
class Pipeline:
    cmds: list[Command]
    negate: bool
    line: int


@dataclass
class AndOr:
    first: Pipeline
    rest: list[tuple[str, Pipeline]]


@dataclass
class Seq:
    items: list[tuple[AndOr, bool]]  # (list, run in background)


@dataclass
class Brace:
    body: Seq


@dataclass
class Subshell:
    body: Seq


@dataclass
class If:
    branches: list[tuple[Seq, Seq]]
    orelse: Seq | None


@dataclass
class Loop:
    cond: Seq
    body: Seq
    until: bool


@dataclass
class For:
    var: str
    words: list[Word] | None  # None: "$@"
    body: Seq


@dataclass
class CaseItem:
    patterns: list[Word]
    body: Seq


@dataclass
class Case:
    word: Word
    items: list[CaseItem]


@dataclass
class FuncDef:
    name: str
    body: Command


@dataclass
class Redirected:
    """A compound command with redirections: `while ...; done < file`, `{ ...; } >log`."""

    cmd: Command
    redirs: list[Redir]


Command = Simple | Brace | Subshell | If | Loop | For | Case | FuncDef | Redirected


# ---- tokens ------------------------------------------------------------------------------

@dataclass
class Token:
    kind: str  # "word", "op", "redir", "newline", "eof"
    value: str = ""
    word: Word | None = None
    fd: int | None = None
    line: int = 1

    def reserved(self) -> str | None:
        if self.kind == "word" and self.word is not None:
            text = self.word.literal()
            if text in RESERVED:
                return text
        return None

    def describe(self) -> str:
        if self.kind == "eof":
            return "end of file"
        if self.kind == "newline":
            return "newline"
        if self.kind == "word":
            reserved = self.reserved()
            return f'"{reserved}"' if reserved else "word"
        return f'"{self.value}"'


@dataclass
class _Heredoc:
    redir_index: int
    delimiter: str
    strip_tabs: bool
    expand: bool
    owner: list[Redir] = field(default_factory=list)


class Parser:
    def __init__(self, source: str, depth: int = 0, line_offset: int = 0) -> None:
        if len(source) > MAX_SCRIPT_BYTES:
            raise ShSyntaxError(f"script too long (podnet limit {MAX_SCRIPT_BYTES} bytes)", 1)
        self.src = source
        self.i = 0
        self.depth = depth
        self.line_offset = line_offset
        self._newlines = [k for k, c in enumerate(source) if c == "\n"]
        self._peeked: Token | None = None
        self._heredocs: list[_Heredoc] = []

    # ---- errors and positions ----

    def line_at(self, pos: int) -> int:
        return bisect.bisect_left(self._newlines, pos) + 1 + self.line_offset

    def error(self, message: str, pos: int | None = None, *,
              incomplete: bool = False) -> ShSyntaxError:
        line = self.line_at(self.i if pos is None else pos)
        return ShSyntaxError(f"Syntax error: {message}", line, incomplete=incomplete)

    def unexpected(self, tok: Token, expecting: str | None = None) -> ShSyntaxError:
        msg = f"{tok.describe()} unexpected"
        if expecting:
            msg += f' (expecting "{expecting}")'
        return ShSyntaxError(f"Syntax error: {msg}", tok.line, incomplete=tok.kind == "eof")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nesting too deep (podnet limit {MAX_DEPTH})")

    # ---- lexing ----

    def _skip_blanks(self) -> None:
        src, n = self.src, len(self.src)
        while self.i < n:
            c = src[self.i]
            if c in " \t":
                self.i += 1
            elif c == "\\" and src.startswith("\\\n", self.i):
                self.i += 2
            elif c == "#":
                end = src.find("\n", self.i)
                self.i = n if end < 0 else end
            else:
                break

    def peek(self) -> Token:
        if self._peeked is None:
            self._peeked = self._lex()
        return self._peeked

    def next(self) -> Token:
        tok = self.peek()
        self._peeked = None
        return tok

    def _lex(self) -> Token:
        self._skip_blanks()
        src, start = self.src, self.i
        line = self.line_at(start)
        if start >= len(src):
            if self._heredocs:
                raise self.error("end of file unexpected (here-document)", incomplete=True)
            return Token("eof", line=line)
        c = src[start]
        if c == "\n":
            self.i += 1
            if self._heredocs:
                self._read_heredocs()
            return Token("newline", "\n", line=line)
        if c not in _OP_START and not c.isdigit():
            return Token("word", word=self._word(_META), line=line)
        m = _IO_NUMBER_RE.match(src, start)
        fd: int | None = None
        pos = start
        if m:
            fd = int(m.group(0))
            pos = m.end()
        for op in _REDIR_OPS:
            if src.startswith(op, pos):
                if src.startswith("<(", pos) or src.startswith(">(", pos):
                    raise self.error('"(" unexpected')
                self.i = pos + len(op)
                return Token("redir", op, fd=fd, line=line)
        for op in _CONTROL_OPS:
            if src.startswith(op, start):
                self.i = start + len(op)
                return Token("op", op, line=line)
        return Token("word", word=self._word(_META), line=line)

    def _word(self, stop: frozenset[str] | set[str], *, brace_arg: bool = False,
              in_dquote: bool = False, text_mode: bool = False) -> Word:
        """One word up to an unquoted character of `stop` (not consumed).

        `in_dquote`: inside "..." (the argument of "${x:-...}"): quotes and backslashes act as
        they do there. `text_mode`: a here-document body or an arithmetic expression, where
        only `$`, backquotes and backslashes before them are special.
        """
        escapable = "$`\\" if text_mode else '$`"\\}'
        in_dquote = in_dquote or text_mode
        parts: list[Part] = []
        lit: list[str] = []

        def flush() -> None:
            if lit:
                parts.append(Lit("".join(lit), False))
                lit.clear()

        src, n = self.src, len(self.src)
        plain = stop is _META
        while self.i < n:
            if plain and (run := _PLAIN_RUN_RE.match(src, self.i)):
                lit.append(run.group(0))
                self.i = run.end()
                continue
            c = src[self.i]
            if c in stop:
                break
            if c == "\\":
                if self.i + 1 >= n:
                    lit.append("\\")
                    self.i += 1
                elif src[self.i + 1] == "\n":
                    self.i += 2
                else:
                    flush()
                    nxt = src[self.i + 1]
                    if in_dquote and nxt not in escapable:
                        parts.append(Lit("\\" + nxt, True))
                    else:
                        parts.append(Lit(nxt, True))
                    self.i += 2
            elif c == "'" and not in_dquote:
                end = src.find("'", self.i + 1)
                if end < 0:
                    raise self.error("Unterminated quoted string", incomplete=True)
                flush()
                parts.append(Lit(src[self.i + 1:end], True))
                self.i = end + 1
            elif c == '"' and not text_mode:
                flush()
                self.i += 1
                parts.extend(self._dquote())
            elif c == "$":
                flush()
                parts.append(self._dollar(quoted=in_dquote))
            elif c == "`":
                flush()
                parts.append(self._backquote(quoted=in_dquote))
            else:
                lit.append(c)
                self.i += 1
        else:
            if brace_arg:
                raise self.error("Missing '}'", incomplete=True)
        flush()
        if in_dquote:
            parts = [Lit(p.text, True) if isinstance(p, Lit) else p for p in parts]
        return Word(tuple(parts))

    def _dquote(self) -> list[Part]:
        """The inside of "...", self.i just after the opening quote."""
        parts: list[Part] = []
        lit: list[str] = []
        src, n = self.src, len(self.src)
        while True:
            if self.i >= n:
                raise self.error("Unterminated quoted string", incomplete=True)
            c = src[self.i]
            if c == '"':
                self.i += 1
                break
            if c == "\\" and self.i + 1 < n and src[self.i + 1] in '$`"\\\n':
                if src[self.i + 1] != "\n":
                    lit.append(src[self.i + 1])
                self.i += 2
            elif c in "$`":
                if lit:
                    parts.append(Lit("".join(lit), True))
                    lit.clear()
                parts.append(self._dollar(quoted=True) if c == "$"
                             else self._backquote(quoted=True))
            else:
                lit.append(c)
                self.i += 1
        if lit or not parts:
            parts.append(Lit("".join(lit), True))  # "" is an empty word, not no word
        return parts

    def _dollar(self, *, quoted: bool) -> Part:
        src, start = self.src, self.i
        rest = src[start + 1:start + 3]
        if rest.startswith("(("):
            return self._arith(quoted)
        if rest.startswith("("):
            self.i = start + 2
            self.enter()
            saved = self._peeked
            self._peeked = None
            body = self.parse_list(stop_ops={")"})
            tok = self.next()
            if tok.kind != "op" or tok.value != ")":
                raise self.unexpected(tok, ")")
            self._peeked = saved
            self.depth -= 1
            return CmdSub(body, quoted)
        if rest.startswith("{"):
            return self._braced(quoted)
        c = rest[:1]
        m = NAME_RE.match(src, start + 1)
        if m:
            self.i = m.end()
            return Param(m.group(0), quoted)
        if c and c in _SPECIAL_PARAMS:
            self.i = start + 2
            return Param(c, quoted)
        self.i = start + 1
        return Lit("$", quoted)

    def _braced(self, quoted: bool) -> Part:
        src = self.src
        self.i += 2
        length = False
        if src.startswith("#", self.i) and not src.startswith("#}", self.i):
            length = True
            self.i += 1
        m = NAME_RE.match(src, self.i) or re.compile(r"\d+").match(src, self.i)
        if m:
            name = m.group(0)
            self.i = m.end()
        elif self.i < len(src) and src[self.i] in _SPECIAL_PARAMS:
            name = src[self.i]
            self.i += 1
        else:
            raise self._bad_substitution()
        if src.startswith("}", self.i):
            self.i += 1
            return Param(name, quoted, length=length)
        if length:
            raise self._bad_substitution()
        for op in (":-", ":=", ":?", ":+", "##", "%%", "-", "=", "?", "+", "#", "%"):
            if src.startswith(op, self.i):
                self.i += len(op)
                break
        else:
            raise self._bad_substitution()
        self.enter()
        arg = self._word({"}"}, brace_arg=True, in_dquote=quoted)
        self.depth -= 1
        self.i += 1  # the closing brace
        return Param(name, quoted, op=op, arg=arg)

    def _bad_substitution(self) -> ShSyntaxError:
        end = self.src.find("}", self.i)
        if end < 0:
            return self.error("Missing '}'", incomplete=True)
        return ShSyntaxError("Bad substitution", self.line_at(self.i))

    def _arith(self, quoted: bool) -> Part:
        src, n = self.src, len(self.src)
        start = self.i + 3
        depth, k = 0, start
        while k < n:
            c = src[k]
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    if src.startswith("))", k):
                        break
                    raise self.error("Missing '))'")
                depth -= 1
            k += 1
        else:
            raise self.error("Missing '))'", incomplete=True)
        inner = Parser(src[start:k], self.depth + 1, self.line_at(start) - 1)
        expr = inner._word(set(), text_mode=True)
        self.i = k + 2
        return Arith(expr, quoted)

    def _backquote(self, *, quoted: bool) -> Part:
        src, n = self.src, len(self.src)
        k = self.i + 1
        inner: list[str] = []
        while True:
            if k >= n:
                raise self.error("EOF in backquote substitution", incomplete=True)
            c = src[k]
            if c == "`":
                break
            if c == "\\" and k + 1 < n and (src[k + 1] in "$`\\" or (quoted and src[k + 1] == '"')):
                inner.append(src[k + 1])
                k += 2
                continue
            inner.append(c)
            k += 1
        sub = Parser("".join(inner), self.depth + 1, self.line_at(self.i) - 1)
        if sub.depth > MAX_DEPTH:
            raise self.error(f"nesting too deep (podnet limit {MAX_DEPTH})")
        body = sub.parse_program()
        self.i = k + 1
        return CmdSub(body, quoted)

    def _read_heredocs(self) -> None:
        """Bodies of the here-documents opened on the line that just ended."""
        src = self.src
        for doc in self._heredocs:
            lines: list[str] = []
            while True:
                if self.i >= len(src):
                    break  # as in dash, the end of the script also ends the document
                end = src.find("\n", self.i)
                end = len(src) if end < 0 else end
                line = src[self.i:end]
                self.i = min(end + 1, len(src))
                if doc.strip_tabs:
                    line = line.lstrip("\t")
                if line == doc.delimiter:
                    break
                lines.append(line + ("\n" if end < len(src) else ""))
            text = "".join(lines)
            if doc.expand:
                sub = Parser(text, self.depth + 1)
                body = sub._word(set(), text_mode=True) if text else Word((Lit("", True),))
            else:
                body = Word((Lit(text, True),))
            old = doc.owner[doc.redir_index]
            doc.owner[doc.redir_index] = Redir(old.fd, old.op, old.target, body)
        self._heredocs.clear()

    # ---- grammar ----

    def parse_program(self) -> Seq:
        seq = self.parse_list(stop_ops=set())
        tok = self.peek()
        if tok.kind != "eof":
            raise self.unexpected(tok)
        return seq

    def parse_line(self) -> Seq | None:
        """The next complete command (up to a newline), or None at the end.

        dash parses and runs one line at a time, so `echo a` on line 1 runs before a syntax
        error on line 2 is reported; the evaluator does the same with this.
        """
        self._skip_newlines()
        if self.peek().kind == "eof":
            return None
        items: list[tuple[AndOr, bool]] = []
        while True:
            and_or = self._and_or()
            tok = self.peek()
            items.append((and_or, tok.kind == "op" and tok.value == "&"))
            separated = tok.kind == "op" and tok.value in (";", "&")
            if separated:
                self.next()
                tok = self.peek()
            if tok.kind == "newline":
                self.next()
                return Seq(items)
            if tok.kind == "eof":
                return Seq(items)
            if not separated:
                raise self.unexpected(tok)

    def _skip_newlines(self) -> None:
        while self.peek().kind == "newline":
            self.next()

    def parse_list(self, *, stop_ops: frozenset[str] | set[str] = frozenset(),
                   stop_words: frozenset[str] = frozenset()) -> Seq:
        items: list[tuple[AndOr, bool]] = []
        while True:
            self._skip_newlines()
            tok = self.peek()
            if tok.kind == "eof" or (tok.kind == "op" and tok.value in stop_ops | {";;"}) \
                    or tok.reserved() in stop_words:
                return Seq(items)
            if tok.kind == "op" and tok.value in (")", ";;") and not items:
                raise self.unexpected(tok)
            and_or = self._and_or()
            tok = self.peek()
            background = tok.kind == "op" and tok.value == "&"
            items.append((and_or, background))
            if tok.kind == "op" and tok.value in (";", "&"):
                self.next()
            elif tok.kind == "newline":
                self.next()
            else:
                if tok.kind == "eof" or (tok.kind == "op" and tok.value in stop_ops | {";;"}) \
                        or tok.reserved() in stop_words:
                    return Seq(items)
                raise self.unexpected(tok)

    def _and_or(self) -> AndOr:
        first = self._pipeline()
        rest: list[tuple[str, Pipeline]] = []
        while (tok := self.peek()).kind == "op" and tok.value in ("&&", "||"):
            self.next()
            self._skip_newlines()
            rest.append((tok.value, self._pipeline()))
        return AndOr(first, rest)

    def _pipeline(self) -> Pipeline:
        tok = self.peek()
        negate = False
        if tok.reserved() == "!":
            self.next()
            negate = True
        cmds = [self._command()]
        while (t := self.peek()).kind == "op" and t.value == "|":
            self.next()
            self._skip_newlines()
            cmds.append(self._command())
        return Pipeline(cmds, negate, tok.line)

    def _expect_word(self, word: str) -> Token:
        tok = self.next()
        if tok.reserved() != word:
            raise self.unexpected(tok, word)
        return tok

    def _body(self, *ends: str, closer: str | None = None) -> Seq:
        """A non-empty list up to one of `ends`; `closer` is what dash says it expected when
        the script ends first."""
        seq = self.parse_list(stop_words=frozenset(ends))
        if not seq.items:
            tok = self.peek()
            raise self.unexpected(tok, (closer or ends[-1]) if tok.kind == "eof" else None)
        return seq

    def _command(self) -> Command:
        tok = self.peek()
        reserved = tok.reserved()
        self.enter()
        try:
            cmd: Command
            if reserved == "if":
                cmd = self._if()
            elif reserved in ("while", "until"):
                self.next()
                cond = self._body("do")
                self._expect_word("do")
                body = self._body("done")
                self._expect_word("done")
                cmd = Loop(cond, body, until=reserved == "until")
            elif reserved == "for":
                cmd = self._for()
            elif reserved == "case":
                cmd = self._case()
            elif reserved == "{":
                self.next()
                body = self._body("}")
                self._expect_word("}")
                cmd = Brace(body)
            elif tok.kind == "op" and tok.value == "(":
                self.next()
                body = self.parse_list(stop_ops={")"})
                close = self.next()
                if close.kind != "op" or close.value != ")":
                    raise self.unexpected(close, ")")
                if not body.items:
                    raise self.unexpected(close)
                cmd = Subshell(body)
            elif reserved is not None and reserved != "in":
                raise self.unexpected(tok)
            else:
                return self._simple()
            redirs = self._redirs_after()
            return Redirected(cmd, redirs) if redirs else cmd
        finally:
            self.depth -= 1

    def _redirs_after(self) -> list[Redir]:
        redirs: list[Redir] = []
        while self.peek().kind == "redir":
            self._redir(self.next(), redirs)
        return redirs

    def _redir(self, tok: Token, into: list[Redir]) -> None:
        target = self.next()
        if target.kind != "word" or target.word is None:
            raise self.unexpected(target)
        fd = tok.fd if tok.fd is not None else (0 if tok.value.startswith("<") else 1)
        into.append(Redir(fd, tok.value, target.word))
        if tok.value in ("<<", "<<-"):
            delim, expand = _heredoc_delimiter(target.word)
            self._heredocs.append(_Heredoc(len(into) - 1, delim, tok.value == "<<-", expand,
                                           into))

    def _simple(self) -> Command:
        first = self.peek()
        assigns: list[tuple[str, Word]] = []
        words: list[Word] = []
        redirs: list[Redir] = []
        while True:
            tok = self.peek()
            if tok.kind == "redir":
                self._redir(self.next(), redirs)
            elif tok.kind == "word" and tok.word is not None:
                self.next()
                if not words:
                    assign = _assignment(tok.word)
                    if assign is not None:
                        assigns.append(assign)
                        continue
                words.append(tok.word)
            else:
                break
        if not (assigns or words or redirs):
            raise self.unexpected(first)
        tok = self.peek()
        if len(words) == 1 and not assigns and tok.kind == "op" and tok.value == "(":
            name = words[0].literal()
            self.next()
            close = self.next()
            if close.kind != "op" or close.value != ")":
                raise self.unexpected(close, ")")
            if name is None or not NAME_RE.fullmatch(name):
                raise ShSyntaxError("Syntax error: Bad function name", first.line)
            self._skip_newlines()
            return FuncDef(name, self._command())
        return Simple(assigns, words, redirs, first.line)

    def _if(self) -> If:
        self.next()
        branches: list[tuple[Seq, Seq]] = []
        while True:
            cond = self._body("then")
            self._expect_word("then")
            body = self._body("elif", "else", "fi")
            branches.append((cond, body))
            tok = self.next()
            word = tok.reserved()
            if word == "elif":
                continue
            if word == "else":
                orelse = self._body("fi")
                self._expect_word("fi")
                return If(branches, orelse)
            if word == "fi":
                return If(branches, None)
            raise self.unexpected(tok, "fi")

    def _for(self) -> For:
        self.next()
        tok = self.next()
        name = tok.word.literal() if tok.kind == "word" and tok.word else None
        if name is None or not NAME_RE.fullmatch(name):
            raise ShSyntaxError("Syntax error: Bad for loop variable", tok.line,
                                incomplete=tok.kind == "eof")
        words: list[Word] | None = None
        self._skip_newlines()
        if self.peek().reserved() == "in":
            self.next()
            words = []
            while (t := self.peek()).kind == "word" and t.word is not None:
                self.next()
                words.append(t.word)
            t = self.next()
            if t.kind not in ("newline",) and not (t.kind == "op" and t.value == ";"):
                raise self.unexpected(t, None if t.kind == "eof" else "do")
        elif self.peek().kind == "op" and self.peek().value == ";":
            self.next()
        self._skip_newlines()
        self._expect_word("do")
        body = self._body("done")
        self._expect_word("done")
        return For(name, words, body)

    def _case(self) -> Case:
        self.next()
        tok = self.next()
        if tok.kind != "word" or tok.word is None:
            raise self.unexpected(tok)
        subject = tok.word
        self._skip_newlines()
        self._expect_word("in")
        items: list[CaseItem] = []
        while True:
            self._skip_newlines()
            tok = self.next()
            if tok.reserved() == "esac":
                return Case(subject, items)
            if tok.kind == "op" and tok.value == "(":
                tok = self.next()
            patterns: list[Word] = []
            while True:
                if tok.kind != "word" or tok.word is None:
                    raise self.unexpected(tok, ")")
                patterns.append(tok.word)
                tok = self.next()
                if tok.kind == "op" and tok.value == "|":
                    tok = self.next()
                    continue
                if tok.kind == "op" and tok.value == ")":
                    break
                raise self.unexpected(tok, ")")
            body = self.parse_list(stop_words=frozenset({"esac"}))
            items.append(CaseItem(patterns, body))
            tok = self.peek()
            if tok.kind == "op" and tok.value == ";;":
                self.next()
            elif tok.reserved() == "esac":
                continue
            else:
                raise self.unexpected(tok, ";;")


def _assignment(word: Word) -> tuple[str, Word] | None:
    """`NAME=value` (the name and the = unquoted) -> (NAME, value word)."""
    first = word.parts[0] if word.parts else None
    if not isinstance(first, Lit) or first.quoted:
        return None
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)=", first.text)
    if m is None:
        return None
    rest = first.text[m.end():]
    parts = ((Lit(rest, False),) if rest else ()) + word.parts[1:]
    return m.group(1), Word(parts)


def _heredoc_delimiter(word: Word) -> tuple[str, bool]:
    """The delimiter text, and whether the body expands (it does not when any of it is quoted)."""
    text, quoted = [], False
    for part in word.parts:
        if not isinstance(part, Lit):
            raise ShSyntaxError("Syntax error: podnet sh: a here-document delimiter must be "
                                "a plain word", 1)
        text.append(part.text)
        quoted = quoted or part.quoted
    return "".join(text), not quoted


def parse(script: str) -> Seq:
    return Parser(script).parse_program()
