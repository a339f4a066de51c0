"""Partitions on real processes, each node on a "host" of its own (a Linux network namespace).

``paxgos.testing.netns`` gives every node a namespace, joins them by a bridge and cuts them apart by
silently dropping packets between two sides (nftables on the bridge); the test process reaches
every node through one more veth on that bridge, so its clients are in no partition and can ask
both sides.  Clients home on every node propose distinct values, follow 307s to the leader,
wait out a 503's Retry-After and try the next node; the history checker's recorder writes down
every answer (one op per answer), and the checker compares that history with every node's log.

The scenarios cut the leader off alone, then a minority of two that holds it, and heal.  They
assert what elections must give: a new leader on the majority side that commits during the cut;
no 200 from a minority node for a request sent once the old leader had an election timeout
(plus slack) to notice it lost its majority; one leader, agreed by all, after the heal; every log
equal once converged; nothing lost, moved, duplicated or forked.  The harness tests check the
namespaces themselves (reachability, a cut is silent and really isolates, a heal restores,
nothing is left behind) and a cut of a follower, which the fixed-leader protocol already
survives.  A failing scenario leaves ``ops.jsonl`` and ``logs.json`` in its tmp_path, for
``python -m paxgos.check --ops ops.jsonl --logs logs.json --complete``.

The module is skipped, with the reason, where namespaces cannot be made (not root, no ``ip`` or
``nft``: Debian packages iproute2 and nftables, namespaces not permitted).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from paxgos.check import History, check, dump_logs, dump_ops, fetch_logs
from paxgos.check.model import FAIL, OK, UNKNOWN, Op
from paxgos.core import Config
from paxgos.testing import netns
from paxgos.testing.client import ask, propose, retry_after
from paxgos.testing.netns import Netns, NetnsError, nodes_in
from paxgos.testing.procs import LocalNodes

pytestmark = pytest.mark.netns

# A leader that cannot reach a majority for an election timeout steps down; a dead or cut-off
# leader is replaced within about a second.  The nodes run at the default election timeout.
ELECTION_TIMEOUT = Config.election_timeout
SLACK = 0.5  # on top of it, before a minority node's 200 counts as a violation
NEW_LEADER_WITHIN = 2 * ELECTION_TIMEOUT + 3.0  # for a commit on the majority side, after a cut
PORT = 9000  # every node on its own address: one port for all
NODE_ARGS = ["--request-timeout", "2s", "--peer-timeout", "1s", "--exit-with-parent"]


@pytest.fixture(scope="module", autouse=True)
def namespaces_available() -> None:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"cannot make network namespaces here: {reason}")


# --- clients that follow the leader -------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One answer a client got: from which node, the op recorded for it, the answer's text."""

    node: int
    op: Op
    answer: str

    @property
    def code(self) -> str:
        first = self.answer.split(" ", 1)[0]
        return first if first.isdigit() else "error"


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


