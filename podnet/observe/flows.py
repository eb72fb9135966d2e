"""The flow panel's model: recent flows, one row each, built from flow events. Pure, no I/O.

Events arrive from every process (each agent's `/observe` stream and the control plane's own
ring) in no particular order between processes; a flow's events are kept in time order and
its row and detail are worked out when asked for (rows at most once per change), with the
outcome and hops told by `podnet.cli.flowstory.story()`, the same story `podnet explain
--flow` prints.

Bounded: at most `max_flows` flows (the least recently active are evicted, and counted) and
`max_events_per_flow` events per flow (later ones are dropped, and counted). Events the
feeds lost before they reached us are reported per process with `note_missed()`. Nothing is
hidden: `stats()` has every count.
"""

from __future__ import annotations

import fnmatch
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from podnet.cli.flowstory import story
from podnet.logview import VERDICT_ALIASES, parse_ts

__all__ = ["FlowFilter", "FlowTable", "at_of", "matches", "process_of"]

CONTROLPLANE = "@controlplane"      # the control plane's node name in tunnels and its events
_MAX_FLOW_ID = 128
_MAX_FILTER = 300
_NODE_EVENTS = ("tunnel.", "nodeport.")


def process_of(event: Mapping[str, Any]) -> str:
    """The process that logged `event`, as `podnet logs` names it ("agent-node-1",
    "controlplane")."""
    node = event.get("node")
    if isinstance(node, str) and node and not node.startswith("@"):
        return f"agent-{node}"
    return "controlplane"


def at_of(event: Mapping[str, Any], process: str) -> dict[str, str]:
    """Where on the topology a hop happened: the proxy for the control plane's events, the
    node for tunnel and NodePort events, else the pod the event names (else its node)."""
    if process == "controlplane":
        return {"kind": "proxy", "key": CONTROLPLANE}
    name = str(event.get("event", ""))
    node = _text(event.get("node"))
    pod = _text(event.get("pod"))
    if pod and not name.startswith(_NODE_EVENTS):
        return {"kind": "pod", "key": f"{_text(event.get('namespace')) or 'default'}/{pod}"}
    return {"kind": "node", "key": node}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _pod_key(event: Mapping[str, Any]) -> str:
    pod = _text(event.get("pod"))
    return f"{_text(event.get('namespace')) or 'default'}/{pod}" if pod else ""


@dataclass(frozen=True)
class FlowFilter:
    """`podnet logs`'s filters, for flow rows: a pod (`NS/NAME` or a `NAME` glob, either end
    of the flow), a node the flow crossed, a verdict (with `podnet logs`'s aliases, or an
    outcome word), a protocol, a flow id prefix. Empty fields match everything."""

    pod: str = ""
    node: str = ""
    verdict: str = ""
    proto: str = ""
    flow: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> FlowFilter:
        """From query parameters (`pod`, `node`, `verdict`, `proto`, `flow`); ValueError
        naming the bad one (too long, control characters, whitespace)."""
        values: dict[str, str] = {}
        for key in ("pod", "node", "verdict", "proto", "flow"):
            text = query.get(key, "") or ""
            text = text.strip()
            if len(text) > _MAX_FILTER:
                raise ValueError(f"filter {key} is too long ({len(text)} characters)")
            if any(ch.isspace() or not ch.isprintable() for ch in text):
                raise ValueError(f"filter {key} has whitespace or control characters")
            if key == "pod" and text.count("/") > 1:
                raise ValueError("filter pod must be NAME or NAMESPACE/NAME")
            values[key] = text
        return cls(**values)

    @property
    def empty(self) -> bool:
        return not (self.pod or self.node or self.verdict or self.proto or self.flow)


