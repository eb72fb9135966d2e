import pytest

from agents.probes import Probe, ProbeState, parse

PORTS = [{"name": "http", "containerPort": 8080}]


def test_parse_http_with_named_port_and_defaults() -> None:
    probe = parse({"httpGet": {"path": "/healthz", "port": "http"}}, PORTS)
    assert probe == Probe("http", port=8080, path="/healthz")
    assert (probe.period_s, probe.timeout_s, probe.failure_threshold) == (10.0, 1.0, 3)


def test_parse_tcp_exec_and_timing() -> None:
    tcp = parse({"tcpSocket": {"port": 9000}, "periodSeconds": 2, "initialDelaySeconds": 1},
                PORTS)
    assert tcp is not None and (tcp.kind, tcp.port, tcp.period_s, tcp.initial_delay_s) == (
        "tcp", 9000, 2.0, 1.0)
    cmd = parse({"exec": {"command": ["cat", "/etc/hostname"]}}, [])
    assert cmd is not None and cmd.command == ("cat", "/etc/hostname")


@pytest.mark.parametrize("spec", [
    {"httpGet": {"port": "nope"}}, {"tcpSocket": {"port": None}}, {"exec": {"command": []}},
    {"periodSeconds": 3},
])
def test_unusable_probes_are_refused_clearly(spec: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        parse(spec, PORTS)


def test_no_probe() -> None:
    assert parse(None, PORTS) is None
    assert parse("garbage", PORTS) is None


def test_thresholds_like_kubelet() -> None:
    state = ProbeState(Probe("tcp", success_threshold=2, failure_threshold=3))
    assert [state.record(ok) for ok in (True, True)] == [False, True]
    assert state.passing
    assert [state.record(ok) for ok in (False, False, True, False, False, False)] == [
        False, False, False, False, False, True]
    assert not state.passing
