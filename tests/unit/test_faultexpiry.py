"""The NetworkFault expiry decision (controlplane/faultexpiry.py `plan`), without a store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from controlplane.faultexpiry import expires_at, plan

NOW = datetime(2026, 1, 1, 12, 0, 0, 250000, tzinfo=UTC)


def fault(name: str, duration: str | None, generation: int = 1,
          status: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"from": {"node": "a"}, "to": {"node": "b"}, "delayMs": 5}
    if duration is not None:
        spec["duration"] = duration
    obj: dict[str, Any] = {"metadata": {"name": name, "uid": f"uid-{name}",
                                        "generation": generation}, "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


def test_new_fault_gets_its_expiry_rounded_up_and_wakes_us() -> None:
    p = plan([fault("a", "30s"), fault("b", None), fault("c", "0s")], NOW)
    assert p.statuses == {"a": {"observedGeneration": 1, "expiresAt": "2026-01-01T12:00:31Z"},
                          "b": {"observedGeneration": 1}, "c": {"observedGeneration": 1}}
    assert p.expired == []
    assert p.next_expiry == datetime(2026, 1, 1, 12, 0, 31, tzinfo=UTC)


def test_expired_fault_is_deleted_by_uid_and_others_wait() -> None:
    p = plan([fault("old", "5s", status={"observedGeneration": 1,
                                          "expiresAt": "2026-01-01T11:59:00Z"}),
              fault("later", "1h", status={"observedGeneration": 1,
                                            "expiresAt": "2026-01-01T13:00:00Z"})], NOW)
    assert p.statuses == {}
    assert p.expired == [("old", "uid-old")]
    assert p.next_expiry == datetime(2026, 1, 1, 13, 0, 0, tzinfo=UTC)


def test_changed_spec_restarts_the_clock_and_client_status_is_not_trusted() -> None:
    changed = fault("a", "2m", generation=3,
                    status={"observedGeneration": 2, "expiresAt": "2026-01-01T11:00:00Z"})
    forged = fault("b", None, status={"expiresAt": "2026-01-01T11:00:00Z"})
    p = plan([changed, forged], NOW)
    assert p.expired == []
    assert p.statuses["a"] == {"observedGeneration": 3, "expiresAt": "2026-01-01T12:02:01Z"}
    assert p.statuses["b"] == {"observedGeneration": 1}


def test_duration_removed_clears_expiry() -> None:
    p = plan([fault("a", None, generation=2,
                    status={"observedGeneration": 1, "expiresAt": "2026-01-01T12:00:10Z"})],
             NOW)
    assert p.statuses == {"a": {"observedGeneration": 2}}
    assert p.next_expiry is None


def test_garbage_is_tolerated() -> None:
    weird = fault("w", "nonsense", status={"observedGeneration": 1, "expiresAt": "garbage"})
    p = plan([weird, {"metadata": {}, "status": "x"}], NOW)
    assert p.expired == []


def test_expires_at_whole_second_is_exact() -> None:
    assert expires_at(datetime(2026, 1, 1, tzinfo=UTC), 30) == "2026-01-01T00:00:30Z"
