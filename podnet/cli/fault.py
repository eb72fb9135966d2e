"""`podnet fault add|list|del`: NetworkFaults (podnet/api/fault_rules.py) from the command line.

    podnet fault add NAME --from SEL --to SEL [--delay-ms D] [--jitter-ms J] [--loss-pct P]
                     [--rate-kbit R] [--partition] [--direction to|from|both]
                     [--protocol tcp|udp|all] [--port P] [--duration 30s] [--seed N]
    podnet fault list [-o table|json]
    podnet fault del NAME... | --all

SEL names one end of the traffic:
  node/NAME         every pod on that node (and, between two nodes, the agents' gossip)
  pod/NS/NAME       one pod (pod/NAME: namespace default)
  ns/NAME           every pod in a namespace
  svc/NS/NAME       traffic sent to a Service's ClusterIP (svc/NAME: namespace default)
  NS:SELECTOR       pods in namespace NS matching a label selector, e.g. default:app=web
  SELECTOR          pods in EVERY namespace matching a label selector, e.g. app=web,tier!=db

`add` writes the whole fault, exactly as `kubectl apply` of the same YAML would: adding an
existing name replaces its spec, and an effect left out or given as 0 is none (zero means
zero: `podnet fault add NAME --from .. --to ..` with no effect leaves a fault that changes
nothing; `podnet fault del NAME` removes it). A changed spec restarts the `--duration` clock.

The objects go through the API, so `kubectl get networkfaults` shows the same faults.
Exit codes: 0 done, 1 the cluster said no (or could not be reached), 2 bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from podnet.api.fault_rules import DIRECTIONS, PROTOCOLS, describe_effect, describe_endpoint
from podnet.apierrors import ApiError
from podnet.resources import BY_KIND
from podnet.validation import validate

FAULTS = BY_KIND["NetworkFault"]
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

# Which flag set which field, to name the flag in a refusal.
_FLAGS = {"spec.from": "--from", "spec.to": "--to", "spec.delayMs": "--delay-ms",
          "spec.jitterMs": "--jitter-ms", "spec.lossPct": "--loss-pct",
          "spec.rateKbit": "--rate-kbit", "spec.partition": "--partition",
          "spec.direction": "--direction", "spec.protocol": "--protocol",
          "spec.port": "--port", "spec.duration": "--duration", "spec.seed": "--seed",
          "metadata.name": "NAME"}

_SEL_HELP = ("node/NAME, pod/NS/NAME, ns/NAME, svc/NS/NAME, NS:app=web (pods matching in NS) "
             "or app=web (pods matching in every namespace)")


class BadInput(Exception):
    """A flag that cannot make a fault: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (and exit 2), not the usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see {self.prog} --help)\n")


# --- pure: flags -> a NetworkFault -----------------------------------------------------------

_SELECTOR_OPS = re.compile(r"=|!|\s(in|notin)\s*\(", re.IGNORECASE)


def parse_endpoint(text: str, flag: str) -> dict[str, str]:
    """One SEL (see the module docstring) as a NetworkFault endpoint. Raises BadInput."""
    if not text.strip():
        raise BadInput(f"{flag}: empty; expected {_SEL_HELP}")
    kind, slash, rest = text.partition("/")
    if slash and kind in ("node", "ns", "pod", "svc") and "=" not in kind:
        parts = rest.split("/")
        if not all(parts):
            raise BadInput(f"{flag}: {text!r} has an empty part; expected {_SEL_HELP}")
        if kind in ("node", "ns"):
            if len(parts) != 1:
                raise BadInput(f"{flag}: expected {kind}/NAME, got {text!r}")
            return {"node": rest} if kind == "node" else {"namespace": rest}
        if len(parts) > 2:
            raise BadInput(f"{flag}: expected {kind}/NS/NAME or {kind}/NAME, got {text!r}")
        ref = rest if len(parts) == 2 else f"default/{rest}"
        return {"pod": ref} if kind == "pod" else {"service": ref}
    ns, colon, selector = text.partition(":")
    if not colon:
        ns, selector = "", text
    if not _SELECTOR_OPS.search(selector):
        raise BadInput(f"{flag}: {text!r} is neither a NAME/ form nor a label selector; "
                       f"expected {_SEL_HELP}")
    return {"selector": selector, "namespace": ns} if ns else {"selector": selector}


def _number(flag: str, text: str | None, kind: type[int] | type[float]) -> int | float | None:
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise BadInput(f"{flag}: expected {what}, got {text!r}") from None