class Clients:
    """``per_node`` clients homed on each node, until ``stop()`` or ``max_values`` each.

    A client proposes each new value to its home node; a 307 is followed to the node it names,
    a 503 (nothing proposed) is retried after its Retry-After (at most ``retry_cap``) on the next
    node, a refused connection on the next node at once; after ``max_hops`` answers, or an
    ``ok``/``unknown`` one, it goes on with a new value.  Every answer is one op in ``history``
    and one :class:`Attempt` (which says which node gave it).
    """

    def __init__(
        self,
        urls: Sequence[str],
        history: History,
        per_node: int = 2,
        max_values: int = 5000,
        timeout: float = 3.0,
        max_hops: int = 6,
        retry_cap: float = 1.0,
        base: int = 7_000_000_000,
    ):
        self.urls = list(urls)
        self.history = history
        self.max_values = max_values
        self.timeout = timeout
        self.max_hops = max_hops
        self.retry_cap = retry_cap
        self.base = base
        self._where = {urlsplit(url).netloc: i for i, url in enumerate(self.urls)}
        self._lock = threading.Lock()
        self._attempts: list[Attempt] = []
        self._stop = threading.Event()
        count = per_node * len(self.urls)
        self._threads = [
            threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(count)
        ]

    def start(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> list[Op]:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return self.history.ops

    @property
    def attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts)

    def acked(self, nodes: Iterable[int] | None = None, sent_after: float = 0.0) -> list[Attempt]:
        """The 200s from ``nodes`` (default: any) for requests sent after ``sent_after``."""
        wanted = set(range(len(self.urls)) if nodes is None else nodes)
        return [
            a
            for a in self.attempts
            if a.op.outcome == OK and a.node in wanted and a.op.start > sent_after
        ]

    def _send(self, node: int, value: int) -> tuple[str, int | None, str, float, int | None]:
        """Outcome, slot, answer, how long to wait before a retry, and a redirect's node."""
        outcome, slot, answer, headers = ask(
            f"{self.urls[node]}/propose/{value}", value, self.timeout
        )
        target = None
        if answer.startswith("307 "):
            target = self._where.get(urlsplit(_header(headers, "Location") or "").netloc)
        retry = retry_after(_header(headers, "Retry-After"), self.retry_cap)
        return outcome, slot, answer, retry, target

    def _run(self, k: int) -> None:
        home = k % len(self.urls)
        for n in range(self.max_values):
            if self._stop.is_set():
                return
            value = self.base + k * 1_000_000 + n
            node = home
            outcome = FAIL
            for _ in range(self.max_hops):
                start = time.time()
                outcome, slot, answer, retry, target = self._send(node, value)
                op = self.history.record(f"c{k}", value, start, time.time(), outcome, slot)
                with self._lock:
                    self._attempts.append(Attempt(node, op, answer))
                if outcome != FAIL:
                    break  # ok, or unknown: on to a new value
                if target is not None:
                    node = target
                    continue
                if self._stop.wait(retry):  # 503 (no leader), refused: as told, then elsewhere
                    return
                node = (node + 1) % len(self.urls)
            if outcome == UNKNOWN and self._stop.wait(0.05):
                return


# --- helpers ------------------------------------------------------------------------------------


