"""Logging, configured once per process with structlog.

Every event is one JSON line in `<logs_dir>/<process>.jsonl` with `ts`, `level`, `event`,
`component` and `node`; stderr gets the same event, rendered for people when it is a TTY and
as JSON otherwise. Library modules only call `structlog.get_logger()`; per-task context
(a pod, a flow) is bound with `structlog.contextvars.bound_contextvars(...)`.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}


class _Sinks:
    """The last processor: writes the event to the JSON file and to stderr."""

    def __init__(self, file: TextIO | None, stderr: TextIO, console: bool) -> None:
        self.file = file
        self.stderr = stderr
        self.console = structlog.dev.ConsoleRenderer(colors=stderr.isatty()) if console else None

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> str:
        line = json.dumps(event, default=str, separators=(",", ":"))
        if self.file is not None:
            self.file.write(line + "\n")
            self.file.flush()  # a SIGKILLed process must not lose what it already said
        if self.console is not None:
            self.stderr.write(str(self.console(logger, method, dict(event))) + "\n")
        else:
            self.stderr.write(line + "\n")
        raise structlog.DropEvent


def configure(process: str, *, component: str, node: str = "", logs_dir: Path | None = None,
              level: str = "info", stderr: TextIO | None = None) -> Path | None:
    """Configure structlog for this process; returns the JSON log file's path, if any."""
    stream = stderr or sys.stderr
    path: Path | None = None
    file: TextIO | None = None
    if logs_dir is not None:
        logs_dir.mkdir(parents=True, exist_ok=True)
        path = logs_dir / f"{process}.jsonl"
        file = path.open("a", encoding="utf-8", buffering=1)
    static = {"component": component, "node": node}

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
    return path


def get(**bound: Any) -> Any:
    """A logger with `bound` fields, e.g. `get(component="scheduler")`."""
    return structlog.get_logger().bind(**bound)
