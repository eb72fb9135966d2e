"""The shell's pure parts: parser, arithmetic, field splitting and patterns (no I/O)."""

from __future__ import annotations

import pytest

from agents.toolbox import sharith, shexpand
from agents.toolbox.shparse import (
    MAX_DEPTH,
    AndOr,
    Arith,
    Case,
    CmdSub,
    For,
    FuncDef,
    If,
    Lit,
    Loop,
    Param,
    Parser,
    Pipeline,
    Redir,
    Redirected,
    Seq,
    ShSyntaxError,
    Simple,
    Subshell,
    Word,
    parse,
)


def only(seq: Seq) -> AndOr:
    assert len(seq.items) == 1
    return seq.items[0][0]


def command(script: str) -> object:
    and_or = only(parse(script))
    assert not and_or.rest and len(and_or.first.cmds) == 1
    return and_or.first.cmds[0]


def lit(text: str, quoted: bool = False) -> Word:
    return Word((Lit(text, quoted),))


def test_simple_command_words_assignments_and_redirections() -> None:
    cmd = command("A=1 B='x y' echo hi 2>&1 >/tmp/out \"q\"")
    assert isinstance(cmd, Simple)
    assert cmd.assigns == [("A", lit("1")), ("B", lit("x y", True))]
    assert cmd.words == [lit("echo"), lit("hi"), lit("q", True)]
    assert cmd.redirs == [Redir(2, ">&", lit("1")), Redir(1, ">", lit("/tmp/out"))]


def test_an_assignment_after_the_command_name_is_a_word() -> None:
    cmd = command("echo A=1")
    assert isinstance(cmd, Simple) and cmd.assigns == [] and cmd.words[1] == lit("A=1")


def test_lists_and_or_background_and_pipelines() -> None:
    seq = parse("a && b || ! c | d; e & f\ng")
    assert [bg for _, bg in seq.items] == [False, True, False, False]
    first = seq.items[0][0]
    assert [op for op, _ in first.rest] == ["&&", "||"]
    negated = first.rest[1][1]
    assert isinstance(negated, Pipeline) and negated.negate and len(negated.cmds) == 2


def test_parameter_forms() -> None:
    cmd = command('echo $A ${B} ${#C} ${D:-x y} "${E%%.*}" $1 ${10} $@ "$*" $? $$ $#')
    assert isinstance(cmd, Simple)
    parts = [w.parts[0] for w in cmd.words[1:]]
    assert parts[0] == Param("A", False)
    assert parts[1] == Param("B", False)
    assert parts[2] == Param("C", False, length=True)
    assert parts[3] == Param("D", False, op=":-", arg=Word((Lit("x y", False),)))
    assert parts[4] == Param("E", True, op="%%", arg=Word((Lit(".*", True),)))
    assert [p.name for p in parts[5:] if isinstance(p, Param)] == [
        "1", "10", "@", "*", "?", "$", "#"]


def test_substitutions_nest() -> None:
    cmd = command('echo "$(echo "$(hostname)")" `echo a` $((1 + $X))')
    assert isinstance(cmd, Simple)
    outer = cmd.words[1].parts[0]
    assert isinstance(outer, CmdSub) and outer.quoted
    inner_cmd = only(outer.body).first.cmds[0]
    assert isinstance(inner_cmd, Simple)
    assert isinstance(inner_cmd.words[1].parts[0], CmdSub)
    assert isinstance(cmd.words[2].parts[0], CmdSub)
    arith = cmd.words[3].parts[0]
    assert isinstance(arith, Arith) and arith.expr.parts[1] == Param("X", True)


def test_compound_commands() -> None:
    assert isinstance(command("if a; then b; elif c; then d; else e; fi"), If)
    loop = command("while true; do echo; done")
    assert isinstance(loop, Loop) and not loop.until
    assert isinstance(command("until false\ndo\n:\ndone"), Loop)
    for_cmd = command("for i in 1 2 3; do echo $i; done")
    assert isinstance(for_cmd, For) and for_cmd.var == "i" and len(for_cmd.words or []) == 3
    positional = command("for i\ndo :; done")
    assert isinstance(positional, For) and positional.words is None
    case = command("case $x in a|b) one;; (c*) two;; *) ;; esac")
    assert isinstance(case, Case) and [len(i.patterns) for i in case.items] == [2, 1, 1]
    assert isinstance(command("( cd /tmp; ls )"), Subshell)
    func = command("f() { echo hi; }")
    assert isinstance(func, FuncDef) and func.name == "f"
    redirected = command("while read l; do echo $l; done < /tmp/in")
    assert isinstance(redirected, Redirected) and isinstance(redirected.cmd, Loop)