def matches(row: Mapping[str, Any], flt: FlowFilter | Mapping[str, str]) -> bool:
    """True when the flow row passes every filter that is set."""
    if not isinstance(flt, FlowFilter):
        flt = FlowFilter.from_query(flt)
    if flt.flow and not str(row.get("id", "")).startswith(flt.flow):
        return False
    if flt.node and flt.node not in (row.get("nodes") or []):
        return False
    if flt.proto and str(row.get("proto", "")).lower() != flt.proto.lower():
        return False
    if flt.verdict:
        wanted = VERDICT_ALIASES.get(flt.verdict.lower(), {flt.verdict.lower()})
        have = {str(v).lower() for v in row.get("verdicts") or [row.get("verdict", "")]}
        have.add(str(row.get("outcome", "")).lower())
        if not wanted & have:
            return False
    if flt.pod:
        ns, _, name = flt.pod.rpartition("/")
        for key in (row.get("srcPod"), row.get("dstPod")):
            if not key:
                continue
            pod_ns, _, pod_name = str(key).rpartition("/")
            if (not ns or ns == pod_ns) and fnmatch.fnmatchcase(pod_name, name):
                break
        else:
            return False
    return True


class _Flow:
    __slots__ = ("detail", "events", "id", "row", "seen")

    def __init__(self, flow_id: str) -> None:
        self.id = flow_id
        # (ts, process, event) in time order; ties keep arrival order.
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.seen: set[tuple[str, int]] = set()     # (process, seq): a feed replaying
        self.row: dict[str, Any] | None = None
        self.detail: dict[str, Any] | None = None


