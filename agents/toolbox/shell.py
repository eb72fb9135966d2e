"""`sh`: a POSIX shell subset that behaves and words its errors as dash does, and dispatching argv.

`sh -c SCRIPT [NAME [ARG...]]`, `sh FILE [ARG...]` (FILE from the container's files) and `sh`
reading commands from stdin (`echo hostname | kubectl exec -i POD -- sh`) run scripts of the
shape people paste from tutorials; `bash`, `ash` and `dash` are the same shell. `shparse` turns
the text into a tree (no I/O) one line at a time, as dash does; this module evaluates it
against the pod: toolbox commands run in the pod's network stack, redirections go to the
container's virtual files (`ExecTarget.files`, see `vfs`).

Supported:
- lists `;` newline `&&` `||` `!`, `{ ...; }`, `( ... )` (a subshell: its variable and cwd
  changes do not leak out), `cmd &` (runs concurrently, stdin /dev/null; `wait`, `$!`,
  `kill`), pipelines `a | b` (64 KiB pipe buffers with backpressure; writing once the reader
  has exited ends the writing stage as SIGPIPE would, status 141).
- `if`/`elif`/`else`, `while`, `until`, `for NAME [in WORDS]`, `case` with glob patterns,
  `break [N]`, `continue [N]`, functions `name() { ...; }` with `return` and `local`.
- words: quotes, backslashes, `$NAME ${NAME} $? $$ $# $@ $* $0..$9 ${10} $! $-`, `${#NAME}`,
  `${NAME:-w} ${NAME-w} ${NAME:=w} ${NAME:?w} ${NAME:+w} ${NAME#p} ${NAME##p} ${NAME%p}
  ${NAME%%p}`, `$(...)` and backquotes (trailing newlines stripped), `$((...))` (64-bit, C
  operators), `~`, field splitting on IFS, pathname expansion against the virtual files.
- assignments, `NAME=v cmd`, here-documents (`<<`, `<<-`, quoted delimiters), redirections
  `< > >> >| 2>&1 >&2 N>&-` into the virtual files (`/dev/null` discards, `/dev/stdout` and
  `/dev/stderr` are the streams).
- builtins: `: true false echo printf test [ cd pwd export readonly unset set shift exit exec
  eval . read wait kill trap command type local return break continue umask`. `echo` is
  dash's (backslash escapes always interpreted) but takes busybox's `-e`/`-E` options besides
  `-n`, since tutorials for these images write `echo -e`. `set` takes `-e -x -u -f` and
  `-o pipefail` (a busybox/bash option dash lacks, accepted because scripts use it).
- every loop iteration yields to the event loop, so `while true; do ...; done` as a pod's main
  process never starves the agent and stops as soon as the pod is deleted (the task is
  cancelled).
- on a terminal (`kubectl exec -it POD -- sh`) the shell is interactive: `tty.Terminal` gives
  it a pty's line discipline (echo, Enter, Backspace, Ctrl-C cancels the foreground command
  with status 130, Ctrl-D ends input), it prompts with `$PS1` (dash's `# `), and errors end
  only the command. There is no history or line editing.

Refused with exit 2 and a message rather than half-run: file descriptors above 2, `<>`, `exec`
with only redirections (a permanent redirection), `getopts`, bash syntax (`[[` is "not found"
as in dash; `${x/a/b}`, arrays and `<(...)` are syntax errors). Traps on signals are accepted
and never fire (nothing sends signals: deleting the pod cancels the shell); an `EXIT` trap runs
when the shell ends. Background jobs end with the shell that started them.

Limits, so a hostile script cannot take the agent's memory: `$(...)` output 1 MiB, a variable's
value 1 MiB, 10000 variables, 64 running background jobs, 100 levels of nesting (compound
commands, functions, subshells, nested `sh`), the parser's `MAX_DEPTH` and `MAX_SCRIPT_BYTES`
(256 KiB; big scripts are parsed in a worker thread so the event loop never waits on them), and
the file limits in `vfs`. Errors are dash's words with the script's name and line:
`sh: 3: nope: not found` (127), `sh: 1: Syntax error: "fi" unexpected` (2).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import itertools
import posixpath
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from agents.toolbox import sharith, shexpand, vfs
from agents.toolbox.core import PATH_DIRS, ExecTarget, Proc, abspath
from agents.toolbox.registry import COMMANDS
from agents.toolbox.shparse import (
    NAME_RE,
    AndOr,
    Arith,
    Brace,
    Case,
    CmdSub,
    Command,
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
)
from agents.toolbox.tty import Terminal

SHELLS = frozenset({"sh", "bash", "ash", "dash"})
MAX_NESTING = 100
MAX_SUBST_BYTES = 1 << 20
MAX_VALUE_BYTES = 1 << 20
MAX_VARIABLES = 10_000
MAX_JOBS = 64
PIPE_BYTES = 65536
PARSE_INLINE_BYTES = 64 << 10
_nesting: contextvars.ContextVar[int] = contextvars.ContextVar("sh_nesting", default=0)
_pids = itertools.count(100)


# ---- control flow ------------------------------------------------------------------------
# BaseException, not Exception: they pass through toolbox commands that catch Exception.

class _Exit(BaseException):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Fatal(BaseException):
    """An error that ends the (sub)shell, as expansion and special-builtin errors do in dash."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _LoopControl(BaseException):
    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


