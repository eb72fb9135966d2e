"""What Go programs print: `log.Printf` lines and `json.Marshal` output."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from agents.images import ContainerContext


def log_line(text: str, when: datetime | None = None) -> str:
    """`2026/12/07 14:05:01 text` plus a newline, as Go's standard logger writes it."""
    stamp = (when or datetime.now(UTC)).strftime("%Y/%m/%d %H:%M:%S")
    return f"{stamp} {text}" + ("" if text.endswith("\n") else "\n")


def printf(ctx: ContainerContext, text: str) -> None:
    ctx.stdout.write(log_line(text))


def marshal(value: Any) -> str:
    """json.Marshal: compact, map keys sorted, and <, >, & escaped for HTML safety."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def go_time(when: datetime, monotonic_s: float) -> str:
    """time.Now() through %v: `2026-12-07 14:05:01.123456 +0000 UTC m=+12.345678901`
    (Go trims the fraction's trailing zeros)."""
    fraction = f"{when.microsecond:06d}".rstrip("0")
    return (when.strftime("%Y-%m-%d %H:%M:%S") + (f".{fraction}" if fraction else "")
            + f" +0000 UTC m=+{monotonic_s:.9f}")