class FlowTable:
    """The last `max_flows` flows, by flow id."""

    def __init__(self, max_flows: int = 1000, max_events_per_flow: int = 64) -> None:
        self.max_flows = max_flows
        self.max_events_per_flow = max_events_per_flow
        self._flows: OrderedDict[str, _Flow] = OrderedDict()    # least recently active first
        self._changed: dict[str, None] = {}         # ids changed since take_changed()
        self.flows_evicted = 0
        self.events_dropped = 0     # malformed, repeated, or past max_events_per_flow
        self.events_missed: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._flows)

    def __contains__(self, flow_id: object) -> bool:
        return flow_id in self._flows

    # -- input

    def add(self, event: Mapping[str, Any], process: str | None = None) -> bool:
        """Add one flow event (a log event dict with `flow` and `ts`, maybe `seq`). `process`
        is the process that logged it (default: from its `node`). False when it was dropped:
        malformed, already held (same process and seq), or its flow is full."""
        flow_id = event.get("flow") if isinstance(event, Mapping) else None
        ts = parse_ts(event.get("ts")) if isinstance(event, Mapping) else None
        if not isinstance(flow_id, str) or not flow_id or len(flow_id) > _MAX_FLOW_ID \
                or ts is None or not isinstance(event.get("event", ""), str):
            self.events_dropped += 1
            return False
        proc = process or process_of(event)
        flow = self._flows.get(flow_id)
        if flow is None:
            flow = self._flows[flow_id] = _Flow(flow_id)
            while len(self._flows) > self.max_flows:
                old, _ = self._flows.popitem(last=False)
                self._changed.pop(old, None)
                self.flows_evicted += 1
        else:
            self._flows.move_to_end(flow_id)
        if len(flow.events) >= self.max_events_per_flow:
            self.events_dropped += 1    # before `seen`: a long flow must not grow it either
            return False
        seq = event.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            if (proc, seq) in flow.seen:
                self.events_dropped += 1
                return False
            flow.seen.add((proc, seq))
        item = (ts, proc, dict(event))
        events = flow.events
        if not events or events[-1][0] <= ts:
            events.append(item)
        else:   # from a process whose feed is behind: into its place in time
            i = len(events)
            while i > 0 and events[i - 1][0] > ts:
                i -= 1
            events.insert(i, item)
        flow.row = flow.detail = None
        self._changed[flow_id] = None
        return True

    def note_missed(self, process: str, count: int) -> None:
        """`count` events of `process` were lost before they reached this table (its ring
        rotated them away, or its feed was down)."""
        if count > 0:
            self.events_missed[process] = self.events_missed.get(process, 0) + count

    # -- output

    def rows(self, limit: int | None = None,
             flt: FlowFilter | Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Rows, most recently active first (at most `limit`, those passing `flt`)."""
        out: list[dict[str, Any]] = []
        for flow in reversed(self._flows.values()):
            if limit is not None and len(out) >= limit:
                break
            row = self._row(flow)
            if flt is None or matches(row, flt):
                out.append(row)
        return out

    def row(self, flow_id: str) -> dict[str, Any] | None:
        flow = self._flows.get(flow_id)
        return self._row(flow) if flow is not None else None

    def take_changed(self) -> list[dict[str, Any]]:
        """Rows of the flows added to or changed since the last call, oldest change first."""
        changed, self._changed = self._changed, {}
        return [self._row(self._flows[i]) for i in changed if i in self._flows]

    def stats(self) -> dict[str, Any]:
        return {"flowsKept": len(self._flows), "flowsEvicted": self.flows_evicted,
                "eventsMissed": dict(sorted(self.events_missed.items())),
                "eventsDropped": self.events_dropped}

    def detail(self, flow_id: str) -> dict[str, Any] | None:
        """The flow's row, outcome and why, its hops (where each was on the topology) and
        its policy decisions; None for a flow not held."""
        flow = self._flows.get(flow_id)
        if flow is None:
            return None
        if flow.detail is None:
            told = story(flow.id, [e for _, _, e in flow.events])
            hops = []
            for (_, proc, event), hop in zip(flow.events, told.hops, strict=True):
                hops.append({"offset_ms": round(hop.offset_ms, 3), "process": proc,
                             "node": _text(event.get("node")), "event": hop.event,
                             "verdict": hop.verdict, "detail": hop.detail,
                             "at": at_of(event, proc)})
            decisions = [{"direction": d.direction, "allowed": d.allowed, "policy": d.policy,
                          "rule": d.rule, "reason": d.reason, "node": d.node, "pod": d.pod}
                         for d in told.decisions]
            flow.detail = {"flow": self._row(flow), "outcome": told.outcome, "why": told.why,
                           "hops": hops, "decisions": decisions}
        return flow.detail

    def _row(self, flow: _Flow) -> dict[str, Any]:
        if flow.row is None:
            flow.row = _make_row(flow)
        return flow.row


def _make_row(flow: _Flow) -> dict[str, Any]:
    events = [e for _, _, e in flow.events]
    first = next((e for e in events if e.get("src") or e.get("dst")), events[0])
    src = _text(first.get("src"))
    src_pod = dst_pod = service = proto = ""
    nodes: list[str] = []
    verdicts: list[str] = []
    verdict = ""
    for _, proc, e in flow.events:
        name = _text(e.get("event"))
        node = _text(e.get("node")) or (CONTROLPLANE if proc == "controlplane" else "")
        if node and node not in nodes:
            nodes.append(node)
        word = _text(e.get("verdict"))
        if word:
            if word.lower() not in verdicts:
                verdicts.append(word.lower())
            if name != "policy.verdict":
                verdict = word      # the data path's latest word on it
        proto = proto or _text(e.get("proto"))
        service = service or (_text(e.get("service")) if proc == "controlplane" or
                              name == "proxy.connection" else "")
        if not src_pod and name.startswith("flow.") and name != "flow.delivered" \
                and e.get("pod") and e.get("src") == first.get("src"):
            src_pod = _pod_key(e)   # the opener's own agent names the client pod
        if not dst_pod and name == "flow.delivered" and e.get("pod"):
            dst_pod = _pod_key(e)
    if not dst_pod:     # not delivered (yet): the pod an ingress decision judged
        dst_pod = next((_pod_key(e) for e in events if e.get("event") == "policy.verdict"
                        and e.get("direction") == "ingress" and e.get("pod")), "")
    outcome = story(flow.id, events).outcome
    if outcome == "DENIED":
        verdict = "denied"
    return {"id": flow.id, "ts": flow.events[0][0], "last": flow.events[-1][0], "src": src,
            "dst": _text(first.get("dst")), "proto": proto, "srcPod": src_pod,
            "dstPod": dst_pod, "service": service, "nodes": nodes, "verdict": verdict,
            "verdicts": verdicts, "outcome": outcome, "events": len(flow.events)}
