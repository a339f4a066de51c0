"""Unit tests of the host's write path (``paxgos.net.host``): where fsyncs run.

``FsyncPlacement`` on its own, then a one-node ``NodeHost`` on a Tornado loop with a real SQLite
store whose fsync is made slow (the only stand-in: a subclass of the store in this module), so
that both placements commit and keep every value.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path

import pytest
from tornado.testing import AsyncTestCase, gen_test

from paxgos.core import LEADER, Committed, Config, Node
from paxgos.net.faults import FaultFlags, FaultInjector
from paxgos.net.host import FsyncPlacement, NodeHost, StorageFailed
from paxgos.storage import StorageError
from paxgos.storage.sqlite import SQLiteStore


def test_fsyncs_run_on_the_loop_while_the_quickest_recent_one_is_fast() -> None:
    placement = FsyncPlacement(inline_under=0.002, stall=0.05, recent=8)
    assert placement.on_loop  # nothing measured yet
    # A busy host: most timings include a wait for a core, but the disk is fast.
    for seconds in [0.0002, 0.003, 0.004, 0.003, 0.002, 0.004, 0.003, 0.0025] * 3:
        placement.record(seconds)
        assert placement.on_loop
    for _ in range(8):
        placement.record(0.008)  # a spinning disk: every fsync slow
    assert not placement.on_loop


def test_a_stalled_fsync_sends_the_next_ones_to_the_thread_until_all_recent_are_quick() -> None:
    placement = FsyncPlacement(inline_under=0.002, stall=0.05, recent=8)
    for _ in range(8):
        placement.record(0.0002)
    placement.record(0.5)  # the disk stalled for half a second
    for _ in range(8):
        assert not placement.on_loop
        placement.record(0.0002)
    assert placement.on_loop  # the stall has left the recent timings


def fast_disk() -> FsyncPlacement:
    """Thresholds no real fsync reaches: every fsync runs on the loop."""
    return FsyncPlacement(inline_under=1.0, stall=10.0)


class SlowSyncStore(SQLiteStore):
    """A real SQLite store whose fsync takes at least ``delay`` seconds, and which notes the
    thread every fsync ran in."""

    delay = 0.0
    fail = False

    def sync(self) -> None:
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail:
            raise StorageError("fsync of the write-ahead log failed: [Errno 5] injected")
        super().sync()

    @property
    def threads(self) -> set[str]:
        if not hasattr(self, "_threads"):
            self._threads: set[str] = set()
        return self._threads


class HostWritePathTest(AsyncTestCase):
    def make_host(
        self, tmp: Path, delay: float, placement: FsyncPlacement | None = None
    ) -> NodeHost:
        store = SlowSyncStore(tmp / "node-0.db", node_id=0, cluster_id="test")
        store.delay = delay
        node = Node(Config(node_id=0, nodes=1), store.load())
        host = NodeHost(node, store, ["http://127.0.0.1:9"], FaultInjector(FaultFlags()))
        if placement is not None:
            host.fsync = placement
        host.start()
        self.addCleanup(host.stop)
        return host

    async def propose_all(self, host: NodeHost, values: list[int]) -> list[int]:
        while host.node.role != LEADER:  # it probes, then runs phase 1, alone
            await asyncio.sleep(0.005)
        slots = []
        for value in values:
            _, future = host.propose_future(value)
            outcome = await future
            assert isinstance(outcome, Committed) and outcome.value == value, outcome
            slots.append(outcome.slot)
        return slots

    @gen_test(timeout=20)
    async def test_fast_fsyncs_run_on_the_loop_and_keep_every_value(self) -> None:
        # Any real fsync counts as fast here: the test is of the routing, not of this disk.
        host = self.make_host(Path(self.tmp()), delay=0.0, placement=fast_disk())
        slots = await self.propose_all(host, list(range(100, 120)))
        assert host.fsync.on_loop
        assert host.store.threads == {threading.current_thread().name}  # the loop's thread
        await self.wait_stored(host, max(slots))
        assert [v for _, v in host.store.read_chosen(min(slots), 20)] == list(range(100, 120))

    @gen_test(timeout=20)
    async def test_slow_fsyncs_run_in_the_writer_thread_and_keep_every_value(self) -> None:
        host = self.make_host(Path(self.tmp()), delay=0.01)
        slots = await self.propose_all(host, list(range(200, 220)))
        assert not host.fsync.on_loop  # 10 ms fsyncs: off the loop after the first one
        loop_thread = threading.current_thread().name
        assert any(name.startswith("paxgos-write") for name in host.store.threads)
        assert loop_thread in host.store.threads  # the first, before anything was measured
        await self.wait_stored(host, max(slots))
        assert [v for _, v in host.store.read_chosen(min(slots), 20)] == list(range(200, 220))

    @gen_test(timeout=30)
    async def test_a_failed_fsync_fails_its_waiters_and_the_node_on_either_path(self) -> None:
        for delay, on_loop in ((0.0, True), (0.01, False)):
            placement = fast_disk() if on_loop else None
            host = self.make_host(Path(self.tmp()), delay=delay, placement=placement)
            await self.propose_all(host, [1, 2, 3])
            assert host.fsync.on_loop is on_loop
            host.store.fail = True
            _, future = host.propose_future(4)
            with pytest.raises(StorageFailed):
                await future
            assert host.failed and "injected" in host.failed
            _, later = host.propose_future(5)  # refused from now on
            with pytest.raises(StorageFailed):
                await later

    @gen_test(timeout=20)
    async def test_a_clean_stop_writes_the_chosen_entries_still_pending(self) -> None:
        tmp = Path(self.tmp())
        host = self.make_host(tmp, delay=0.0)
        slots = await self.propose_all(host, [7, 8, 9, 10, 11])
        host.stop()  # before any tick wrote the last chosen batch
        store = SQLiteStore(tmp / "node-0.db", node_id=0, cluster_id="test")
        try:
            assert store.commit_index() == max(slots)
        finally:
            store.close()

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
