"""What becomes of `type: LoadBalancer` here: nothing external, and the Service says so.

In a cloud, a load-balancer controller (the cloud provider's service controller, MetalLB, ...)
sees a LoadBalancer Service, provisions an external address and writes it into
`status.loadBalancer.ingress`. podnet runs none: the Service still gets its ClusterIP and node
ports (a LoadBalancer Service is a NodePort Service underneath), and `status.loadBalancer`
stays empty, so `kubectl get svc` shows EXTERNAL-IP `<pending>` exactly as on a cluster without
such a controller. This reconciler only records one Event per Service explaining it, which
`kubectl describe svc` shows, so a learner is not left waiting for an address that will
never come.
"""

from __future__ import annotations

from typing import Any

from controlplane import events
from controlplane.reconcile import Reconciler
from podnet.resources import BY_KIND

SERVICES, EVENTS = BY_KIND["Service"], BY_KIND["Event"]
REASON = "LoadBalancerPending"
COMPONENT = "podnet-controlplane"
MESSAGE = ("podnet runs no load-balancer controller (there is no cloud provider), so no external "
           "address will be assigned and EXTERNAL-IP stays <pending>; the Service is served on "
           "its node port(s) at every node's address")


class LoadBalancerNotice(Reconciler):
    name = "loadbalancers"
    watches = (SERVICES,)
    resync_s = 30.0

    def __init__(self, api: Any) -> None:
        super().__init__(api)
        self._noted: set[str] = set()       # Service uids that have their Event

    async def reconcile(self) -> None:
        pending = [svc for svc in self.store.scan(SERVICES)
                   if (svc.get("spec") or {}).get("type") == "LoadBalancer"]
        live = {str((svc.get("metadata") or {}).get("uid") or "") for svc in pending}
        self._noted &= live
        unnoted = [svc for svc in pending
                   if str((svc.get("metadata") or {}).get("uid") or "") not in self._noted]
        if not unnoted:
            return
        # Events already stored (a restarted control plane): one per Service is enough.
        recorded = {str((ev.get("involvedObject") or {}).get("uid") or "")
                    for ev in self.store.scan(EVENTS) if ev.get("reason") == REASON}
        for svc in unnoted:
            uid = str((svc.get("metadata") or {}).get("uid") or "")
            self._noted.add(uid)
            if uid in recorded:
                continue
            await events.record(self.api, dict(svc), "Normal", REASON, MESSAGE, COMPONENT)
            self.log.info("loadbalancers.pending", service=f"{svc['metadata'].get('namespace')}/"
                          f"{svc['metadata'].get('name')}")
