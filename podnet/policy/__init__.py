"""NetworkPolicy as podnet understands it (pure code, no I/O).

`engine` turns stored `networking.k8s.io/v1` NetworkPolicy objects into a `PolicySet` that
judges one flow (source peer, destination peer, port, protocol) for egress and ingress and says
which policy and rule decided. The agents enforce its verdicts in the data path; `podnet
explain` and the tests call it directly.
"""

from podnet.policy.engine import KUBE_DNS, Peer, PolicySet, Verdict

__all__ = ["KUBE_DNS", "Peer", "PolicySet", "Verdict"]