class _Break(_LoopControl):
    pass


class _Continue(_LoopControl):
    pass


class _Return(BaseException):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class RedirectError(Exception):
    pass


# ---- streams -----------------------------------------------------------------------------

class Sink:
    """Where a command's output goes."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def drain(self) -> None:
        return None


class NullSink(Sink):
    def write(self, data: bytes) -> None:
        return None


class ForwardSink(Sink):
    """The session's own stdout or stderr."""

    def __init__(self, write: Callable[[bytes], None],
                 drain: Callable[[], Awaitable[None]] | None = None) -> None:
        self._write = write
        self._drain = drain

    def write(self, data: bytes) -> None:
        self._write(data)

    async def drain(self) -> None:
        if self._drain is not None:
            await self._drain()


class CaptureSink(Sink):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.limit:
            self.chunks.append(data[:self.limit - self.size])
            self.size = self.limit
            raise _Fatal(f"command substitution output is over {self.limit} bytes "
                         "(podnet limit)")
        self.chunks.append(data)
        self.size += len(data)

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


class _PipeTransport(asyncio.ReadTransport):
    """Lets a StreamReader pause its writer: the pipe's flow control."""

    def __init__(self, room: asyncio.Event) -> None:
        super().__init__()
        self._room = room

    def pause_reading(self) -> None:
        self._room.clear()

    def resume_reading(self) -> None:
        self._room.set()


