"""`podnet/toolbox`: an idle container whose pod is used through `podnet exec` (curl, dig, nc...).

The tools themselves run in the exec path against the pod's network stack; the container only
has to keep the pod alive.
"""

from __future__ import annotations

import asyncio

from agents.images import ContainerContext


async def run(ctx: ContainerContext) -> None:
    await asyncio.get_running_loop().create_future()     # idle until the pod stops
