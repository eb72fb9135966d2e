"""The built-in podnet/echo image over the pod network stack, and image resolution."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog

from agents.images import ContainerContext, ImageError, PodInfo, pause, resolve_image
from agents.images import echo as echo_image
from agents.images import toolbox as toolbox_image
from agents.netstack import NodeNetwork, PodNet

SERVER_IP, CLIENT_IP = "10.244.3.10", "10.244.3.11"


class Lines:
    def __init__(self) -> None:
        self.text = ""
        self.flushes = 0

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        self.flushes += 1


@pytest.fixture
async def pods() -> AsyncIterator[tuple[PodNet, PodNet]]:
    node = NodeNetwork("node-3", "10.244.3.0/24")
    server = node.attach(SERVER_IP, pod="echo-0", namespace="demo", hostname="echo-0")
    client = node.attach(CLIENT_IP, pod="client", namespace="demo", hostname="client")
    yield server, client
    node.detach(SERVER_IP)
    node.detach(CLIENT_IP)


def context(net: PodNet, ports: list[dict[str, Any]], stdout: Lines) -> ContainerContext:
    info = PodInfo(name="echo-0", namespace="demo", ip=net.ip, node="node-3",
                   labels={"app": "echo"}, hostname="echo-0")
    return ContainerContext(name="echo", args=[], env={}, ports=ports, pod=info, net=net,
                            log=structlog.get_logger(), stdout=stdout)


async def started(net: PodNet, ports: set[int]) -> None:
    for _ in range(10_000):
        if {lst.port for lst in net.listeners()} >= ports:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"echo never listened on {ports}")


async def get(net: PodNet, port: int, path: str, requests: int = 1) -> list[dict[str, Any]]:
    """HTTP/1.1 GETs on one keep-alive connection, parsed by hand (no client library)."""
    reader, writer = await net.open_connection(SERVER_IP, port)
    answers = []
    for _ in range(requests):
        writer.write(f"GET {path} HTTP/1.1\r\nHost: echo\r\nX-Probe: yes\r\n\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        assert head.startswith("HTTP/1.1 200")
        length = next(int(line.split(":")[1]) for line in head.split("\r\n")
                      if line.lower().startswith("content-length"))
        answers.append(json.loads(await reader.readexactly(length)))
    writer.close()
    await writer.wait_closed()
    return answers


async def test_echo_answers_with_pod_and_client(pods: tuple[PodNet, PodNet]) -> None:
    server, client = pods
    stdout = Lines()
    ports: list[dict[str, Any]] = [{"containerPort": 8080, "protocol": "TCP"},
                                   {"containerPort": 9090},
                                   {"containerPort": 53, "protocol": "UDP"}]
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(echo_image.run(context(server, ports, stdout)))
        await started(server, {8080, 9090})
    assert {(lst.proto, lst.port) for lst in server.listeners()} == {("tcp", 8080), ("tcp", 9090)}
    assert logs[0]["event"] == "echo.listening"

    first, second = await get(client, 8080, "/hello?x=1", requests=2)
    (other_port,) = await get(client, 9090, "/")
    assert first["pod"] == "echo-0" and first["namespace"] == "demo"
    assert first["podIP"] == SERVER_IP and first["node"] == "node-3"
    assert first["method"] == "GET" and first["path"] == "/hello" and first["query"] == "x=1"
    assert first["headers"]["X-Probe"] == "yes"
    client_ip, client_port = first["client"].split(":")
    assert client_ip == CLIENT_IP and second["client"] == first["client"]    # keep-alive
    assert other_port["port"] == 9090 and other_port["client"] != first["client"]

    lines = stdout.text.splitlines()
    assert len(lines) == 3          # one access line per request
    assert lines[0].startswith(f"{CLIENT_IP}:{client_port} ")
    assert '"GET /hello?x=1 HTTP/1.1" 200' in lines[0]

    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert server.listeners() == [] and server.connections() == []


async def test_echo_defaults_to_8080(pods: tuple[PodNet, PodNet]) -> None:
    server, client = pods
    with structlog.testing.capture_logs():
        task = asyncio.create_task(echo_image.run(context(server, [], Lines())))
        await started(server, {8080})
    (answer,) = await get(client, 8080, "/")
    assert answer["client"].startswith(CLIENT_IP + ":")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_resolve_builtin_images() -> None:
    assert resolve_image("podnet/echo") is echo_image.run
    assert resolve_image("podnet/echo:1.0") is echo_image.run
    assert resolve_image("podnet/toolbox:latest") is toolbox_image.run
    assert resolve_image("podnet/pause") is pause
    assert resolve_image("py:agents.images.echo:run") is echo_image.run


@pytest.mark.parametrize(("image", "message"), [
    ("redis:7", "is not emulated by podnet"),
    ("py:no_such_package.module:run", "No module named 'no_such_package'"),
    ("py:agents.images.echo:missing", "no attribute 'missing'"),
    ("py:agents.images:resolve_image", "not an async def"),
    ("py:agents.images.echo", "expected py:package.module:function"),
])
def test_resolve_image_errors(image: str, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        resolve_image(image)
