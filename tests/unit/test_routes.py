import pytest

from agents.cni.routes import ALIVE, DEAD, SUSPECT, Route, RouteTable


def test_lookup_finds_the_owning_node_and_misses_dead_routes() -> None:
    table = RouteTable("node-1")
    table.update(Route("10.244.1.0/24", "node-1", "127.0.0.1:1"))
    table.update(Route("10.244.2.0/24", "node-2", "127.0.0.1:2", state=SUSPECT))
    table.update(Route("10.244.3.0/24", "node-3", "127.0.0.1:3", state=DEAD))
    assert table.lookup("10.244.1.7").node == "node-1"  # type: ignore[union-attr]
    assert table.lookup("10.244.2.200").node == "node-2"  # type: ignore[union-attr]
    assert table.lookup("10.244.3.5") is None  # withdrawn
    assert table.lookup("10.244.9.1") is None
    assert table.lookup("not-an-ip") is None
    assert [r.node for r in table.all()] == ["node-1", "node-2", "node-3"]


def test_longest_prefix_wins() -> None:
    table = RouteTable("a")
    table.update(Route("10.244.0.0/16", "wide", "h:1"))
    table.update(Route("10.244.5.0/24", "narrow", "h:2"))
    assert table.lookup("10.244.5.1").node == "narrow"  # type: ignore[union-attr]
    assert table.lookup("10.244.6.1").node == "wide"  # type: ignore[union-attr]


def test_listeners_see_changes_once() -> None:
    table = RouteTable("a")
    seen: list[tuple[str | None, str | None]] = []
    table.on_change(lambda old, new: seen.append((old and old.state, new and new.state)))
    route = Route("10.244.2.0/24", "b", "h:1", since=1.0)
    table.update(route)
    table.update(Route("10.244.2.0/24", "b", "h:1", since=2.0))  # same route: no change
    table.update(Route("10.244.2.0/24", "b", "h:1", state=DEAD))
    table.remove("b")
    table.remove("b")
    assert seen == [(None, ALIVE), (ALIVE, DEAD), (DEAD, None)]


def test_garbage_never_enters() -> None:
    table = RouteTable("a")
    with pytest.raises(ValueError):
        table.update(Route("10.244.2.1/24", "b", "h:1"))
    with pytest.raises(ValueError):
        table.update(Route("10.244.2.0/24", "b", "h:1", state="zombie"))
    assert table.all() == []
