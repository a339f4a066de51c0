"""Unit tests of the Ready release rules (``paxgos.core.release.Pipeline``), the one copy that
both the real host and the simulator run."""

from __future__ import annotations

from paxgos.core import Ballot, Committed, Persist, Ready
from paxgos.core.messages import Accepted, Learn
from paxgos.core.release import Pipeline

B = Ballot(1, 0)
LEARN = Learn(0, B, 1)


def promised() -> Persist:
    return Persist(promised=B)


def chosen() -> Persist:
    return Persist(chosen=[(1, 7)])


def test_outcomes_and_messages_without_a_persist_leave_at_once() -> None:
    pipe: Pipeline[str] = Pipeline()
    step = pipe.submit(Ready(messages=[(1, LEARN)], outcomes=[Committed(1, 1, 7)]))
    assert step.write is None
    assert [(r.messages, r.outcomes, t) for r, t in step.release] == [
        ([], [Committed(1, 1, 7)], None),
        ([(1, LEARN)], [], None),
    ]


def test_an_answer_waits_for_its_own_write_and_every_earlier_one() -> None:
    pipe: Pipeline[str] = Pipeline()
    reply = Accepted(1, B, 1, 1, True, B)
    first = pipe.submit(Ready(persist=promised(), response=reply), "a")
    assert first.release == [] and first.write == [Persist(promised=B)]
    # A request with no state change, answered while the write before it is under way: waits.
    second = pipe.submit(Ready(response=reply), "b")
    assert second.release == [] and second.write is None
    done = pipe.written()
    assert [t for _, t in done.release] == ["a"]
    assert done.write == []  # "b" waited for the write; its own write carries nothing
    assert [t for _, t in pipe.written().release] == ["b"]


def test_messages_wait_for_their_own_persist() -> None:
    pipe: Pipeline[str] = Pipeline()
    step = pipe.submit(Ready(persist=promised(), messages=[(1, LEARN)]))
    assert step.release == [] and step.write is not None
    assert [r.messages for r, _ in pipe.written().release] == [[(1, LEARN)]]


def test_chosen_alone_joins_the_next_write_or_the_second_tick() -> None:
    pipe: Pipeline[str] = Pipeline(defer_chosen=True)
    assert pipe.submit(Ready(persist=chosen())).write is None
    assert pipe.tick().write is None  # the first tick finds it waiting
    assert pipe.tick().write == [chosen()]  # the one after writes it
    pipe.written()
    assert pipe.submit(Ready(persist=chosen())).write is None
    joined = pipe.submit(Ready(persist=promised()), "x")  # the next write takes it along
    assert joined.write == [chosen(), promised()]


def test_without_deferral_every_persist_is_written_at_once() -> None:
    pipe: Pipeline[str] = Pipeline(defer_chosen=False)
    assert pipe.submit(Ready(persist=chosen())).write == [chosen()]


def test_one_write_at_a_time_and_group_commit() -> None:
    pipe: Pipeline[str] = Pipeline()
    assert pipe.submit(Ready(persist=promised()), "a").write is not None
    assert pipe.submit(Ready(persist=promised()), "b").write is None
    assert pipe.submit(Ready(persist=promised()), "c").write is None
    step = pipe.written()
    assert [t for _, t in step.release] == ["a"]
    assert step.write == [promised(), promised()]  # b and c share one write
    assert [t for _, t in pipe.written().release] == ["b", "c"]


def test_abort_returns_what_was_held_and_queued() -> None:
    pipe: Pipeline[str] = Pipeline()
    pipe.submit(Ready(persist=promised()), "a")
    pipe.submit(Ready(persist=promised()), "b")
    assert [t for _, t in pipe.abort()] == ["a", "b"]
    assert pipe.pending() == [] and not pipe.writing


def test_a_deferred_chosen_write_is_hurried_by_a_reader() -> None:
    pipe: Pipeline[str] = Pipeline(defer_chosen=True)
    assert pipe.hurry().write is None  # nothing queued: nothing to write
    assert pipe.submit(Ready(persist=chosen())).write is None
    assert pipe.hurry().write == [chosen()]  # a read waits for it: written at once
    assert pipe.submit(Ready(persist=chosen())).write is None  # queued behind the write
    assert pipe.hurry().write is None  # one write at a time ...
    assert pipe.written().write == [chosen()]  # ... and the next follows it at once
