"""When is this node's network ready? The CNI half of kubelet's Ready condition. No I/O.

In Kubernetes a node is not Ready while its network plugin is not (kubelet reports
`NetworkReady=false`), and a node whose routes are not set up carries the condition
`NetworkUnavailable=True`. In podnet the network is the gossiped route table, and a route is
only useful when it exists at both ends: this node's table must hold the other node's podCIDR
(so its pods can reach theirs) and the other node's table must hold ours (theirs ours). Each
agent publishes which nodes it holds routes for in the annotation `podnet.io/routes` of its
Node, so every agent can check both directions from the API's view.

Which other nodes must be reached? Every node that is Ready, and every node that is still
*waiting for its network* (Ready=False because its routes are incomplete). Counting the
waiting ones is what makes start-up race-free: when two agents start together, each one
registers before it looks at the others, so at least one of them sees the other and waits
for both directions, and neither can be Ready while the pair is unconnected. Nodes that are
lost (Ready=Unknown: their agent stopped heartbeating), stopped, or dead in our gossip are
not waited for: their routes are withdrawn on purpose.

Once Ready, a node stays Ready while it is connected to every *Ready* node: a newcomer is
not Ready until it has connected to us, so a node joining never flips the others to NotReady.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ROUTES_ANNOTATION = "podnet.io/routes"
# NetworkUnavailable reasons: the route controller's words for "routes are (not) in place".
ROUTES_READY, ROUTES_WAITING, NODE_SHUTDOWN = "RouteCreated", "NoRouteCreated", "NodeShutdown"


@dataclass(frozen=True)
class Verdict:
    ready: bool
    message: str           # for the NetworkUnavailable condition and Ready's message
    waiting_for: tuple[str, ...] = ()


def conditions_of(node: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    conds = (node.get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in conds if isinstance(c, Mapping)}


def published_routes(node: Mapping[str, Any]) -> set[str]:
    """The nodes whose routes `node`'s agent says it holds."""
    text = ((node.get("metadata") or {}).get("annotations") or {}).get(ROUTES_ANNOTATION)
    if not isinstance(text, str):
        return set()
    return {part.strip() for part in text.split(",") if part.strip()}


def format_routes(nodes: Iterable[str]) -> str:
    return ",".join(sorted(set(nodes)))


def counts_for(node: Mapping[str, Any], *, only_ready: bool) -> bool:
    """Whether another node's network must be connected to ours before we are Ready."""
    conds = conditions_of(node)
    ready = conds.get("Ready") or {}
    if ready.get("status") == "True":
        return True
    if only_ready:
        return False
    network = conds.get("NetworkUnavailable") or {}
    return ready.get("status") == "False" and network.get("reason") == ROUTES_WAITING


def decide(me: str, nodes: Iterable[Mapping[str, Any]], held: Mapping[str, str],
           dead: Iterable[str], was_ready: bool) -> Verdict:
    """Is `me`'s network ready?

    nodes: every Node object the API has; held: node -> podCIDR of each usable route in this
    agent's table; dead: nodes our gossip has declared dead; was_ready: whether we are
    Ready now (then only Ready nodes are waited for, see the module docstring).
    """
    gone = set(dead)
    missing: list[str] = []
    unlearned: list[str] = []
    for node in nodes:
        name = str((node.get("metadata") or {}).get("name") or "")
        if not name or name == me or name in gone:
            continue
        if not counts_for(node, only_ready=was_ready):
            continue
        cidr = (node.get("spec") or {}).get("podCIDR")
        if not cidr:
            continue  # no podCIDR yet: it has no pods to reach, nor a route to publish
        if held.get(name) != cidr:
            missing.append(name)
        elif me not in published_routes(node):
            unlearned.append(name)
    if not missing and not unlearned:
        return Verdict(True, "podnet routes are in place to every node")
    parts = []
    if missing:
        parts.append(f"no route here yet to {', '.join(sorted(missing))}")
    if unlearned:
        parts.append(f"{', '.join(sorted(unlearned))} has not learned this node's route yet")
    return Verdict(False, "waiting for gossip: " + "; ".join(parts),
                   tuple(sorted(missing + unlearned)))
