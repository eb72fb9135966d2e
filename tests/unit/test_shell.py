"""The toolbox `sh`: scripts run against an ExecTarget, compared with what dash does.

`DASH_CASES` were recorded from dash 0.5.12 (`sh -c SCRIPT sh 'a b' c`, HOME=/root); when dash
is installed the table is also re-checked against it, so an expectation can never drift from
the real shell.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from agents.netstack import NodeNetwork, PodNet
from agents.toolbox import ExecTarget, run_command, vfs

CLIENT_IP, SERVER_IP = "10.244.1.5", "10.244.1.6"


@dataclass
class Result:
    code: int
    out: str
    err: str


DASH_CASES: list[tuple[str, int, str, str]] = [
    ('echo ${a b}',
     2, '',
     'sh: 1: Bad substitution\n'),
    ('if true; then echo',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting "fi")\n'),
    ('echo $((1/0))',
     2, '',
     'sh: 1: arithmetic expression: division by zero: "1/0"\n'),
    ('echo $((1 +))',
     2, '',
     'sh: 1: arithmetic expression: expecting primary: "1 +"\n'),
    ('[ a == a ]',
     2, '',
     'sh: 1: [: a: unexpected operator\n'),
    ('[ abc -eq 1 ]; echo $?',
     0, '2\n',
     'sh: 1: [: Illegal number: abc\n'),
    ('x=${y?}',
     2, '',
     'sh: 1: y: parameter not set\n'),
    ('x=${y:?boom}',
     2, '',
     'sh: 1: y: boom\n'),
    ('cd /nope; echo $?',
     0, '2\n',
     "sh: 1: cd: can't cd to /nope\n"),
    ('exit abc',
     2, '',
     'sh: 1: exit: Illegal number: abc\n'),
    ('shift 3',
     2, '',
     "sh: 1: shift: can't shift that many\n"),
    ('read',
     2, '',
     'sh: 1: read: arg count\n'),
    ('echo `echo a',
     2, '',
     'sh: 1: Syntax error: EOF in backquote substitution\n'),
    ('for 1 in a; do :; done',
     2, '',
     'sh: 1: Syntax error: Bad for loop variable\n'),
    ('case x in',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting ")")\n'),
    ('echo )',
     2, '',
     'sh: 1: Syntax error: ")" unexpected\n'),
    ('{ echo',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting "}")\n'),
    ('while true; do',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting "done")\n'),
    ('echo "a',
     2, '',
     'sh: 1: Syntax error: Unterminated quoted string\n'),
    ('set -u; echo $zz',
     2, '',
     'sh: 1: zz: parameter not set\n'),
    ('echo "$1" "$2" $# "$@" "$*" $0',
     0, 'a b c 2 a b c a b c sh\n',
     ''),
    ('for x in "$@"; do echo "[$x]"; done; for x in $@; do echo "<$x>"; done',
     0, '[a b]\n[c]\n<a>\n<b>\n<c>\n',
     ''),
    ('set -- ; for x in "$@"; do echo "[$x]"; done; echo "n=$#"',
     0, 'n=0\n',
     ''),
    ('a="x  y"; echo $a; echo "$a"; b=; echo ${b:-def} ${b-set} ${c-unset} ${#a}',
     0, 'x y\nx  y\ndef unset 4\n',
     ''),
    ('v=hello.tar.gz; echo ${v%.*} ${v%%.*} ${v#*.} ${v##*.}',
     0, 'hello.tar hello tar.gz gz\n',
     ''),
    ('echo ${u:=assigned} $u; echo ${u:+alt} ${nope:+alt}x',
     0, 'assigned assigned\nalt x\n',
     ''),
    ('IFS=:; x=a:b::c; for i in $x; do echo "[$i]"; done',
     0, '[a]\n[b]\n[]\n[c]\n',
     ''),
    ('echo $(( 2 + 3 * 4 )) $(( (2+3)*4 )) $(( 7 % 3 )) $(( -7 / 2 )) $(( 1 '
     '< 2 )) $(( 3 == 3 && 0 )) $(( 1 ? 5 : 6 )) $(( 0x10 + 010 ))',
     0, '14 20 1 -3 1 0 5 24\n',
     ''),
    ('i=5; echo $((i += 2)) $i $(( i * i ))',
     0, '7 7 49\n',
     ''),
    ('echo a; false; echo $?; true && echo t || echo f; false && echo t || e'
     'cho f; ! true; echo $?',
     0, 'a\n1\nt\nf\n1\n',
     ''),
    ('set -e; false || true; echo survived; ! false; echo still; false; echo never',
     1, 'survived\nstill\n',
     ''),
    ('set -e; if false; then :; fi; while false; do :; done; echo ok; f() { '
     'false; echo in-f; }; f || echo handled',
     0, 'ok\nin-f\n',
     ''),
    ('x=1; (x=2; echo in $x); echo out $x; { x=3; }; echo brace $x',
     0, 'in 2\nout 1\nbrace 3\n',
     ''),
    ('for i in 1 2 3; do for j in a b; do [ $j = b ] && continue 2; echo $i$j; done; done',
     0, '1a\n2a\n3a\n',
     ''),
    ('i=0; while :; do i=$((i+1)); [ $i -ge 5 ] && break; done; echo $i; unt'
     'il [ $i -le 0 ]; do i=$((i-1)); done; echo $i',
     0, '5\n0\n',
     ''),
    ('case "hello" in h*o) echo glob;; *) echo other;; esac; case x in a|x) '
     "echo alt;; esac; case '*' in \\*) echo star;; esac; case abc in [a-c]bc"
     ') echo br;; esac',
     0, 'glob\nalt\nstar\nbr\n',
     ''),
    ('echo \'single $x\' "double \\$x \\" \\\\ \\a" \\t\\$',
     0, 'single $x double $x " \\ \x07 t$\n',
     ''),
    ("echo -n no-newline; echo; echo 'a\\tb'; echo 'a\\nb'; echo 'x\\cy'; echo z",
     0, 'no-newline\na\tb\na\nb\nxz\n',
     ''),
    ("printf '%s|%d|%5s|%-3s|%03d|%x|%%\\n' str 42 r l 7 255; printf '%s\\n' a"
     " b c; printf 'no newline'; printf '\\n%d\\n' abc",
     1, 'str|42|    r|l  |007|ff|%\na\nb\nc\nno newline\n0\n',
     'sh: 1: printf: abc: expected numeric value\n'),
    ('x=$(echo hi; echo there); echo "$x"; y=`echo back`; echo $y; echo "$(e'
     'cho "nested $(echo deep)")"',
     0, 'hi\nthere\nback\nnested deep\n',
     ''),
    ("echo $(printf 'a\\n\\n\\n'); z=$(false); echo $?",
     0, 'a\n1\n',
     ''),
    ('f() { echo "args:$#:$1"; return 4; }; f x y; echo $?; g() { local v=in'
     '; echo $v; }; v=out; g; echo $v',
     0, 'args:2:x\n4\nin\nout\n',
     ''),
    ("echo a | { read x; echo got $x; }; printf 'one two three\\n' | { read a"
     ' b; echo "$a|$b"; }',
     0, 'got a\none|two three\n',
     ''),
    ('echo err 1>&2; echo out 2>&1; ls_missing 2>/dev/null; echo $?',
     0, 'out\n127\n',
     'err\n'),
    ('nope; echo $?',
     0, '127\n',
     'sh: 1: nope: not found\n'),
    ('echo $(( 1 + ))\necho never',
     2, '',
     'sh: 1: arithmetic expression: expecting primary: " 1 + "\n'),
    ('echo first\nif then',
     2, 'first\n',
     'sh: 2: Syntax error: "then" unexpected\n'),
    ('test -z ""; echo $?; test -n ""; echo $?; [ 1 -lt 2 ] && [ b \\> a ]; e'
     'cho $?; [ ! -z x -a -n y ]; echo $?; [ "(" = "(" ]; echo $?',
     0, '0\n1\n0\n0\n0\n',
     ''),
    ('[ 1 = 1 -o 1 = 2 ]; echo $?; [ -f /etc/passwd_nope ]; echo $?; [ ]; ec'
     'ho $?; [ x ]; echo $?; [ 1 -eq 1; echo $?',
     0, '0\n1\n1\n0\n2\n',
     'sh: 1: [: missing ]\n'),
    ('x=5; echo ${x}abc $xabc end; echo "${x}"\'${x}\'',
     0, '5abc end\n5${x}\n',
     ''),
    ('a=1 b=2; echo $a $b; c=3 true; echo "c=$c"',
     0, '1 2\nc=\n',
     ''),
    ('exit 7',
     7, '',
     ''),
    ('(exit 3); echo $?; (exit 300); echo $?',
     0, '3\n44\n',
     ''),
    ('eval \'echo eval $1\'; eval "x=9"; echo $x',
     0, 'eval a b\n9\n',
     ''),
    ("trap 'echo bye' EXIT; echo main",
     0, 'main\nbye\n',
     ''),
    ("trap 'echo bye' EXIT; exit 3",
     3, 'bye\n',
     ''),
    ('echo "$(( 5 > 3 ))" $(( 2 << 3 )) $(( ~0 )) $(( !5 ))',
     0, '1 16 -1 0\n',
     ''),
    ('readonly r=1; r=2; echo never',
     2, '',
     'sh: 1: r: is read only\n'),
    ('unset x; x=1; unset x; echo "[${x-unset}]"',
     0, '[unset]\n',
     ''),
    ('cat <<EOF\nline $1\n  \\$HOME "q"\nEOF\ncat <<\'EOF\'\nraw $1\nEOF\ncat <<-EOF\n\t'
     'tabbed\n\tEOF',
     0, 'line a b\n  $HOME "q"\nraw $1\ntabbed\n',
     ''),
    ('echo a && { echo b; false; } || echo c',
     0, 'a\nb\nc\n',
     ''),
    ('true | false; echo $?; false | true; echo $?; ! true | false; echo $?',
     0, '1\n0\n0\n',
     ''),
    ('echo "${#}" "${1}" ${10-none}',
     0, '2 a b none\n',
     ''),
    ('for i in a b; do echo $i; done > /dev/null; echo after',
     0, 'after\n',
     ''),
    ('x=abc; case $x in (abc) echo paren;; esac',
     0, 'paren\n',
     ''),
    ('f() {\n  echo multi\n}\nf',
     0, 'multi\n',
     ''),
    ('echo $((08))',
     2, '',
     'sh: 1: arithmetic expression: expecting EOF: "08"\n'),
    ('break; echo after-break',
     0, 'after-break\n',
     ''),
    ('echo "a" \\\n  "b"',
     0, 'a b\n',
     ''),
    ('echo \'it\'\'s\'; echo "a"\'b\'c',
     0, 'its\nabc\n',
     ''),
    ("x='a b'; set -- $x; echo $#",
     0, '2\n',
     ''),
    ('set -- 1 2 3; shift; echo "$@"; shift 2; echo "$#"',
     0, '2 3\n0\n',
     ''),
    ('echo ${x:-a b} "${x:-a b}"; for w in ${x:-a b}; do echo "[$w]"; done',
     0, 'a b a b\n[a]\n[b]\n',
     ''),
    ('echo $((3/2)) $((-3/2)) $((-3%2))',
     0, '1 -1 -1\n',
     ''),
    ('read -r a <<EOF\n  spaced  out  \nEOF\necho "[$a]"',
     0, '[spaced  out]\n',
     ''),
    ('echo $(( x = 3, 4 ))',
     2, '',
     'sh: 1: arithmetic expression: expecting EOF: " x = 3, 4 "\n'),
    ('x=1\necho $LINENO',
     0, '\n',
     ''),
    ("printf '%5.2f|%e\\n' 3.14159 1000",
     0, ' 3.14|1.000000e+03\n',
     ''),
    ('echo "${x:-"quoted default"}"',
     0, 'quoted default\n',
     ''),
    ('ec() { echo "$@"; }; ec a "b c"',
     0, 'a b c\n',
     ''),
    ('f() { return; }; false; f; echo $?',
     0, '1\n',
     ''),
    ('while',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting "do")\n'),
    ('while true',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting "do")\n'),
    ('if',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting "then")\n'),
    ('if true; then',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting "fi")\n'),
    ('if true; then echo; else',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting "fi")\n'),
    ('for x in a b',
     2, '',
     'sh: 1: Syntax error: end of file unexpected\n'),
    ('for x',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting "do")\n'),
    ('case x in a) echo',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting ";;")\n'),
    ('case x in a) echo;;',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting ")")\n'),
    ('{',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting "}")\n'),
    ('(',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting ")")\n'),
    ('( echo',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting ")")\n'),
    ('echo $(',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting ")")\n'),
    ('echo $( echo',
     2, '',
     'sh: 1: Syntax error: end of file unexpected (expecting ")")\n'),
    ('f()',
     2, '',
     'sh: 1: Syntax error: end of file unexpected\n'),
    ('echo ${x',
     2, '',
     "sh: 1: Syntax error: Missing '}'\n"),
    ('echo $((1+2',
     2, '',
     "sh: 1: Syntax error: Missing '))'\n"),
    ('cat <<EOF\nabc',
     0, 'abc',
     ''),
    ('echo a |',
     2, '',
     'sh: 1: Syntax error: end of file unexpected\n'),
    ('echo a &&',
     2, '',
     'sh: 1: Syntax error: end of file unexpected\n'),
    ('a=(1 2)',
     2, '',
     'sh: 1: Syntax error: "(" unexpected\n'),
    ('[[ a = a ]]',
     127, '',
     'sh: 1: [[: not found\n'),
    ('echo ${x/a/b}',
     2, '',
     'sh: 1: Bad substitution\n'),
    ('((x=1))',
     0, '',
     ''),
    ('echo hi >',
     2, '',
     'sh: 1: Syntax error: end of file unexpected\n'),
    ('then',
     2, '',
     'sh: 1: Syntax error: "then" unexpected\n'),
    ('fi',
     2, '',
     'sh: 1: Syntax error: "fi" unexpected\n'),
    ('done',
     2, '',
     'sh: 1: Syntax error: "done" unexpected\n'),
    ('echo a;;',
     2, '',
     'sh: 1: Syntax error: ";;" unexpected\n'),
    (';',
     2, '',
     'sh: 1: Syntax error: ";" unexpected\n'),
    ('echo a & ; echo b',
     2, '',
     'sh: 1: Syntax error: ";" unexpected\n'),
    ('echo a ;; echo b',
     2, '',
     'sh: 1: Syntax error: ";;" unexpected\n'),
    ('echo $((1 2))',
     2, '',
     'sh: 1: arithmetic expression: expecting EOF: "1 2"\n'),
    ('x=$((y+1)); echo $x; y=abc; echo $((y+1))',
     2, '1\n',
     'sh: 1: Illegal number: abc\n'),
    ('echo $((1 << 70)) $((9223372036854775807 + 1))',
     0, '64 -9223372036854775808\n',
     ''),
    ('set -o errexit; false; echo no',
     1, '',
     ''),
    ('set -x; echo traced "a b"; x=1',
     0, 'traced a b\n',
     '+ echo traced a b\n+ x=1\n'),
    ('set -f; echo /e*; set +f',
     0, '/e*\n',
     ''),
    ('echo *.nothing',
     0, '*.nothing\n',
     ''),
    ('local x',
     2, '',
     'sh: 1: local: not in a function\n'),
    ('x=1; readonly x; x=2',
     2, '',
     'sh: 1: x: is read only\n'),
    ('f() { echo $1; }; f "$@"',
     0, 'a b\n',
     ''),
    ('echo "$@" "$*"',
     0, 'a b c a b c\n',
     ''),
    ('IFS=; set -- a b; echo "$*"',
     0, 'ab\n',
     ''),
    ('echo ${#1}',
     0, '3\n',
     ''),
    (': ${x?is required}',
     2, '',
     'sh: 1: x: is required\n'),
    ('echo "${x:?}"',
     2, '',
     'sh: 1: x: parameter not set or null\n'),
    ('echo one\nexit 4\necho two',
     4, 'one\n',
     ''),
    ('echo `echo \\`echo nested\\``',
     0, 'nested\n',
     ''),
    ('echo "a\\"b" \'c\\d\' e\\ f',
     0, 'a"b c\\d e f\n',
     ''),
    ("echo $'a'",
     0, '$a\n',
     ''),
    ('x="a\nb"; echo "$x" | while read l; do echo "<$l>"; done',
     0, '<a>\n<b>\n',
     ''),
    ('printf "%b\\n" \'a\\tb\\c\' zz; printf "%c%c\\n" hello world; printf \'%i\\n\' '
     "0x1f; printf '%s %s\\n' only",
     0, 'a\tbhw\n31\nonly \n',
     ''),
    ('echo $HOME/$PATH',
     0, '/root//bin\n',
     ''),
    ('a=b=c; echo $a',
     0, 'b=c\n',
     ''),
    ('echo a#b #c',
     0, 'a#b\n',
     ''),
    ('echo \'#\' "#"',
     0, '# #\n',
     ''),
    ('echo ${#x} ${x:-} x',
     0, '0 x\n',
     ''),
    ('test 5 -gt 3 -a 2 -lt 1; echo $?',
     0, '1\n',
     ''),
    ('test \\( 1 -eq 1 \\); echo $?',
     0, '0\n',
     ''),
    ('IFS=:; echo a:b; x=c:d; echo $x "$x"; IFS=o; echo foo',
     0, 'a:b\nc d c:d\nfoo\n',
     ''),
    ('IFS=,; set -- x,y; echo $1; for w in a,b ${1}; do echo "[$w]"; done',
     0, 'x y\n[a,b]\n[x]\n[y]\n',
     ''),
    ('x="1 2"; for w in pre$x; do echo "[$w]"; done; for w in "pre$x"; do echo "[$w]"; done',
     0, '[pre1]\n[2]\n[pre1 2]\n',
     ''),
    ('echo $(echo a b)c "$(echo a  b)"',
     0, 'a bc a b\n',
     ''),
    ('IFS=:; x=a:b; echo ${x:-q:r} ${y:-q:r}',
     0, 'a b q r\n',
     ''),
    ('echo "a\\$b" \'c"d\' "e\'f" \\"g\\" "h\\\\i" "j\\k" `echo "l\\$m"`',
     0, 'a$b c"d e\'f "g" h\\i j\\k l\n',
     ''),
    ('echo "$(echo "inner \\"quoted\\"")" "$(case x in x) echo c;; esac)"',
     0, 'inner "quoted" c\n',
     ''),
    ('f() { echo "[$*]" "[$@]" "$#"; }; f; f ""; f a "" b',
     0, '[] [] 0\n[] [] 1\n[a  b] [a  b] 3\n',
     ''),
    ('set -- a "b c"; for x; do echo "<$x>"; done; echo "${#}" "${@}"',
     0, '<a>\n<b c>\n2 a b c\n',
     ''),
    ('while read a b; do echo "$b/$a"; done <<EOF\n1 one\n2 two three\nEOF',
     0, 'one/1\ntwo three/2\n',
     ''),
    ('IFS=: read a b <<EOF\nx:y:z\nEOF\necho "$a|$b"',
     0, 'x|y:z\n',
     ''),
    ('(exit 2) | true; echo $?; true | (exit 3); echo $?',
     0, '0\n3\n',
     ''),
    ('f() { echo in; exit 4; echo never; }; (f); echo sub $?; f; echo never',
     4, 'in\nsub 4\nin\n',
     ''),
    ('for i in 1 2 3; do f() { [ $i = 2 ] && return 9; echo f$i; }; f; echo st $?; done',
     0, 'f1\nst 0\nst 9\nf3\nst 0\n',
     ''),
    ('x=5; while [ $x -gt 0 ]; do x=$((x-2)); [ $x = 1 ] && continue; echo $x; done',
     0, '3\n-1\n',
     ''),
    ('case "" in "") echo empty;; esac; case a.b in *.*) echo dot;; esac; ca'
     'se x in [!a-c]) echo neg;; esac',
     0, 'empty\ndot\nneg\n',
     ''),
    ('echo ${x-$(echo sub)} ${x:=set} ${x#s} ${x%t}',
     0, 'sub set et se\n',
     ''),
    ('a=1; b=$a$a; c="$b-${a}x"; echo $c; d=\'$a\'; echo $d; e=$(echo \'$a\'); echo $e',
     0, '11-1x\n$a\n$a\n',
     ''),
    ('echo $(( 10 % 3 * 2 )) $(( 2 ** 3 ))',
     2, '',
     'sh: 1: arithmetic expression: expecting primary: " 2 ** 3 "\n'),
    ('echo $(( (1 + 2) * (3 - 1) / 2 ))',
     0, '3\n',
     ''),
    ('x=3; echo $(( x++ ))',
     2, '',
     'sh: 1: arithmetic expression: expecting primary: " x++ "\n'),
    ('echo ${x:-`echo bq`}',
     0, 'bq\n',
     ''),
    ('[ -n "$UNSET" ] || echo unset-empty; [ "$UNSET" = "" ] && echo eq',
     0, 'unset-empty\neq\n',
     ''),
    ('test 3 -eq 3 && test a != b && test -z "" && echo alltrue',
     0, 'alltrue\n',
     ''),
    ('v="multi word"; [ "$v" = "multi word" ] && echo match; [ $v = x ] 2>/dev/null; echo $?',
     0, 'match\n2\n',
     ''),
    ('echo a > /dev/null 2>&1 && echo ok',
     0, 'ok\n',
     ''),
    ('{ echo one; echo two; } | while read l; do echo "got $l"; done',
     0, 'got one\ngot two\n',
     ''),
    ('echo $(echo one; echo two) | wc -w',
     0, '2\n',
     ''),
    ('x=$(cat <<EOF\nhere\nEOF\n); echo "[$x]"',
     0, '[here]\n',
     ''),
    ("printf '%s=%s\\n' a 1 b 2; printf '%-5s|\\n' ab; printf '%5d|%-5d|\\n' 42"
     " 42; printf '%.2s\\n' abcdef",
     0, 'a=1\nb=2\nab   |\n   42|42   |\nab\n',
     ''),
    ('printf \'%s\\n\' "$(printf \'x\\ty\')"; printf \'A%bB\\n\' \'q\\nr\'',
     0, 'x\ty\nAq\nrB\n',
     ''),
    ('echo "tab\there" | cut -f2',
     0, 'here\n',
     ''),
    ('i=0; until [ $i -ge 3 ]; do i=$((i+1)); done; echo $i',
     0, '3\n',
     ''),
    ('echo "$((1+1))" "$(( $(echo 3) * 2 ))"',
     0, '2 6\n',
     ''),
    ('echo \\\ncontinued',
     0, 'continued\n',
     ''),
    ('echo "x" # comment; echo no',
     0, 'x\n',
     ''),
    ('echo \'a # b\' "c # d" e#f',
     0, 'a # b c # d e#f\n',
     ''),
    ('true; echo ${?}; false; echo "$?"',
     0, '0\n1\n',
     ''),
    ('echo ${#HOME} ${HOME%/*}x ${HOME##*/}',
     0, '5 x root\n',
     ''),
    ('x=abcabc; echo ${x#*b} ${x##*b} ${x%b*} ${x%%b*}',
     0, 'cabc c abca a\n',
     ''),
    ('set -- 1 2 3 4 5 6 7 8 9 10 11; echo $10 ${10} ${11}',
     0, '10 10 11\n',
     ''),
    ('echo "${x:-}" end; echo "${x-}" end',
     0, ' end\n end\n',
     ''),
    ('unset x; echo ${x:+yes}no; x=; echo ${x+yes}set; echo ${x:+yes}empty',
     0, 'no\nyesset\nempty\n',
     ''),
    ('f() { local x=1; x=2; echo $x; }; x=0; f; echo $x',
     0, '2\n0\n',
     ''),
    ('set -e; x=$(false); echo notreached',
     1, '',
     ''),
    ('set -e; false && true; echo continues',
     0, 'continues\n',
     ''),
    ('set -e; (false); echo notreached',
     1, '',
     ''),
    ('set -e; ! false; true | false; echo notreached',
     1, '',
     ''),
    ('cd /tmp && cd .. && pwd && cd / && pwd',
     0, '/\n/\n',
     ''),
    ('echo *.nonexist "*" \'*\'',
     0, '*.nonexist * *\n',
     ''),
    ('exec echo replaced; echo never',
     0, 'replaced\n',
     ''),
    ("eval 'for i in 1 2; do echo e$i; done'",
     0, 'e1\ne2\n',
     ''),
    ('x=\'echo hi\'; $x; "$x"',
     127, 'hi\n',
     'sh: 1: echo hi: not found\n'),
    ('echo start; exit; echo never',
     0, 'start\n',
     ''),
    ('false; exit',
     1, '',
     ''),
]


async def _http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n")
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _resolve(name: str) -> list[str]:
    return [SERVER_IP] if name == "web" else []


@pytest.fixture
async def node() -> AsyncIterator[NodeNetwork]:
    network = NodeNetwork("node-1", "10.244.1.0/24")
    yield network
    for pod in network.pods():
        network.detach(pod.ip)
    for _ in range(50):
        await asyncio.sleep(0)
    # Every shell, pipeline stage and background job has ended with its test.
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


@pytest.fixture
async def target(node: NodeNetwork) -> AsyncIterator[ExecTarget]:
    server = node.attach(SERVER_IP, pod="web-0", namespace="default", hostname="web-0")
    listener = await server.start_server(_http, None, 80)
    net: PodNet = node.attach(CLIENT_IP, pod="client", namespace="default", hostname="client")
    net.resolver = _resolve
    yield ExecTarget(net=net, pod="client", namespace="default", node="node-1",
                     pod_ip=CLIENT_IP, hostname="client",
                     env={"HOME": "/root", "PATH": "/bin", "GREETING": "hi there"},
                     files={"/etc/hostname": "client\n", "/etc/hosts": "127.0.0.1 localhost\n"})
    listener.close()


async def sh(target: ExecTarget, script: str, *args: str, stdin: bytes | None = None,
             tty: bool = False) -> Result:
    out, err = bytearray(), bytearray()
    reader = None
    if stdin is not None:
        reader = asyncio.StreamReader()
        reader.feed_data(stdin)
        reader.feed_eof()
    argv = ["sh", "-c", script, *args] if script else ["sh"]
    code = await run_command(target, argv, reader, out.extend, err.extend, tty=tty)
    return Result(code, out.decode(), err.decode())


@pytest.mark.parametrize(("script", "code", "out", "err"), DASH_CASES,
                         ids=[f"dash{k}" for k in range(len(DASH_CASES))])
async def test_behaves_as_dash(target: ExecTarget, script: str, code: int, out: str,
                               err: str) -> None:
    assert await sh(target, script, "sh", "a b", "c") == Result(code, out, err)


@pytest.mark.skipif(shutil.which("dash") is None, reason="dash is not installed")
def test_the_table_is_what_dash_does() -> None:
    for script, code, out, err in DASH_CASES:
        real = subprocess.run(["dash", "-c", script, "sh", "a b", "c"], capture_output=True,
                              text=True, env={"HOME": "/root", "PATH": "/bin"}, cwd="/",
                              check=False)
        assert (real.returncode, real.stdout, real.stderr) == (code, out, err), script


async def test_the_issue_script(target: ExecTarget) -> None:
    script = ('for i in 1 2 3; do echo $i $(hostname); done | wc -l; x=$(echo hi); '
              '[ "$x" = hi ] && echo ok > /tmp/f; cat /tmp/f')
    assert await sh(target, script) == Result(0, "3\nok\n", "")
    assert target.files["/tmp/f"] == "ok\n"


async def test_redirections_use_the_containers_files(target: ExecTarget) -> None:
    result = await sh(target, "echo hi > /tmp/x; echo more >> /tmp/x; cat /tmp/x; "
                              "wc -l < /tmp/x; echo gone > /dev/null; cat /etc/hostname")
    assert result == Result(0, "hi\nmore\n2\nclient\n", "")
    assert target.files["/tmp/x"] == "hi\nmore\n"
    assert await sh(target, "echo x > /nope/f; echo $?; cat < /nope") == Result(
        2, "2\n", "sh: 1: cannot create /nope/f: Directory nonexistent\n"
                  "sh: 1: cannot open /nope: No such file\n")
    assert await sh(target, "{ echo out; echo err >&2; } > /tmp/both 2>&1; cat /tmp/both") \
        == Result(0, "out\nerr\n", "")
    assert await sh(target, "echo a 2>/dev/null >&2") == Result(0, "", "")


async def test_a_file_cannot_grow_without_bound(target: ExecTarget) -> None:
    result = await sh(target, 'x=$(printf "%100000s" ""); i=0; '
                              'while [ $i -lt 100 ]; do echo "$x" >> /tmp/log || break; '
                              'i=$((i+1)); done; echo $i')
    assert result == Result(0, "41\n", "sh: 1: write error: No space left on device\n")
    assert len(target.files["/tmp/log"]) <= vfs.MAX_FILE_BYTES


async def test_cd_and_relative_paths(target: ExecTarget) -> None:
    result = await sh(target, "cd /tmp && echo hi > f && cat /tmp/f && cat f && pwd; "
                              "(cd /etc; pwd); pwd; mkdir -p /data/d; cd /data/d; touch g; ls")
    assert result == Result(0, "hi\nhi\n/tmp\n/etc\n/tmp\ng\n", "")


async def test_environment_of_commands(target: ExecTarget) -> None:
    script = ("X=1; env | grep ^X=; export X; env | grep ^X=; Y=2 printenv Y; "
              "echo \"[$Y]\"; unset GREETING; printenv GREETING; echo $?")
    assert await sh(target, script) == Result(0, "X=1\n2\n[]\n1\n", "")


async def test_arguments_and_nested_shells(target: ExecTarget) -> None:
    assert await sh(target, 'echo "$0|$1|$#"', "name", "one") == Result(0, "name|one|1\n", "")
    assert await sh(target, "sh -c 'exit 3'; echo $?; bash -c 'echo $0' nested") == Result(
        0, "3\nnested\n", "")
    target.files["/tmp/s.sh"] = "#!/bin/sh\necho script $1\nexit 5\n"
    assert await sh(target, "sh /tmp/s.sh a; echo $?; /tmp/s.sh b") == Result(
        5, "script a\n5\nscript b\n", "")
    assert await sh(target, "env X=7 sh -c 'echo $X'") == Result(0, "7\n", "")


async def test_pipeline_reader_ending_stops_the_writer(target: ExecTarget) -> None:
    assert await sh(target, "while true; do echo y; done | head -n 2; echo $?") == Result(
        0, "y\ny\n0\n", "")
    assert await sh(target, "seq 1000000 | grep -q 5 && echo found") == Result(
        0, "found\n", "")
    result = await sh(target, "while :; do echo y; done | (read a; echo $a); echo ${PIPESTATUS:-x}")
    assert result == Result(0, "y\nx\n", "")


async def test_pipefail_is_accepted(target: ExecTarget) -> None:
    assert await sh(target, "set -o pipefail; false | true; echo $?") == Result(0, "1\n", "")


async def test_background_jobs_run_concurrently(target: ExecTarget) -> None:
    # `sleep infinity` would block a shell that ran it in the foreground.
    result = await sh(target, "sleep infinity & echo started; kill $!; wait $!; echo $?")
    assert result == Result(0, "started\n143\n", "")
    assert await sh(target, "(sleep 0; echo job) & wait; echo after") == Result(
        0, "job\nafter\n", "")
    # A job still running when the shell exits is stopped with it.
    assert await sh(target, "sleep infinity & exit 4") == Result(4, "", "")


async def test_read_from_stdin(target: ExecTarget) -> None:
    # As in every sh, a last line without its newline ends the loop (read returns 1).
    result = await sh(target, 'while read -r line; do echo "<$line>"; done; echo "end $line"',
                      stdin=b"a b\n c\\d \nlast")
    assert result == Result(0, "<a b>\n<c\\d>\nend last\n", "")


async def test_commands_from_stdin(target: ExecTarget) -> None:
    script = b"i=0\nwhile [ $i -lt 2 ]; do\n  echo $i\n  i=$((i+1))\ndone\nexit 6\necho never\n"
    assert await sh(target, "", stdin=script) == Result(6, "0\n1\n", "")
    assert await sh(target, "", stdin=b"echo a\nif then\necho b\n") == Result(
        2, "a\n", 'sh: 2: Syntax error: "then" unexpected\n')


async def test_an_interactive_terminal_session(target: ExecTarget) -> None:
    """`kubectl exec -it POD -- sh`: raw keystrokes in, a pty's cooked behaviour out."""
    keys = asyncio.StreamReader()
    out = bytearray()
    shell = asyncio.create_task(run_command(target, ["sh"], keys, out.extend, out.extend,
                                            tty=True))

    async def typed(data: bytes) -> None:
        keys.feed_data(data)
        for _ in range(20):
            await asyncio.sleep(0)

    await typed(b"echo hi\r")                 # Enter is CR; input is echoed
    await typed(b"ecx\x7fho a\x1b[Ab\r")      # Backspace erases; an arrow key is ignored
    await typed(b"sleep infinity\r")
    await typed(b"\x03")                      # Ctrl-C interrupts the foreground command
    await typed(b"echo $?\r")
    await typed(b"if true\r")                 # an incomplete command asks for more
    await typed(b"then echo multi; fi\r")
    await typed(b"half\x03")                  # Ctrl-C at the prompt drops the line
    await typed(b"nope\r")                    # an error does not end an interactive shell
    await typed(b"exit 3\r")
    assert await shell == 3
    assert bytes(out) == (
        b"# echo hi\r\nhi\r\n"
        b"# ecx\x08 \x08ho ab\r\nab\r\n"
        b"# sleep infinity\r\n^C\r\n"
        b"# echo $?\r\n130\r\n"
        b"# if true\r\n> then echo multi; fi\r\nmulti\r\n"
        b"# half^C\r\n"
        b"# nope\r\nsh: 7: nope: not found\r\n"
        b"# exit 3\r\n")


