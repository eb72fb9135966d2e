"""`podnet up` and `podnet down`: a whole cluster as child processes on 127.0.0.1.

`up` starts one control plane and N agents (`node-1` .. `node-N`), each a separate OS
process that finds its port itself and reports it through a ready file; then it writes
`kubeconfig` and `cluster.json`, applies the demo and any `-f` manifests, and prints a status
table. In the foreground, Ctrl-C stops every process; with `--detach` they keep running and
`podnet down` stops them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podnet.auth import api_token, generate_secret, load_secret
from podnet.cli.ui import login_url
from podnet.client import ApiClient, ApiUnavailable
from podnet.cluster import ClusterNotFound, read_cluster, write_json_atomic, write_kubeconfig
from podnet.manifests import ManifestError, apply, load_manifests
from podnet.pki import client_context
from podnet.resources import BY_KIND
from podnet.settings import add_network_arguments as add_network_arguments

NODES = BY_KIND["Node"]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO = EXAMPLES / "demo.yaml"


class UpError(Exception):
    """`podnet up` cannot go on; the message says why and what to do."""


# The control plane's addressing flags `podnet up` takes and passes on unchanged (the
# control plane's own flags, so one spelling works for both). The parser side lives in
# podnet.settings (light to import: every podnet command builds the parser).
NETWORK_FLAGS = ("cluster_cidr", "service_cidr", "node_cidr_mask", "node_cidr_mask_v6")


def network_args(args: argparse.Namespace) -> list[str]:
    """The control plane flags for what `add_network_arguments` parsed, checked first so a
    bad one fails here with the control plane's own one-line message."""
    from podnet import settings
    from podnet.settings import ControlPlaneSettings, SettingsError

    out: list[str] = ["--dual-stack"] if getattr(args, "dual_stack", False) else []
    for name in NETWORK_FLAGS:
        if (value := getattr(args, name, None)) is not None:
            out += ["--" + name.replace("_", "-"), str(value)]
    check = argparse.Namespace(**{n: getattr(args, n, None) for n in NETWORK_FLAGS},
                               dual_stack=True if out[:1] == ["--dual-stack"] else None,
                               advertise=False)
    try:  # the environment counts too (PODNET_CLUSTER_CIDR...), as in the control plane
        settings.load(ControlPlaneSettings, check)
    except SettingsError as e:
        raise UpError(str(e)) from None
    return out


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    ready_file: Path
    info: dict[str, Any] | None = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); it is not running.
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    return True


def _is_podnet(pid: int, state_dir: Path) -> bool:
    """Whether `pid` runs a podnet process of this state dir (a pid in an old cluster.json
    may have been reused by something else since)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if b"controlplane" not in args and b"agents" not in args:
        return False
    want = str(state_dir.resolve()).encode()
    return any(a == b"--state-dir" and i + 1 < len(args) and args[i + 1] == want
               for i, a in enumerate(args))


class Cluster:
    """The processes of one cluster, started and stopped together."""

    def __init__(self, state_dir: Path, nodes: int, detach: bool) -> None:
        self.state_dir = state_dir
        self.nodes = nodes
        self.detach = detach
        self.run_dir = state_dir / "run"
        self.logs_dir = state_dir / "logs"
        self.children: list[Child] = []

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # User images (`py:package.module:function`) import from the user's PYTHONPATH and
        # the directory `podnet up` was started in, as a local `python -m` would.
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if os.getcwd() not in paths:
            paths.append(os.getcwd())
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def spawn(self, name: str, args: list[str]) -> Child:
        ready = self.run_dir / f"{name}.json"
        ready.unlink(missing_ok=True)
        stderr = (self.logs_dir / f"{name}.stderr").open("ab")
        proc = subprocess.Popen(
            [sys.executable, *args, "--state-dir", str(self.state_dir.resolve()),
             "--secret-file", str((self.state_dir / "secret").resolve()),
             "--ready-file", str(ready)],
            stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, env=self._env(),
            # Own sessions: a detached cluster survives this command, and in the foreground
            # the terminal's Ctrl-C reaches only `podnet up`, which stops the children in
            # order (SIGTERM, then SIGKILL after a grace period).
            start_new_session=True)
        stderr.close()
        child = Child(name, proc, ready)
        self.children.append(child)
        return child

    async def wait_ready(self, child: Child, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise UpError(f"{child.name} exited with code {child.proc.returncode}; see "
                              f"{self.logs_dir / (child.name + '.stderr')}"
                              f"{_tail(self.logs_dir / (child.name + '.stderr'))}")
            if child.ready_file.exists():
                with contextlib.suppress(ValueError):
                    child.info = json.loads(child.ready_file.read_text())
                    return child.info
            await asyncio.sleep(0.02)
        raise UpError(f"{child.name} did not become ready within {timeout_s:.0f}s; see "
                      f"{self.logs_dir / (child.name + '.jsonl')}")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Agents first, then the control plane: a stopping agent tells the API its node is
        going away (so nobody waits for its routes), which needs the API still up."""
        agents = [c for c in self.children if c.name != "controlplane"]
        rest = [c for c in self.children if c.name == "controlplane"]
        for group in (agents, rest):
            for child in group:
                if child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            for child in group:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                if child.proc.poll() is None:
                    child.proc.kill()
                    child.proc.wait()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return ("\n  " + "\n  ".join(text)) if text else ""


