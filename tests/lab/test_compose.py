"""A real `docker-compose up` of docker-compose.yml: 5 nodes, the demo, traffic checked.

Root only (CI runs it as root). Following /work/shared/LAB.md: Debian's docker.io, docker-compose
and debootstrap are installed if missing; a private dockerd runs with its own data root, exec
root and socket in a temp dir and addresses in 198.18.0.0/15; the base image is a debootstrap
rootfs (cached in /var/cache/podnet-lab) imported with `docker import`; the podnet image is built
with `--network none` from wheels built on the host. Everything is torn down in `finally`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path("/var/cache/podnet-lab")
ROOTFS_TAR = CACHE / "bookworm-python3-rootfs.tar"
NODES = 5
DOCKER = "/usr/bin/docker"  # Debian's client, matching its dockerd (PATH may hold another)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: runs its own dockerd"),
    pytest.mark.skipif(sys.platform != "linux", reason="needs Linux"),
    pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                       reason="wheels built on the host must match Debian bookworm's Python 3.11"),
]

NODE_STATUS = """
import asyncio, json
from pathlib import Path
from podnet.auth import api_token, load_secret
from podnet.client import ApiClient
from podnet.cluster import client_ssl, read_cluster
from podnet.resources import BY_KIND

async def main():
    info = read_cluster(Path('/var/lib/podnet'))
    token = api_token(load_secret(Path(info['secret_file'])))
    async with ApiClient(info['api'], token, ssl_context=client_ssl(info)) as c:
        nodes = (await c.list(BY_KIND['Node']))['items']
        pods = (await c.list(BY_KIND['Pod'], 'default'))['items']
        svcs = (await c.list(BY_KIND['Service'], 'default'))['items']
    print(json.dumps({
        'ready': sorted(n['metadata']['name'] for n in nodes
                        if any(x.get('type') == 'Ready' and x.get('status') == 'True'
                               for x in n.get('status', {}).get('conditions', []))),
        'pods': {p['metadata']['name']: {'phase': p.get('status', {}).get('phase'),
                                          'ip': p.get('status', {}).get('podIP'),
                                          'node': p.get('spec', {}).get('nodeName')}
                 for p in pods},
        'services': {s['metadata']['name']: s['spec'].get('clusterIP') for s in svcs}}))