class PipeSink(Sink):
    """A pipe: the writer's sink, and `reader` for the next command's stdin.

    Writing after the reader has exited is SIGPIPE: the data is dropped and `on_broken` ends
    the writing pipeline stage (whatever task of it wrote, e.g. one of ping's probes), which
    then exits with 141 as a process killed by SIGPIPE does.
    """

    def __init__(self) -> None:
        self.reader = asyncio.StreamReader(limit=PIPE_BYTES // 2)
        self._room = asyncio.Event()
        self._room.set()
        self.reader.set_transport(_PipeTransport(self._room))
        self.reader_gone = False
        self.broken = False
        self.on_broken: Callable[[], None] = lambda: None
        self._eof = False

    def _sigpipe(self) -> None:
        if not self.broken:
            self.broken = True
            self.on_broken()

    def write(self, data: bytes) -> None:
        if self.reader_gone:
            self._sigpipe()
        elif data and not self._eof:
            self.reader.feed_data(data)

    async def drain(self) -> None:
        await self._room.wait()
        if self.reader_gone:
            self._sigpipe()
            await asyncio.sleep(0)  # where the stage's cancellation lands

    def close_write(self) -> None:
        if not self._eof:
            self._eof = True
            self.reader.feed_eof()

    def close_read(self) -> None:
        self.reader_gone = True
        self._room.set()


class FileSink(Sink):
    """`> file` / `>> file`: collected, then stored in the virtual files when the command ends."""

    def __init__(self, files: dict[str, str], path: str, append: bool) -> None:
        self.files, self.path, self.append = files, path, append
        self.chunks: list[bytes] = []
        self.size = 0
        self.full = False
        if not append:
            files[path] = ""  # `>` truncates when it opens, as O_TRUNC does

    def write(self, data: bytes) -> None:
        if self.size + len(data) + len(self.files.get(self.path, "")) > vfs.MAX_FILE_BYTES:
            self.full = True
            return
        self.chunks.append(data)
        self.size += len(data)

    def close(self) -> str | None:
        text = b"".join(self.chunks).decode("utf-8", "replace")
        self.chunks = []
        self.files[self.path] = self.files.get(self.path, "") + text
        return "write error: No space left on device" if self.full else None


async def parse_line(parser: Parser) -> Seq | None:
    """The parser's next line; a big rest of script (one loop can span all of it) is parsed in
    a worker thread, so that it never holds up the event loop (the largest takes ~1.5 s)."""
    if len(parser.src) - parser.i < PARSE_INLINE_BYTES:
        return parser.parse_line()
    return await asyncio.to_thread(parser.parse_line)


async def _complete(text: str) -> bool:
    """Whether `text` is a complete script, or wrong (then running it reports the error);
    false while it only lacks more lines."""
    def check() -> bool:
        try:
            Parser(text).parse_program()
        except ShSyntaxError as e:
            return not e.incomplete
        return True
    if len(text) < PARSE_INLINE_BYTES:
        return check()
    return await asyncio.to_thread(check)


def _canceller(task: asyncio.Task[int]) -> Callable[[], None]:
    # Scheduled, not immediate: the writer may be this very task, and a task cancelled
    # while it runs would turn a status it returns before its next await into a cancellation.
    def cancel() -> None:
        asyncio.get_running_loop().call_soon(task.cancel)
    return cancel


def reader_of(text: str | bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(text.encode() if isinstance(text, str) else text)
    reader.feed_eof()
    return reader


@dataclass
class IO:
    stdin: asyncio.StreamReader | None
    out: Sink
    err: Sink
    tty: bool = False


# ---- the shell ---------------------------------------------------------------------------

Builtin = Callable[["Shell", list[str], IO], Awaitable[int]]


class Shell:
    def __init__(self, target: ExecTarget, io: IO, arg0: str, args: list[str]) -> None:
        self.target = target
        self.io = io
        self.arg0 = arg0
        self.args = list(args)
        self.vars: dict[str, str] = dict(target.env)
        self.exported: set[str] = set(target.env)
        self.readonly: set[str] = set()
        self.funcs: dict[str, Command] = {}
        self.opts: dict[str, bool] = {"e": False, "x": False, "u": False, "f": False,
                                      "pipefail": False}
        self.cwd = target.cwd
        self.status = 0
        self.subst_status = 0
        self.line = 1
        self.loops = 0
        self.condition = 0
        self.locals: list[dict[str, str | None]] = []
        self.pid = next(_pids)
        self.last_job: int | None = None
        self.jobs: dict[int, asyncio.Task[int]] = {}
        self.traps: dict[str, str] = {}
        self.vars.setdefault("IFS", shexpand.DEFAULT_IFS)
        self.vars.setdefault("PWD", self.cwd)
        self.vars.setdefault("PPID", "0")

    @property
    def files(self) -> dict[str, str]:
        return self.target.files

    def fork(self, io: IO) -> Shell:
        """A subshell: a copy of the state, sharing the filesystem."""
        child = Shell.__new__(Shell)
        child.__dict__.update(self.__dict__)
        child.io = io
        child.args = list(self.args)
        child.vars = dict(self.vars)
        child.exported = set(self.exported)
        child.readonly = set(self.readonly)
        child.funcs = dict(self.funcs)
        child.opts = dict(self.opts)
        child.locals = []
        child.jobs = {}
        child.traps = {}
        child.loops = 0
        return child

    # ---- errors ----

    def report(self, message: str, io: IO | None = None) -> None:
        (io or self.io).err.write(f"{self.arg0}: {self.line}: {message}\n".encode())

    @contextlib.contextmanager
    def nested(self) -> Iterator[None]:
        depth = _nesting.get() + 1
        if depth > MAX_NESTING:
            raise _Fatal(f"nested too deeply (podnet limit {MAX_NESTING})")
        token = _nesting.set(depth)
        try:
            yield
        finally:
            _nesting.reset(token)

    # ---- variables ----

    def getvar(self, name: str) -> str | None:
        return self.vars.get(name)

    def setvar(self, name: str, value: str) -> None:
        if name in self.readonly:
            raise _Fatal(f"{name}: is read only")
        if len(value) > MAX_VALUE_BYTES:
            raise _Fatal(f"{name}: value is over {MAX_VALUE_BYTES} bytes (podnet limit)")
        if name not in self.vars and len(self.vars) >= MAX_VARIABLES:
            raise _Fatal(f"too many variables (podnet limit {MAX_VARIABLES})")
        self.vars[name] = value
        if name == "PWD" and value.startswith("/"):
            self.cwd = value

    def unsetvar(self, name: str) -> None:
        if name in self.readonly:
            raise _Fatal(f"{name}: is read only")
        self.vars.pop(name, None)
        self.exported.discard(name)

    def environ(self) -> dict[str, str]:
        return {k: v for k, v in self.vars.items() if k in self.exported}

    def ifs(self) -> str:
        value = self.vars.get("IFS")
        return shexpand.DEFAULT_IFS if value is None else value

    def flags(self) -> str:
        return "".join(f for f in "efux" if self.opts.get(f))

    def param(self, name: str) -> str | None:
        if name == "?":
            return str(self.status)
        if name == "$":
            return str(self.pid)
        if name == "#":
            return str(len(self.args))
        if name == "!":
            return None if self.last_job is None else str(self.last_job)
        if name == "-":
            return self.flags()
        if name == "0":
            return self.arg0
        if name.isdigit():
            n = int(name)
            return self.args[n - 1] if 0 < n <= len(self.args) else None
        if name in ("@", "*"):
            return " ".join(self.args)
        return self.getvar(name)

    # ---- running a script ----

    async def run_script(self, parser: Parser) -> int:
        """Run a whole script as this shell's life; the status it exits with."""
        try:
            return await self.toplevel(self.run_lines(parser))
        finally:
            await self.finish()

    async def run_lines(self, parser: Parser) -> int:
        """Parse and run one line at a time, as dash does (line 1 runs before a syntax error
        on line 2 is found)."""
        while True:
            try:
                seq = await parse_line(parser)
            except ShSyntaxError as e:
                self.line = e.line
                raise _Fatal(e.message) from None
            if seq is None:
                return self.status
            await self.run_seq(seq, self.io)

    async def toplevel(self, body: Coroutine[Any, Any, int]) -> int:
        """Await `body`, turning how a shell can end (exit, a fatal error...) into a status."""
        try:
            self.status = await body
        except _Exit as e:
            self.status = e.code
        except _Fatal as e:
            if e.message:
                self.report(e.message)
            self.status = e.code
        except _Return as e:
            self.status = e.code
        except _LoopControl:
            pass
        except RecursionError:
            self.report("nested too deeply")
            self.status = 2
        finally:
            body.close()
        return self.status

    async def finish(self) -> None:
        """The shell ends: its EXIT trap runs and its background jobs are stopped."""
        action = self.traps.pop("EXIT", None)
        if action:
            status = self.status
            await self.toplevel(self.eval_text(action, self.io))
            self.status = status
        await self.end_jobs()

    async def end_jobs(self) -> None:
        running = [t for t in self.jobs.values() if not t.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def eval_text(self, text: str, io: IO) -> int:
        parser = Parser(text, line_offset=self.line - 1)
        status = 0
        with self.nested():
            while True:
                try:
                    seq = await parse_line(parser)
                except ShSyntaxError as e:
                    raise _Fatal(e.message) from None
                if seq is None:
                    return status
                status = await self.run_seq(seq, io)

    async def run_child(self, body: Coroutine[Any, Any, int]) -> int:
        """Run `body` as this forked shell's whole life; its exit ends only it."""
        try:
            with self.nested():
                return await self.toplevel(body)
        except _Fatal as e:  # from nested(): too deep
            self.report(e.message)
            return e.code
        finally:
            body.close()
            await self.end_jobs()

    # ---- lists and pipelines ----

    async def run_seq(self, seq: Seq, io: IO) -> int:
        status = 0
        for and_or, background in seq.items:
            if background:
                self.start_job(and_or, io)
                status = 0
            else:
                status = await self.run_and_or(and_or, io)
        self.status = status
        return status

    async def run_and_or(self, and_or: AndOr, io: IO) -> int:
        """`a && b || c`: everything but the last pipeline is a condition, so `set -e` does
        not apply inside it (not even inside a function called there)."""
        pipelines = [and_or.first] + [p for _, p in and_or.rest]
        ops = [""] + [op for op, _ in and_or.rest]
        status = 0
        for k, (op, pipeline) in enumerate(zip(ops, pipelines, strict=True)):
            if k and (op == "&&") != (status == 0):
                continue
            last = k == len(pipelines) - 1
            if not last:
                self.condition += 1
            try:
                status = await self.run_pipeline(pipeline, io)
            finally:
                if not last:
                    self.condition -= 1
        return status

    async def run_pipeline(self, pipeline: Pipeline, io: IO) -> int:
        if len(pipeline.cmds) == 1:
            if pipeline.negate:
                self.condition += 1
            try:
                status = await self.run_command(pipeline.cmds[0], io)
            finally:
                if pipeline.negate:
                    self.condition -= 1
        else:
            status = await self._pipe(pipeline, io)
        if pipeline.negate:
            status = int(status == 0)
        self.status = status
        if status and self.opts["e"] and not self.condition and not pipeline.negate:
            raise _Exit(status)
        return status

    async def _pipe(self, pipeline: Pipeline, io: IO) -> int:
        n = len(pipeline.cmds)
        pipes = [PipeSink() for _ in range(n - 1)]

        async def stage(k: int, cmd: Command) -> int:
            stage_io = IO(pipes[k - 1].reader if k else io.stdin,
                          pipes[k] if k < n - 1 else io.out, io.err,
                          io.tty and k == n - 1)
            child = self.fork(stage_io)
            try:
                return await child.run_child(child.run_command(cmd, stage_io))
            except asyncio.CancelledError:
                if k < n - 1 and pipes[k].broken:
                    current = asyncio.current_task()
                    if current is not None:
                        current.uncancel()
                    return 141
                raise
            finally:
                if k < n - 1:
                    pipes[k].close_write()
                if k:
                    pipes[k - 1].close_read()

        tasks = [asyncio.create_task(stage(k, cmd), name=f"sh {self.arg0}: pipeline stage {k}")
                 for k, cmd in enumerate(pipeline.cmds)]
        for pipe, task in zip(pipes, tasks, strict=False):
            pipe.on_broken = _canceller(task)
        try:
            statuses = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.opts["pipefail"]:
            return next((s for s in reversed(statuses) if s), 0)
        return statuses[-1]

    def start_job(self, and_or: AndOr, io: IO) -> None:
        running = [pid for pid, task in self.jobs.items() if not task.done()]
        if len(running) >= MAX_JOBS:
            raise _Fatal(f"Cannot fork (podnet limit: {MAX_JOBS} background jobs)")
        finished = [pid for pid, task in self.jobs.items() if task.done()]
        for pid in finished[:-MAX_JOBS]:  # keep the latest statuses for `wait PID`
            del self.jobs[pid]
        # Without job control, a background job's stdin is /dev/null.
        job_io = IO(None, io.out, io.err)
        child = self.fork(job_io)
        pid = next(_pids)

        async def job() -> int:
            return await child.run_child(child.run_and_or(and_or, job_io))

        self.jobs[pid] = asyncio.create_task(job(), name=f"sh {self.arg0}: job {pid}")
        self.last_job = pid

    # ---- commands ----

    async def run_command(self, cmd: Command, io: IO) -> int:
        if isinstance(cmd, Simple):
            return await self.run_simple(cmd, io)
        with self.nested():
            if isinstance(cmd, Brace):
                return await self.run_seq(cmd.body, io)
            if isinstance(cmd, Subshell):
                child = self.fork(io)
                self.status = await child.run_child(child.run_seq(cmd.body, io))
                return self.status
            if isinstance(cmd, If):
                return await self._if(cmd, io)
            if isinstance(cmd, Loop):
                return await self._loop(cmd, io)
            if isinstance(cmd, For):
                return await self._for(cmd, io)
            if isinstance(cmd, Case):
                return await self._case(cmd, io)
            if isinstance(cmd, FuncDef):
                self.funcs[cmd.name] = cmd.body
                return 0
            if isinstance(cmd, Redirected):
                try:
                    rio, opened = await self.redirect(cmd.redirs, io)
                except RedirectError as e:
                    self.report(str(e), io)
                    return 2
                try:
                    return await self.run_command(cmd.cmd, rio)
                finally:
                    self._close(opened, io)
        raise AssertionError(f"unknown command node {cmd!r}")

    async def _condition(self, seq: Seq, io: IO) -> int:
        self.condition += 1
        try:
            return await self.run_seq(seq, io)
        finally:
            self.condition -= 1

    async def _if(self, cmd: If, io: IO) -> int:
        for cond, body in cmd.branches:
            if await self._condition(cond, io) == 0:
                return await self.run_seq(body, io)
        if cmd.orelse is not None:
            return await self.run_seq(cmd.orelse, io)
        self.status = 0
        return 0

    async def _iteration(self, body: Coroutine[Any, Any, int]) -> tuple[int, bool]:
        """Run one loop body; (status, stop the loop)."""
        try:
            return await body, False
        except _Break as e:
            if e.count > 1:
                e.count -= 1
                raise
            return 0, True
        except _Continue as e:
            if e.count > 1:
                e.count -= 1
                raise
            return 0, False
        finally:
            body.close()

    async def _loop(self, cmd: Loop, io: IO) -> int:
        status = 0
        self.loops += 1
        try:
            while True:
                # Yield every iteration: a loop of builtins must not starve the event loop,
                # and cancelling the pod must reach it.
                await asyncio.sleep(0)
                cond, stop = await self._iteration(self._condition(cmd.cond, io))
                if stop or (cond == 0) == cmd.until:
                    break
                status, stop = await self._iteration(self.run_seq(cmd.body, io))
                if stop:
                    break
        finally:
            self.loops -= 1
        self.status = status
        return status

    async def _for(self, cmd: For, io: IO) -> int:
        items = list(self.args) if cmd.words is None else await self.expand_words(cmd.words, io)
        status = 0
        self.loops += 1
        try:
            for item in items:
                await asyncio.sleep(0)
                self.setvar(cmd.var, item)
                status, stop = await self._iteration(self.run_seq(cmd.body, io))
                if stop:
                    break
        finally:
            self.loops -= 1
        self.status = status
        return status

    async def _case(self, cmd: Case, io: IO) -> int:
        subject = await self.expand_string(cmd.word, io)
        for item in cmd.items:
            for pattern in item.patterns:
                segs = _segs(await self.expand_word(pattern, io))
                if shexpand.pattern_regex(segs).fullmatch(subject):
                    return await self.run_seq(item.body, io)
        self.status = 0
        return 0

    async def run_simple(self, cmd: Simple, io: IO) -> int:
        self.line = cmd.line
        self.subst_status = 0
        words = await self.expand_words(cmd.words, io)
        if words == ["exec"] and cmd.redirs:
            raise _Fatal("exec: permanent redirections are not supported by podnet sh")
        assigns = [(name, await self.expand_string(value, io, tilde=True))
                   for name, value in cmd.assigns]
        if self.opts["x"]:
            shown = [f"{n}={v}" for n, v in assigns] + words  # dash does not quote them
            io.err.write(("+ " + " ".join(shown) + "\n").encode())
        try:
            rio, opened = await self.redirect(cmd.redirs, io)
        except RedirectError as e:
            self.report(str(e), io)
            return 2
        try:
            if not words:
                for name, value in assigns:
                    self.setvar(name, value)
                status = self.subst_status
            else:
                status = await self.invoke(words, assigns, rio)
        finally:
            failed = self._close(opened, io)
        await io.out.drain()
        return 1 if failed and not status else status

    def _close(self, opened: list[FileSink], io: IO) -> bool:
        """Store what went to files; true when a write failed (the disk was full)."""
        failed = False
        for sink in opened:
            problem = sink.close()
            if problem:
                self.report(problem, io)
                failed = True
        return failed

    async def invoke(self, words: list[str], assigns: list[tuple[str, str]], io: IO) -> int:
        from agents.toolbox.shbuiltins import BUILTINS, SPECIAL

        name = words[0]
        if name in SPECIAL:
            for var, value in assigns:
                self.setvar(var, value)
            return await SPECIAL[name](self, words, io)
        if name in self.funcs or name in BUILTINS:
            saved = {var: self.vars.get(var) for var, _ in assigns}
            for var, value in assigns:
                self.setvar(var, value)
            try:
                if name in self.funcs:
                    return await self.call(name, words, io)
                return await BUILTINS[name](self, words, io)
            finally:
                for var, old in saved.items():
                    if old is None:
                        self.vars.pop(var, None)
                    else:
                        self.vars[var] = old
        env = self.environ()
        env.update(assigns)
        return await self.external(words, env, io)

    async def external(self, words: list[str], env: dict[str, str], io: IO) -> int:
        target = dataclasses.replace(self.target, env=env, cwd=self.cwd)
        proc = Proc(target, words, stdin=io.stdin, stdout=io.out.write, stderr=io.err.write,
                    tty=io.tty, drain=io.out.drain)
        return await dispatch(proc, words, self.line, self.arg0)

    async def call(self, name: str, words: list[str], io: IO) -> int:
        saved_args = self.args
        self.args = words[1:]
        self.locals.append({})
        try:
            with self.nested():
                return await self.run_command(self.funcs[name], io)
        except _Return as e:
            self.status = e.code
            return e.code
        finally:
            self.args = saved_args
            for var, old in self.locals.pop().items():
                if old is None:
                    self.vars.pop(var, None)
                else:
                    self.vars[var] = old

    # ---- redirections ----

    async def redirect(self, redirs: list[Redir], io: IO) -> tuple[IO, list[FileSink]]:
        if not redirs:
            return io, []
        stdin, out, err = io.stdin, io.out, io.err
        tty = io.tty
        sink: Sink
        opened: list[FileSink] = []
        try:
            for r in redirs:
                if r.fd > 2:
                    raise _Fatal(f"file descriptor {r.fd} is not supported (podnet sh has 0, 1 "
                                 "and 2)")
                if r.op in ("<<", "<<-"):
                    text = await self.expand_string(r.heredoc or Word(()), io)
                    if r.fd != 0:
                        raise _Fatal("a here-document on a descriptor other than 0 is not "
                                     "supported")
                    stdin = reader_of(text)
                    continue
                target = await self.expand_string(r.target, io, tilde=True)
                if r.op in (">&", "<&"):
                    if target == "-":
                        if r.fd == 0:
                            stdin = None
                        elif r.fd == 1:
                            out = NullSink()
                        else:
                            err = NullSink()
                        continue
                    if target not in ("0", "1", "2"):
                        raise _Fatal("Syntax error: Bad fd number")
                    if (r.fd == 0) != (target == "0"):
                        raise _Fatal(f"redirecting descriptor {r.fd} to {target} is not "
                                     "supported")
                    if r.fd == 0:
                        continue
                    sink = out if target == "1" else err
                elif r.op == "<":
                    path = vfs.resolve(self.cwd, target)
                    if path in ("/dev/null", "/dev/zero"):
                        stdin = reader_of(b"")
                    elif path == "/dev/stdin":
                        pass
                    elif path in self.files:
                        stdin = reader_of(self.files[path])
                    else:
                        missing = "Is a directory" if vfs.is_dir(self.files, path) \
                            else "No such file"
                        raise RedirectError(f"cannot open {target}: {missing}")
                    continue
                elif r.op == "<>":
                    raise _Fatal("<> is not supported")
                else:
                    path = vfs.resolve(self.cwd, target)
                    if path == "/dev/null":
                        sink = NullSink()
                    elif path == "/dev/stdout":
                        sink = out
                    elif path == "/dev/stderr":
                        sink = err
                    else:
                        why = vfs.can_create(self.files, path)
                        if why:
                            raise RedirectError(f"cannot create {target}: {why}")
                        sink = FileSink(self.files, path, append=r.op == ">>")
                        opened.append(sink)
                if r.fd == 1:
                    out = sink
                    tty = False
                elif r.fd == 2:
                    err = sink
                else:
                    raise _Fatal("redirecting output to descriptor 0 is not supported")
        except BaseException:
            for sink in opened:
                sink.close()
            raise
        return IO(stdin, out, err, tty), opened

    # ---- expansion ----

    async def expand_words(self, words: list[Word], io: IO) -> list[str]:
        out: list[str] = []
        ifs = self.ifs()
        for word in words:
            for field in shexpand.split_fields(await self.expand_word(word, io), ifs):
                if not self.opts["f"] and shexpand.has_pattern(field):
                    matches = shexpand.glob(field, self.files, self.cwd)
                    if matches:
                        out.extend(matches)
                        continue
                out.append("".join(text for text, _ in field))
        if sum(len(w) for w in out) > 4 * MAX_VALUE_BYTES:
            raise _Fatal("arguments are over 4 MiB (podnet limit)")
        return out

    async def expand_string(self, word: Word, io: IO, *, tilde: bool = False) -> str:
        pieces = await self.expand_word(word, io, tilde=tilde)
        return "".join(" " if s is None else s[0] for s in pieces)

    async def expand_word(self, word: Word, io: IO, *,
                          tilde: bool = True) -> list[shexpand.Piece | None]:
        """The word's pieces: literal text is never split, expansion results are unless
        quoted."""
        segs: list[shexpand.Piece | None] = []
        for k, part in enumerate(word.parts):
            if isinstance(part, Lit):
                text = part.text
                if k == 0 and tilde and not part.quoted and text.startswith("~"):
                    head, slash, rest = text.partition("/")
                    if head == "~":
                        text = (self.vars.get("HOME") or "/root") + slash + rest
                segs.append((text, part.quoted, False))
            elif isinstance(part, Param):
                if part.quoted and not (part.name == "@" and part.op is None):
                    segs.append(("", True, False))  # "${x:-}" is still a (empty) word
                segs.extend(await self.expand_param(part, io))
            elif isinstance(part, CmdSub):
                text = await self.substitute(part.body, io)
                segs.append((text, part.quoted, not part.quoted))
            elif isinstance(part, Arith):
                text = str(await self.arith(part.expr, io))
                segs.append((text, part.quoted, not part.quoted))
        return segs

    async def arith(self, expr: Word, io: IO) -> int:
        text = await self.expand_string(expr, io)
        try:
            return sharith.evaluate(text, lambda name: self.param(name) or "", self.setvar)
        except sharith.IllegalNumber as e:
            raise _Fatal(str(e)) from None
        except sharith.ArithError as e:
            raise _Fatal(f'arithmetic expression: {e}: "{text}"') from None

    async def substitute(self, body: Seq, io: IO) -> str:
        capture = CaptureSink(MAX_SUBST_BYTES)
        sub_io = IO(io.stdin, capture, io.err)
        child = self.fork(sub_io)
        self.subst_status = await child.run_child(child.run_seq(body, sub_io))
        self.status = self.subst_status
        return capture.text().rstrip("\n")

    async def _arg(self, p: Param, word: Word, io: IO) -> list[shexpand.Piece | None]:
        """The word of `${x:-word}` expanded: unquoted, all of it is split like the value."""
        return [None if s is None else (s[0], s[1], not s[1])
                for s in await self.expand_word(word, io)]

    async def expand_param(self, p: Param, io: IO) -> list[shexpand.Piece | None]:
        name = p.name
        if name in ("@", "*") and p.op is None and not p.length:
            if p.quoted and name == "*":
                sep = self.ifs()[:1]
                return [(sep.join(self.args), True, False)]
            segs: list[shexpand.Piece | None] = []
            for k, arg in enumerate(self.args):
                if k:
                    segs.append(None if p.quoted else (" ", False, True))
                segs.append((arg, p.quoted, not p.quoted))
            return segs
        value = self.param(name)
        if p.length:
            if value is None and self.opts["u"]:
                raise _Fatal(f"{name}: parameter not set")
            return [(str(len(value or "")), p.quoted, not p.quoted)]
        if p.op is None:
            if value is None and self.opts["u"] and name not in "@*#?-$!":
                raise _Fatal(f"{name}: parameter not set")
            return [(value or "", p.quoted, not p.quoted)]
        op = p.op.lstrip(":")
        missing = value is None or (p.op.startswith(":") and value == "")
        word = p.arg or Word(())
        if op == "-":
            if missing:
                return await self._arg(p, word, io)
            return [(value or "", p.quoted, not p.quoted)]
        if op == "+":
            return [("", p.quoted, False)] if missing else await self._arg(p, word, io)
        if op == "=":
            if missing:
                if not NAME_RE.fullmatch(name):
                    raise _Fatal(f"{name}: bad variable name")
                value = await self.expand_string(word, io)
                self.setvar(name, value)
            return [(value or "", p.quoted, not p.quoted)]
        if op == "?":
            if missing:
                message = await self.expand_string(word, io) or (
                    "parameter not set or null" if p.op.startswith(":") else "parameter not set")
                raise _Fatal(f"{name}: {message}")
            return [(value or "", p.quoted, not p.quoted)]
        pattern = _segs(await self.expand_word(word, io))
        return [(shexpand.strip(value or "", pattern, p.op), p.quoted, not p.quoted)]


def _segs(pieces: list[shexpand.Piece | None]) -> list[shexpand.Seg]:
    """Pieces as pattern segments (quoted text matches itself)."""
    return [(piece[0], piece[1]) for piece in pieces if piece is not None]


# ---- dispatch and the `sh` command ---------------------------------------------------------

def command_name(word: str) -> str | None:
    """`curl` or `/usr/bin/curl` -> "curl"; a path outside PATH_DIRS -> None."""
    if "/" not in word:
        return word
    path = abspath(word)
    if posixpath.dirname(path) not in PATH_DIRS:
        return None
    return posixpath.basename(path)


async def dispatch(proc: Proc, argv: list[str], line: int = 1, arg0: str = "sh") -> int:
    """Run argv as its command does; 127 with dash's message when there is none."""
    if not argv:
        return 0
    name = command_name(argv[0])
    if name in SHELLS:
        return await sh(proc, argv)
    program = proc.target.programs.get(posixpath.basename(argv[0]))
    if program is not None:     # the image's own (nginx, agnhost), found by file name
        return await program(proc, argv)
    command = COMMANDS.get(name) if name is not None else None
    if command is None:
        if "/" in argv[0] and abspath(argv[0], proc.target.cwd) in proc.target.files:
            return await sh(proc, ["sh", *argv])  # a script file: run it with sh
        proc.stderr.write(f"{arg0}: {line}: {argv[0]}: not found\n")
        return 127
    return await command(proc, argv)


async def sh(proc: Proc, argv: list[str]) -> int:
    """`sh [-eux] [-c SCRIPT [NAME [ARG...]] | FILE [ARG...]]`; no script: commands from stdin."""
    name = argv[0]
    args = argv[1:]
    options: dict[str, bool] = {}
    script: str | None = None
    command_mode = False
    while args and args[0][:1] in ("-", "+") and args[0] not in ("-", "--", "+"):
        flags = args.pop(0)
        on = flags[0] == "-"
        if flags[1:] == "o" or flags[1:] == "-o":
            if not args:
                proc.stderr.write(f"{name}: 0: -o requires an argument\n")
                return 2
            options[args.pop(0)] = on
            continue
        for flag in flags[1:]:
            if flag == "c":
                command_mode = True
            elif flag in "euxf":
                options[flag] = on
            elif flag not in "ilsv":
                proc.stderr.write(f"{name}: 0: Illegal option -{flag}\n")
                return 2
    if args and args[0] in ("-", "--"):
        args.pop(0)
    arg0 = name
    if command_mode:
        if not args:
            proc.stderr.write(f"{name}: 0: -c requires an argument\n")
            return 2
        script = args.pop(0)
        if args:
            arg0 = args.pop(0)
    elif args:
        path = abspath(args[0], proc.target.cwd)
        if path not in proc.target.files:
            proc.stderr.write(f"{name}: 0: cannot open {args[0]}: No such file\n")
            return 2
        script = proc.target.files[path]
        arg0 = args.pop(0)
    io = IO(proc.stdin, ForwardSink(proc.stdout.write, proc.drain),
            ForwardSink(proc.stderr.write), proc.tty)
    shell = Shell(proc.target, io, arg0, args)
    for option, on in options.items():
        if option not in shell.opts:
            proc.stderr.write(f"{name}: 0: Illegal option -o {option}\n")
            return 2
        shell.opts[option] = on
    token = _nesting.set(_nesting.get() + 1)
    try:
        if _nesting.get() > MAX_NESTING:
            proc.stderr.write(f"{name}: 0: nested too deeply (podnet limit {MAX_NESTING})\n")
            return 2
        if script is not None:
            return await shell.run_script(Parser(script))
        return await _read_eval(shell, proc)
    finally:
        _nesting.reset(token)


async def _read_eval(shell: Shell, proc: Proc) -> int:
    """Commands from stdin, run as each is complete.

    On a terminal (`kubectl exec -it POD -- sh`) the shell is interactive: a `Terminal` cooks
    the raw keystrokes, the shell prompts (`$PS1`, else dash's `# `), Ctrl-C cancels the
    command in the foreground, and an error ends only the command, not the shell.
    """
    terminal: Terminal | None = None
    pump: asyncio.Task[None] | None = None
    if proc.tty and proc.stdin is not None:
        terminal = Terminal(proc.stdin, proc.stdout.write)
        pump = asyncio.create_task(terminal.pump(), name=f"sh {shell.arg0}: terminal")

        def cooked(data: bytes) -> None:
            proc.stdout.write(Terminal.output(data))

        shell.io = IO(terminal.cooked, ForwardSink(cooked, proc.drain), ForwardSink(cooked),
                      tty=True)
    stdin = shell.io.stdin
    pending = ""
    lines_done = 0
    checked_at = 0  # lines in `pending` when it was last found incomplete
    try:
        while True:
            if terminal is not None:
                prompt = shell.vars.get("PS2", "> ") if pending else shell.vars.get("PS1", "# ")
                shell.io.out.write(prompt.encode())
                terminal.interrupt = _at_prompt(terminal)
            line = await _stdin_line(stdin)
            if line is not None and line.endswith("\x03\n"):
                pending = ""  # Ctrl-C at the prompt drops what was typed so far
                continue
            if line is None and not pending.strip():
                return shell.status
            pending += line or ""
            if line is not None:
                # Re-parsing all of a long pending command for every line would be quadratic:
                # past 64 lines, check again only once it has doubled.
                lines = pending.count("\n")
                if lines > 64 and lines < checked_at * 2:
                    continue
                if not await _complete(pending):
                    checked_at = lines
                    continue
            text, pending, checked_at = pending, "", 0
            try:
                await _foreground(shell, terminal, shell.run_lines(
                    Parser(text, line_offset=lines_done)))
            except _Fatal as e:
                shell.report(e.message)
                shell.status = e.code
                if terminal is None:
                    return shell.status
            except (_Return, _LoopControl):
                pass
            if line is None:
                return shell.status
            lines_done += text.count("\n")
    except _Exit as e:
        shell.status = e.code
        return e.code
    finally:
        await shell.finish()
        if pump is not None:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)


def _at_prompt(terminal: Terminal) -> Callable[[], None]:
    def interrupt() -> None:
        terminal.cooked.feed_data(b"\x03\n")  # a line the prompt loop knows as "dropped"
    return interrupt


async def _foreground(shell: Shell, terminal: Terminal | None,
                      body: Coroutine[Any, Any, int]) -> None:
    """Run a command line; on a terminal, Ctrl-C cancels it (status 130, as after SIGINT)."""
    if terminal is None:
        await body
        return
    task = asyncio.create_task(body, name=f"sh {shell.arg0}: foreground")

    def interrupt() -> None:
        task.cancel()

    terminal.interrupt = interrupt
    try:
        await asyncio.wait({task})
    except asyncio.CancelledError:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    if task.cancelled():
        shell.status = 130
        return
    task.result()


async def _stdin_line(stdin: asyncio.StreamReader | None) -> str | None:
    if stdin is None:
        return None
    try:
        data = await stdin.readuntil(b"\n")
    except asyncio.IncompleteReadError as e:
        data = e.partial
    except asyncio.LimitOverrunError:
        data = await stdin.read(65536)
    return data.decode("utf-8", "replace") if data else None


async def run_in_env(proc: Proc, environ: dict[str, str], argv: list[str]) -> int:
    """Run argv with a changed environment (`env NAME=VALUE CMD`)."""
    target: ExecTarget = dataclasses.replace(proc.target, env=environ)
    child = Proc(target, argv, stdin=proc.stdin, stdout=proc.stdout.write,
                 stderr=proc.stderr.write, tty=proc.tty, drain=proc.drain)
    return await dispatch(child, argv)
