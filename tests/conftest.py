"""Shared fixtures: real node processes on free ports, always stopped at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported where used, so that the core's tests run without tornado
    from paxgos.testing.procs import LocalNodes


@pytest.fixture
def make_nodes(tmp_path: Path) -> Iterator[Callable[..., LocalNodes]]:
    """Start a cluster of real nodes (``make_nodes(5, ["--window", "2"])``); all are stopped
    when the test ends, pass or fail."""
    from paxgos.testing.procs import LocalNodes

    started: list[LocalNodes] = []

    def make(count: int = 5, extra_args: list[str] | None = None) -> LocalNodes:
        nodes = LocalNodes(count, tmp_path / f"cluster-{len(started)}", extra_args)
        started.append(nodes)
        return nodes.start()

    yield make
    for nodes in started:
        nodes.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNodes]:
    """One healthy 5-node cluster shared by the tests of a module that leave it healthy."""
    from paxgos.testing.procs import LocalNodes

    nodes = LocalNodes(5, tmp_path_factory.mktemp("cluster"), ["--request-timeout", "3s"])
    try:
        yield nodes.start()
    finally:
        nodes.close()
