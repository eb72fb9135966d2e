"""`podnet explain` names the NetworkFaults a path crosses, matched as the agents match them."""

from __future__ import annotations

from typing import Any

from test_explain import snapshot

from podnet.cli.explain import as_json, explain, render


def fault(name: str, src: dict[str, str], dst: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"from": src, "to": dst, **spec}}


def test_pod_to_pod_lists_the_faults_and_their_ways() -> None:
    snap = snapshot()
    snap.faults = [fault("slow", {"node": "node-1"}, {"node": "node-2"}, delayMs=100,
                         jitterMs=10),
                   fault("one-way", {"selector": "app=web"}, {"pod": "default/client"},
                         direction="to", lossPct=5),
                   fault("udp-only", {"node": "node-1"}, {"node": "node-2"}, protocol="udp",
                         lossPct=50),
                   fault("zero", {"node": "node-1"}, {"node": "node-2"}, delayMs=0),
                   fault("broken", {"node": "node-1"}, {}, delayMs=1)]
    ex = explain(snap, "client", "default/web-a")
    crossed = {f.name: f for f in ex.legs[0].faults}
    assert set(crossed) == {"slow", "one-way"}
    assert crossed["slow"].ways == ("request", "reply")
    assert crossed["slow"].effects == "delay 100ms +-10ms"
    assert crossed["one-way"].ways == ("reply",)
    assert ex.outcome == "ALLOWED"
    text = render(ex)
    assert "fault        slow: delay 100ms +-10ms (request and reply)" in text
    assert any("broken" in n and "spec.to" in n for n in ex.notes)
    assert as_json(ex)["legs"][0]["faults"][1] == {"name": "one-way", "effects": "loss 5%",
                                                   "ways": ["reply"]}
    # the same node: no node fault crosses it
    assert explain(snap, "client", "default/other", "80").legs[0].faults == []


def test_service_path_matches_the_service_and_each_endpoint() -> None:
    snap = snapshot()
    snap.faults = [fault("svc", {"pod": "default/client"}, {"service": "default/web"},
                         partition=True),
                   fault("to-a", {"pod": "default/client"}, {"pod": "default/web-a"},
                         rateKbit=64)]
    ex = explain(snap, "client", "svc/web")
    by_leg = {leg.destination: [f.name for f in leg.faults] for leg in ex.legs}
    assert by_leg == {"default/web-a": ["svc", "to-a"], "default/web-b": ["svc"]}
    assert any("partition" in n for n in ex.notes)


def test_kube_dns_is_the_service_and_pod_of_a_real_cluster() -> None:
    snap = snapshot()
    snap.faults = [fault("lossy-dns", {"namespace": "default"},
                         {"service": "kube-system/kube-dns"}, protocol="udp", lossPct=20)]
    ex = explain(snap, "client", "kube-dns")
    assert [f.name for f in ex.legs[0].faults] == ["lossy-dns"]
    assert explain(snap, "client", "kube-dns", protocol="tcp").legs[0].faults == []