async def test_echo_takes_busyboxs_e_option(target: ExecTarget) -> None:
    # dash would print "-e GET ..."; the images' busybox sh takes -e, and tutorials use it.
    assert await sh(target, r'echo -e "GET / HTTP/1.1\r\n"; echo -E "a\tb"; echo -ne x') == Result(
        0, "GET / HTTP/1.1\r\n\na\\tb\nx", "")


async def test_xtrace(target: ExecTarget) -> None:
    assert await sh(target, "set -x; x=1; echo $x") == Result(0, "1\n", "+ x=1\n+ echo 1\n")


async def test_glob(target: ExecTarget) -> None:
    assert await sh(target, "for f in /etc/host*; do echo $f; done; echo /nomatch*") == Result(
        0, "/etc/hostname\n/etc/hosts\n/nomatch*\n", "")


@pytest.mark.parametrize(("script", "message"), [
    ("exec 3>&1", "sh: 1: exec: permanent redirections are not supported by podnet sh\n"),
    ("echo hi 3>/dev/null", "sh: 1: file descriptor 3 is not supported (podnet sh has 0, 1 "
                            "and 2)\n"),
    ("getopts a b", "sh: 1: getopts: not supported by podnet sh\n"),
    ("cat <>/tmp/x", "sh: 1: <> is not supported\n"),
])
async def test_refused_clearly(target: ExecTarget, script: str, message: str) -> None:
    assert await sh(target, script + "; echo never") == Result(2, "", message)