def wait_until(condition: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    """``condition()``'s first true value within ``timeout`` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


def statuses(nodes: LocalNodes, ids: Iterable[int]) -> dict[int, dict[str, Any] | None]:
    out: dict[int, dict[str, Any] | None] = {}
    for i in ids:
        try:
            out[i] = nodes.status(i, timeout=1.0)
        except (OSError, ValueError):
            out[i] = None
    return out


def roles(seen: dict[int, dict[str, Any] | None]) -> str:
    return ", ".join(
        f"{i}: " + ("down" if s is None else f"{s.get('role')} (leader {s.get('leader')})")
        for i, s in seen.items()
    )


def one_leader(nodes: LocalNodes, agree: Iterable[int], count: int) -> tuple[int | None, str]:
    """The single node of the ``count`` with role leader, if exactly one has it and every node
    of ``agree`` names it as leader; and the roles seen."""
    seen = statuses(nodes, range(count))
    leaders = [i for i, s in seen.items() if s is not None and s.get("role") == "leader"]
    if len(leaders) == 1 and all(
        seen[i] is not None and seen[i].get("leader") == leaders[0]  # type: ignore[union-attr]
        for i in agree
    ):
        return leaders[0], roles(seen)
    return None, roles(seen)


def wait_one_leader(
    nodes: LocalNodes, agree: Iterable[int], timeout: float
) -> tuple[int | None, str]:
    agree = list(agree)
    last: list[tuple[int | None, str]] = []

    def found() -> bool:
        last[:] = [one_leader(nodes, agree, nodes.count)]
        return last[0][0] is not None

    wait_until(found, timeout, step=0.1)
    return last[0]


def answers_by_phase(clients: Clients, marks: Sequence[tuple[str, float]]) -> str:
    """Per phase (between the named times), per node, how often each answer code came."""
    lines = []
    bounds = [*marks, ("end", float("inf"))]
    attempts = clients.attempts
    for (name, t0), (_, t1) in zip(bounds, bounds[1:], strict=False):
        per_node: dict[int, Counter[str]] = {}
        for a in attempts:
            if t0 <= a.op.start < t1:
                per_node.setdefault(a.node, Counter())[a.code] += 1
        shown = "; ".join(f"node {i}: {dict(c)}" for i, c in sorted(per_node.items()))
        lines.append(f"  {name}: {shown or 'no requests'}")
    return "\n".join(lines)


# --- the harness itself -------------------------------------------------------------------------


def test_cut_is_silent_between_sides_and_open_within(tmp_path: Path) -> None:
    # No nodes: a connection to a closed port is refused (a RST came back) when packets pass,
    # and times out when they are dropped.
    with Netns(5) as net:
        assert {*net.names, net.hub} <= set(netns.netns_names())
        assert net.root_link in netns.link_names()
        assert "eth0" in netns.link_names(net.names[0])
        everyone = list(range(5))
        assert set(net.probe(None, everyone).values()) == {"refused"}
        for i, got in net.probe_all([*everyone, net.client_addr]).items():
            assert set(got.values()) == {"refused"}, (i, got)

        net.cut([0, 1], [2, 3, 4])
        for i, got in net.probe_all([*everyone, net.client_addr]).items():
            mine = [0, 1] if i < 2 else [2, 3, 4]
            want = {j: "refused" if j in mine else "timeout" for j in everyone}
            assert got == {**want, net.client_addr: "refused"}, (i, got)
        assert set(net.probe(None, everyone).values()) == {"refused"}  # the client: both sides

        net.heal()
        for i, got in net.probe_all(everyone).items():
            assert set(got.values()) == {"refused"}, (i, got)
    assert net.leftovers() == []


def test_namespaces_are_removed_when_building_fails() -> None:
    class Broken(Netns):
        calls = 0

        def _add_netns(self, name: str) -> None:
            super()._add_netns(name)
            Broken.calls += 1
            if Broken.calls == 3:
                raise NetnsError("made to fail")

    net = Broken(4)
    with pytest.raises(NetnsError, match="made to fail"):
        net.up()
    assert net.leftovers() == []
    with pytest.raises(RuntimeError), Netns(2) as net:
        raise RuntimeError("a failing test")
    assert net.leftovers() == []


def test_harness_cut_and_heal(tmp_path: Path) -> None:
    # Today's protocol already survives this: a cut-off follower, then catch-up after the heal.
    history = History()

    def commit(leader: int, value: int) -> int:
        start = time.time()
        outcome, slot, answer = propose(nodes.urls[leader], value)
        history.record("c", value, start, time.time(), outcome, slot)
        assert outcome == OK and slot is not None, answer
        return slot

    with Netns(3) as net, nodes_in(net, tmp_path, NODE_ARGS, port=PORT) as nodes:
        nodes.start()
        pids = []
        for i in range(3):
            proc = nodes.procs[i]
            assert proc is not None
            pids.append(proc.pid)
            # `ip netns exec` became the node: the PID kept runs python -m paxgos, in its own
            # namespace (and no other node's).
            argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
            assert argv[1:4] == [b"-m", b"paxgos", b"node"], argv
            assert net.holds(i, proc.pid) and not net.holds((i + 1) % 3, proc.pid)
            assert nodes.status(i)["id"] == i
            assert nodes.urls[i] == f"http://{net.addrs[i]}:{PORT}"
        for i in range(3):  # the nodes reach each other across the bridge
            assert set(net.probe(i, range(3), port=PORT).values()) == {"open"}, i

        leader, seen = wait_one_leader(nodes, range(3), 10)
        assert leader is not None, seen
        follower = max(set(range(3)) - {leader})
        other = (set(range(3)) - {leader, follower}).pop()
        before = [commit(leader, v) for v in range(1, 6)]

        net.cut([follower], [leader, other])
        assert net.probe(follower, [leader, other], port=PORT) == {
            leader: "timeout",
            other: "timeout",
        }
        assert net.probe(leader, [other], port=PORT) == {other: "open"}
        assert net.probe(other, [leader], port=PORT) == {leader: "open"}
        assert set(net.probe(None, range(3), port=PORT).values()) == {"open"}
        during = [commit(leader, v) for v in range(6, 11)]  # the majority still commits
        assert nodes.status(follower)["commit_index"] < max(during)  # the cut node did not learn

        net.heal()
        assert set(net.probe(follower, range(3), port=PORT).values()) == {"open"}
        nodes.wait_converged(timeout=15, at_least=max(during))
        logs = fetch_logs(nodes.urls)
        assert logs[follower] == logs[leader] == logs[other]
        table = dict(logs[leader])
        assert [table[s] for s in before + during] == list(range(1, 11))
        result = check(history.ops, logs, require_complete=True)
        assert result.ok, result.summary()
    for pid in pids:  # stopped and reaped, by PID
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert net.leftovers() == []


# --- partitions under load ----------------------------------------------------------------------


def run_partition(tmp_path: Path, minority_size: int) -> None:
    """Cut the leader and ``minority_size - 1`` others off a 5-node cluster under load, heal,
    and check everything the module docstring lists; every problem found is reported."""
    problems: list[str] = []
    marks: list[tuple[str, float]] = []
    with Netns(5) as net, nodes_in(net, tmp_path, NODE_ARGS, port=PORT) as nodes:
        nodes.start()
        leader, seen = wait_one_leader(nodes, range(5), 10)
        assert leader is not None, f"no single leader before the cut: {seen}"
        minority = [leader, *[i for i in range(5) if i != leader][: minority_size - 1]]
        majority = [i for i in range(5) if i not in minority]
        clients = Clients(nodes.urls, History()).start()
        t_cut = t_heal = bound = float("inf")
        try:
            marks.append(("before the cut", time.time()))
            assert wait_until(lambda: len(clients.acked()) >= 30, 15), "no commits before the cut"

            net.cut(minority, majority)
            t_cut = time.time()
            bound = t_cut + ELECTION_TIMEOUT + SLACK
            marks += [("cut, within the bound", t_cut), ("cut, past the bound", bound)]
            if not wait_until(lambda: clients.acked(majority, t_cut), NEW_LEADER_WITHIN):
                problems.append(
                    f"no node of the majority {majority} acknowledged a request sent after the "
                    f"cut of {minority} within {NEW_LEADER_WITHIN:g}s: no new leader committed"
                )
            time.sleep(max(0.0, bound + 2.0 - time.time()))  # ask the minority past the bound
            during, seen = wait_one_leader(nodes, majority, 3)
            if during is None or during not in majority:
                problems.append(
                    f"during the cut, not exactly one leader on the majority side {majority}, "
                    f"agreed by it: {seen}"
                )
            net.heal()
            t_heal = time.time()
            marks.append(("after the heal", t_heal))
            if not wait_until(lambda: len(clients.acked(sent_after=t_heal)) >= 20, 10):
                problems.append("fewer than 20 commits within 10s of the heal")
        finally:
            net.heal()
            ops = clients.stop()
        dump_ops(ops, tmp_path / "ops.jsonl")

        final, seen = wait_one_leader(nodes, range(5), 10)
        if final is None:
            problems.append(f"after the heal, not exactly one leader agreed by all: {seen}")
        top = max((op.slot or 0 for op in ops), default=0)
        try:
            nodes.wait_converged(timeout=20, at_least=top)
        except TimeoutError as exc:
            problems.append(str(exc))
        logs = fetch_logs(nodes.urls)
        dump_logs(logs, tmp_path / "logs.json")
        unequal = [i for i in range(5) if logs[i] != logs[0]]
        if unequal:
            problems.append(f"logs of nodes {unequal} differ from node 0's")
        result = check(ops, logs, require_complete=True)
        if not result.ok:
            problems.append(result.summary())

        # The cut-off side acknowledged nothing once its leader had had time to step down: not
        # during the cut (it has no majority), nor after the heal (it should have answered 503
        # at once, not held the request).
        late = [a for a in clients.acked(minority, bound) if a.op.start < t_heal]
        for when, group in (
            ("during the cut", [a for a in late if a.op.end < t_heal]),
            ("after the heal: held, not refused", [a for a in late if a.op.end >= t_heal]),
        ):
            if group:
                problems.append(
                    f"{len(group)} requests sent to the minority {minority} more than "
                    f"{ELECTION_TIMEOUT + SLACK:g}s after the cut got a 200 {when}, e.g. node "
                    f"{group[0].node}: {group[0].op.describe()}"
                )
        asked = [a for a in clients.attempts if a.node in minority and bound < a.op.start < t_heal]
        if not asked:
            problems.append("no request reached the minority past the bound: nothing was checked")

    assert net.leftovers() == []
    assert not problems, (
        f"cut {minority} from {majority} (leader {leader}):\n- "
        + "\n- ".join(problems)
        + f"\nanswers by phase:\n{answers_by_phase(clients, marks)}"
        + f"\nhistory and logs kept in {tmp_path}"
    )


def test_leader_cut_off_alone_is_replaced_and_acknowledges_nothing(tmp_path: Path) -> None:
    run_partition(tmp_path, minority_size=1)


def test_minority_of_two_with_the_leader_is_replaced_and_acknowledges_nothing(
    tmp_path: Path,
) -> None:
    run_partition(tmp_path, minority_size=2)
