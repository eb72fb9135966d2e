"""Cluster DNS queries per second with dnsperf, beside NSD serving the same names.

A cluster-like zone (default 1,000 ClusterIP Services over 10 namespaces) is served twice on
127.0.0.1: by podnet's `DnsServer` in its own process (an in-memory store holding the
Namespace and Service objects, followed exactly as in the control plane, on uvloop), and by
NSD 4 from an equivalent zone file (one server process, like podnet's one event loop; own
config in a temp dir, unprivileged port, stopped at the end). The same dnsperf query file (A
for every Service name, in order) runs against both, alternating, and the median QPS of the
runs is reported with the ratio podnet/NSD.

    .venv/bin/python bench/dns.py [--services 1000] [--namespaces 10] [--seconds 10] [--runs 3]

Both servers answer from memory; podnet answers repeated query spellings from its cache of
encoded replies (CoreDNS's default Corefile has `cache 30` too). Needs /usr/sbin/nsd and
dnsperf; without NSD only podnet is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file is named dns.py: drop its own directory from the path, or `import dns` (dnspython)
# would find this script instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

NSD = shutil.which("nsd") or "/usr/sbin/nsd"
DNSPERF = shutil.which("dnsperf")
ZONE = "cluster.local"


def service_ip(i: int) -> str:
    return f"10.96.{10 + i // 250}.{1 + i % 250}"


def names(services: int, namespaces: int) -> list[tuple[str, str, str]]:
    """(service, namespace, clusterIP) for the whole zone."""
    return [(f"svc-{i:04d}", f"ns-{i % namespaces}", service_ip(i)) for i in range(services)]


# ------------------------------------------------------------------------- podnet server


async def serve_podnet(services: int, namespaces: int, ready_file: Path) -> None:
    from controlplane.dns.server import DnsServer
    from controlplane.store import Store
    from podnet.resources import BY_KIND

    store = Store.open(None)
    for n in range(namespaces):
        store.create(BY_KIND["Namespace"], {"metadata": {"name": f"ns-{n}"}})
    for name, ns, ip in names(services, namespaces):
        store.create(BY_KIND["Service"], {
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "type": "ClusterIP",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    await store.durable()
    server = DnsServer(store, host="127.0.0.1", port=0)
    await server.start()
    await server.synced.wait()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(ready_file.write_text, json.dumps({"port": server.port}))
    await stop.wait()
    print(json.dumps(server.engine.stats), file=sys.stderr)
    await server.close()


def start_podnet(tmp: Path, services: int, namespaces: int) -> tuple[subprocess.Popen[bytes],
                                                                    int]:
    ready = tmp / "podnet.json"
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(ready), "--services",
                             str(services), "--namespaces", str(namespaces)])
    return proc, _wait_port(proc, ready)


def _wait_port(proc: subprocess.Popen[bytes], ready: Path) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"podnet DNS exited with {proc.returncode}")
        if ready.exists():
            return int(json.loads(ready.read_text())["port"])
        time.sleep(0.05)
    raise SystemExit("podnet DNS did not start")


# ------------------------------------------------------------------------- NSD


def free_port() -> int:
    import socket

    # A port free for both UDP and TCP (NSD binds both).
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


def start_nsd(tmp: Path, services: int, namespaces: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    lines = [f"$ORIGIN {ZONE}.", "$TTL 5",
             f"@ IN SOA ns.dns.{ZONE}. hostmaster.{ZONE}. 1 7200 1800 86400 5",
             f"@ IN NS ns.dns.{ZONE}.", "ns.dns IN A 10.96.0.10",
             'dns-version 28800 IN TXT "1.1.0"']
    for name, ns, ip in names(services, namespaces):
        lines.append(f"{name}.{ns}.svc IN A {ip}")
        lines.append(f"_http._tcp.{name}.{ns}.svc IN SRV 0 100 80 {name}.{ns}.svc")
    (tmp / "cluster.zone").write_text("\n".join(lines) + "\n")
    (tmp / "nsd.conf").write_text(f"""server:
    ip-address: 127.0.0.1@{port}
    port: {port}
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{tmp}"
    database: ""
    zonelistfile: "{tmp}/zone.list"
    pidfile: "{tmp}/nsd.pid"
    xfrdfile: "{tmp}/xfrd.state"
    xfrdir: "{tmp}"
    logfile: "{tmp}/nsd.log"
    verbosity: 1
    hide-version: yes
