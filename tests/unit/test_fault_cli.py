"""`podnet fault` flag parsing and printing, `podnet node` process checks: the pure parts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from podnet.cli import fault, node


def add_args(*argv: str) -> object:
    return fault.parser().parse_args(["add", *argv])


@pytest.mark.parametrize(("text", "endpoint"), [
    ("node/node-1", {"node": "node-1"}),
    ("pod/kube-system/coredns-0", {"pod": "kube-system/coredns-0"}),
    ("pod/web-0", {"pod": "default/web-0"}),
    ("ns/shop", {"namespace": "shop"}),
    ("svc/web", {"service": "default/web"}),
    ("svc/shop/web", {"service": "shop/web"}),
    ("app=web", {"selector": "app=web"}),
    ("app=web,tier!=db", {"selector": "app=web,tier!=db"}),
    ("shop:app=web", {"selector": "app=web", "namespace": "shop"}),
    ("env in (a,b)", {"selector": "env in (a,b)"}),
    ("!canary", {"selector": "!canary"}),
])
def test_selectors(text: str, endpoint: dict[str, str]) -> None:
    assert fault.parse_endpoint(text, "--from") == endpoint


@pytest.mark.parametrize("text", ["", "web", "node/", "node/a/b", "pod/a/b/c", "svc//x",
                                  "ns/a/b"])
def test_bad_selectors(text: str) -> None:
    with pytest.raises(fault.BadInput, match=r"^--to: "):
        fault.parse_endpoint(text, "--to")


def test_build_fault_writes_the_yaml_shape() -> None:
    obj = fault.build_fault(add_args(  # type: ignore[arg-type]
        "slow", "--from", "node/node-1", "--to", "default:app=web", "--delay-ms", "100",
        "--jitter-ms", "10", "--loss-pct", "2.5", "--rate-kbit", "800", "--direction", "to",
        "--protocol", "tcp", "--port", "80", "--duration", "30s", "--seed", "0"))
    assert obj == {"apiVersion": "podnet.dev/v1alpha1", "kind": "NetworkFault",
                   "metadata": {"name": "slow"},
                   "spec": {"from": {"node": "node-1"},
                            "to": {"selector": "app=web", "namespace": "default"},
                            "direction": "to", "protocol": "tcp", "delayMs": 100,
                            "jitterMs": 10, "lossPct": 2.5, "rateKbit": 800, "port": 80,
                            "seed": 0, "duration": "30s"}}


def test_zero_means_zero_and_defaults() -> None:
    obj = fault.build_fault(add_args(  # type: ignore[arg-type]
        "reset", "--from", "ns/a", "--to", "svc/b", "--delay-ms", "0", "--loss-pct", "0"))
    assert obj["spec"] == {"from": {"namespace": "a"}, "to": {"service": "default/b"},
                           "direction": "both", "protocol": "all"}


@pytest.mark.parametrize(("argv", "message"), [
    (("--delay-ms", "fast"), "--delay-ms: expected an integer, got 'fast'"),
    (("--loss-pct", "101"), "--loss-pct: Invalid value: 101.0: must be between 0 and 100"),
    (("--delay-ms", "-3"), "--delay-ms: Invalid value: -3: must be greater than or equal"),
    (("--port", "0"), "--port: Invalid value: 0: must be between 1 and 65535"),
    (("--duration", "30"), "--duration: Invalid value: '30': missing unit"),
    (("--partition", "--rate-kbit", "5"), "--partition: Forbidden"),
    (("--seed", "1.5"), "--seed: expected an integer"),
])
def test_bad_flags_name_the_flag(argv: tuple[str, ...], message: str) -> None:
    args = add_args("x", "--from", "node/a", "--to", "node/b", *argv)
    with pytest.raises(fault.BadInput) as caught:
        fault.build_fault(args)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_bad_name_is_named() -> None:
    with pytest.raises(fault.BadInput, match=r"^NAME: Invalid value: 'Slow_1'"):
        fault.build_fault(add_args("Slow_1", "--from", "node/a", "--to", "node/b"))  # type: ignore[arg-type]


def test_usage_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["add", "x", "--from", "node/a"], ["add", "x", "--from", "node/a", "--to",
                 "node/b", "--direction", "up"], ["frob"], []):
        assert fault.main(argv) == 2 if not argv else _exits_2(argv)
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err


def _exits_2(argv: list[str]) -> bool:
    with pytest.raises(SystemExit) as caught:
        fault.main(argv)
    return caught.value.code == 2


def test_del_needs_names_or_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert fault.main(["del"]) == 2
    assert fault.main(["del", "a", "--all"]) == 2
    assert "give NAME... or --all" in capsys.readouterr().err


def test_render_table() -> None:
    now = datetime(2026, 1, 1, 0, 2, 0, tzinfo=UTC)
    faults = [{"metadata": {"name": "slow", "creationTimestamp": "2026-01-01T00:00:00Z"},
               "spec": {"from": {"node": "node-1"}, "to": {"selector": "app=web"},
                        "direction": "to", "protocol": "tcp", "port": 80, "delayMs": 50},
               "status": {"expiresAt": "2026-01-01T00:02:30Z"}},
              {"metadata": {"name": "cut", "creationTimestamp": "2026-01-01T00:01:00Z"},
               "spec": {"from": {"namespace": "a"}, "to": {"namespace": "b"},
                        "direction": "both", "protocol": "all", "partition": True}}]
    lines = fault.render_table(faults, now).splitlines()
    assert lines[0].split() == ["NAME", "FROM", "TO", "MATCH", "EFFECT", "EXPIRES", "AGE"]
    assert lines[1].split() == ["slow", "node/node-1", "->", "app=web", "tcp:80",
                                "delay=50ms", "30s", "2m"]
    assert lines[2].split() == ["cut", "ns/a", "<->", "ns/b", "all", "partition", "<none>",
                                "60s"]
    assert fault.render_table([], now) == "No network faults."


@pytest.mark.parametrize(("stat", "state"), [
    ("123 (python3) S 1 2 3", "running"), ("123 (py thon) R 1", "running"),
    ("123 (a) b) T 1 2", "paused"), ("123 (x) t 1", "paused"), ("123 (x) Z 1", "gone"),
    (None, "gone"), ("", "gone"),
])
def test_process_state(stat: str | None, state: str) -> None:
    assert node.process_state(stat) == state


def test_is_agent_of(tmp_path: Path) -> None:
    d = str(tmp_path.resolve())
    argv = ["/usr/bin/python3", "-m", "agents", "--name", "node-2", "--controlplane", "x",
            "--state-dir", d]
    assert node.is_agent_of(argv, tmp_path, "node-2")
    assert not node.is_agent_of(argv, tmp_path, "node-1")
    assert not node.is_agent_of(argv, tmp_path / "other", "node-2")
    assert not node.is_agent_of(["sleep", "--name", "node-2", "--state-dir", d], tmp_path,
                                "node-2")
    assert node.is_agent_of(["podnet", "agent", "--name=node-2", f"--state-dir={d}"],
                            tmp_path, "node-2")
