"""Protocol bounds of the pure core (issue 11, item 4): what no message, forged or buggy, can make
a node do.

- W1: ballots fit in 63 bits: a round above ``MAX_ROUND`` is refused at decode and by ``step``,
  and no node ever picks a round above it (a node whose ballots are used up stops campaigning);
- W5: a request's ballot is its sender's own and the sender a member, so a node never promises,
  stores or follows a ballot of a node that is not in the cluster;
- W2: an Accept must lie within ``Config.horizon`` of the acceptor's commit index, a leader never
  sends one beyond its own, and a new leader never fills holes past ``MAX_HORIZON`` above its
  commit index, whatever a Promise or the disk says;
- R4: catch-up toward a commit index nobody can serve backs off exponentially (capped), and a
  claim the named source itself contradicts is dropped;
- W4: cheap Prepares from a non-leader cannot depose a leader with a live majority.

The tests drive nodes through ``test_core.Cluster``, the tiny in-memory host.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_core import Cluster, expire_lease, leaders, of_type, run_for

from paxgos.core import FOLLOWER, LEADER, ZERO, Ballot, Config, Node, Persist, StoredState
from paxgos.core.messages import (
    INT64_MAX,
    MAX_BATCH,
    Accept,
    Accepted,
    CatchupReply,
    CatchupRequest,
    Learn,
    LearnAck,
    Message,
    MessageError,
    Prepare,
    Promise,
    decode,
    encode,
    from_wire,
)

# --- W1: ballots fit in 63 bits ---------------------------------------------------------------

#: The report's body, with the ``probe`` field every Prepare carries now.
W1_BODY = (
    b'{"type":"prepare","sender":1,"ballot":[9223372036854775807,1],"from_slot":1,"probe":false}'
)


def test_the_bounds_are_as_documented() -> None:
    from paxgos.core.ballot import MAX_ROUND
    from paxgos.core.messages import MAX_HORIZON

    assert MAX_ROUND == 2**62 and MAX_ROUND + 1 <= INT64_MAX
    assert MAX_HORIZON == MAX_BATCH
    cfg = Config(0, 3)
    assert cfg.horizon == min(MAX_HORIZON, cfg.horizon_windows * cfg.window * cfg.max_batch)
    assert Config(0, 3, window=64, max_batch=1024).horizon == MAX_HORIZON


def test_w1_a_prepare_at_round_int64_max_is_a_message_error() -> None:
    with pytest.raises(MessageError, match="ballot"):
        decode(W1_BODY)


@pytest.mark.parametrize(
    "body",
    [
        {"type": "prepare", "sender": 1, "ballot": [2**62 + 1, 1], "from_slot": 1, "probe": False},
        {"type": "learn", "sender": 1, "ballot": [2**62 + 1, 1], "commit": 0},
        {"type": "accept", "sender": 1, "ballot": [2**62 + 1, 1], "first": 1, "values": [1],
         "commit": 0},
        {"type": "accepted", "sender": 1, "ballot": [1, 0], "first": 1, "count": 1, "ok": False,
         "promised": [2**62 + 1, 2], "commit": 0},
        {"type": "learn_ack", "sender": 1, "ballot": [1, 0], "commit": 0,
         "promised": [INT64_MAX, 2]},
        {"type": "promise", "sender": 1, "ballot": [1, 0], "ok": True, "promised": [1, 0],
         "commit": 0, "accepted": [[1, [2**62 + 1, 2], 5]], "probe": False},
    ],
)  # fmt: skip
def test_a_round_above_max_round_is_refused_in_every_ballot_field(body: dict[str, Any]) -> None:
    with pytest.raises(MessageError):
        from_wire(body)
    at_limit = json.loads(json.dumps(body).replace(str(2**62 + 1), str(2**62)))
    at_limit = json.loads(json.dumps(at_limit).replace(str(INT64_MAX), str(2**62)))
    assert decode(encode(from_wire(at_limit))) == from_wire(at_limit)  # the limit itself is fine


def test_w1_step_refuses_a_ballot_round_beyond_the_limit() -> None:
    """In-process hosts skip decode: ``step`` drops such a request itself, changing nothing."""
    c = Cluster(3)
    expire_lease(c.nodes[1])
    before = c.nodes[1].promised
    for msg in (
        Prepare(2, Ballot(INT64_MAX, 2), 1),
        Accept(2, Ballot(INT64_MAX, 2), 1, (5,), 0),
        Learn(2, Ballot(INT64_MAX, 2), 0),
    ):
        ready = c.nodes[1].step(msg)
        assert not ready.persist and ready.response is None
        assert c.nodes[1].promised == before and c.nodes[1].leader() in (0, None)


def all_ballots(c: Cluster) -> list[Ballot]:
    """Every ballot any node sent or persisted so far."""
    out: list[Ballot] = []
    for _, _, msg in c.sent:
        for name in ("ballot", "promised"):
            value = getattr(msg, name, None)
            if isinstance(value, Ballot):
                out.append(value)
    out += [store.promised for store in c.stores]
    return out


def test_w1_no_node_ever_picks_a_round_above_max_round() -> None:
    """The W1 attack in-process: a Prepare at the highest legal round reaches a follower with no
    live lease; the leader is outbid and must outbid it in turn, which it cannot: it stops
    campaigning instead of picking a round past the limit (before the fix: 2**62 + 1, and with
    the round of the report, 2**63, which SQLite cannot store)."""
    c = Cluster(3, {"election_timeout": 0.5})
    expire_lease(c.nodes[1], c.nodes[2])
    c.handle(1, c.nodes[1].step(Prepare(2, Ballot(2**62, 2), 1)), 2)
    c.handle(2, c.nodes[2].step(Prepare(2, Ballot(2**62, 2), 1)), 2)
    c.net.clear()
    c.propose(0, [5])
    c.flush(0)
    c.run()
    assert c.nodes[0].role == FOLLOWER  # outbid
    run_for(c, 3.0)
    rounds = [b.round for b in all_ballots(c)]
    assert max(rounds) <= 2**62, max(rounds)
    assert all(n.ballot == ZERO for n in c.nodes)  # nobody could campaign above it


def test_w1_a_stored_promise_beyond_the_limit_never_makes_a_bigger_ballot() -> None:
    """Data written before the bound (the W1 report's promise of round 2**63 - 1): the node
    never campaigns with round 2**63, which no disk or peer can take."""
    for promised in (Ballot(INT64_MAX, 1), Ballot(2**62, 1)):
        node = Node(Config(0, 3), StoredState(promised=promised))
        for ready in (node.campaign(prevote=False), node.campaign(), node.tick(5.0)):
            sent = [m.ballot for _, m in ready.messages if isinstance(m, Prepare)]
            assert all(b.round <= max(promised.round, 2**62) for b in sent), sent
            assert ready.persist.promised is None
        assert node.role == FOLLOWER


def test_a_leader_whose_ballot_is_at_the_limit_keeps_leading() -> None:
    c = Cluster(3, campaign=False)
    c.handle(0, c.nodes[0].step(Prepare(1, Ballot(2**62 - 1, 1), 1)), 1)
    c.handle(0, c.nodes[0].campaign(prevote=False))
    c.run()
    assert c.nodes[0].role == LEADER and c.nodes[0].ballot == Ballot(2**62, 0)
    c.sent.clear()
    c.handle(0, c.nodes[0].campaign(prevote=False))  # no round above it: nothing happens
    assert c.nodes[0].role == LEADER and not of_type(c.sent, Prepare)
    c.propose(0, [4])
    c.flush(0)
    c.run()
    assert [(o.slot, o.value) for o in c.committed()] == [(1, 4)]


# --- W5: a ballot's node is a member ------------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        Learn(1, Ballot(5, 99), 0),
        Learn(99, Ballot(5, 99), 0),
        Accept(1, Ballot(5, 99), 1, (7,), 0),
        Accept(99, Ballot(5, 99), 1, (7,), 0),
        Prepare(1, Ballot(5, 99), 1),
        Prepare(99, Ballot(5, 99), 1),
        Learn(1, ZERO, 0),
        Prepare(1, ZERO, 1),
    ],
    ids=repr,
)
def test_w5_a_ballot_of_a_non_member_is_never_adopted(msg: Message) -> None:
    c = Cluster(3)
    node = c.nodes[2]
    expire_lease(node)  # no lease to hide behind: only the membership check refuses it
    before = (node.promised, dict(node.acceptor.accepted), node.leader_ballot)
    ready = node.step(msg)
    assert not ready.persist and ready.response is None and not ready.messages
    assert (node.promised, dict(node.acceptor.accepted), node.leader_ballot) == before
    assert node.leader() in (0, None)
    status = node.status()
    assert status["leader"] in (0, None)
    assert status["leader_ballot"] in (None, list(c.nodes[0].ballot))


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"learn","sender":1,"ballot":[5,99],"commit":0}',
        b'{"type":"prepare","sender":1,"ballot":[5,2],"from_slot":1,"probe":false}',
        b'{"type":"accept","sender":0,"ballot":[5,1],"first":1,"values":[1],"commit":0}',
        b'{"type":"learn","sender":0,"ballot":[0,-1],"commit":0}',
        b'{"type":"prepare","sender":0,"ballot":[0,-1],"from_slot":1,"probe":false}',
    ],
)
def test_w5_a_request_must_carry_its_senders_own_ballot(body: bytes) -> None:
    """A proposer only ever sends its own ballot: anything else is malformed (400 on the net)."""
    with pytest.raises(MessageError, match="sender"):
        decode(body)


def test_leader_is_never_a_non_member_whatever_was_stored() -> None:
    node = Node(Config(1, 3))
    node.leader_ballot, node.leader_seen_at = Ballot(5, 99), 0.0  # as a pre-bound disk might
    assert node.leader() is None and node.status()["leader"] is None


# --- W2: Accepts lie within the horizon --------------------------------------------------------


def test_w2_an_accept_far_beyond_the_commit_index_is_refused() -> None:
    """The W2 report: an Accept at slot 10**12 sent to the followers.  Before the fix both
    accepted it (and the next leader built a list of every slot up to it)."""
    c = Cluster(3)
    ballot = c.nodes[0].ballot
    far = Accept(0, ballot, 10**12, (666,), 0)
    for i in (1, 2):
        accepted = dict(c.nodes[i].acceptor.accepted)
        ready = c.nodes[i].step(far)
        assert isinstance(ready.response, Accepted) and not ready.response.ok
        assert ready.response.promised <= ballot  # not outbid: the leader ignores it
        assert not ready.persist
        assert c.nodes[i].acceptor.accepted == accepted
    # A new election re-proposes nothing out there and fills no holes.
    expire_lease(c.nodes[1], c.nodes[2])
    c.handle(1, c.nodes[1].campaign(prevote=False))
    c.run()
    assert c.nodes[1].role == LEADER
    assert all(m.first < 10 for _, _, m in of_type(c.sent, Accept))
    c.check()


def test_w2_a_far_entry_in_a_promise_makes_no_huge_fill() -> None:
    """A Promise reporting an accepted entry far away (old data on disk, or a forged answer):
    the new leader never allocates a slot per hole up to it."""
    c = Cluster(3, campaign=False)
    node = c.nodes[0]
    c.handle(0, node.step(Prepare(2, Ballot(3, 2), 1)), 2)  # so that (3, 2) came before ours
    c.handle(0, node.campaign(prevote=False))
    ballot = node.ballot
    c.net.clear()
    far = Promise(1, ballot, True, ballot, 0, ((2, Ballot(3, 2), 7), (10**12, Ballot(3, 2), 666)))
    c.handle(0, node.step(Promise(0, ballot, True, ballot, 0)))
    c.handle(0, node.step(far))
    assert node.role == LEADER
    slots = [m.first + len(m.values) - 1 for _, _, m in of_type(c.sent, Accept)]
    assert slots and max(slots) <= MAX_BATCH  # MAX_HORIZON, the farthest any acceptor reaches
    c.run()
    assert c.log(0)[:2] == [None, 7]  # what may have been chosen nearby is still re-proposed


def test_w2_far_entries_on_disk_are_neither_reported_nor_refilled() -> None:
    """The W2 report's aftermath: the far entry stays on the followers' disks.  Restarted from
    them, no Promise reports it and no election fills holes up to it."""
    c = Cluster(3, campaign=False)
    old = [(1, Ballot(1, 0), 5), (10**12, Ballot(1, 0), 666)]
    for i in (1, 2):
        c.stores[i].apply([Persist(promised=Ballot(1, 0), accepted=old)])
        for slot, ballot, value in old:
            c.tracker.accepted(i, slot, ballot, value)
        c.promised_hi[i] = Ballot(1, 0)
        c.nodes[i] = Node(c.configs[i], c.stores[i].load())
    c.handle(1, c.nodes[1].campaign(prevote=False))
    c.run()
    assert c.nodes[1].role == LEADER
    promises = of_type(c.sent, Promise)
    assert promises and all(s < 10**12 for _, _, p in promises for s, _, _ in p.accepted)
    assert max(m.first for _, _, m in of_type(c.sent, Accept)) < 10
    assert c.log(1) == [5]
    c.check()


def test_a_leader_never_sends_beyond_its_own_horizon() -> None:
    """Slot 1's Accepts to the followers are lost again and again while later rounds are chosen:
    the leader stalls at its horizon instead of running ahead (and the followers would have
    accepted ever farther slots)."""
    c = Cluster(3, {"window": 4, "max_batch": 1, "horizon_windows": 4})
    horizon = c.configs[0].horizon
    assert horizon == 16
    lose_slot_1 = lambda e: not (isinstance(e[2], Accept) and e[2].first == 1 and e[1] != 0)  # noqa: E731
    for request in range(1, 101):
        c.propose(0, [request], request)
        c.flush(0)
        c.run(keep=lose_slot_1)
    last = max(m.first + len(m.values) - 1 for _, _, m in of_type(c.sent, Accept))
    assert last <= horizon, last
    run_for(c, 2.0)  # slot 1's Accepts get through at last: everything commits
    assert len(c.committed()) == 100
    c.check()


def test_a_follower_far_behind_refuses_accepts_catches_up_and_then_accepts() -> None:
    """Legitimate lag: node 2 was away while 100 slots were chosen; with node 1 gone it is the
    majority the leader needs.  It refuses the far Accepts (without raising its promise), learns
    the commit index from them, catches up, then accepts: the cluster commits again."""
    c = Cluster(3, {"window": 1, "max_batch": 1, "horizon_windows": 4, "election_timeout": 1.0})
    assert c.configs[0].horizon == 4
    c.down = {2}
    for request in range(1, 101):
        c.propose(0, [request], request)
        c.flush(0)
        c.run()
    assert len(c.committed()) == 100
    c.down = {1}
    c.sent.clear()
    c.propose(0, [1000], 1000)
    c.flush(0)
    c.run()
    refusals = [m for _, _, m in of_type(c.sent, Accepted) if m.sender == 2]
    assert refusals and not refusals[0].ok and refusals[0].promised <= c.nodes[0].ballot
    run_for(c, 3.0)
    assert c.nodes[0].role == LEADER and c.nodes[2].leader() == 0
    assert c.log(2)[:100] == list(range(1, 101))
    assert [(o.slot, o.value) for o in c.committed()][-1] == (101, 1000)
    c.check()


def test_the_next_round_is_taken_whatever_the_horizon() -> None:
    """Nodes configured differently: a follower whose horizon is smaller than the leader's
    batch still takes the batch that starts right after its commit index (it would otherwise
    never take the round the log waits for), but not one that starts farther away."""
    follower = Node(Config(1, 3, window=1, max_batch=1, horizon_windows=1))
    assert follower.config.horizon == 1
    ballot = Ballot(1, 0)
    batch = tuple(range(50))
    assert follower.step(Accept(0, ballot, 1, batch, 0)).response.ok  # type: ignore[union-attr]
    assert not follower.step(Accept(0, ballot, 52, batch, 0)).response.ok  # type: ignore[union-attr]
    assert not follower.step(Accept(0, ballot, 2, (1,), 0)).response.ok  # type: ignore[union-attr]
    follower.step(Learn(0, ballot, 50))
    assert follower.commit == 50
    assert follower.step(Accept(0, ballot, 51, batch, 50)).response.ok  # type: ignore[union-attr]


# --- R4: catch-up backs off ------------------------------------------------------------------


def catchups(c: Cluster, frm: int) -> list[CatchupRequest]:
    return [m for f, _, m in of_type(c.sent, CatchupRequest) if f == frm]


def test_r4_a_learn_of_an_absurd_commit_index_makes_no_polling() -> None:
    """The R4 report: a Learn with commit 2**63 - 1 made a node ask for catch-up ~50 times a
    second, forever.  The source it names answers that it has nothing more: the claim is
    dropped and the polling stops."""
    c = Cluster(3)
    c.handle(2, c.nodes[2].step(Learn(0, c.nodes[0].ballot, INT64_MAX)), 0)
    c.run()
    c.sent.clear()
    run_for(c, 10.0)
    assert len(catchups(c, 2)) <= 2, len(catchups(c, 2))
    assert c.nodes[2].known_commit == c.nodes[2].commit
    # It still follows and learns normally.
    c.propose(0, [9])
    c.flush(0)
    c.run()
    run_for(c, 0.2)
    assert c.log(2) == [9]


def test_r4_catch_up_from_a_silent_source_backs_off_exponentially() -> None:
    """The source named is down: requests go out ever more rarely (before: one a second
    forever), up to the cap, and nothing else about following changes."""
    c = Cluster(3, {"election_timeout": 0.5})
    c.down = {1}
    # An old ballot's Learn: it renews no lease, only claims a commit index node 1 must serve.
    c.handle(2, c.nodes[2].step(Learn(1, Ballot(0, 1), INT64_MAX)), 1)
    c.run()
    c.sent.clear()
    start = c.now
    times: list[float] = []
    for _ in range(1200):  # 60 s
        c.tick(0.05)
        times += [c.now - start] * len(catchups(c, 2))
        c.sent.clear()
        c.run()
    assert 5 <= len(times) <= 20, times  # before the fix: 60, one a second
    cap = c.configs[2].catchup_backoff_max
    assert len(times) <= 60 / cap + 6, times
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(b >= a - 0.051 for a, b in zip(gaps, gaps[1:], strict=False)), gaps  # growing
    assert max(gaps) <= cap + 0.051 and gaps[-1] >= cap - 0.051, gaps  # and capped
    assert leaders(c) == [0] and c.nodes[2].leader() == 0


def test_r4_genuine_lag_is_still_caught_up_after_an_absurd_claim() -> None:
    """Back-off must not cost a follower its real catch-up: after the claim above went
    unanswered long enough for the back-off to reach its cap, the follower misses three
    chosen slots; it still fetches them from the leader within the cap."""
    c = Cluster(3, {"election_timeout": 0.5})
    c.down = {1}
    c.handle(2, c.nodes[2].step(Learn(1, Ballot(0, 1), INT64_MAX)), 1)
    c.run()
    run_for(c, 20.0)
    c.down = {2}  # node 1 is back, node 2 away: slots 1-3 are chosen without it
    c.propose(0, [1, 2, 3])
    c.flush(0)
    c.run()
    assert len(c.committed()) == 3
    c.down = set()
    cap = c.configs[2].catchup_backoff_max
    run_for(c, cap + 1.5)
    assert c.log(2) == [1, 2, 3] and c.nodes[2].known_commit == 3
    c.check()


def test_a_catch_up_reply_carries_no_far_or_unchosen_entries_into_the_log() -> None:
    """Entries beyond the replier's own commit index, or farther than a reply can reach, are
    not taken (a huge chosen-ahead map would otherwise make the next election fill to it)."""
    node = Node(Config(1, 3))
    node.learner.note_commit(3, 0, 0.0)
    ready = node.step(CatchupReply(0, ((1, 10), (2, 20), (10**12, 6), (4, 40)), 3))
    assert ready.persist.chosen == [(1, 10), (2, 20)]
    assert node.learner.chosen_ahead == {}


# --- W4: cheap Prepares do not flap a leader -------------------------------------------------


def test_w4_twenty_prepares_a_second_cannot_depose_a_leader_with_a_live_majority() -> None:
    """The W4 report: twenty Prepares a second, each one round above every promise, from a
    non-leader.  The followers hear from the leader within the election timeout and refuse
    them (leader stickiness); the leader keeps its post and every proposal commits."""
    c = Cluster(3, {"election_timeout": 0.5})
    ballot = c.nodes[0].ballot
    proposed = 0
    for step in range(5 * 20):  # 5 s
        sender = 1 + step % 2  # node 1, then node 2: neither leads
        top = max(n.promised for n in c.nodes)
        bid = Prepare(sender, Ballot(top.round + 1, sender), 1, probe=step % 4 == 3)
        for to in range(3):
            if to != sender:  # a node takes no message naming itself from outside
                c.handle(to, c.nodes[to].step(bid), sender)
        proposed += 1
        c.propose(0, [proposed], proposed)
        c.flush(0)
        c.run()
        c.tick(0.05)
        c.run()
        assert leaders(c) == [0] and c.nodes[0].ballot == ballot, step
    assert all(n.promised == ballot for n in c.nodes)
    assert len(c.committed()) == proposed
    assert all(n.leader() == 0 for n in c.nodes)
    acks = [m for _, _, m in c.sent if isinstance(m, LearnAck)]
    assert all(a.promised == ballot for a in acks)
    c.check()