async def wait_nodes_ready(api: ApiClient, names: list[str], timeout_s: float) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    nodes: list[Any] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(ApiUnavailable):
            nodes = (await api.list(NODES))["items"]
            ready = {n["metadata"]["name"] for n in nodes
                     if any(c.get("type") == "Ready" and c.get("status") == "True"
                            for c in n.get("status", {}).get("conditions", []))}
            if set(names) <= ready:
                return [n for n in nodes if n["metadata"]["name"] in names]
        await asyncio.sleep(0.05)
    missing = sorted(set(names) - {n["metadata"]["name"] for n in nodes})
    raise UpError(f"nodes not Ready within {timeout_s:.0f}s: {', '.join(missing) or 'some'}")


def cluster_pids(info: dict[str, Any]) -> list[int]:
    pids = [int(n["pid"]) for n in info.get("nodes", []) if n.get("pid")]
    return [*pids, int(info.get("controlplane", {}).get("pid") or 0)]


def check_not_running(state_dir: Path) -> None:
    try:
        info = read_cluster(state_dir)
    except ClusterNotFound:  # no readable cluster.json: nothing is running
        return
    alive = [p for p in cluster_pids(info) if p and _alive(p) and _is_podnet(p, state_dir)]
    if alive:
        raise UpError(f"a cluster is already running in {state_dir} (pids "
                      f"{', '.join(map(str, alive))}): stop it with `podnet down --state-dir "
                      f"{state_dir}` or choose another --state-dir")


async def up(state_dir: Path, nodes: int, detach: bool, manifests: list[Path], demo: bool,
             ready_timeout_s: float = 30.0, dns_strict: bool = False,
             policy_reject: bool = False, seed: int = 0,
             controlplane_args: list[str] | None = None) -> int:
    if nodes < 1:
        raise UpError(f"--nodes must be at least 1, got {nodes}")
    if not 0 <= seed <= 2**63 - 1:
        raise UpError(f"--seed must be 0..2^63-1, got {seed}")
    files = ([DEMO] if demo else []) + manifests
    try:  # a manifest that cannot be read fails before anything starts
        objects = [obj for path in files for obj in load_manifests(path)]
    except ManifestError as e:
        raise UpError(str(e)) from None
    state_dir.mkdir(parents=True, exist_ok=True)
    check_not_running(state_dir)
    for d in ("run", "logs"):
        (state_dir / d).mkdir(exist_ok=True)
    secret_file = state_dir / "secret"
    secret = load_secret(secret_file) if secret_file.exists() else generate_secret(secret_file)
    started = time.monotonic()
    cluster = Cluster(state_dir, nodes, detach)
    ok = False
    try:
        # mDNS stays on loopback under `podnet up`, whatever PODNET_MDNS_INTERFACE says: the
        # machine's other interfaces may be a real network (LAB.md).
        cp = cluster.spawn("controlplane", ["-m", "controlplane", "--listen-port", "0",
                                            "--mdns-interface", "127.0.0.1",
                                            "--fault-seed", str(seed),
                                            *(controlplane_args or []),
                                            *(["--dns-strict"] if dns_strict else [])])
        cp_info = await cluster.wait_ready(cp, ready_timeout_s)
        api_url = str(cp_info["api"])
        ca_pem = Path(cp_info["ca_file"]).read_bytes()
        names = [f"node-{i}" for i in range(1, nodes + 1)]
        agents = [cluster.spawn(f"agent-{n}", ["-m", "agents", "--name", n, "--controlplane",
                                               api_url, "--listen-port", "0",
                                               *(["--policy-reject"] if policy_reject else [])])
                  for n in names]
        async with ApiClient(api_url, api_token(secret),
                             ssl_context=client_context(ca_pem)) as api:
            for child in agents:
                await cluster.wait_ready(child, ready_timeout_s)
            node_objs = await wait_nodes_ready(api, names, ready_timeout_s)
            elapsed = time.monotonic() - started
            info = cluster_info(state_dir, api_url, cp, agents, node_objs)
            info["ca_file"] = str(Path(cp_info["ca_file"]).resolve())
            info["dns"] = cp_info.get("dns")  # {host, port}: `dig @host -p port ...`
            info["ui"] = login_url(api_url, secret, time.time())  # the topology page
            write_kubeconfig(state_dir / "kubeconfig", api_url, api_token(secret), ca_pem)
            write_json_atomic(state_dir / "cluster.json", info)
            print_status(info, elapsed)
            for obj in objects:
                print(f"  {await apply(api, obj)}")
        ok = True
    except ManifestError as e:
        raise UpError(f"{e} (the cluster was stopped)") from None
    finally:
        if not ok:
            cluster.stop()
            (state_dir / "cluster.json").unlink(missing_ok=True)
    if detach:
        print(f"Detached. Stop it with: podnet down --state-dir {state_dir}")
        return 0
    print("Press Ctrl-C to stop the cluster.")
    return await supervise(cluster, state_dir)


