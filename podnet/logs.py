"""Logging, configured once per process with structlog.

Every event is one JSON line in `<logs_dir>/<process>.jsonl` with `ts`, `level`, `event`,
`component` and `node`; stderr gets the same event, rendered for people when it is a TTY and
as JSON otherwise. Library modules only call `structlog.get_logger()`; per-task context
(a pod, a flow) is bound with `structlog.contextvars.bound_contextvars(...)`.

The file is size-capped: past `LOG_FILE_MAX_BYTES` it becomes `<process>.jsonl.1` (older ones
shift to `.2`, `.3`; the oldest beyond `LOG_FILES_KEPT` is deleted), and the new file starts with
a `log.rotated` event that counts, cumulatively, the files and events deleted so far, so
`podnet logs` can say what it cannot show. Events that could not be written (disk full) are
counted and reported by a `log.dropped` event once writing works again.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from podnet.observe.ring import flow_ring

LOG_FILE_MAX_BYTES = 20 * 2**20     # one process's current log file, before it is rotated
LOG_FILES_KEPT = 3                  # rotated files kept per process (.1 newest ... .3 oldest)

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as f:
        while chunk := f.read(2**20):
            count += chunk.count(b"\n")
    return count


def _header(path: Path) -> dict[str, Any]:
    """The file's first event, if it is a `log.rotated` header; else {}."""
    try:
        with path.open("rb") as f:
            first = json.loads(f.readline(65536))
    except (OSError, ValueError):
        return {}
    return first if isinstance(first, dict) and first.get("event") == "log.rotated" else {}


class RotatingFile:
    """An append-only JSON-lines file capped at `max_bytes`, keeping `keep` rotated files."""

    def __init__(self, path: Path, static: dict[str, str], *,
                 max_bytes: int = LOG_FILE_MAX_BYTES, keep: int = LOG_FILES_KEPT) -> None:
        self.path = path
        self.static = static
        self.max_bytes = max_bytes
        self.keep = keep
        self.dropped = 0        # events not written (an OSError), reported when writing works
        self.file = path.open("a", encoding="utf-8", buffering=1)
        self.size = self.file.tell()

    def write(self, line: str) -> None:
        try:
            if self.size + len(line) + 1 > self.max_bytes and self.size > 0:
                self._rotate()
            if self.dropped:
                note = self._event("log.dropped", events=self.dropped)
                self.dropped = 0
                self._put(note)
            self._put(line)
        except OSError:
            self.dropped += 1   # never let logging take the process down

    def _put(self, line: str) -> None:
        self.file.write(line + "\n")
        self.file.flush()  # a SIGKILLed process must not lose what it already said
        self.size += len(line) + 1

    def _event(self, name: str, **fields: Any) -> str:
        ts = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        return json.dumps({"event": name, "level": "info", "ts": ts, **self.static, **fields},
                          separators=(",", ":"))

    def _rotate(self) -> None:
        # Cumulative counts ride in each file's header, so the newest file tells the total.
        previous = _header(self.path)
        files = int(previous.get("files_deleted", 0))
        events = int(previous.get("events_deleted", 0))
        self.file.close()
        oldest = self.path.with_name(f"{self.path.name}.{self.keep}")
        if oldest.exists():
            files += 1
            events += _count_lines(oldest)
            oldest.unlink()
        for n in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.keep > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            files += 1
            events += _count_lines(self.path)
            self.path.unlink()
        self.file = self.path.open("a", encoding="utf-8", buffering=1)
        self.size = 0
        self._put(self._event("log.rotated", files_deleted=files, events_deleted=events,
                              max_bytes=self.max_bytes, kept=self.keep))


class _Sinks:
    """The last processor: writes the event to the JSON file and to stderr, and keeps flow
    events in the process's flow ring for live readers (podnet/observe/ring.py)."""

    def __init__(self, file: RotatingFile | None, stderr: TextIO, console: bool) -> None:
        self.file = file
        self.keep_flow = flow_ring().append     # bound once: the hook is one call per flow event
        self.stderr = stderr
        self.console = structlog.dev.ConsoleRenderer(colors=stderr.isatty()) if console else None

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> str:
        line = json.dumps(event, default=str, separators=(",", ":"))
        if event.get("flow"):
            self.keep_flow(event, line)     # kept as the line just written
        if self.file is not None:
            self.file.write(line)
        if self.console is not None:
            self.stderr.write(str(self.console(logger, method, dict(event))) + "\n")
        else:
            self.stderr.write(line + "\n")
        raise structlog.DropEvent


def configure(process: str, *, component: str, node: str = "", logs_dir: Path | None = None,
              level: str = "info", stderr: TextIO | None = None,
              max_bytes: int = LOG_FILE_MAX_BYTES, keep: int = LOG_FILES_KEPT) -> Path | None:
    """Configure structlog for this process; returns the JSON log file's path, if any."""
    stream = stderr or sys.stderr
    path: Path | None = None
    file: RotatingFile | None = None
    static = {"component": component, "node": node}
    if logs_dir is not None:
        logs_dir.mkdir(parents=True, exist_ok=True)
        path = logs_dir / f"{process}.jsonl"
        file = RotatingFile(path, static, max_bytes=max_bytes, keep=keep)

    def add_static(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        for key, value in static.items():
            event.setdefault(key, value)
        return event

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            add_static,
            structlog.processors.format_exc_info,
            _Sinks(file, stream, console=stream.isatty()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    _route_aiohttp_server_log()
    return path


class _AiohttpServerLog(logging.Handler):
    """aiohttp's server logs what a client got wrong (an 8 KiB request line, a header that
    is not HTTP) as an exception with a traceback on stderr. Through here it is one
    `http.bad_request` event in the JSON log instead; what is the server's own fault keeps
    its traceback, as an `http.server_error` event."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from aiohttp.http_exceptions import HttpProcessingError

            exc = record.exc_info[1] if record.exc_info else None
            log = structlog.get_logger()
            if isinstance(exc, HttpProcessingError):
                reason = str(exc.message).strip().splitlines()[0] if exc.message else ""
                log.warning("http.bad_request", status=exc.code, reason=reason[:200],
                            error=type(exc).__name__, message=record.getMessage())
            elif record.levelno >= logging.WARNING:
                log.error("http.server_error", message=record.getMessage(),
                          exc_info=record.exc_info or False)
        except Exception:  # a log handler must never raise into the server
            self.handleError(record)


def _route_aiohttp_server_log() -> None:
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(h, _AiohttpServerLog) for h in logger.handlers):
        logger.addHandler(_AiohttpServerLog())
    logger.propagate = False


def get(**bound: Any) -> Any:
    """A logger with `bound` fields, e.g. `get(component="scheduler")`."""
    return structlog.get_logger().bind(**bound)