def test_here_documents() -> None:
    cmd = command("cat <<EOF\nhello $USER\n  \\$x\nEOF")
    assert isinstance(cmd, Simple)
    body = cmd.redirs[0].heredoc
    assert body is not None and body.parts[1] == Param("USER", True)
    quoted = command("cat <<'EOF'\nraw $x\nEOF")
    assert isinstance(quoted, Simple) and quoted.redirs[0].heredoc == lit("raw $x\n", True)
    tabs = command("cat <<-END\n\tindented\n\tEND")
    assert isinstance(tabs, Simple) and tabs.redirs[0].heredoc == lit("indented\n", True)


def test_comments_and_line_continuations() -> None:
    cmd = command("echo a \\\n  b # a comment")
    assert isinstance(cmd, Simple) and cmd.words == [lit("echo"), lit("a"), lit("b")]
    assert parse("# only a comment\n\n").items == []


def test_parse_line_stops_at_each_newline() -> None:
    parser = Parser("echo 1; echo 2\necho 3\n\n")
    first = parser.parse_line()
    assert first is not None and len(first.items) == 2
    second = parser.parse_line()
    assert second is not None and len(second.items) == 1
    assert parser.parse_line() is None


@pytest.mark.parametrize(("script", "message", "line"), [
    ('echo "a', "Syntax error: Unterminated quoted string", 1),
    ("echo 'a", "Syntax error: Unterminated quoted string", 1),
    ("if true; then echo", 'Syntax error: end of file unexpected (expecting "fi")', 1),
    ("while true; do", 'Syntax error: end of file unexpected (expecting "done")', 1),
    ("{ echo", 'Syntax error: end of file unexpected (expecting "}")', 1),
    ("case x in", 'Syntax error: end of file unexpected (expecting ")")', 1),
    ("case x in a) echo", 'Syntax error: end of file unexpected (expecting ";;")', 1),
    ("echo )", 'Syntax error: ")" unexpected', 1),
    ("echo a\nfi", 'Syntax error: "fi" unexpected', 2),
    ("for 1 in a; do :; done", "Syntax error: Bad for loop variable", 1),
    ("echo `echo a", "Syntax error: EOF in backquote substitution", 1),
    ("echo ${a b}", "Bad substitution", 1),
    ("echo ${x/a/b}", "Bad substitution", 1),
    ("a=(1 2)", 'Syntax error: "(" unexpected', 1),
    ("echo a &&", "Syntax error: end of file unexpected", 1),
    ("; echo", 'Syntax error: ";" unexpected', 1),
])
def test_syntax_errors_are_dashs(script: str, message: str, line: int) -> None:
    with pytest.raises(ShSyntaxError) as err:
        parse(script)
    assert (err.value.message, err.value.line) == (message, line)


def test_incomplete_is_told_apart_from_wrong() -> None:
    for script in ("if true; then", "echo 'a", "while :; do echo", "echo $(", "f() {"):
        with pytest.raises(ShSyntaxError) as err:
            parse(script)
        assert err.value.incomplete, script
    with pytest.raises(ShSyntaxError) as err:
        parse("echo )")
    assert not err.value.incomplete


def test_nesting_is_bounded() -> None:
    deep = "{ " * (MAX_DEPTH + 5) + "echo" + "; }" * (MAX_DEPTH + 5)
    with pytest.raises(ShSyntaxError) as err:
        parse(deep)
    assert "nesting too deep" in err.value.message
    subst = "$(" * (MAX_DEPTH + 5) + "echo" + ")" * (MAX_DEPTH + 5)
    with pytest.raises(ShSyntaxError):
        parse("echo " + subst)
    parse("{ " * 20 + "echo" + "; }" * 20)


def arith(text: str, env: dict[str, str] | None = None) -> int:
    values = env if env is not None else {}
    return sharith.evaluate(text, lambda n: values.get(n, ""), values.__setitem__)


