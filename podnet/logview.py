"""`podnet logs`: every process's JSON log, merged in time order and filtered (like
`hubble observe`).

Each process writes `<logs_dir>/<process>.jsonl` (and rotated `.jsonl.1`, `.2`, ... older first
when read). Each file is already in time order, so the files of one process are concatenated
oldest first and the processes are merged lazily by `ts` (a heap), never loaded whole.
Lines that are not JSON objects with a `ts` are counted and reported, not fatal. The
`log.rotated` header of each process's newest file says how many files and events rotation
deleted; that total is reported too, so a short answer is never silently short.
"""

from __future__ import annotations

import datetime
import fnmatch
import heapq
import json
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

FOLLOW_POLL_S = 0.2
# What people type for a verdict, and the errno names the data path logs for it.
VERDICT_ALIASES = {
    "refused": {"refused", "econnrefused"},
    "unreachable": {"unreachable", "ehostunreach", "enetunreach"},
    "reset": {"reset", "econnreset"},
    "dropped": {"dropped"},
    # NetworkPolicy decisions: every `policy.verdict` event says allowed or denied.
    "denied": {"denied"},
    "deny": {"denied"},
    "allowed": {"allowed"},
    "allow": {"allowed"},
}
# Fields every event has, or that the trace shows in its own columns.
_COMMON = ("ts", "level", "event", "component", "node", "flow", "pod", "namespace", "src",
           "dst", "proto", "verdict")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class LogViewError(Exception):
    """A bad filter (e.g. an unparsable --since)."""


@dataclass
class Event:
    ts: float                   # seconds since the epoch, for ordering and --since
    process: str                # the file's stem: "agent-node-1", "controlplane"
    data: dict[str, Any]
    raw: str


@dataclass
class Stats:
    malformed: int = 0
    files_deleted: int = 0      # rotated away, from the newest `log.rotated` headers
    events_deleted: int = 0
    events_dropped: int = 0     # `log.dropped`: a process could not write them

    def notes(self) -> list[str]:
        out = []
        if self.malformed:
            out.append(f"{self.malformed} malformed line(s) skipped")
        if self.files_deleted:
            out.append(f"{self.events_deleted} event(s) in {self.files_deleted} rotated file(s) "
                       "were deleted (size cap)")
        if self.events_dropped:
            out.append(f"{self.events_dropped} event(s) were dropped by their process "
                       "(could not be written)")
        return out


@dataclass
class Filter:
    flow: str | None = None
    pod: str | None = None              # "NS/NAME", or "NAME" in any namespace
    node: str | None = None
    event: str | None = None            # a glob: "flow.*", "tunnel.stream_*"
    verdict: str | None = None
    since_ts: float | None = None
    _verdicts: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.verdict is not None:
            key = self.verdict.lower()
            self._verdicts = VERDICT_ALIASES.get(key, {key})

    def match(self, event: Event) -> bool:
        d = event.data
        if self.flow is not None and d.get("flow") != self.flow:
            return False
        if self.node is not None and d.get("node") != self.node:
            return False
        if self.pod is not None:
            ns, _, name = self.pod.rpartition("/")
            if d.get("pod") != name or (ns and d.get("namespace") != ns):
                return False
        if self.event is not None and not fnmatch.fnmatchcase(str(d.get("event", "")),
                                                              self.event):
            return False
        if self._verdicts and str(d.get("verdict", "")).lower() not in self._verdicts:
            return False
        return self.since_ts is None or event.ts >= self.since_ts