async def test_limits_end_hostile_scripts(target: ExecTarget) -> None:
    result = await sh(target, "x=$(while :; do echo aaaaaaaaaaaaaaaaaaaaaaaa; done); "
                              "echo ${#x} $?")
    assert result.code == 0 and result.out == "1048576 2\n"
    assert "command substitution output is over 1048576 bytes (podnet limit)" in result.err
    result = await sh(target, "x=a; while :; do x=$x$x; done")
    assert result.code == 2 and "x: value is over 1048576 bytes (podnet limit)" in result.err
    result = await sh(target, "f() { f; }; f")
    assert result.code == 2 and "nested too deeply" in result.err
    result = await sh(target, "while :; do sleep infinity & done")
    assert result.code == 2 and "Cannot fork (podnet limit: 64 background jobs)" in result.err
    result = await sh(target, "echo 'sh /tmp/me' > /tmp/me; sh /tmp/me")
    assert result.code == 2 and "nested too deeply" in result.err


async def test_a_busy_loop_does_not_starve_the_event_loop(target: ExecTarget) -> None:
    shell = asyncio.create_task(sh(target, "while :; do :; done"))
    for _ in range(200):
        await asyncio.sleep(0)  # would never come back if the loop did not yield
    assert not shell.done()
    shell.cancel()
    with pytest.raises(asyncio.CancelledError):
        await shell


