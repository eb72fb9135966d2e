"""Exec over a real WebSocket: the agent's handler on 127.0.0.1, driven by `exec_in_pod`."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from agents.exec_server import exec_handler
from agents.netstack import NodeNetwork
from agents.toolbox import COMMANDS, ExecTarget, Proc
from podnet import execproto
from podnet.apierrors import ApiError, not_found
from podnet.execclient import ExecError, exec_in_pod

POD_IP, OTHER_IP = "10.244.1.5", "10.244.1.6"


@dataclass
class Result:
    code: int
    out: bytes
    err: bytes


@dataclass
class Server:
    url: str
    target: ExecTarget


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    node = NodeNetwork("node-1", "10.244.1.0/24")
    net = node.attach(POD_IP, pod="client", namespace="default", hostname="client")
    node.attach(OTHER_IP, pod="other", namespace="default", hostname="other")
    target = ExecTarget(net=net, pod="client", namespace="default", node="node-1",
                        pod_ip=POD_IP, hostname="client", env={"GREETING": "hi"},
                        files={"/etc/hostname": "client\n"})

    def lookup(namespace: str, pod: str, container: str | None) -> ExecTarget | str | ApiError:
        if (namespace, pod) != ("default", "client"):
            return not_found("pods", pod)
        if container not in (None, "main"):
            return f'container {container} is not valid for pod {pod}'
        return target

    handler = exec_handler(lookup)
    app = web.Application()
    # The control plane's path (what exec_in_pod calls) and the agent's own: same protocol.
    app.router.add_get("/api/v1/namespaces/{namespace}/pods/{name}/exec", handler)
    app.router.add_get("/pods/{namespace}/{name}/exec", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Server(f"http://{host}:{port}", target)
    finally:
        await runner.cleanup()
        for pod in node.pods():
            node.detach(pod.ip)
        for _ in range(50):
            await asyncio.sleep(0)
        # Every command, reader and writer task the handler started has ended.
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def run(server: Server, *argv: str, stdin: bytes | None = None,
              container: str | None = None) -> Result:
    out, err = io.BytesIO(), io.BytesIO()
    code = await exec_in_pod(server.url, "token", "default", "client", container, list(argv),
                             stdin=stdin is not None, stdout=out, stderr=err,
                             stdin_source=io.BytesIO(stdin or b""))
    return Result(code, out.getvalue(), err.getvalue())


async def test_exit_codes(server: Server) -> None:
    assert await run(server, "echo", "hi", "there") == Result(0, b"hi there\n", b"")
    assert await run(server, "sh", "-c", "exit 3") == Result(3, b"", b"")
    assert await run(server, "false", container="main") == Result(1, b"", b"")
    assert await run(server, "nope") == Result(127, b"", b"sh: 1: nope: not found\n")


async def test_stdout_and_stderr_stay_apart(server: Server) -> None:
    result = await run(server, "cat", "/nope", "/etc/hostname")
    assert result == Result(1, b"client\n", b"cat: /nope: No such file or directory\n")


async def test_stdin_reaches_cat_until_the_close_signal(server: Server) -> None:
    # Far more than the handler buffers: stdin is paused and resumed along the way.
    data = b"input-data\n" + bytes(range(256)) * 4096
    assert await run(server, "cat", stdin=data) == Result(0, data, b"")


async def test_stdin_from_a_pipe(server: Server) -> None:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"through a pipe\n")
    os.close(write_fd)
    out, err = io.BytesIO(), io.BytesIO()
    with os.fdopen(read_fd, "rb") as source:
        code = await exec_in_pod(server.url, "token", "default", "client", None, ["cat"],
                                 stdin=True, stdout=out, stderr=err, stdin_source=source)
    assert (code, out.getvalue(), err.getvalue()) == (0, b"through a pipe\n", b"")


async def test_commands_use_the_pods_network(server: Server) -> None:
    result = await run(server, "curl", "-sS", f"http://{OTHER_IP}:8080/")
    assert result.code == 7
    assert b"Connection refused" in result.err


async def test_unknown_pod_and_container_are_refused_before_the_upgrade(server: Server) -> None:
    with pytest.raises(ExecError) as pod_error:
        await exec_in_pod(server.url, "token", "default", "ghost", None, ["true"],
                          stdin=False, stdout=io.BytesIO(), stderr=io.BytesIO())
    assert (pod_error.value.message, pod_error.value.reason, pod_error.value.code) == (
        'pods "ghost" not found', "NotFound", 404)
    with pytest.raises(ExecError) as container_error:
        await run(server, "true", container="zzz")
    assert container_error.value.reason == "BadRequest"
    assert container_error.value.code == 400
    assert "container zzz is not valid" in container_error.value.message


async def test_a_crashing_command_is_an_internal_error(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    async def boom(proc: Proc, argv: list[str]) -> int:
        raise RuntimeError("kaput")

    monkeypatch.setitem(COMMANDS, "boom", boom)
    with pytest.raises(ExecError, match="kaput") as error:
        await run(server, "boom")
    assert error.value.reason == "InternalError"


async def test_wire_protocol(server: Server) -> None:
    """What kubectl relies on: v5 selected, binary frames, one Status, close 1000."""
    url = f"{server.url}/pods/default/client/exec"
    params = [("command", "sh"), ("command", "-c"), ("command", "cat /nope"),
              ("stdout", "true"), ("tty", "true")]  # kubectl sends no stderr param with -t
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url, params=params, protocols=execproto.PROTOCOLS) as ws:
        assert ws.protocol == "v5.channel.k8s.io"
        await ws.send_bytes(b'\x04{"Width":80,"Height":24}\n')  # resize: accepted, ignored
        messages = []
        async for msg in ws:
            assert msg.type == aiohttp.WSMsgType.BINARY
            messages.append(execproto.decode(msg.data))
        assert ws.close_code == 1000
    statuses = [json.loads(payload) for channel, payload in messages
                if channel == execproto.Channel.ERROR]
    assert statuses == [execproto.status_for_exit(1, ["sh", "-c", "cat /nope"])]
    # tty: stderr arrives merged into stdout
    assert b"".join(p for c, p in messages if c == execproto.Channel.STDOUT) == (
        b"cat: /nope: No such file or directory\n")
    assert messages[-1][0] == execproto.Channel.ERROR


async def test_a_plain_get_is_told_to_upgrade(server: Server) -> None:
    async with aiohttp.ClientSession() as session, session.get(
            f"{server.url}/pods/default/client/exec", params={"command": "true"}) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert (body["kind"], body["reason"], body["message"]) == (
        "Status", "BadRequest", "Upgrade request required")


async def test_client_leaving_cancels_the_command(server: Server) -> None:
    url = f"{server.url}/pods/default/client/exec"
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(url, params=[("command", "sleep"), ("command", "infinity"),
                                                   ("stdout", "true")],
                                      protocols=execproto.PROTOCOLS)
        for _ in range(1000):  # until the command runs
            if _exec_tasks():
                break
            await asyncio.sleep(0.01)
        assert _exec_tasks()
        await ws.close()
    for _ in range(1000):  # until the handler has cancelled it
        if not _exec_tasks():
            break
        await asyncio.sleep(0.01)
    assert _exec_tasks() == []


async def test_client_leaving_while_stdin_is_paused(server: Server) -> None:
    """The command never reads stdin, so the handler stops reading the client; it must still
    notice the client going away and cancel the command."""
    url = f"{server.url}/pods/default/client/exec"
    params = [("command", "sleep"), ("command", "infinity"), ("stdin", "true")]
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(url, params=params, protocols=execproto.PROTOCOLS,
                                      timeout=aiohttp.ClientWSTimeout(ws_close=0.1))
        for _ in range(8):
            await ws.send_bytes(execproto.encode(execproto.Channel.STDIN, bytes(128 * 1024)))
        await ws.close()
    for _ in range(1000):
        if not _exec_tasks():
            break
        await asyncio.sleep(0.01)
    assert _exec_tasks() == []


def _exec_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("exec ")]