def test_arithmetic() -> None:
    assert arith("2 + 3 * 4") == 14
    assert arith("(2 + 3) * 4") == 20
    assert arith("-7 / 2") == -3  # C truncates toward zero
    assert arith("-7 % 2") == -1
    assert arith("1 < 2 && 3 == 3") == 1
    assert arith("0 || 0") == 0
    assert arith("1 ? 5 : 6") == 5
    assert arith("0x10 + 010") == 24
    assert arith("~0") == -1
    assert arith("!5") == 0
    assert arith("2 << 3") == 16
    assert arith("9223372036854775807 + 1") == -9223372036854775808
    assert arith("x * 2", {"x": "21"}) == 42
    assert arith("unset + 1") == 1
    env = {"i": "5"}
    assert arith("i += 2", env) == 7 and env["i"] == "7"
    assert arith("0 && (j = 1)", env) == 0 and "j" not in env  # short-circuit


@pytest.mark.parametrize(("text", "message"), [
    ("1 / 0", "division by zero"),
    ("1 +", "expecting primary"),
    ("1 2", "expecting EOF"),
    ("(1", "expecting ')'"),
    ("x + 1", "Illegal number: abc"),
])
def test_arithmetic_errors(text: str, message: str) -> None:
    with pytest.raises(sharith.ArithError) as err:
        arith(text, {"x": "abc"})
    assert str(err.value) == message


def test_field_splitting() -> None:
    split = shexpand.split_fields
    ifs = shexpand.DEFAULT_IFS
    assert split([("  a  b ", False, True)], ifs) == [[("a", False)], [("b", False)]]
    assert split([("x", False, True), (" y", True, False)], ifs) == [[("x", False),
                                                                       (" y", True)]]
    assert split([("", True, False)], ifs) == [[("", True)]]  # "" is one empty field
    assert split([("", False, True)], ifs) == []  # an empty unquoted expansion is none
    assert split([("a", True, False), None, ("b", True, False)], ifs) == [[("a", True)],
                                                                          [("b", True)]]
    fields = split([("a:b::c", False, True)], ":")
    assert ["".join(t for t, _ in f) for f in fields] == ["a", "b", "", "c"]
    # Literal text is never split, only what expansions produce.
    assert split([("a:b", False, False)], ":") == [[("a:b", False)]]


def test_patterns() -> None:
    def matches(pattern: list[tuple[str, bool]], text: str) -> bool:
        return shexpand.pattern_regex(pattern).fullmatch(text) is not None

    assert matches([("h*o", False)], "hello")
    assert not matches([("h*o", True)], "hello")
    assert matches([("[a-c]?", False)], "bz")
    assert matches([("[!a]", False)], "b") and not matches([("[!a]", False)], "a")
    assert matches([("*", True)], "*") and not matches([("*", True)], "x")
    assert shexpand.strip("hello.tar.gz", [(".*", False)], "%") == "hello.tar"
    assert shexpand.strip("hello.tar.gz", [(".*", False)], "%%") == "hello"
    assert shexpand.strip("hello.tar.gz", [("*.", False)], "#") == "tar.gz"
    assert shexpand.strip("hello.tar.gz", [("*.", False)], "##") == "gz"


def test_glob_matches_the_virtual_files() -> None:
    files = {"/etc/hosts": "", "/etc/resolv.conf": "", "/etc/.hidden": "", "/tmp/a/b": ""}
    assert shexpand.glob([("/etc/*", False)], files, "/") == ["/etc/hosts", "/etc/resolv.conf"]
    assert shexpand.glob([("*.conf", False)], files, "/etc") == ["resolv.conf"]
    assert shexpand.glob([("/tmp/*", False)], files, "/") == ["/tmp/a"]
    assert shexpand.glob([("/nope/*", False)], files, "/") == []


def test_script_size_is_bounded() -> None:
    from agents.toolbox.shparse import MAX_SCRIPT_BYTES

    with pytest.raises(ShSyntaxError) as err:
        parse("#" * (MAX_SCRIPT_BYTES + 1))
    assert err.value.message == f"script too long (podnet limit {MAX_SCRIPT_BYTES} bytes)"
