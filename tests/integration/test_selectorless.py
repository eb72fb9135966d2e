"""A Service without a selector and hand-made Endpoints: mirrored into an EndpointSlice, then
proxied and resolved like any other Service (Kubernetes' endpointslice-mirroring)."""

from __future__ import annotations

import json
from typing import Any

from harness import RunningCluster, wait_for


def test_selectorless_service_with_hand_made_endpoints(cluster: RunningCluster) -> None:
    for name, image in (("legacy-db", "podnet/echo"), ("legacy-client", "podnet/toolbox")):
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"containers": [{"name": "c", "image": image}]}}
        assert cluster.api("POST", "/api/v1/namespaces/default/pods", body)[0] == 201
    backend = cluster.running_pod("legacy-db")["status"]["podIP"]
    cluster.running_pod("legacy-client")
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "legacy"},
           "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
    code, created = cluster.api("POST", "/api/v1/namespaces/default/services", svc)
    assert code == 201, created
    endpoints = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "legacy"},
                 "subsets": [{"addresses": [{"ip": backend}],
                              "ports": [{"name": "http", "port": 8080}]}]}
    assert cluster.api("POST", "/api/v1/namespaces/default/endpoints", endpoints)[0] == 201

    def mirrored() -> list[Any] | None:
        code, body = cluster.api(
            "GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
                   "?labelSelector=kubernetes.io/service-name%3Dlegacy")
        return body["items"] if code == 200 and body["items"] else None

    slices = wait_for(mirrored, 10, what="a mirrored EndpointSlice")
    assert slices[0]["endpoints"][0]["addresses"] == [backend]
    result = wait_for(lambda: (r := cluster.podnet(
        "exec", "legacy-client", "--", "curl", "-s", "-m", "5",
        f"http://{created['spec']['clusterIP']}/")).returncode == 0 and r, 15,
        what="the ClusterIP answering through the hand-made endpoint")
    assert json.loads(result.stdout)["pod"] == "legacy-db"
    named = cluster.podnet("exec", "legacy-client", "--", "curl", "-s", "-m", "5",
                           "http://legacy/")
    assert named.returncode == 0 and json.loads(named.stdout)["pod"] == "legacy-db"