def parse_duration(text: str) -> float:
    """`30s`, `5m`, `2h`, `1d`, `250ms` -> seconds."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise LogViewError(f"bad duration {text!r}: use e.g. 30s, 5m, 2h")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_ts(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def parse_line(line: str, process: str, stats: Stats) -> Event | None:
    line = line.strip()
    if not line:
        return None
    try:
        data = json.loads(line)
    except ValueError:
        stats.malformed += 1
        return None
    ts = parse_ts(data.get("ts")) if isinstance(data, dict) else None
    if ts is None or not isinstance(data, dict):
        stats.malformed += 1
        return None
    if data.get("event") == "log.dropped":
        stats.events_dropped += int(data.get("events", 0) or 0)
    return Event(ts, process, data, line)


def log_series(logs_dir: Path) -> dict[str, list[Path]]:
    """process -> its files, oldest first (`x.jsonl.3`, `.2`, `.1`, `x.jsonl`)."""
    series: dict[str, list[tuple[int, Path]]] = {}
    for path in logs_dir.iterdir():
        name = path.name
        base, dot, suffix = name.rpartition(".")
        if name.endswith(".jsonl"):
            series.setdefault(name[:-len(".jsonl")], []).append((0, path))
        elif dot and suffix.isdigit() and base.endswith(".jsonl"):
            series.setdefault(base[:-len(".jsonl")], []).append((int(suffix), path))
    return {p: [path for _, path in sorted(files, key=lambda f: -f[0])]
            for p, files in sorted(series.items())}


def _read_series(process: str, files: list[Path], stats: Stats) -> Iterator[Event]:
    for path in files:
        try:
            with path.open("r", encoding="utf-8", errors="replace") as f:
                for line in f:
                    event = parse_line(line, process, stats)
                    if event is not None:
                        yield event
        except FileNotFoundError:
            continue    # rotated away while we read: its header in the newer file counts it


def _rotation_stats(series: dict[str, list[Path]], stats: Stats) -> None:
    for files in series.values():
        newest = files[-1]
        try:
            with newest.open("rb") as f:
                header = json.loads(f.readline(65536))
        except (OSError, ValueError):
            continue
        if isinstance(header, dict) and header.get("event") == "log.rotated":
            stats.files_deleted += int(header.get("files_deleted", 0) or 0)
            stats.events_deleted += int(header.get("events_deleted", 0) or 0)


def read_events(logs_dir: Path, stats: Stats) -> Iterator[Event]:
    """Every event of every process, merged in time order."""
    series = log_series(logs_dir)
    _rotation_stats(series, stats)
    streams = [_read_series(p, files, stats) for p, files in series.items()]
    return heapq.merge(*streams, key=lambda e: e.ts)


# -- output


def _value(v: Any) -> str:
    if isinstance(v, str):
        return v if v and " " not in v else json.dumps(v)
    return json.dumps(v, default=str, separators=(",", ":"))


def _extras(d: dict[str, Any]) -> str:
    return " ".join(f"{k}={_value(v)}" for k, v in d.items()
                    if k not in _COMMON and v is not None and v != [])


def _clock(ts: float) -> str:
    t = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return t.strftime("%H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def render_line(event: Event) -> str:
    """One compact line: time, where, what, the traffic fields, the decision."""
    d = event.data
    parts = [_clock(event.ts), f"{event.process:<18}", f"{d.get('level', '')!s:<7}",
             str(d.get("event", ""))]
    if d.get("flow"):
        parts.append(f"flow={d['flow']}")
    if d.get("pod"):
        parts.append(f"pod={d.get('namespace', '')}/{d['pod']}")
    if d.get("src") or d.get("dst"):
        parts.append(f"{d.get('src', '?')} -> {d.get('dst', '?')}")
    if d.get("proto"):
        parts.append(str(d["proto"]))
    if d.get("verdict"):
        parts.append(f"[{d['verdict']}]")
    extras = _extras(d)
    if extras:
        parts.append(extras)
    return " ".join(parts)


def render_trace(events: list[Event], flow: str) -> list[str]:
    """One request's path: one line per hop, offsets from its first event."""
    if not events:
        return [f"no events for flow {flow}"]
    t0 = events[0].ts
    first = events[0].data
    head = f"flow {flow}"
    if first.get("pod"):
        head += f"  from {first.get('namespace', '')}/{first['pod']}"
    if first.get("src") and first.get("dst"):
        head += f"  {first['src']} -> {first['dst']}"
    if first.get("proto"):
        head += f" {first['proto']}"
    lines = [head]
    for e in events:
        d = e.data
        offset = f"+{(e.ts - t0) * 1000:.1f}ms"
        verdict = f"[{d['verdict']}]" if d.get("verdict") else ""
        lines.append(f"  {offset:>10}  {e.process:<18} {d.get('event', '')!s:<20}"
                     f" {verdict} {_extras(d)}".rstrip())
    return lines


def _print_notes(stats: Stats, err: TextIO) -> None:
    for note in stats.notes():
        print(f"podnet logs: {note}", file=err)


