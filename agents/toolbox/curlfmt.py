"""curl's output formats that are not the body: `-w/--write-out` and the progress meter."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass
class TransferInfo:
    """What `-w` variables and the progress meter report about one transfer."""

    url: str
    method: str = "GET"
    http_code: int = 0
    remote_ip: str = ""
    remote_port: int = 0
    content_type: str = ""
    size_download: int = 0
    size_expected: int | None = None
    time_connect_s: float = 0.0
    time_total_s: float = 0.0
    num_redirects: int = 0
    exitcode: int = 0


def _variables(info: TransferInfo) -> dict[str, str]:
    return {
        "http_code": f"{info.http_code:03d}",
        "response_code": f"{info.http_code:03d}",
        "remote_ip": info.remote_ip,
        "remote_port": str(info.remote_port) if info.remote_port else "",
        "content_type": info.content_type,
        "size_download": str(info.size_download),
        "time_connect": f"{info.time_connect_s:.6f}",
        "time_total": f"{info.time_total_s:.6f}",
        "url_effective": info.url,
        "url": info.url,
        "method": info.method,
        "num_redirects": str(info.num_redirects),
        "exitcode": str(info.exitcode),
    }


_WRITE_OUT_RE = re.compile(r"%\{([^}]*)\}|%%|\\([nrt\\])|.", re.DOTALL)
_BACKSLASH = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}


def write_out(template: str, info: TransferInfo) -> tuple[str, list[str]]:
    """Expand a `-w` template; returns (text, warnings for unknown variables)."""
    values = _variables(info)
    out: list[str] = []
    warnings: list[str] = []
    for m in _WRITE_OUT_RE.finditer(template):
        name, escape = m.group(1), m.group(2)
        if name is not None:
            if name in values:
                out.append(values[name])
            else:
                warnings.append(f"curl: unknown --write-out variable: '{name}'\n")
        elif escape is not None:
            out.append(_BACKSLASH[escape])
        elif m.group(0) == "%%":
            out.append("%")
        else:
            out.append(m.group(0))
    return "".join(out), warnings


METER_HEADER = (
    "  % Total    % Received % Xferd  Average Speed   Time    Time     Time  Current\n"
    "                                 Dload  Upload   Total   Spent    Left  Speed\n"
)


def _max5(n: int) -> str:
    """A size or speed in at most five characters, as curl's meter prints it."""
    if n < 100_000:
        return f"{n:5d}"
    if n < 10_000 * 1024:
        return f"{n // 1024:4d}k"
    if n < 100 * 1024**2:
        return f"{n // 1024**2:2d}.{(n % 1024**2) * 10 // 1024**2}M"
    if n < 10_000 * 1024**2:
        return f"{n // 1024**2:4d}M"
    return f"{n // 1024**3:4d}G"


def _clock(seconds: float) -> str:
    whole = int(seconds)
    if whole <= 0:
        return "--:--:--"
    return f"{whole // 3600:2d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def meter_line(info: TransferInfo) -> str:
    """The meter's last line, as left on a non-terminal stderr when the transfer ends."""
    received = info.size_download
    expected = info.size_expected
    total = expected if expected is not None else received
    done = received > 0 and (expected is None or received >= expected)
    total_pct = 100 if done else 0
    received_pct = 100 if expected is not None and done else 0
    speed = int(received / info.time_total_s) if info.time_total_s > 0 else 0
    spent = _clock(info.time_total_s)
    return (f"{total_pct:3d} {_max5(total)}  {received_pct:3d} {_max5(received)}  "
            f"{0:3d} {_max5(0)}  {_max5(speed)}  {_max5(0)} "
            f"{spent if expected is not None else '--:--:--'} {spent} --:--:-- {_max5(speed)}\n")
