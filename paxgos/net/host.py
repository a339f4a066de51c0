"""The host that runs one ``paxgos.core.Node`` on a Tornado event loop.

It owns everything the pure core may not: the clock (a periodic ``tick``), the end of each
event-loop turn (``flush``), the store, the peers, and the futures of waiting clients.  It keeps
the ``Ready`` contract of ``paxgos.core.ready`` by doing what ``paxgos.core.release.Pipeline``
says: a response leaves only once its Ready's and every earlier Ready's ``persist`` is on stable
storage, messages once their own Ready's is, and outcomes at once.

With a durable store, a write is one transaction run on the event loop (its CPU part: no
waiting) and one fsync, covering every Ready queued for it.  The fsync runs on the event loop
too while the disk answers fsyncs fast (``FsyncPlacement``), and in the writer thread otherwise:
there every Ready that arrives while an fsync is under way joins the next write, so one fsync
covers a whole batch (group commit).  A disk that stalls during an fsync on the loop stalls the
node that long; the next fsyncs then go to the thread until the recent ones are all quick again.
(The transaction itself stays off the writer thread: a thread gives up and retakes the GIL at
every SQLite step, and each retake waits for the busy event loop.)
A Ready that only records chosen entries and has nothing to release (rule 4 of the contract: the
leader's chosen batch, whose clients were answered at once) starts no write of its own: it joins
the next write, or the tick after the one that first finds it waiting writes it (within about
two ticks), so a leader writes once per round instead of twice.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from tornado.ioloop import IOLoop, PeriodicCallback

from paxgos.core import Abandoned, Committed, Node, Outcome, Persist, Readable, Ready, Rejected
from paxgos.core.messages import ChosenEntry, Message
from paxgos.core.release import Pipeline, Step
from paxgos.net.auth import PeerAuth
from paxgos.net.buckets import Buckets
from paxgos.net.events import EventLog
from paxgos.net.faults import FaultInjector
from paxgos.net.transport import Transport
from paxgos.storage import Store

log = logging.getLogger("paxgos.net")

#: Seconds between checkpoints of a durable store (its write-ahead log grows meanwhile).
CHECKPOINT_INTERVAL = 1.0
#: Seconds between the core's ticks (retries, heartbeats, election timers).
TICK_INTERVAL = 0.02
#: How long a client's proposal waits for its outcome (``--request-timeout``).
REQUEST_TIMEOUT = 5.0
#: How long a message to a peer waits for its answer before its connection is closed
#: (``--peer-timeout``): longer than the benchmark's 2 s delays of a slowed node.
PEER_TIMEOUT = 5.0

#: An fsync runs on the event loop while the quickest of the recent ones took less than this:
#: handing a fast fsync to the writer thread costs more CPU than the fsync itself (the GIL
#: changes hands and the loop is woken from the thread); on this project's 2-core machine that
#: took followers from 0.13 to 0.11 cores under Locust.  The quickest, not the average: on a
#: CPU-bound host a timing also holds the wait for a core after the disk answered (1-4 ms on
#: average here under load, 0.1 ms for the disk itself), but some fsync gets a core at once.
#: A spinning disk (5-15 ms) stays in the thread, where group commit batches its writes.
FSYNC_INLINE_UNDER = 0.002
#: An fsync at least this slow (a stalled disk) sends the next ones to the thread until the
#: recent timings are all quick again.
FSYNC_STALL = 0.05
#: How many recent fsyncs the decision looks at.
FSYNC_RECENT = 8


class FsyncPlacement:
    """Where the next fsync runs: on the event loop while the disk is fast, else in the writer
    thread.  Every fsync is timed where it ran (in the thread the time may include a wait for
    the GIL, which only errs towards the thread) and recorded on the loop."""

    def __init__(
        self,
        inline_under: float = FSYNC_INLINE_UNDER,
        stall: float = FSYNC_STALL,
        recent: int = FSYNC_RECENT,
    ):
        self.inline_under = inline_under
        self.stall = stall
        self.recent: collections.deque[float] = collections.deque(maxlen=recent)

    @property
    def on_loop(self) -> bool:
        if not self.recent:
            return True  # measured by the first ones
        return min(self.recent) < self.inline_under and max(self.recent) < self.stall

    def record(self, seconds: float) -> None:
        self.recent.append(seconds)


Done = Callable[[Any], None]
"""Called with a client request's ``Outcome``, or with the exception that ended it."""

