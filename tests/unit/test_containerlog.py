import asyncio

from agents.containerlog import ContainerLog


def test_partial_lines_appear_when_complete() -> None:
    log = ContainerLog()
    log.write("hel")
    assert log.snapshot() == []
    log.write("lo\nwor")
    assert [ln.text for ln in log.snapshot()] == ["hello\n"]
    log.close()
    assert [ln.text for ln in log.snapshot()] == ["hello\n", "wor\n"]


def test_bounded_by_bytes_oldest_dropped() -> None:
    log = ContainerLog(max_bytes=100)
    for i in range(100):
        log.write(f"line {i:03}\n")
    lines = [ln.text for ln in log.snapshot()]
    assert sum(len(t) for t in lines) <= 100
    assert lines[-1] == "line 099\n"


def test_tail_selects_last_lines() -> None:
    log = ContainerLog()
    log.write("a\nb\nc\n")
    assert [ln.text for ln in log.snapshot(tail=2)] == ["b\n", "c\n"]
    assert log.snapshot(tail=0) == []


async def test_follow_yields_history_then_new_lines_until_closed() -> None:
    log = ContainerLog()
    log.write("old\n")
    got: list[str] = []

    async def reader() -> None:
        async for line in log.follow():
            got.append(line.text)

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    log.write("new1\nnew2\n")
    await asyncio.sleep(0)
    log.close()
    await asyncio.wait_for(task, 1)
    assert got == ["old\n", "new1\n", "new2\n"]