def show(logs_dir: Path, flt: Filter, *, output: str = "text", follow: bool = False,
         out: TextIO = sys.stdout, err: TextIO = sys.stderr,
         max_follow_s: float | None = None) -> int:
    """Print what matches; returns the exit code. `--flow` without `-o json` is a trace."""
    if not logs_dir.is_dir():
        print(f"podnet logs: no logs in {logs_dir}", file=err)
        return 1
    stats = Stats()
    matched = [e for e in read_events(logs_dir, stats) if flt.match(e)]
    if output == "json":
        for e in matched:
            print(e.raw, file=out)
    elif flt.flow is not None and not follow:
        for line in render_trace(matched, flt.flow):
            print(line, file=out)
    else:
        for e in matched:
            print(render_line(e), file=out)
    out.flush()
    _print_notes(stats, err)
    if follow:
        _follow(logs_dir, flt, output, out, stats, max_follow_s)
    return 0


def _follow(logs_dir: Path, flt: Filter, output: str, out: TextIO, stats: Stats,
            max_s: float | None) -> None:
    """Tail every current file for new lines (new processes and rotations included)."""
    offsets: dict[Path, tuple[int, int]] = {}      # path -> (inode, offset)
    for path in logs_dir.glob("*.jsonl"):
        st = path.stat()
        offsets[path] = (st.st_ino, st.st_size)
    deadline = None if max_s is None else time.monotonic() + max_s
    while deadline is None or time.monotonic() < deadline:
        time.sleep(FOLLOW_POLL_S)
        fresh: list[Event] = []
        for path in logs_dir.glob("*.jsonl"):
            fresh.extend(_tail(path, offsets, stats))
        fresh.sort(key=lambda e: e.ts)      # across files, within one poll
        for e in fresh:
            if flt.match(e):
                print(e.raw if output == "json" else render_line(e), file=out)
        out.flush()


def _tail(path: Path, offsets: dict[Path, tuple[int, int]], stats: Stats) -> Iterable[Event]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return []
    inode, offset = offsets.get(path, (st.st_ino, 0))
    if inode != st.st_ino or st.st_size < offset:
        offset = 0      # rotated: a new file under the same name
    if st.st_size == offset:
        offsets[path] = (st.st_ino, offset)
        return []
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1        # a half-written last line waits for the next poll
    offsets[path] = (st.st_ino, offset + end)
    process = path.name[:-len(".jsonl")]
    events = [parse_line(line, process, stats)
              for line in chunk[:end].decode("utf-8", "replace").splitlines()]
    return [e for e in events if e is not None]


# -- the command line (registered by podnet.cli)


def add_arguments(p: Any) -> None:
    p.add_argument("--flow", default=None, metavar="ID",
                   help="one flow: its whole path across processes, as a trace")
    p.add_argument("--pod", default=None, metavar="NS/NAME", help="events of this pod")
    p.add_argument("--node", default=None, metavar="NAME", help="events logged by this node")
    p.add_argument("--event", default=None, metavar="PATTERN",
                   help="event name glob, e.g. 'flow.*' or 'tunnel.stream_*'")
    p.add_argument("--verdict", default=None, metavar="VERDICT",
                   help="refused, unreachable, reset, dropped, accepted, ... (errno names "
                        "too); denied / allowed: NetworkPolicy verdicts (policy.verdict)")
    p.add_argument("--since", default=None, metavar="DURATION",
                   help="only the last DURATION: 30s, 5m, 2h")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text",
                   help="json: the raw events, one JSON object a line")


def run(args: Any, directory: Path) -> int:
    """`podnet logs`: the logs directory from cluster.json, else DIR/logs (a stopped cluster's
    logs stay readable)."""
    logs_dir = directory / "logs"
    try:
        info = json.loads((directory / "cluster.json").read_text())
        logs_dir = Path(info.get("logs_dir") or logs_dir)
    except (OSError, ValueError, AttributeError):
        pass
    try:
        since = None if args.since is None else time.time() - parse_duration(args.since)
        flt = Filter(flow=args.flow, pod=args.pod, node=args.node, event=args.event,
                     verdict=args.verdict, since_ts=since)
        return show(logs_dir, flt, output=args.output, follow=args.follow)
    except LogViewError as e:
        print(f"podnet logs: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0        # `podnet logs | head`