Respond = Callable[[Any], None]
"""Called with the Ready's response message (or ``None``), or with an exception on failure."""

#: How each outcome is counted in ``NodeHost.outcome_counts`` (``paxgos_client_requests_total``);
#: a request's deadline passing counts as ``timeout``, a failed store as ``failed``.
OUTCOME_NAMES: dict[type, str] = {
    Committed: "committed",
    Readable: "read",
    Rejected: "rejected",
    Abandoned: "abandoned",
}


def settle(future: asyncio.Future[Any]) -> Callable[[Any], None]:
    """A callback that completes ``future`` with its argument, or fails it if that is an
    exception (once; later calls are ignored)."""

    def complete(result: Any) -> None:
        if future.done():
            return
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)

    return complete


class StorageFailed(Exception):
    """The node's store failed a write; the node serves nothing until restarted."""


class NodeHost:
    """Drives one core ``Node``: inputs from HTTP handlers and timers, outputs to peers,
    clients and the store."""

    def __init__(
        self,
        node: Node,
        store: Store,
        urls: list[str],
        faults: FaultInjector,
        request_timeout: float = REQUEST_TIMEOUT,
        peer_timeout: float = PEER_TIMEOUT,
        tick_interval: float = TICK_INTERVAL,
        auth: PeerAuth | None = None,
        peer_tls: ssl.SSLContext | None = None,
        peer_lane: bool = True,
    ):
        self.node = node
        #: Signs and checks peer messages (``PeerAuth(None)``: an insecure node).
        self.auth = auth if auth is not None else PeerAuth(None)
        #: Whether a peer message must come with a verified client certificate (``--tls-ca``).
        self.peer_cert_required = False
        self.store = store
        self.urls = urls
        self.faults = faults
        self.request_timeout = request_timeout
        self.tick_interval = tick_interval
        #: Sampled protocol messages for watchers (``GET /events``; off until one asks).
        self.events = EventLog(node.id)
        self.transport = Transport(
            node.id, urls, peer_timeout, self._receive, self._local, self.auth,
            ssl_context=peer_tls, events=self.events, lane=peer_lane,
        )  # fmt: skip
        self.failed: str | None = None
        self.store_writes = 0  # group commits to a durable store (one fsync each)
        self.store_records = 0  # Readys' Persist records they carried
        # What /metrics reports (paxgos.net.metrics): plain numbers, cheap to keep.
        self.start_commit = node.commit
        self.storage_failures = 0
        self.catchup_served = 0  # chosen entries sent to peers catching up
        self.outcome_counts = dict.fromkeys([*OUTCOME_NAMES.values(), "timeout", "failed"], 0)
        self.proposal_latency = Buckets()
        self.fsync_latency = Buckets()
        # Client requests waiting for their outcome: request id -> (callback, arrival time).
        # Plain callbacks, not futures: a future per request costs an extra event-loop turn on
        # the hot path.
        self._waiters: dict[int, tuple[Done, float]] = {}
        self._deadlines: collections.deque[tuple[float, int]] = collections.deque()
        self._request_ids = itertools.count(1)
        self._flush_scheduled = False
        self._flush_timer: object | None = None
        self._flush_at = 0.0  # when it fires: Node.flush_due (a linger, a thrifty widening)
        # When to write and what each write releases: the core's rules (paxgos.core.release).
        self.pipeline: Pipeline[Respond] = Pipeline(defer_chosen=store.durable)
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="paxgos-write")
        self.fsync = FsyncPlacement()
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="paxgos-read")
        self._clock_zero = time.monotonic()
        self._ticker: PeriodicCallback | None = None
        self._housekeeper: PeriodicCallback | None = None
        self._checkpointing = False
        self._stopped = False
        self.started_at = time.time()

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the clock; the distinguished proposer runs phase 1 at once."""
        self._ticker = PeriodicCallback(self._tick, self.tick_interval * 1000)
        self._ticker.start()
        if self.store.durable:
            self._housekeeper = PeriodicCallback(self._checkpoint, CHECKPOINT_INTERVAL * 1000)
            self._housekeeper.start()
        if self.node.id == self.node.config.initial_leader:
            self.input(self.node.campaign())

    def stop(self) -> None:
        """Stop the clock and the peers, write what is pending, close the store.  Callbacks
        still queued on the loop (a finished fsync, a peer's late answer) then do nothing.  A
        second call does nothing."""
        if self._stopped:
            return
        self._stopped = True
        if self._ticker is not None:
            self._ticker.stop()
        if self._housekeeper is not None:
            self._housekeeper.stop()
        if self._flush_timer is not None:
            IOLoop.current().remove_timeout(self._flush_timer)
            self._flush_timer = None
        self.transport.close()
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        pending = self.pipeline.pending()
        if pending and not self.failed:
            # Chosen entries still waiting for a write (rule 4): a restart would learn them
            # again, but a clean stop keeps its log whole.
            try:
                self.store.apply(pending)
            except Exception as exc:
                log.warning("node %d: last write on stop failed: %s", self.node.id, exc)
        self.store.close()

    # --- inputs -------------------------------------------------------------------------------

    def input(self, ready: Ready, respond: Respond | None = None) -> None:
        """Release ``ready`` once durable, and end the turn with a ``flush`` (see core)."""
        self._submit(ready, respond)
        # Only a leader with queued proposals or reads has anything to flush (see Node.flush),
        # or one whose thrifty round waits for its targets (Node.flush_due).
        if self.node.flush_wanted:
            if not self._flush_scheduled:
                self._flush_scheduled = True
                IOLoop.current().add_callback(self._flush)
        else:
            self._arm_flush()

    def deliver(self, msg: Message, respond: Respond) -> None:
        """Hand a peer's message to the core; ``respond`` is called once with the response
        message (or None), or with the exception that stopped it (a plain callback, as for
        proposals: a future would cost an extra event-loop turn per message)."""
        if self.failed:
            respond(StorageFailed(self.failed))
        else:
            self.input(self.node.step(msg, self.now()), respond)

    def _receive(self, reply: Message) -> None:
        """A peer's valid reply (or our own), from the transport, into the core."""
        if self.failed is None:
            self.input(self.node.step(reply, self.now()))

    def _local(self, msg: Message, respond: Respond) -> None:
        """A message this node sends itself, handled as a peer would (faults included)."""
        if self.faults.active():
            asyncio.ensure_future(self._local_delayed(msg, respond))
        else:
            self.deliver(msg, respond)

    async def _local_delayed(self, msg: Message, respond: Respond) -> None:
        try:
            await self.faults.delay()
            self.deliver(msg, respond)
        except Exception as exc:  # never "Task exception was never retrieved"
            log.warning("node %d: its own %s failed: %r", self.node.id, type(msg).__name__, exc)

    def propose(self, value: int, done: Done) -> int:
        """Ask the core to commit ``value``; ``done`` is called once with the request's outcome,
        or with ``TimeoutError`` after ``request_timeout`` seconds (outcome unknown), or with
        ``StorageFailed``.  Returns the request id."""
        return self._request(lambda request: self.node.propose(request, value), done)

    def read(self, done: Done) -> int:
        """Ask the core to confirm a linearizable read (``Node.read``); ``done`` gets the
        outcome (``Readable``, or ``Rejected`` off the leader) or an exception, as for
        ``propose``.  Returns the request id."""
        return self._request(self.node.read, done)

    def read_future(self) -> tuple[int, asyncio.Future[Outcome]]:
        """``read`` for coroutines: the future gets the outcome or the exception."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        return self.read(settle(future)), future

    def _request(self, ask: Callable[[int], Ready], done: Done) -> int:
        request = next(self._request_ids)
        if self.failed:
            self.outcome_counts["failed"] += 1
            done(StorageFailed(self.failed))
            return request
        now = time.monotonic()
        self._waiters[request] = (done, now)
        # One timer per request would cost more than the request; the tick sweeps deadlines.
        self._deadlines.append((now + self.request_timeout, request))
        self.input(ask(request))
        return request

    def propose_future(self, value: int) -> tuple[int, asyncio.Future[Outcome]]:
        """``propose`` for coroutines: the future gets the outcome or the exception."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        return self.propose(value, settle(future)), future

    def forget(self, request: int) -> None:
        """The client stopped waiting for ``request`` (it timed out)."""
        self._waiters.pop(request, None)

    async def applied(self, slot: int, poll: float = 0.002) -> bool:
        """Whether the store's log holds ``slot`` within ``request_timeout`` (polled: a write
        lands within a few milliseconds of its round being chosen)."""
        deadline = time.monotonic() + self.request_timeout
        hurry = not self.failed and not self._stopped
        if hurry and self.store.commit_index() < slot <= self.node.commit:
            self._carry(self.pipeline.hurry())  # chosen here, its write deferred: write now
        while self.store.commit_index() < slot:
            if time.monotonic() >= deadline or self.failed:
                return False
            await asyncio.sleep(poll)
        return True

    async def read_chosen(self, from_slot: int, limit: int) -> list[ChosenEntry]:
        """Chosen entries from the store.  A durable store is read in a thread of its own (its
        read connection sees committed data only), so a read waits neither for an fsync nor
        blocks the event loop."""
        if not self.store.durable:
            return self.store.read_chosen(from_slot, limit)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, self.store.read_chosen, from_slot, limit)

    def _tick(self) -> None:
        now = time.monotonic()
        self.input(self.node.tick(now - self._clock_zero))
        if not self._stopped and not self.failed:
            self._carry(self.pipeline.tick())
        # Deadlines are appended in time order (one timeout for all), so expired ones lead.
        while self._deadlines and self._deadlines[0][0] <= now:
            _, request = self._deadlines.popleft()
            waiter = self._waiters.pop(request, None)
            if waiter is not None:
                self.outcome_counts["timeout"] += 1
                waiter[0](TimeoutError())
        if self.events.on:
            self.events.tick(now)

    def _checkpoint(self) -> None:
        """Let the store fold its log in the read thread, off the writer's path (one at a
        time)."""
        if self._checkpointing or self.failed:
            return
        self._checkpointing = True
        loop = IOLoop.current()
        future = loop.run_in_executor(self._reader, self.store.checkpoint)
        loop.add_future(future, self._checkpointed)

    def _checkpointed(self, future: Any) -> None:
        self._checkpointing = False
        if future.exception() is not None:
            log.warning("node %d: %s", self.node.id, future.exception())

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._submit(self.node.flush(self.now()), None)
        self._arm_flush()

    def _arm_flush(self) -> None:
        # A small batch lingers (see Config.min_batch), or a thrifty round waits for its
        # targets (Config.thrifty): flush again when it is due, moving the timer earlier if
        # something new is due sooner than it.
        due = self.node.flush_due
        if due is None or (self._flush_timer is not None and due >= self._flush_at):
            return
        loop = IOLoop.current()
        if self._flush_timer is not None:
            loop.remove_timeout(self._flush_timer)
        self._flush_at = due
        self._flush_timer = loop.call_later(max(0.0, due - self.now()), self._timer_flush)

    def _timer_flush(self) -> None:
        self._flush_timer = None
        self._flush()

    def now(self) -> float:
        """The core's clock: seconds since this host started."""
        return time.monotonic() - self._clock_zero

    # --- the Ready pipeline -------------------------------------------------------------------

    def _submit(self, ready: Ready, respond: Respond | None) -> None:
        if self._stopped:
            return  # shutting down: nothing more is written or released
        if self.failed:
            if respond is not None:
                respond(StorageFailed(self.failed))
            return
        self._carry(self.pipeline.submit(ready, respond))

    def _carry(self, step: Step[Respond]) -> None:
        """Do what the pipeline says: release, then start the write."""
        for ready, respond in step.release:
            self._release(ready, respond)
        if step.write is not None:
            self._write(step.write)

    def _write(self, records: list[Persist]) -> None:
        """One transaction and one fsync for ``records``; ``pipeline.written()`` once durable."""
        if self.store.durable:
            self.store_writes += 1  # one transaction, one fsync
            self.store_records += len(records)
        try:
            self.store.write(records)
        except Exception as exc:
            self._storage_failed(exc)
            return
        if not self.store.durable:
            self._written(None)
        elif self.fsync.on_loop:
            error: BaseException | None = None
            try:
                self._fsynced(self._timed_sync())
            except Exception as exc:
                error = exc
            self._written(error)
        else:
            loop = IOLoop.current()
            future = loop.run_in_executor(self._writer, self._timed_sync)
            loop.add_future(future, self._synced)

    def _timed_sync(self) -> float:
        """Fsync the store; the seconds it took (the caller records them on the loop, so that
        ``self.fsync`` is only ever touched there)."""
        start = time.perf_counter()
        self.store.sync()
        return time.perf_counter() - start

    def _synced(self, future: Any) -> None:
        """The writer thread's fsync is done (or failed)."""
        if self._stopped:
            return  # stop() wrote the rest; the peers and the store are closed
        error = future.exception()
        if error is None:
            self._fsynced(future.result())
        self._written(error)

    def _fsynced(self, seconds: float) -> None:
        """An fsync took ``seconds`` (on the loop, wherever it ran)."""
        self.fsync.record(seconds)
        self.fsync_latency.observe(seconds)

    def _written(self, exc: BaseException | None) -> None:
        if exc is not None:
            self._storage_failed(exc)
            return
        self._carry(self.pipeline.written())

    def _release(self, ready: Ready, respond: Respond | None) -> None:
        if respond is not None:
            respond(ready.response)
        self._send(ready.messages)
        self._complete(ready.outcomes)

    def _send(self, messages: list[tuple[int, Message]]) -> None:
        # The node's messages to itself go last: a leader's own Accept costs it a write and
        # an fsync, which then overlap its peers' (Raft thesis §10.2.1) instead of delaying
        # the Accepts to them.  Its own vote counts only once that write is durable.
        own = self.node.id
        for to, msg in messages:
            if to != own:
                self.transport.send(to, msg)
        for to, msg in messages:
            if to == own:
                self.transport.send(to, msg)

    def _complete(self, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        now = time.monotonic()  # one clock read for the whole batch
        counts = self.outcome_counts
        for outcome in outcomes:
            waiter = self._waiters.pop(outcome.request, None)
            if waiter is not None:
                done, arrived = waiter
                kind = OUTCOME_NAMES[type(outcome)]
                counts[kind] += 1
                if kind == "committed":
                    self.proposal_latency.observe(now - arrived)
                done(outcome)

    def _storage_failed(self, exc: BaseException) -> None:
        # The core's memory is now ahead of the disk; answering from it could promise what a
        # restart would forget.  A node with a failed disk is a failed node: it stops serving
        # (a minority of failed nodes is what Paxos tolerates) until restarted.
        self.failed = f"storage failure: {exc}"
        self.storage_failures += 1
        log.error("node %d: %s; refusing requests until restarted", self.node.id, self.failed)
        error = StorageFailed(self.failed)
        for _, respond in self.pipeline.abort():
            if respond is not None:
                respond(error)
        waiters, self._waiters = self._waiters, {}
        self.outcome_counts["failed"] += len(waiters)
        for done, _ in waiters.values():
            done(error)
