"""Text filters (grep, head, tail, wc, tr, cut, sort, uniq, tee, seq, sed) and file commands.

`GNU_CASES` were recorded from dash with GNU coreutils 9.1, grep 3.8 and sed 4.9 (LC_ALL=C);
when those are installed the table is re-checked against them.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest

from agents.toolbox import ExecTarget, run_command

GNU_CASES: list[tuple[str, int, str, str]] = [
    ("printf 'b\\na\\nc\\na\\n' | sort",
     0, 'a\na\nb\nc\n',
     ''),
    ("printf 'b\\na\\nc\\na\\n' | sort -r | uniq",
     0, 'c\nb\na\n',
     ''),
    ("printf '10\\n9\\n100\\n' | sort -n",
     0, '9\n10\n100\n',
     ''),
    ("printf '10\\n9\\n100\\n' | sort",
     0, '10\n100\n9\n',
     ''),
    ("printf 'a 3\\nb 1\\nc 2\\n' | sort -k 2 -n",
     0, 'b 1\nc 2\na 3\n',
     ''),
    ("printf 'x\\nx\\ny\\nx\\n' | uniq -c",
     0, '      2 x\n      1 y\n      1 x\n',
     ''),
    ("printf 'x\\nx\\ny\\n' | uniq -d; printf 'x\\nx\\ny\\n' | uniq -u",
     0, 'x\ny\n',
     ''),
    ('seq 5 | head -n 2; seq 5 | head -3; seq 5 | tail -n 2; seq 5 | tail -n'
     ' +4; seq 3 | tail -1',
     0, '1\n2\n1\n2\n3\n4\n5\n4\n5\n3\n',
     ''),
    ("printf 'hello world\\nfoo\\n' | wc -l; printf 'hello world\\nfoo\\n' | wc "
     "-w; printf 'hello world\\nfoo\\n' | wc -c",
     0, '2\n3\n16\n',
     ''),
    ("printf 'hello world\\nfoo\\n' | wc",
     0, '      2       3      16\n',
     ''),
    ("echo hello | tr a-z A-Z; echo hello | tr -d l; echo 'a  b   c' | tr -s"
     " ' '; echo abc | tr abc xyz; echo 'a:b' | tr ':' '\\n'",
     0, 'HELLO\nheo\na b c\nxyz\na\nb\n',
     ''),
    ("echo 'Hello World' | tr '[:upper:]' '[:lower:]'",
     0, 'hello world\n',
     ''),
    ("echo 'a,b,c' | cut -d, -f2; echo 'a,b,c' | cut -d, -f1,3; echo 'a,b,c'"
     ' | cut -d, -f2-; echo abcdef | cut -c2-4; echo nodelim | cut -d, -f2',
     0, 'b\na,c\nb,c\nbcd\nnodelim\n',
     ''),
    ("printf 'apple\\nbanana\\ncherry\\n' | grep an; echo $?",
     0, 'banana\n0\n',
     ''),
    ("printf 'apple\\nbanana\\ncherry\\n' | grep -v an",
     0, 'apple\ncherry\n',
     ''),
    ("printf 'apple\\nBanana\\ncherry\\n' | grep -i BAN; printf 'a\\nb\\na\\n' | g"
     "rep -c a; printf 'a\\nb\\n' | grep -n b",
     0, 'Banana\n2\n2:b\n',
     ''),
    ("printf 'apple\\nbanana\\n' | grep -q zz; echo $?; printf 'apple\\n' | gre"
     'p -q app; echo $?',
     0, '1\n0\n',
     ''),
    ("printf 'ab\\naab\\nb\\n' | grep -E 'a+b'; printf 'ab\\naab\\nb\\n' | grep 'a"
     "\\+b'; printf 'a+b\\nab\\n' | grep 'a+b'",
     0, 'ab\naab\nab\naab\na+b\n',
     ''),
    ("printf 'x1\\ny22\\n' | grep -o '[0-9]\\+'; printf 'foo bar\\nfoobar\\n' | g"
     "rep -w foo; printf 'ab\\nabc\\n' | grep -x ab",
     0, '1\n22\nfoo bar\nab\n',
     ''),
    ("printf 'one\\ntwo\\n' | grep -e one -e two; printf 'a1\\nb\\n' | grep '[[:digit:]]'",
     0, 'one\ntwo\na1\n',
     ''),
    ("printf 'x\\n' | grep '('; printf '(x\\n' | grep -F '('",
     0, '(x\n',
     ''),
    ('seq 3; seq 2 4; seq 1 2 7; seq -s, 3; seq -w 8 10; seq 5 1; seq 3 -1 1',
     0, '1\n2\n3\n2\n3\n4\n1\n3\n5\n7\n1,2,3\n08\n09\n10\n3\n2\n1\n',
     ''),
    ('seq 0.5 0.5 2',
     0, '0.5\n1.0\n1.5\n2.0\n',
     ''),
    ("echo hello | sed 's/l/L/'; echo hello | sed 's/l/L/g'; echo hello | se"
     "d 's/\\(h\\)\\(e\\)/\\2\\1/'; echo hello | sed -E 's/(l+)/[\\1]/'",
     0, 'heLlo\nheLLo\nehllo\nhe[ll]o\n',
     ''),
    ("seq 5 | sed -n '2p'; seq 5 | sed '3d'; seq 5 | sed -n '$p'; seq 5 | se"
     "d 2q; seq 3 | sed -n '/2/p'; echo abc | sed 's/b/&&/'",
     0, '2\n1\n2\n4\n5\n5\n1\n2\n2\nabbc\n',
     ''),
    ("printf 'a\\nb\\n' | sed = ; echo aaa | sed 's/a/x/2'; echo path/to/x | sed 's|/|_|g'",
     0, '1\na\n2\nb\naxa\npath_to_x\n',
     ''),
    ('echo hi | tee /dev/null',
     0, 'hi\n',
     ''),
    ("printf 'c\\nb\\na\\n' | sort | head -n 1",
     0, 'a\n',
     ''),
    ("echo 'a b' | wc -w",
     0, '2\n',
     ''),
    ("printf 'abc' | wc -c",
     0, '3\n',
     ''),
    ("printf 'k=v\\nx=y\\n' | cut -d= -f1 | sort -r",
     0, 'x\nk\n',
     ''),
]


def target() -> ExecTarget:
    return ExecTarget(net=None, pod="p", namespace="default", node="node-1",  # type: ignore[arg-type]
                      pod_ip="10.244.1.5", hostname="p", env={"PATH": "/bin"},
                      files={"/etc/hosts": "127.0.0.1\tlocalhost\n10.244.1.5\tp\n"})


async def sh(t: ExecTarget, script: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    out, err = bytearray(), bytearray()
    reader = None
    if stdin is not None:
        reader = asyncio.StreamReader()
        reader.feed_data(stdin)
        reader.feed_eof()
    code = await run_command(t, ["sh", "-c", script], reader, out.extend, err.extend)
    return code, out.decode(), err.decode()


@pytest.mark.parametrize(("script", "code", "out", "err"), GNU_CASES,
                         ids=[f"gnu{k}" for k in range(len(GNU_CASES))])
async def test_filters_behave_as_gnu(script: str, code: int, out: str, err: str) -> None:
    assert await sh(target(), script) == (code, out, err)


@pytest.mark.skipif(shutil.which("dash") is None or shutil.which("sed") is None,
                    reason="dash and GNU tools are not installed")
def test_the_table_is_what_gnu_does() -> None:
    for script, code, out, err in GNU_CASES:
        real = subprocess.run(["dash", "-c", script], capture_output=True, text=True,
                              env={"HOME": "/root", "PATH": "/usr/bin:/bin", "LC_ALL": "C"},
                              cwd="/", check=False)
        assert (real.returncode, real.stdout, real.stderr) == (code, out, err), script


async def test_filters_read_files_and_report_missing_ones() -> None:
    t = target()
    assert await sh(t, "grep -c localhost /etc/hosts; wc -l /etc/hosts; head -n1 /etc/hosts") \
        == (0, "1\n2 /etc/hosts\n127.0.0.1\tlocalhost\n", "")
    assert await sh(t, "grep x /nope; echo $?; wc -l /nope; echo $?") == (
        0, "2\n1\n", "grep: /nope: No such file or directory\n"
                     "wc: /nope: No such file or directory\n")
    assert await sh(t, "grep -s x /nope; echo $?") == (0, "2\n", "")


async def test_tee_and_sed_in_place_write_files() -> None:
    t = target()
    assert await sh(t, "echo one | tee /tmp/a; echo two | tee -a /tmp/a >/dev/null; cat /tmp/a") \
        == (0, "one\none\ntwo\n", "")
    assert await sh(t, "sed -i 's/one/ONE/' /tmp/a; cat /tmp/a") == (0, "ONE\ntwo\n", "")


async def test_usage_errors() -> None:
    t = target()
    assert await sh(t, "grep") == (2, "", "grep: Usage: grep [OPTION]... PATTERNS [FILE]...\n")
    assert await sh(t, "head -Z") == (2, "", "head: invalid option -- 'Z'\n")
    assert await sh(t, "tail -f /etc/hosts") == (
        1, "", "tail: -f is not supported by podnet's tail (files do not grow under a reader "
               "here)\n")
    assert await sh(t, "echo a | sed 'k'") == (
        1, "", "sed: -e expression #1, char 1: unknown command: `k'\n")


async def test_file_commands() -> None:
    t = target()
    result = await sh(t, "touch /tmp/healthy; cat /tmp/healthy && echo ok; rm -f /tmp/healthy; "
                         "cat /tmp/healthy; rm /tmp/healthy; mkdir /a/b; mkdir -p /a/b; ls /a")
    assert result == (0, "ok\nb\n", "cat: /tmp/healthy: No such file or directory\n"
                                    "rm: cannot remove '/tmp/healthy': No such file or "
                                    "directory\n"
                                    "mkdir: cannot create directory '/a/b': No such file or "
                                    "directory\n")
    code, out, _ = await sh(t, "date +%Y-%m-%d; date")
    assert code == 0
    day, full = out.splitlines()
    assert len(day) == 10 and full.endswith(day[:4]) and " UTC " in full
