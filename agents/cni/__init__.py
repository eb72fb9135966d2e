"""The CNI: how agents learn each other's podCIDRs (gossip) and carry pod traffic (tunnels).

- `routes.py`: the route table, podCIDR -> node -> agent address, with each route's state.
- `membership.py`: SWIM-style membership and push-pull anti-entropy, no I/O (virtual time).
- `gossip.py`: the HTTP adapter that runs membership between agents.
"""