def build_fault(args: argparse.Namespace) -> dict[str, Any]:
    """The NetworkFault `podnet fault add` writes, validated as the API server would; raises
    BadInput naming the flag at fault."""
    spec: dict[str, Any] = {"from": parse_endpoint(args.src, "--from"),
                            "to": parse_endpoint(args.dst, "--to"),
                            "direction": args.direction, "protocol": args.protocol}
    for flag, key, kind in (("--delay-ms", "delayMs", int), ("--jitter-ms", "jitterMs", int),
                            ("--loss-pct", "lossPct", float), ("--rate-kbit", "rateKbit", int),
                            ("--port", "port", int), ("--seed", "seed", int)):
        value = _number(flag, getattr(args, key), kind)
        # Zero means zero: an effect at 0 is written as absent, the same thing to the agents.
        if value is not None and (value != 0 or key in ("port", "seed")):
            spec[key] = value
    if args.partition:
        spec["partition"] = True
    if args.duration is not None:
        spec["duration"] = args.duration
    obj = {"apiVersion": FAULTS.api_version, "kind": FAULTS.kind,
           "metadata": {"name": args.name}, "spec": spec}
    result = validate(FAULTS.kind, obj, field_validation="Strict")
    if result.errors:
        e = result.errors[0]
        where = next((flag for path, flag in _FLAGS.items()
                      if e.path == path or e.path.startswith(path + ".")), e.path)
        shown = f": {e.value!r}" if e.value is not None else ""
        raise BadInput(f"{where}: {e.type}{shown}: {e.detail}".rstrip(": "))
    return result.obj


# --- pure: printing --------------------------------------------------------------------------

def _human(seconds: float) -> str:
    """A short duration, as kubectl prints ages: 45s, 12m, 5h, 3d."""
    secs = max(0, int(seconds))
    if secs < 120:
        return f"{secs}s"
    if secs < 180 * 60:
        return f"{secs // 60}m"
    if secs < 48 * 3600:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