async def test_a_polling_main_process_runs_until_cancelled(target: ExecTarget) -> None:
    seen = asyncio.Event()
    out = bytearray()

    def collect(data: bytes) -> None:
        out.extend(data)
        if out.count(b"hello\n") >= 3:
            seen.set()

    script = "while true; do wget -qO- http://web; sleep 0.01; done"
    shell = asyncio.create_task(run_command(target, ["sh", "-c", script], None, collect,
                                            collect), name="main process")
    await asyncio.wait_for(seen.wait(), 30)
    shell.cancel()
    with pytest.raises(asyncio.CancelledError):
        await shell
    assert re.fullmatch(rb"(hello\n)+", bytes(out))


async def test_sigpipe_ends_a_writer_that_writes_from_other_tasks(target: ExecTarget) -> None:
    # ping prints from one task per probe; the reader leaving must still end it.
    result = await sh(target, "ping -i 0.01 web | head -n 2; echo $?")
    assert result.code == 0 and result.err == ""
    lines = result.out.splitlines()
    assert lines[0].startswith(f"PING web ({SERVER_IP})") and lines[2] == "0"
    assert lines[1].startswith(f"64 bytes from {SERVER_IP}: icmp_seq=1")
    result = await sh(target, "(while :; do echo y; done; echo never >&2) | head -n 1")
    assert result == Result(0, "y\n", "")