async def supervise(cluster: Cluster, state_dir: Path) -> int:
    """Run until Ctrl-C/SIGTERM; report a child that dies on its own."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reported: set[str] = set()
    while not stop.is_set():
        for child in cluster.children:
            if child.proc.poll() is not None and child.name not in reported:
                reported.add(child.name)
                print(f"podnet: {child.name} exited with code {child.proc.returncode}; see "
                      f"{cluster.logs_dir / (child.name + '.stderr')}", file=sys.stderr)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    print("\nStopping the cluster...")
    cluster.stop()
    (state_dir / "cluster.json").unlink(missing_ok=True)
    print("Stopped. Objects are kept in the store; `podnet up` brings them back.")
    return 0


def cluster_info(state_dir: Path, api_url: str, cp: Child, agents: list[Child],
                 nodes: list[Any]) -> dict[str, Any]:
    cidrs = {n["metadata"]["name"]: n.get("spec", {}).get("podCIDR") for n in nodes}
    # One per family, primary first (podCIDR is the primary alone, as before dual-stack).
    all_cidrs = {n["metadata"]["name"]: n.get("spec", {}).get("podCIDRs") for n in nodes}
    return {
        "api": api_url,
        "kubeconfig": str((state_dir / "kubeconfig").resolve()),
        "secret_file": str((state_dir / "secret").resolve()),
        "logs_dir": str((state_dir / "logs").resolve()),
        "controlplane": {"pid": cp.proc.pid, "address": (cp.info or {}).get("address")},
        "nodes": [{"name": (a.info or {}).get("name"), "address": (a.info or {}).get("address"),
                   "podCIDR": cidrs.get((a.info or {}).get("name")),
                   "podCIDRs": all_cidrs.get((a.info or {}).get("name"))
                   or [cidrs.get((a.info or {}).get("name"))], "pid": a.proc.pid}
                  for a in agents],
    }


def print_status(info: dict[str, Any], elapsed_s: float) -> None:
    print(f"podnet cluster is up ({elapsed_s:.1f}s)")
    print(f"  API         {info['api']}")
    print(f"  kubeconfig  {info['kubeconfig']}")
    print(f"  logs        {info['logs_dir']}")
    if ui := info.get("ui"):
        print(f"  UI          {ui}")
    if dns := info.get("dns"):
        print(f"  DNS         {dns['host']}:{dns['port']} (UDP+TCP; try: dig @{dns['host']} "
              f"-p {dns['port']} kubernetes.default.svc.cluster.local)")
    cidrs = [",".join(map(str, n.get("podCIDRs") or [n.get("podCIDR")])) for n in info["nodes"]]
    # One podCIDR per family on a dual-stack cluster, primary first.
    rows = [("NODE", "AGENT ADDRESS", "POD CIDRS" if "," in "".join(cidrs) else "POD CIDR",
             "READY")]
    rows += [(n["name"], n["address"], c, "True")
             for n, c in zip(info["nodes"], cidrs, strict=True)]
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    for row in rows:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print(f"Try:  export KUBECONFIG={info['kubeconfig']}; kubectl get pods -o wide")


def _terminate(pids: list[int], timeout_s: float) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            # A node paused with `podnet node pause` handles the SIGTERM only once running.
            os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.02)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def down(state_dir: Path, timeout_s: float = 10.0) -> int:
    info = read_cluster(state_dir)
    agents = [int(n["pid"]) for n in info.get("nodes", []) if n.get("pid")]
    ours = [p for p in cluster_pids(info) if p and _alive(p) and _is_podnet(p, state_dir)]
    # Agents first (each tells the API its node is going away), then the control plane.
    _terminate([p for p in ours if p in agents], timeout_s)
    _terminate([p for p in ours if p not in agents], timeout_s)
    (state_dir / "cluster.json").unlink(missing_ok=True)
    print(f"Stopped {len(ours)} process(es) of the cluster in {state_dir}.")
    return 0
