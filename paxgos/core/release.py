"""The Ready release rules of ``paxgos.core.ready``, as code: when a host writes, and what each
finished write lets go.

``Pipeline`` is pure bookkeeping: it never writes or sends anything itself.  A host feeds it
every ``Ready`` (``submit``), every timer tick (``tick``) and the end of every write
(``written``); each call returns a ``Step``: the outputs that may leave now (``release``, in
order) and, if a write must start, the ``Persist`` records it holds (``write``).  The host
carries out the releases, then starts the write, and calls ``written()`` once it is durable.
The real host (``paxgos.net.host``) and the simulator both drive this one class, so the
simulator checks the policy the nodes run.

A release is ``(ready, token)``: the host sends ``ready.messages``, completes
``ready.outcomes``, and, when ``token`` is not None, answers the request ``token`` stands for
with ``ready.response`` (an answer is owed even when the response is None: an HTTP request
gets an empty 204).  Tokens are the host's own (a callback, a peer id); the pipeline only keeps
them in order.

The rules, numbered as in ``paxgos.core.ready``:

1. an answer leaves once its Ready's write and every earlier write is durable;
2. messages leave once their own Ready's write is durable (at once when it has none);
3. outcomes leave at once;
4. a write of chosen entries alone that nothing waits for (no answer owed, no messages) starts
   no write of its own: it joins the next write, or the tick after the one that first finds it
   waiting writes it (``defer_chosen``; off, every Ready with a persist is written at once).

Only one write is under way at a time; Readys submitted meanwhile join the next one (group
commit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from paxgos.core.ready import Persist, Ready

T = TypeVar("T")


@dataclass
class Step(Generic[T]):
    """What the host does now: release these, in order, then start ``write`` (if not None)."""

    release: list[tuple[Ready, T | None]] = field(default_factory=list)
    write: list[Persist] | None = None


class Pipeline(Generic[T]):
    """The release bookkeeping of one node; see the module docstring."""

    def __init__(self, defer_chosen: bool = True):
        self.defer_chosen = defer_chosen
        self.queue: list[tuple[Ready, T | None]] = []  # waiting for the next write
        self.in_flight: list[tuple[Ready, T | None]] = []  # held by the write under way
        self.writing = False
        self.waited_on = False  # something queued has an output waiting for a write
        self.aged = False  # a tick found the queue waiting

    def submit(self, ready: Ready, token: T | None = None) -> Step[T]:
        """A new Ready; ``token`` stands for the request it answers (None: no answer owed)."""
        step: Step[T] = Step()
        if ready.outcomes:  # rule 3
            step.release.append((Ready(outcomes=ready.outcomes), None))
            ready.outcomes = []
        if not ready.persist:
            if ready.messages:  # rule 2: nothing of its own to wait for
                step.release.append((Ready(messages=ready.messages), None))
                ready.messages = []
            if token is None:
                return step
            if not self.queue and not self.writing:  # rule 1: no earlier write pending
                step.release.append((ready, token))
                return step
        self.queue.append((ready, token))
        if token is not None or ready.messages or not ready.persist.chosen_only:
            self.waited_on = True
        elif not self.defer_chosen:
            self.waited_on = True
        if self.waited_on and not self.writing:
            step.write = self._start()
        return step

    def written(self) -> Step[T]:
        """The write under way is durable: release what it held, start the next if needed."""
        step: Step[T] = Step(release=self.in_flight)
        self.in_flight = []
        self.writing = False
        if self.waited_on:
            step.write = self._start()
        return step

    def tick(self) -> Step[T]:
        """A timer tick: a queue nothing waits for is written by the tick after the one that
        first finds it (rule 4)."""
        step: Step[T] = Step()
        if self.queue:
            if self.aged and not self.writing:
                step.write = self._start()
            else:
                self.aged = True
        return step

    def hurry(self) -> Step[T]:
        """Something now waits for what is queued (a read of the log): write it at once, or
        as soon as the write under way is durable."""
        step: Step[T] = Step()
        if self.queue:
            self.waited_on = True
            if not self.writing:
                step.write = self._start()
        return step

    def pending(self) -> list[Persist]:
        """What is queued and not yet written (a clean stop writes it)."""
        return [ready.persist for ready, _ in self.queue if ready.persist]

    def abort(self) -> list[tuple[Ready, T | None]]:
        """A write failed: every Ready it held and every queued one, which will never be
        released (the host fails their requests); the pipeline is left empty."""
        failed = self.in_flight + self.queue
        self.in_flight, self.queue = [], []
        self.writing = self.waited_on = self.aged = False
        return failed

    def _start(self) -> list[Persist]:
        self.in_flight, self.queue = self.queue, []
        self.waited_on = self.aged = False
        self.writing = True
        return [ready.persist for ready, _ in self.in_flight if ready.persist]
