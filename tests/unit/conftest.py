"""Fixtures shared by unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agents.netstack import NodeNetwork


@pytest.fixture
async def dual_stack_node() -> AsyncIterator[NodeNetwork]:
    """node-1 of a dual-stack cluster (10.244.1.0/24 and fd00:10:244:1::/64). Afterwards its
    pods are detached, and no task may outlive them."""
    network = NodeNetwork("node-1", "10.244.1.0/24", "10.244.0.0/16",
                          pod_cidrs=["10.244.1.0/24", "fd00:10:244:1::/64"],
                          cluster_cidrs=["10.244.0.0/16", "fd00:10:244::/56"])
    yield network
    for pod in network.pods():
        network.detach(pod.ip)
    for _ in range(50):
        await asyncio.sleep(0)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