asyncio.run(main())
"""


def run(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 120,
        check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}")
    return proc


def ensure_packages() -> None:
    need = [pkg for pkg, binary in (("docker.io", "/usr/sbin/dockerd"),
                                    ("docker-compose", "/usr/bin/docker-compose"),
                                    ("debootstrap", "/usr/sbin/debootstrap"))
            if not Path(binary).exists()]
    if not need:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env, timeout=600)
    run(["apt-get", "install", "-y", "-qq", *need], env=env, timeout=900)


def debian_mirror() -> str:
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for stanza in sources.read_text().split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:(.*)$", stanza, re.M)
            if uris and suites and "bookworm" in suites.group(1).split():
                return uris.group(1)
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        m = re.search(r"^deb\s+(\S+)\s+bookworm\s", legacy.read_text(), re.M)
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


def rootfs_tarball(lab: Path) -> Path:
    """A Debian bookworm minbase rootfs with python3 + venv, as a tar (cached between runs)."""
    if ROOTFS_TAR.exists():
        return ROOTFS_TAR
    rootfs = lab / "rootfs"
    run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm",
         str(rootfs), debian_mirror()], timeout=900)
    tar = lab / "rootfs.tar"
    run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], timeout=300)
    shutil.rmtree(rootfs, ignore_errors=True)
    with contextlib.suppress(OSError):
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = ROOTFS_TAR.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(tar, tmp)
        os.replace(tmp, ROOTFS_TAR)
    return tar


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


class Lab:
    """A private dockerd and a compose project, with everything they create undone in stop()."""

    def __init__(self, lab: Path) -> None:
        self.lab = lab
        self.run_id = uuid.uuid4().hex[:8]
        self.sock = lab / "docker.sock"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}", "DOCKER_BUILDKIT": "0",
                    "COMPOSE_PROJECT_NAME": f"podnetlab{self.run_id}",
                    "PODNET_IMAGE": f"podnet-lab:{self.run_id}",
                    "PODNET_PULL_POLICY": "never", "PODNET_API_PORT": str(free_port())}
        self.base = f"podnet-lab-base:{self.run_id}"
        self.dockerd: subprocess.Popen[bytes] | None = None
        self.links_before = links()
        self.added_route = False
        self.compose_up = False

    def docker(self, *args: str, timeout: float = 120, check: bool = True
               ) -> subprocess.CompletedProcess[str]:
        return run([DOCKER, *args], env=self.env, timeout=timeout, check=check)

    def compose(self, *args: str, timeout: float = 180, check: bool = True
                ) -> subprocess.CompletedProcess[str]:
        return run(["docker-compose", "-f", str(REPO / "docker-compose.yml"), *args],
                   env=self.env, timeout=timeout, check=check, cwd=REPO)

    def start_dockerd(self) -> None:
        # Safety net of LAB.md: 198.18/15 never leaves the machine from the root namespace.
        proc = run(["ip", "route", "add", "unreachable", "198.18.0.0/15"], check=False)
        self.added_route = proc.returncode == 0
        log = (self.lab / "dockerd.log").open("wb")
        self.dockerd = subprocess.Popen(
            ["/usr/sbin/dockerd", "--bip=198.18.0.129/26",
             "--default-address-pool", "base=198.18.1.0/24,size=28",
             "--data-root", str(self.lab / "data"), "--exec-root", str(self.lab / "exec"),
             "--pidfile", str(self.lab / "dockerd.pid"), "-H", f"unix://{self.sock}",
             # No NAT or iptables rules on the host: containers talk on their bridge only.
             "--iptables=false", "--ip-masq=false"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.dockerd.poll() is not None:
                raise AssertionError(f"dockerd exited: {self.tail('dockerd.log')}")
            if self.docker("info", check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.5)
        raise AssertionError(f"dockerd not up in 60s: {self.tail('dockerd.log')}")

    def tail(self, name: str, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.lab / name).read_text(errors="replace").splitlines()[-n:])
        return ""

    def build_images(self) -> None:
        self.docker("import", str(rootfs_tarball(self.lab)), self.base, timeout=300)
        ctx = self.lab / "context"
        shutil.copytree(REPO, ctx, ignore=shutil.ignore_patterns(
            ".git", ".venv", ".podnet", "__pycache__", "*.egg-info", ".*_cache", "build",
            "wheelhouse"))
        # Wheels of podnet and its dependencies for the image's Python 3.11 (pip inside a
        # build cannot verify TLS here, so the build itself runs with --network none).
        run([str(REPO / ".venv" / "bin" / "pip"), "wheel", "-q", "-w", str(ctx / "wheelhouse"),
             f"{ctx}[fast]"], timeout=600, cwd=ctx)
        self.docker("build", "--network", "none", "--build-arg", f"BASE={self.base}",
                    "-t", self.env["PODNET_IMAGE"], str(ctx), timeout=600)

    def status(self) -> dict[str, object]:
        out = self.compose("exec", "-T", "controlplane", "python", "-c", NODE_STATUS,
                           timeout=60).stdout
        data: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        return data

    def podnet_exec(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return self.compose("exec", "-T", "controlplane", "podnet", "exec", "client", "--",
                            *cmd, timeout=60, check=False)

    def stop(self) -> None:
        errors: list[str] = []
        if self.compose_up:
            with contextlib.suppress(Exception):
                self.compose("down", "-v", "--remove-orphans", "-t", "5", timeout=180)
        if self.dockerd is not None and self.dockerd.poll() is None:
            with contextlib.suppress(Exception):
                for image in (self.env["PODNET_IMAGE"], self.base):
                    self.docker("rmi", "-f", image, check=False, timeout=60)
            self.dockerd.send_signal(signal.SIGTERM)
            try:
                self.dockerd.wait(timeout=30)
            except subprocess.TimeoutExpired:
                errors.append("dockerd did not stop in 30s; killed")
                self.dockerd.kill()
                self.dockerd.wait()
        for link in sorted(links() - self.links_before):  # docker0 and compose bridges
            run(["ip", "link", "del", link], check=False)
        if self.added_route:
            run(["ip", "route", "del", "unreachable", "198.18.0.0/15"], check=False)
        lab = str(self.lab)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(lab)]
        for mount in sorted(mounts, key=len, reverse=True):
            run(["umount", "-l", mount], check=False)
        shutil.rmtree(self.lab, ignore_errors=True)
        assert not errors, errors


@pytest.fixture
def lab() -> Iterator[Lab]:
    ensure_packages()
    the_lab = Lab(Path(tempfile.mkdtemp(prefix="podnet-compose-")))
    try:
        the_lab.start_dockerd()
        yield the_lab
    finally:
        the_lab.stop()


def wait_for(what: str, lab: Lab, ok: object, timeout_s: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    last: dict[str, object] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(AssertionError, ValueError, IndexError):
            last = lab.status()
            if callable(ok) and ok(last):
                return last
        time.sleep(1)
    logs = lab.compose("logs", "--no-color", "--tail", "20", check=False, timeout=60).stdout
    raise AssertionError(f"{what}: not reached in {timeout_s:.0f}s; last status {last}\n{logs}")


def test_compose_up_scale_5_runs_the_demo(lab: Lab) -> None:
    try:
        check_cluster(lab)
    except BaseException:
        if lab.compose_up:  # what each container said, in the test report
            print(lab.compose("logs", "--no-color", "--tail", "40", check=False).stdout)
        raise


def check_cluster(lab: Lab) -> None:
    started = time.monotonic()
    lab.build_images()
    built = time.monotonic()
    lab.compose_up = True
    lab.compose("up", "-d", "--no-build", "--scale", f"node={NODES}", timeout=300)

    # The one-shot demo service applies the manifests once 2 nodes are Ready, then exits 0.
    demo = lab.compose("ps", "-q", "demo").stdout.strip()
    code = lab.docker("wait", demo, timeout=180).stdout.strip()
    demo_logs = lab.docker("logs", demo, check=False).stdout
    assert code == "0", f"demo exited {code}:\n{demo_logs}"
    assert "service/web created" in demo_logs, demo_logs

    names = [f"node-{i}" for i in range(1, NODES + 1)]
    status = wait_for(f"{NODES} nodes Ready and the demo running", lab, lambda s: (
        s["ready"] == names and len(s["pods"]) >= 7
        and all(p["phase"] == "Running" and p["ip"] for p in s["pods"].values())), 120)
    pods: dict[str, dict[str, str]] = status["pods"]  # type: ignore[assignment]
    services: dict[str, str] = status["services"]  # type: ignore[assignment]
    assert pods["echo-b"]["node"] != pods["client"]["node"], pods

    # Pod to pod across nodes (containers on the docker network), no NAT: the echo sees the
    # client's pod IP.
    cross = lab.podnet_exec("curl", "-s", f"http://{pods['echo-b']['ip']}:8080/")
    assert cross.returncode == 0, cross
    assert pods["client"]["ip"] in cross.stdout, cross.stdout

    # Through the ClusterIP of the `web` Service (the control plane's proxy).
    via_ip = lab.podnet_exec("curl", "-s", f"http://{services['web']}/")
    assert via_ip.returncode == 0, via_ip
    assert pods["client"]["ip"] in via_ip.stdout, via_ip.stdout

    # By DNS name, through the pod's resolver and kube-dns.
    lookup = lab.podnet_exec("nslookup", "web.default.svc.cluster.local")
    assert lookup.returncode == 0 and services["web"] in lookup.stdout, lookup
    by_name = lab.podnet_exec("curl", "-s", "http://web/")
    assert by_name.returncode == 0 and pods["client"]["ip"] in by_name.stdout, by_name

    # Every process logs into the shared `logs` volume that `podnet logs` reads.
    files = lab.compose("exec", "-T", "controlplane", "ls", "/var/lib/podnet/logs").stdout
    assert "controlplane.jsonl" in files, files
    assert all(f"agent-{n}.jsonl" in files for n in names), files

    # Healthchecks report every service healthy.
    ps = lab.compose("ps").stdout
    assert "unhealthy" not in ps and ps.count("(healthy)") == NODES + 1, ps
    print(f"compose test: images built in {built - started:.0f}s, "
          f"cluster checked in {time.monotonic() - built:.0f}s")
