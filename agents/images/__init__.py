"""Container images: an image names a coroutine `async def run(ctx: ContainerContext)`.

Built-ins ship with podnet (`podnet/echo`, `podnet/toolbox`, `podnet/pause`, with an optional
`:tag`); `py:package.module:function` runs a user's own coroutine function.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from agents.netstack import PodNet


class TextSink(Protocol):
    """Where a container's stdout goes (what `kubectl logs` shows)."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


@dataclass(frozen=True)
class PodInfo:
    name: str
    namespace: str
    ip: str
    node: str
    labels: dict[str, str] = field(default_factory=dict)
    hostname: str = ""


@dataclass
class ContainerContext:
    """What a container's coroutine gets."""

    name: str
    args: list[str]
    env: dict[str, str]
    ports: list[dict[str, Any]]     # the manifest's container ports, as written
    pod: PodInfo
    net: PodNet
    log: FilteringBoundLogger
    stdout: TextSink


Image = Callable[[ContainerContext], Awaitable[None]]


class ImageError(Exception):
    """An image that cannot be run (the runtime reports it like ErrImagePull)."""


BUILTINS = {
    "podnet/echo": "agents.images.echo:run",
    "podnet/toolbox": "agents.images.toolbox:run",
    "podnet/pause": "agents.images:pause",
}


async def pause(ctx: ContainerContext) -> None:
    """Holds the pod's network namespace in Kubernetes; here it just idles until cancelled."""
    await asyncio.get_running_loop().create_future()


def resolve_image(image: str) -> Image:
    """The coroutine function that runs `image`; raises ImageError if there is none."""
    if image.startswith("py:"):
        target = image[3:]
    else:
        name, _, _tag = image.partition(":")
        if name not in BUILTINS:
            raise ImageError(f"unknown image {image!r}: built-ins are {', '.join(BUILTINS)}; "
                             f"use py:package.module:function for your own")
        target = BUILTINS[name]
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ImageError(f"bad image {image!r}: expected py:package.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:    # an image's import can fail in any way its code likes
        raise ImageError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, attr, None)
    if fn is None:
        raise ImageError(f"module {module_name} has no attribute {attr!r}")
    if not inspect.iscoroutinefunction(fn):
        raise ImageError(f"{module_name}:{attr} is not an async def function")
    image_fn: Image = fn
    return image_fn
