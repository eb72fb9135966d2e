"""The `podnet` command line.

    podnet up [--nodes N] [--state-dir DIR] [--detach] [-f FILE]... [--no-demo]
    podnet down [--state-dir DIR]
    podnet exec [-n NS] POD [-c CONTAINER] [-i] -- CMD ARGS...
    podnet apply -f FILE... [--api URL --secret-file F] [--wait-nodes N]
    podnet logs [--flow ID] [--pod NS/NAME] [--node N] [--event GLOB] [--verdict V] [-f]
    podnet explain FROM TO [--port P] [--protocol tcp|udp] | --flow ID   [-o json]
    podnet fault add NAME --from SEL --to SEL [--delay-ms D] ... | list | del NAME|--all
    podnet node stop|pause|resume|start NAME
    podnet ui                    (a one-time login URL of the live topology page)
    podnet controlplane ...      (the control plane process; `--help` lists its flags)
    podnet agent --name NAME --controlplane URL ...   (one node agent)

Client commands find the cluster through --state-dir, else PODNET_STATE_DIR, else ./.podnet.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from podnet import __version__
from podnet.cluster import ClusterNotFound, client_ssl, read_cluster, state_dir
from podnet.settings import add_network_arguments


def _state_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", metavar="DIR", default=None,
                   help="the cluster's state directory (default: $PODNET_STATE_DIR or ./.podnet)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="podnet", description=(
        "Kubernetes pod networking, emulated with real processes and real sockets."))
    p.add_argument("--version", action="version", version=f"podnet {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    up = sub.add_parser("up", help="start a local cluster (control plane + N agents)",
                        description="Start a control plane and N node agents as processes on "
                                    "127.0.0.1, write DIR/kubeconfig and DIR/cluster.json, and "
                                    "apply the demo and any -f manifests. Ctrl-C stops it.")
    up.add_argument("--nodes", type=int, default=3, metavar="N",
                    help="number of nodes, named node-1..node-N (default 3)")
    _state_dir_arg(up)
    up.add_argument("--detach", action="store_true",
                    help="return once every node is Ready; stop later with `podnet down`")
    up.add_argument("-f", "--apply", action="append", default=[], metavar="FILE", type=Path,
                    help="apply this manifest after start (repeatable)")
    up.add_argument("--no-demo", action="store_true", help="do not apply examples/demo.yaml")
    up.add_argument("--timeout-s", type=float, default=30.0, metavar="SECONDS",
                    help="how long to wait for every node to be Ready (default 30)")
    up.add_argument("--dns-strict", action="store_true",
                    help="exact Kubernetes DNS: no <pod>.<ns>.svc.cluster.local names for pods "
                         "without a Service of that name")
    up.add_argument("--seed", type=int, default=0, metavar="N",
                    help="cluster-wide seed of network fault loss and jitter: the same lab "
                         "with the same seed drops the same datagrams (default 0)")
    up.add_argument("--policy-reject", action="store_true",
                    help="refuse connections a NetworkPolicy denies (ECONNREFUSED at once) "
                         "instead of dropping them (the client times out)")
    add_network_arguments(up)  # --dual-stack, --cluster-cidr, --service-cidr, node masks

    down = sub.add_parser("down", help="stop a detached cluster",
                          description="Stop every process of the cluster in the state "
                                      "directory. Stored objects are kept.")
    _state_dir_arg(down)

    ex = sub.add_parser("exec", help="run a toolbox command inside a pod's network stack",
                        description="Run CMD inside POD's network namespace, like "
                                    "`kubectl exec POD -- CMD`. Exits with CMD's exit code.")
    _state_dir_arg(ex)
    ex.add_argument("-n", "--namespace", default="default")
    ex.add_argument("-c", "--container", default=None)
    ex.add_argument("-i", "--stdin", action="store_true", help="pass stdin to the command")
    ex.add_argument("pod")
    ex.add_argument("cmd", nargs="*", metavar="-- CMD ARGS", help="the command, after --")

    rt = sub.add_parser("routes", help="show each node's route table, as that node sees it",
                        description="Ask every agent (or --node's) for its route table: "
                                    "podCIDR, owning node, agent address, state "
                                    "(alive/suspect/dead), version, age.")
    _state_dir_arg(rt)
    rt.add_argument("--node", default=None, help="only this node's view")
    rt.add_argument("-o", "--output", choices=("table", "json"), default="table",
                    help="json: an object keyed by the node whose view it is")

    ui = sub.add_parser("ui", help="print a one-time login URL of the live topology page",
                        description="Print a fresh URL of the cluster's topology page (nodes, "
                                    "pods, Services, policies, faults, flows, links; served by "
                                    "the control plane). The link logs a browser in once; the "
                                    "session cookie it sets lasts 7 days.")
    _state_dir_arg(ui)

    ap = sub.add_parser("apply", help="create or update objects from YAML (like kubectl apply)",
                        description="Apply manifests through the API. The cluster comes from "
                                    "DIR/cluster.json, or from --api with --secret-file (the CA "
                                    "is then fetched and verified with the secret).")
    _state_dir_arg(ap)
    ap.add_argument("-f", "--filename", action="append", default=[], metavar="FILE", type=Path,
                    required=True, help="a manifest (repeatable)")
    ap.add_argument("-n", "--namespace", default="default")
    ap.add_argument("--api", default=None, metavar="URL", help="control plane URL, e.g. "
                    "https://controlplane:6443 (default: the state directory's cluster)")
    ap.add_argument("--secret-file", type=Path, default=None, metavar="FILE",
                    help="cluster secret, with --api (default: DIR/secret)")
    ap.add_argument("--wait-nodes", type=int, default=0, metavar="N",
                    help="first wait until N nodes are Ready")
    ap.add_argument("--timeout-s", type=float, default=120.0, metavar="SECONDS",
                    help="how long to wait for the control plane and nodes (default 120)")

    lg = sub.add_parser("logs", help="every process's log, merged in time order and filtered",
                        description="Merge the cluster's JSON logs by time and filter them, "
                                    "like `hubble observe`; --flow ID traces one request.")
    _state_dir_arg(lg)
    from podnet import logview

    logview.add_arguments(lg)

    xp = sub.add_parser("explain", help="the path a packet would take, and each policy "
                        "decision on the way (nothing is sent)",
                        description="Explain FROM -> TO from the API and the agents' route "
                                    "tables: route, tunnel, ClusterIP proxy and endpoints, "
                                    "egress and ingress policy verdicts. --flow ID tells what "
                                    "happened to a flow from the logs. Exit 0 allowed, 1 denied "
                                    "or unreachable, 2 bad input, 3 cluster unreadable.")
    _state_dir_arg(xp)
    from podnet.cli import explaincmd

    explaincmd.add_arguments(xp)

    # These two parse their own flags (podnet/cli/fault.py, podnet/cli/node.py): listed here
    # for `podnet --help`, dispatched in main() before this parser runs.
    sub.add_parser("fault", help="inject network faults: add, list, del (see its --help)",
                   add_help=False)
    sub.add_parser("node", help="stop, pause, resume or start a node's agent (see its --help)",
                   add_help=False)
    sub.add_parser("controlplane", help="run the control plane process (see its --help)",
                   add_help=False)
    sub.add_parser("agent", help="run one node agent process (see its --help)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The process commands own their flags; hand them everything after the verb.
    if argv and argv[0] == "controlplane":
        from controlplane.main import main as controlplane_main

        return controlplane_main(argv[1:])
    if argv and argv[0] == "agent":
        from agents.main import main as agent_main

        return agent_main(argv[1:])
    if argv and argv[0] == "fault":
        from podnet.cli import fault

        return fault.main(argv[1:])
    if argv and argv[0] == "node":
        from podnet.cli.node import main as node_main

        return node_main(argv[1:])
    # `podnet exec POD -c C -- CMD -x`: everything after the first `--` is the command, so its
    # flags never reach our parser (argparse alone would take CMD's -x as an option).
    command: list[str] | None = None
    if argv and argv[0] == "exec" and "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    if command is not None:
        args.cmd = [*args.cmd, *command]
    try:
        if args.command == "up":
            from podnet.up import UpError, network_args, up

            try:
                return asyncio.run(up(state_dir(args.state_dir), args.nodes, args.detach,
                                      args.apply, not args.no_demo, args.timeout_s,
                                      args.dns_strict, args.policy_reject, args.seed,
                                      network_args(args)))
            except UpError as e:
                print(f"podnet up: {e}", file=sys.stderr)
                return 1
        if args.command == "down":
            from podnet.up import down

            return down(state_dir(args.state_dir))
        if args.command == "exec":
            return run_exec(args)
        if args.command == "apply":
            from podnet import applycmd

            return applycmd.main(args.filename, args.api, args.secret_file,
                                 state_dir(args.state_dir), args.namespace, args.wait_nodes,
                                 args.timeout_s)
        if args.command == "logs":
            from podnet import logview

            return logview.run(args, state_dir(args.state_dir))
        if args.command == "explain":
            from podnet.cli import explaincmd

            return explaincmd.run(args, state_dir(args.state_dir))
        if args.command == "ui":
            from podnet.cli import ui

            return ui.run(read_cluster(state_dir(args.state_dir)))
        if args.command == "routes":
            from podnet import routesview

            return routesview.run(read_cluster(state_dir(args.state_dir)), args.node,
                                  args.output)
    except ClusterNotFound as e:
        print(f"podnet {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    build_parser().print_help()
    return 2


def run_exec(args: argparse.Namespace) -> int:
    from podnet.auth import SecretError, api_token, load_secret
    from podnet.execclient import ExecError, exec_in_pod

    cmd = list(args.cmd)
    if not cmd:
        print("podnet exec: no command given: podnet exec POD -- CMD ARGS...", file=sys.stderr)
        return 2
    info = read_cluster(state_dir(args.state_dir))
    try:
        token = api_token(load_secret(Path(info["secret_file"])))
    except SecretError as e:
        print(f"podnet exec: {e}", file=sys.stderr)
        return 1
    try:
        code = asyncio.run(exec_in_pod(
            info["api"], token, args.namespace, args.pod, args.container, cmd,
            stdin=args.stdin, stdout=sys.stdout.buffer, stderr=sys.stderr.buffer,
            ssl_context=client_ssl(info)))
        if code:
            sys.stderr.flush()
            print(f"command terminated with exit code {code}", file=sys.stderr)
        return code
    except ExecError as e:
        print(f"Error from server: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"podnet exec: cannot reach the control plane at {info['api']}: {e}",
              file=sys.stderr)
        return 1
