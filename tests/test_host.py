"""Unit tests of the host's write path (``paxgos.net.host``): where fsyncs run.

``FsyncPlacement`` on its own, then a one-node ``NodeHost`` on a Tornado loop with a real SQLite
store whose fsync is made slow (the only stand-in: a subclass of the store in this module), so
that both placements commit and keep every value.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from tornado.testing import AsyncTestCase, gen_test

from paxgos.core import Committed, Config, Node
from paxgos.net.faults import FaultFlags, FaultInjector
from paxgos.net.host import FsyncPlacement, NodeHost
from paxgos.storage.sqlite import SQLiteStore


def test_fast_fsyncs_stay_on_the_loop() -> None:
    placement = FsyncPlacement(inline_under=0.01, backoff=1.0)
    for k in range(100):
        assert placement.inline(float(k))
        placement.record(0.003, float(k))  # a busy host's fast disk
    assert placement.inline(100.0)


def test_slow_fsyncs_move_to_the_thread_and_are_timed_again_after_the_backoff() -> None:
    placement = FsyncPlacement(inline_under=0.01, backoff=1.0)
    placement.record(0.080, 5.0)  # one 80 ms fsync: the smoothed time passes 10 ms
    assert not placement.inline(5.0) and not placement.inline(5.99)
    assert placement.inline(6.0)  # one more on the loop, to measure again
    placement.record(0.080, 6.0)
    assert not placement.inline(6.5)
    # The disk turned fast: a few quick fsyncs bring the average under the bar again.
    now = 7.0
    for _ in range(20):
        if placement.inline(now):
            placement.record(0.0001, now)
        now += 1.0
    assert placement.inline(now) and placement.smoothed < 0.01


class SlowSyncStore(SQLiteStore):
    """A real SQLite store whose fsync takes at least ``delay`` seconds."""

    delay = 0.0

    def sync(self) -> None:
        time.sleep(self.delay)
        super().sync()


class HostWritePathTest(AsyncTestCase):
    def make_host(self, tmp: Path, delay: float) -> NodeHost:
        store = SlowSyncStore(tmp / "node-0.db", node_id=0, cluster_id="test")
        store.delay = delay
        node = Node(Config(node_id=0, nodes=1), store.load())
        host = NodeHost(node, store, ["http://127.0.0.1:9"], FaultInjector(FaultFlags()))
        host.start()
        self.addCleanup(host.stop)
        return host

    async def propose_all(self, host: NodeHost, values: list[int]) -> list[int]:
        slots = []
        for value in values:
            _, future = host.propose_future(value)
            outcome = await future
            assert isinstance(outcome, Committed) and outcome.value == value, outcome
            slots.append(outcome.slot)
        return slots

    @gen_test(timeout=20)
    async def test_fast_fsyncs_run_on_the_loop_and_keep_every_value(self) -> None:
        host = self.make_host(Path(self.tmp()), delay=0.0)
        slots = await self.propose_all(host, list(range(100, 120)))
        assert host.fsync.inline(time.monotonic())
        await self.wait_stored(host, max(slots))
        assert [v for _, v in host.store.read_chosen(min(slots), 20)] == list(range(100, 120))

    @gen_test(timeout=20)
    async def test_slow_fsyncs_run_in_the_writer_thread_and_keep_every_value(self) -> None:
        host = self.make_host(Path(self.tmp()), delay=0.03)
        slots = await self.propose_all(host, list(range(200, 220)))
        assert not host.fsync.inline(time.monotonic())  # 30 ms fsyncs: off the loop
        assert host.fsync.smoothed >= 0.01
        await self.wait_stored(host, max(slots))
        assert [v for _, v in host.store.read_chosen(min(slots), 20)] == list(range(200, 220))

    async def wait_stored(self, host: NodeHost, slot: int) -> None:
        """The last chosen batch is written by a later tick (see NodeHost._submit)."""
        deadline = time.monotonic() + 5.0
        while host.store.commit_index() < slot and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert host.store.commit_index() >= slot

    def tmp(self) -> str:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        return directory.name
