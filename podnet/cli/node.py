"""`podnet node stop|pause|resume|start NAME`: node failure drills on a `podnet up` cluster.

    stop    SIGTERM to the node's agent: it tells the API its node is going away and exits,
            as a node being shut down would. (A paused agent is continued so it can.)
    pause   SIGSTOP: the agent freezes mid-flight, as a hung or unreachable machine does. It
            answers nothing (gossip, heartbeats, its pods' traffic), so the other agents
            suspect it, then declare it dead and withdraw its routes; the control plane marks
            the Node NotReady after its grace period.
    resume  SIGCONT: a paused agent carries on where it stopped (gossip refutes the
            suspicion). A stopped agent cannot be resumed: use `start`.
    start   start a stopped agent again, with the command line and environment it had (saved
            by `stop`), and record its new pid and address in cluster.json.

The pid comes from the state directory's cluster.json, and is only signalled once
/proc/PID/cmdline shows it really is that node's podnet agent for this state directory (a pid
in an old cluster.json may belong to something else by now), as `podnet down` checks.
Exit codes: 0 done (or nothing to do), 1 the node cannot be acted on, 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from podnet.cluster import ClusterNotFound, read_cluster, state_dir, write_json_atomic

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
STOP_TIMEOUT_S = 10.0
START_TIMEOUT_S = 30.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see {self.prog} --help)\n")


# --- pure ------------------------------------------------------------------------------------

def process_state(stat: str | None) -> str:
    """"running", "paused" or "gone", from the text of /proc/PID/stat (None: no process)."""
    if not stat:
        return "gone"
    state = stat.rpartition(")")[2].split()[:1]
    if not state or state[0] in ("Z", "X", "x"):
        return "gone"
    return "paused" if state[0] in ("T", "t") else "running"


def is_agent_of(cmdline: list[str], directory: Path, name: str) -> bool:
    """Whether a process's argv is the podnet agent of node `name` in state dir `directory`."""
    if "agents" not in cmdline and "agent" not in cmdline:
        return False
    want = str(directory.resolve())

    def value(flag: str) -> str | None:
        for i, arg in enumerate(cmdline):
            if arg == flag and i + 1 < len(cmdline):
                return cmdline[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
        return None

    return value("--name") == name and value("--state-dir") == want


# --- process inspection (Linux /proc) --------------------------------------------------------

def _read(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def _state(pid: int) -> str:
    raw = _read(f"/proc/{pid}/stat")
    return process_state(raw.decode(errors="replace") if raw else None)


def _cmdline(pid: int) -> list[str]:
    raw = _read(f"/proc/{pid}/cmdline") or b""
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _kept_env(environ: bytes) -> dict[str, str]:
    """The part of an agent's environment that shapes it (module paths, podnet settings),
    saved for `start`; the rest (anything a user's shell may hold) is not written down."""
    out = {}
    for item in environ.split(b"\0"):
        key, eq, value = item.decode(errors="replace").partition("=")
        if eq and (key in ("PATH", "PYTHONPATH", "VIRTUAL_ENV") or key.startswith("PODNET_")):
            out[key] = value
    return out


def _launch_file(directory: Path, name: str) -> Path:
    return directory / "run" / f"agent-{name}.launch.json"


# --- the command -----------------------------------------------------------------------------

def parser() -> _Parser:
    p = _Parser(prog="podnet node", description=__doc__.split("\n\n")[0] if __doc__ else "",
                epilog="stop: SIGTERM; pause: SIGSTOP; resume: SIGCONT; start: run a stopped "
                       "agent again")
    p.add_argument("--state-dir", metavar="DIR", default=None,
                   help="the cluster's state directory (default: $PODNET_STATE_DIR or ./.podnet)")
    p.add_argument("action", choices=("stop", "pause", "resume", "start"))
    p.add_argument("name", metavar="NAME", help="the node, e.g. node-2")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    directory = state_dir(args.state_dir)
    prog = f"podnet node {args.action}"
    try:
        info = read_cluster(directory)
    except ClusterNotFound as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_FAILED
    nodes = [n for n in info.get("nodes") or [] if isinstance(n, dict)]
    entry = next((n for n in nodes if n.get("name") == args.name), None)
    if entry is None:
        known = ", ".join(str(n.get("name")) for n in nodes) or "none"
        print(f"{prog}: no node {args.name!r} in {directory / 'cluster.json'} (nodes: {known})",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    pid = entry.get("pid")
    pid = pid if isinstance(pid, int) and pid > 0 else 0
    state = _state(pid) if pid else "gone"
    if state != "gone" and not is_agent_of(_cmdline(pid), directory, args.name):
        state = "gone"  # the pid was reused by something else: never signal it
    action = {"stop": _stop, "pause": _pause, "resume": _resume, "start": _start}[args.action]
    return action(directory, info, entry, pid, state)


def _say(text: str) -> int:
    print(text)
    return 0


def _fail(action: str, text: str) -> int:
    print(f"podnet node {action}: {text}", file=sys.stderr)
    return EXIT_FAILED


def _stopped_hint(name: str, pid: int) -> str:
    return (f"{name} is stopped, not paused: its agent (pid {pid}) has exited. Start it again "
            f"with `podnet node start {name}`")


def _stop(directory: Path, info: dict[str, Any], entry: dict[str, Any], pid: int,
          state: str) -> int:
    name = entry["name"]
    if state == "gone":
        return _say(f"{name}: its agent is not running (pid {pid} has exited); nothing to stop")
    # Remember how it was started, so `podnet node start` can run it again exactly.
    environ = _read(f"/proc/{pid}/environ") or b""
    launch = {"argv": _cmdline(pid), "cwd": os.readlink(f"/proc/{pid}/cwd"),
              "env": _kept_env(environ)}
    write_json_atomic(_launch_file(directory, name), launch, mode=0o600)
    os.kill(pid, signal.SIGTERM)
    if state == "paused":
        os.kill(pid, signal.SIGCONT)   # a stopped process handles SIGTERM only once running
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and _state(pid) != "gone":
        time.sleep(0.02)
    if _state(pid) != "gone":
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return _say(f"{name}: sent SIGTERM to its agent (pid {pid}); it did not exit within "
                    f"{STOP_TIMEOUT_S:.0f}s, so it was killed (SIGKILL). Start it again with "
                    f"`podnet node start {name}`")
    return _say(f"{name}: sent SIGTERM to its agent (pid {pid}); it has exited (its Node goes "
                f"NotReady, its pods are evicted after the eviction timeout). Start it again "
                f"with `podnet node start {name}`")


def _pause(directory: Path, info: dict[str, Any], entry: dict[str, Any], pid: int,
           state: str) -> int:
    name = entry["name"]
    if state == "gone":
        return _fail("pause", _stopped_hint(name, pid))
    if state == "paused":
        return _say(f"{name}: its agent (pid {pid}) is already paused; "
                    f"`podnet node resume {name}` continues it")
    os.kill(pid, signal.SIGSTOP)
    return _say(f"{name}: paused its agent (pid {pid}, SIGSTOP): it answers nothing now, so the "
                f"other nodes will suspect it, then declare it dead; `podnet node resume "
                f"{name}` continues it")


def _resume(directory: Path, info: dict[str, Any], entry: dict[str, Any], pid: int,
            state: str) -> int:
    name = entry["name"]
    if state == "gone":
        return _fail("resume", _stopped_hint(name, pid))
    if state == "running":
        return _say(f"{name}: its agent (pid {pid}) is running; nothing to resume")
    os.kill(pid, signal.SIGCONT)
    return _say(f"{name}: resumed its agent (pid {pid}, SIGCONT)")


def _start(directory: Path, info: dict[str, Any], entry: dict[str, Any], pid: int,
           state: str) -> int:
    name = entry["name"]
    if state == "paused":
        return _fail("start", f"{name}'s agent (pid {pid}) is paused, not stopped: "
                              f"`podnet node resume {name}` continues it")
    if state == "running":
        return _say(f"{name}: its agent (pid {pid}) is running already")
    root = directory.resolve()
    ready = root / "run" / f"agent-{name}.json"
    try:
        launch = json.loads(_launch_file(directory, name).read_text())
        argv, cwd = list(launch["argv"]), str(launch["cwd"])
        env = {**os.environ, **{str(k): str(v) for k, v in dict(launch["env"]).items()}}
    except (OSError, ValueError, KeyError, TypeError):
        # Not stopped by `podnet node stop` (it crashed, or was killed): `podnet up`'s way.
        argv = [sys.executable, "-m", "agents", "--name", name, "--controlplane",
                str(info["api"]), "--listen-port", "0", "--state-dir", str(root),
                "--secret-file", str(root / "secret"), "--ready-file", str(ready)]
        cwd, env = os.getcwd(), dict(os.environ)
    if "--ready-file" in argv[:-1]:
        ready = Path(argv[argv.index("--ready-file") + 1])
    ready.unlink(missing_ok=True)
    logs = Path(str(info.get("logs_dir") or root / "logs"))
    with (logs / f"agent-{name}.stderr").open("ab") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=out, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    started: dict[str, Any] | None = None
    while time.monotonic() < deadline and started is None:
        if proc.poll() is not None:
            return _fail("start", f"{name}'s agent exited with code {proc.returncode}; see "
                                  f"{logs / f'agent-{name}.stderr'}")
        with contextlib.suppress(OSError, ValueError):
            started = json.loads(ready.read_text())
        time.sleep(0.05)
    if started is None:
        return _fail("start", f"{name}'s agent (pid {proc.pid}) is not ready after "
                              f"{START_TIMEOUT_S:.0f}s; see {logs / f'agent-{name}.jsonl'}")
    fresh = read_cluster(directory)
    for node in fresh.get("nodes") or []:
        if isinstance(node, dict) and node.get("name") == name:
            node["pid"] = proc.pid
            node["address"] = started.get("address", node.get("address"))
    write_json_atomic(directory / "cluster.json", fresh)
    return _say(f"{name}: started its agent again (pid {proc.pid}, "
                f"{started.get('address', '?')})")