remote-control:
    control-enable: no
zone:
    name: "{ZONE}"
    zonefile: "cluster.zone"
""")
    proc = subprocess.Popen([NSD, "-d", "-c", str(tmp / "nsd.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import dns.message
    import dns.query

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"nsd exited with {proc.returncode}; see {tmp}/nsd.log")
        try:
            dns.query.udp(dns.message.make_query(f"svc-0000.ns-0.svc.{ZONE}", "A"),
                          "127.0.0.1", port=port, timeout=0.2)
            return proc, port
        except Exception:  # not listening yet
            time.sleep(0.05)
    raise SystemExit("nsd did not start")


# ------------------------------------------------------------------------- dnsperf


def dnsperf(port: int, queries: Path, seconds: float) -> float:
    assert DNSPERF is not None
    out = subprocess.run([DNSPERF, "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
                          "-l", str(seconds), "-q", "200"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    match = re.search(r"Queries per second:\s+([\d.]+)", out)
    if match is None:
        raise SystemExit(f"dnsperf output not understood:\n{out}")
    if lost and int(lost.group(1)):
        print(f"  (dnsperf: {lost.group(1)} queries lost)")
    return float(match.group(1))


def check_answers(port: int, services: int, namespaces: int) -> None:
    """Both servers must give the same answers before their speed means anything."""
    import dns.message
    import dns.query

    for name, ns, ip in names(services, namespaces)[:: max(1, services // 20)]:
        r = dns.query.udp(dns.message.make_query(f"{name}.{ns}.svc.{ZONE}", "A"), "127.0.0.1",
                          port=port, timeout=2)
        got = [rd.to_text() for rrset in r.answer for rd in rrset]
        assert got == [ip], (name, got)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--namespaces", type=int, default=10)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        from podnet import eventloop

        eventloop.run(serve_podnet(args.services, args.namespaces, args.serve))
        return 0
    if DNSPERF is None:
        print("dnsperf is not installed", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="podnet-dns-bench-") as d:
        tmp = Path(d)
        queries = tmp / "queries.txt"
        queries.write_text("".join(f"{name}.{ns}.svc.{ZONE} A\n"
                                   for name, ns, _ in names(args.services, args.namespaces)))
        podnet, podnet_port = start_podnet(tmp, args.services, args.namespaces)
        nsd: subprocess.Popen[bytes] | None = None
        try:
            check_answers(podnet_port, args.services, args.namespaces)
            nsd_port = None
            if os.path.exists(NSD):
                nsd, nsd_port = start_nsd(tmp, args.services, args.namespaces)
                check_answers(nsd_port, args.services, args.namespaces)
            print(f"{args.services} Services in {args.namespaces} namespaces; dnsperf "
                  f"{args.seconds:.0f}s x {args.runs} runs per server, A queries, UDP, "
                  f"{os.cpu_count()} CPUs")
            results: dict[str, list[float]] = {"podnet": [], "nsd": []}
            for run in range(args.runs):
                for label, port in (("podnet", podnet_port), ("nsd", nsd_port)):
                    if port is None:
                        continue
                    qps = dnsperf(port, queries, args.seconds)
                    results[label].append(qps)
                    print(f"  run {run + 1} {label:6s} {qps:10,.0f} QPS")
            pod = statistics.median(results["podnet"])
            print(f"podnet DNS: {pod:,.0f} QPS (median; target >= 15,000)")
            if results["nsd"]:
                ref = statistics.median(results["nsd"])
                print(f"NSD {ref:,.0f} QPS (median); podnet/NSD = {pod / ref:.2f}")
        finally:
            podnet.send_signal(signal.SIGTERM)
            podnet.wait(10)
            if nsd is not None:
                nsd.send_signal(signal.SIGTERM)
                try:
                    nsd.wait(10)
                except subprocess.TimeoutExpired:
                    nsd.kill()
                    nsd.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
