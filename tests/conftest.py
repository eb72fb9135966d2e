from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import RunningCluster, start_cluster, stop_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    """A 2-node cluster started with `podnet up --detach`, shared by one test module."""
    running = start_cluster(tmp_path_factory.mktemp("cluster"), 2)
    try:
        yield running
    finally:
        stop_cluster(running)