def _when(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _cells(fault: dict[str, Any], now: datetime) -> list[str]:
    meta, spec = fault.get("metadata") or {}, fault.get("spec") or {}
    status = fault.get("status") or {}
    arrow = {"to": "->", "from": "<-"}.get(str(spec.get("direction")), "<->")
    match = str(spec.get("protocol") or "all")
    if isinstance(spec.get("port"), int):
        match += f":{spec['port']}"
    expires = _when(status.get("expiresAt") if isinstance(status, dict) else None)
    pending = str(spec.get("duration") or "0") not in ("0", "0s") and not status
    left = ("<pending>" if pending else "<none>") if expires is None else (
        _human((expires - now).total_seconds()) if expires > now else "expired")
    created = _when(meta.get("creationTimestamp"))
    age = "<unknown>" if created is None else _human((now - created).total_seconds())
    return [str(meta.get("name")), describe_endpoint(spec.get("from")), arrow,
            describe_endpoint(spec.get("to")), match, describe_effect(spec), left, age]


def render_table(faults: list[dict[str, Any]], now: datetime) -> str:
    if not faults:
        return "No network faults."
    rows = [["NAME", "FROM", "", "TO", "MATCH", "EFFECT", "EXPIRES", "AGE"]]
    rows += [_cells(f, now) for f in faults]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


# --- the command -----------------------------------------------------------------------------

def parser() -> _Parser:
    p = _Parser(prog="podnet fault", description="Inject network faults (delay, jitter, loss, "
                "rate, partition) between nodes, pods, namespaces and Services.",
                epilog=f"SEL: {_SEL_HELP}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-dir", metavar="DIR", default=None,
                   help="the cluster's state directory (default: $PODNET_STATE_DIR or ./.podnet)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    # --state-dir is also accepted after the action (SUPPRESS: absent there, the one given
    # before the action, if any, stands).
    common = _Parser(add_help=False)
    common.add_argument("--state-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
    add = sub.add_parser("add", help="create or replace a fault", parents=[common],
                         description="Create the fault NAME, or replace its whole spec: an "
                                     "effect left out (or 0) is none. " + f"SEL: {_SEL_HELP}.")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--from", dest="src", required=True, metavar="SEL")
    add.add_argument("--to", dest="dst", required=True, metavar="SEL")
    add.add_argument("--delay-ms", dest="delayMs", metavar="D", help="added delay, milliseconds")
    add.add_argument("--jitter-ms", dest="jitterMs", metavar="J",
                     help="the delay varies by up to this many ms either way")
    add.add_argument("--loss-pct", dest="lossPct", metavar="P",
                     help="percentage of datagrams dropped, 0-100")
    add.add_argument("--rate-kbit", dest="rateKbit", metavar="R", help="bandwidth limit, kbit/s")
    add.add_argument("--partition", action="store_true", help="drop everything")
    add.add_argument("--direction", choices=DIRECTIONS, default="both",
                     help="to: FROM->TO only; from: TO->FROM only; both (default)")
    add.add_argument("--protocol", choices=PROTOCOLS, default="all")
    add.add_argument("--port", metavar="P", help="only traffic to this destination port")
    add.add_argument("--duration", metavar="DURATION",
                     help="delete the fault after this long (Go duration: 30s, 2m, 1h30m)")
    add.add_argument("--seed", metavar="N",
                     help="seed of its loss and jitter (default: from the cluster's --seed "
                          "and the fault's name)")
    ls = sub.add_parser("list", help="the faults in place", parents=[common])
    ls.add_argument("-o", "--output", choices=("table", "json"), default="table")
    rm = sub.add_parser("del", aliases=["delete"], parents=[common],
                        help="remove faults (the links recover exactly)")
    rm.add_argument("names", nargs="*", metavar="NAME")
    rm.add_argument("--all", action="store_true", help="remove every fault")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    prog = f"podnet fault {args.action}" if args.action else "podnet fault"
    if args.action is None:
        print("podnet fault: give an action: add, list or del (see podnet fault --help)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.action in ("del", "delete") and bool(args.names) == bool(args.all):
        print(f"{prog}: give NAME... or --all", file=sys.stderr)
        return EXIT_BAD_INPUT
    obj: dict[str, Any] | None = None
    if args.action == "add":
        try:
            obj = build_fault(args)
        except BadInput as e:
            print(f"{prog}: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
    from podnet.client import ApiUnavailable
    from podnet.cluster import ClusterNotFound, state_dir

    try:
        return asyncio.run(_run(args, state_dir(args.state_dir), obj))
    except ClusterNotFound as e:
        print(f"{prog}: {e}", file=sys.stderr)
    except ApiError as e:
        print(f"{prog}: {e}", file=sys.stderr)
    except ApiUnavailable as e:
        print(f"{prog}: {e}", file=sys.stderr)
    return EXIT_FAILED


async def _run(args: argparse.Namespace, directory: Path, obj: dict[str, Any] | None) -> int:
    from podnet.auth import api_token, load_secret
    from podnet.client import ApiClient
    from podnet.cluster import client_ssl, read_cluster

    info = read_cluster(directory)
    token = api_token(load_secret(Path(info["secret_file"])))
    async with ApiClient(info["api"], token, ssl_context=client_ssl(info)) as api:
        if obj is not None:
            print(await add(api, obj))
            return 0
        if args.action == "list":
            body = await api.list(FAULTS)
            if args.output == "json":
                print(json.dumps(body, indent=2))
            else:
                items = [i for i in body.get("items") or [] if isinstance(i, dict)]
                print(render_table(items, datetime.now(UTC)))
            return 0
        names = list(args.names)
        if args.all:
            body = await api.list(FAULTS)
            names = [str((i.get("metadata") or {}).get("name")) for i in body.get("items") or []
                     if isinstance(i, dict)]
            if not names:
                print("No network faults.")
        code = 0
        for name in names:
            try:
                await api.delete(FAULTS, None, name)
            except ApiError as e:
                if e.code != 404:
                    raise
                print(f"podnet fault del: networkfault {name!r} not found", file=sys.stderr)
                code = EXIT_FAILED
                continue
            print(f"networkfault/{name} deleted")
        return code


async def add(api: Any, obj: dict[str, Any]) -> str:
    """Create the fault, or replace the spec of the one by that name (its labels and
    annotations are kept); what happened, as kubectl words it."""
    name = obj["metadata"]["name"]
    for _ in range(3):  # a concurrent create or delete between our two requests: try again
        try:
            old = await api.get(FAULTS, None, name)
        except ApiError as e:
            if e.code != 404:
                raise
            try:
                await api.create(FAULTS, None, obj, field_validation="Strict")
            except ApiError as e2:
                if e2.code == 409:
                    continue
                raise
            return f"networkfault/{name} created"
        meta = dict(old.get("metadata") or {})
        new = {**obj, "metadata": {"name": name, "labels": meta.get("labels") or {},
                                   "annotations": meta.get("annotations") or {},
                                   "resourceVersion": meta.get("resourceVersion")}}
        try:
            updated = await api.replace(FAULTS, None, name, new)
        except ApiError as e:
            if e.code in (404, 409):
                continue
            raise
        same = (updated.get("metadata") or {}).get("resourceVersion") == \
            meta.get("resourceVersion")
        return f"networkfault/{name} {'unchanged' if same else 'configured'}"
    raise ApiError(409, "Conflict", f"networkfault {name!r} kept changing; try again")
