"""Container images: an image names a coroutine `async def run(ctx: ContainerContext)`.

Built-ins ship with podnet (`podnet/echo`, `podnet/toolbox`, `podnet/pause`, with an optional
`:tag`); the images tutorials use (`nginx`, `busybox`, `agnhost` ...) are emulated by
`agents.images.catalog`, whatever registry prefix, tag or digest the reference has;
`py:package.module:function` runs a user's own coroutine function.

The coroutine's return value is the container's exit code (None means 0), which
`restartPolicy` and Jobs see as `terminated.exitCode`.
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
    from agents.toolbox.core import ExecTarget


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
    # The manifest's `command` ($(VAR) already expanded, like `args`); [] when not given.
    command: list[str] = field(default_factory=list)
    image: str = ""                     # the reference as written in the manifest
    # The container as exec sees it (its env and files): for running toolbox commands.
    target: ExecTarget | None = None


Image = Callable[[ContainerContext], Awaitable[int | None]]


class StartError(Exception):
    """The container's executable does not exist in its image: the runtime reports it as
    runc does (terminated, reason StartError, exit code 128), and does not run the image."""


class ImageError(Exception):
    """An image that cannot be run; `reason` is what the container's waiting state says
    (ErrImagePull, or InvalidImageName for a reference that does not parse)."""

    def __init__(self, message: str, reason: str = "ErrImagePull") -> None:
        super().__init__(message)
        self.reason = reason


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
        from agents.images import catalog
        from agents.images.reference import BadReference, parse_reference

        try:
            ref = parse_reference(image)
        except BadReference as e:
            raise ImageError(f"couldn't parse image name {image!r}: {e}",
                             reason="InvalidImageName") from e
        if ref.short_path not in BUILTINS:
            return catalog.lookup(ref, image)
        target = BUILTINS[ref.short_path]
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
