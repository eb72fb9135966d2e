"""`podnet explain --flow ID`: what happened to one flow, told from its log events. Pure: takes
the flow's events (dicts, in time order, as podnet/logview.py reads them) and returns a
`FlowStory`.

The hops are the flow's own events across processes (the source agent's route decision, the
ClusterIP proxy's endpoint choice, the receiving agent's delivery, ...); the policy decisions
are its `policy.verdict` events (`verdict` allowed|denied, `direction`, `policy`, `rule`,
`reason`). The outcome: DENIED when a policy denied it; ALLOWED when it got through (or every
policy check passed); FAILED with the data path's own verdict otherwise (refused,
unreachable, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from podnet.logview import parse_ts

__all__ = ["Decision", "FlowStory", "render_story", "story", "story_json"]

# Verdicts of the data path that mean the flow reached its destination.
_GOT_THROUGH = {"accepted", "connected", "answered", "delivered", "forwarded", "local"}
_FAILED = {"refused", "econnrefused", "unreachable", "ehostunreach", "enetunreach", "reset",
           "econnreset", "dropped", "failed", "no reply", "timeout", "etimedout"}
# Fields shown in their own columns, not repeated as details.
_SHOWN = {"ts", "level", "event", "component", "node", "flow", "pod", "namespace", "src", "dst",
          "proto", "verdict", "direction", "policy", "rule", "reason"}


@dataclass(frozen=True)
class Decision:
    direction: str
    allowed: bool
    policy: str | None
    rule: str | None
    reason: str
    node: str
    pod: str


@dataclass(frozen=True)
class StoryHop:
    offset_ms: float
    where: str
    event: str
    verdict: str
    detail: str


@dataclass
class FlowStory:
    flow: str
    source: str
    destination: str
    protocol: str
    hops: list[StoryHop] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    outcome: str = "UNKNOWN"
    why: str = ""

    @property
    def exit_code(self) -> int:
        return 0 if self.outcome == "ALLOWED" else 1


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _bare(reason: str) -> str:
    """The engine's reason without a leading "allowed: "/"denied: " (the verdict is shown)."""
    for word in ("allowed: ", "denied: "):
        if reason.startswith(word):
            return reason[len(word):]
    return reason


def _detail(d: dict[str, Any]) -> str:
    event = d.get("event")
    if event == "proxy.connection" and d.get("service"):
        text = f"Service {d['service']}"
        if d.get("endpoint"):
            text += f" chose {d['endpoint']}"
            if d.get("endpoint_node"):
                text += f" on {d['endpoint_node']}"
        if d.get("reason"):
            text += f" ({d['reason']}"
            text += f", {d['ready']} ready)" if d.get("ready") is not None else ")"
        return text
    if event == "flow.route" and d.get("to_node"):
        return f"{d.get('route', '?')} -> {d['to_node']} at {d.get('address', '?')} " \
               f"({d.get('state', '?')})"
    if event == "policy.verdict":
        who = f"{d.get('namespace')}/{d.get('pod')}" if d.get("pod") else "?"
        # The engine's reason names the deciding policy and rule.
        return f"{d.get('direction', '?')} at {who}: {_bare(_s(d.get('reason')))}"
    parts = []
    for key, value in d.items():
        if key in _SHOWN or value is None or value == []:
            continue
        parts.append(f"{key}={value}")
    return " ".join(parts)


def story(flow: str, events: list[dict[str, Any]]) -> FlowStory:
    """The story of `flow` from its events (in time order). No events: outcome UNKNOWN."""
    first = next((e for e in events if e.get("src") or e.get("dst")), events[0] if events
                 else {})
    src = _s(first.get("src"))
    # The client pod is named by the source agent's own flow events (a policy.verdict names
    # the pod it judged, which for ingress is the destination).
    opener = next((e for e in events if str(e.get("event", "")).startswith("flow.")
                   and e.get("event") != "flow.delivered"      # the receiving pod's
                   and e.get("pod") and e.get("src") == first.get("src")), None)
    if opener is not None:
        src = f"{opener.get('namespace', '')}/{opener['pod']} {src}".strip()
    out = FlowStory(flow, src, _s(first.get("dst")), _s(first.get("proto")))
    t0 = parse_ts(events[0].get("ts")) if events else None
    through = False
    failed: str | None = None
    for d in events:
        ts = parse_ts(d.get("ts"))
        offset = (ts - t0) * 1000 if ts is not None and t0 is not None else 0.0
        where = _s(d.get("node")) or _s(d.get("component")) or "?"
        verdict = _s(d.get("verdict"))
        out.hops.append(StoryHop(offset, where, _s(d.get("event")), verdict, _detail(d)))
        low = verdict.lower()
        if d.get("event") == "policy.verdict":
            out.decisions.append(Decision(
                _s(d.get("direction")) or "?", low == "allowed",
                _s(d.get("policy")) or None, _s(d.get("rule")) or None, _s(d.get("reason")),
                where, f"{d.get('namespace')}/{d.get('pod')}" if d.get("pod") else ""))
        elif low in _GOT_THROUGH:
            through = True
        elif low in _FAILED and failed is None:
            failed = f"{d.get('event')}: {verdict}"
    denied = [x for x in out.decisions if not x.allowed]
    if not events:
        out.outcome, out.why = "UNKNOWN", "no events"
    elif denied:
        out.outcome = "DENIED"
        out.why = "; ".join(f"{x.direction} at {x.pod or x.node}: {_bare(x.reason)}"
                            for x in denied)
    elif through:
        out.outcome = "ALLOWED"
    elif failed is not None:
        out.outcome, out.why = "FAILED", failed
    elif out.decisions:
        out.outcome = "ALLOWED"
    else:
        out.outcome, out.why = "UNKNOWN", "the events do not say whether it got through"
    return out


def render_story(s: FlowStory) -> str:
    head = f"flow {s.flow}: {s.source or '?'} -> {s.destination or '?'}"
    if s.protocol:
        head += f" {s.protocol}"
    lines = [head, "", "what happened"]
    for h in s.hops:
        verdict = f"[{h.verdict}]" if h.verdict else ""
        offset = f"+{h.offset_ms:.1f}ms"
        lines.append(f"  {offset:>10}  {h.where:<13} {h.event:<18} "
                     f"{verdict:<12} {h.detail}".rstrip())
    lines += ["", "policy"]
    if not s.decisions:
        lines.append("  no policy.verdict events for this flow")
    for x in s.decisions:
        # The reason names the deciding policy and rule (the engine's wording).
        word = "allowed" if x.allowed else "DENIED"
        reason = _bare(x.reason)
        if x.allowed and reason.startswith("allowed by "):
            lines.append(f"  {x.direction:<8} {x.pod or x.node}: {reason}")
        else:
            lines.append(f"  {x.direction:<8} {x.pod or x.node}: {word}: {reason}")
    lines += ["", f"{s.outcome}: {s.why}" if s.why else s.outcome]
    return "\n".join(lines)


def story_json(s: FlowStory) -> dict[str, Any]:
    return {
        "flow": s.flow, "source": s.source, "destination": s.destination,
        "protocol": s.protocol, "outcome": s.outcome, "why": s.why,
        "hops": [{"offsetMs": round(h.offset_ms, 3), "where": h.where, "event": h.event,
                  "verdict": h.verdict, "detail": h.detail} for h in s.hops],
        "decisions": [{"direction": x.direction, "allowed": x.allowed, "policy": x.policy,
                       "rule": x.rule, "reason": x.reason, "node": x.node, "pod": x.pod}
                      for x in s.decisions],
    }
