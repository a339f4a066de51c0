"""Tools of a hostile tester for real clusters (``tests/test_attacks.py``, ``tests/test_fuzz.py``).

- ``Arena``: a ``LocalNodes`` cluster with an ``RssMonitor`` on every node, and the checks an
  attack needs: who leads, a snapshot of what every node holds (role, ballot, promise, commit
  index, log), proposals that must succeed, logs that must agree.
- Requests as an outsider sends them (``request``: no signature; ``exchange``: raw bytes on a
  socket, for framing an HTTP library refuses to write) and as a member does (``signed``: with
  the cluster secret, through ``LocalNodes.as_peer`` where it exists).
- ``FakePeer``: a tiny hostile HTTP server on a stopped peer's port, answering every request
  with forged, huge or endless replies.
- ``RssMonitor``: samples every node's ``VmRSS`` (``/proc/<pid>/status``) and kills a node that
  passes a safety cap, so that a regression (a list of 10**12 slots) fails a test instead of
  exhausting the machine.

The helpers degrade on an older tree (no ``paxgos.net.auth``, no ``as_peer``/``control``): a
"signed" request is then sent unsigned, as a member of that unauthenticated cluster would send
it, so the same tests show what the old code did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from paxgos.testing.client import propose as client_propose
from paxgos.testing.procs import LocalNodes

#: The value forged messages carry: it must never appear in any node's log.
FORGED = 666
#: A node's RSS above this (MiB) is killed by the monitor: a test fails, the machine survives.
KILL_ABOVE_MIB = 1024.0
#: The target of issue 11: leader RSS stays under this (MiB) through every attack.
RSS_TARGET_MIB = 200.0

Json = dict[str, Any]


# --- processes -----------------------------------------------------------------------------------


def rss_mib(pid: int) -> float | None:
    """``VmRSS`` of process ``pid`` in MiB, or ``None`` if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


class RssMonitor:
    """Samples every node's RSS every ``interval`` seconds in a thread; remembers each node's
    peak and the peak of whichever node led at the time (the leader is asked every half
    second).  A node above ``kill_above`` MiB is killed (``killed`` names it)."""

    def __init__(
        self, nodes: LocalNodes, interval: float = 0.05, kill_above: float = KILL_ABOVE_MIB
    ):
        self.nodes = nodes
        self.interval = interval
        self.kill_above = kill_above
        self.peak: dict[int, float] = {}  # over the whole run
        self.leader_peak = 0.0
        self.window: dict[int, float] = {}  # since the last ``reset()``
        self.leader: int | None = None
        self.killed: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-monitor")
        self._lock = threading.Lock()

    def start(self) -> RssMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def reset(self) -> None:
        """Start a new ``window`` of peaks (the whole run's stay)."""
        with self._lock:
            self.window.clear()

    def _refresh_leader(self) -> None:
        for i in range(self.nodes.count):
            if self.nodes.procs[i] is None:
                continue
            try:
                status = self.nodes.status(i, timeout=0.5)
            except (OSError, ValueError):
                continue
            if status.get("role") == "leader":
                self.leader = i
                return

    def _run(self) -> None:
        asked = 0.0
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            if now - asked >= 0.5:
                asked = now
                self._refresh_leader()
            for i, proc in enumerate(list(self.nodes.procs)):
                if proc is None:
                    continue
                rss = rss_mib(proc.pid)
                if rss is None:
                    continue
                with self._lock:
                    self.peak[i] = max(self.peak.get(i, 0.0), rss)
                    self.window[i] = max(self.window.get(i, 0.0), rss)
                    if i == self.leader:
                        self.leader_peak = max(self.leader_peak, rss)
                if rss > self.kill_above and proc.poll() is None:
                    self.killed.append((i, rss))
                    with contextlib.suppress(OSError):
                        os.kill(proc.pid, signal.SIGKILL)  # a node this test started


# --- HTTP -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes
    closed: bool = False  # the server closed the connection after it

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def request(
    url: str,
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Response:
    """One well-formed HTTP/1.1 request with ``http.client`` (chunked answers, keep-alive and
    HEAD are framed right); HTTP errors are answers.  Raises ``OSError`` if none comes."""
    host, port = host_port(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, target, body=body or None, headers=headers or {})
        answer = conn.getresponse()
        data = answer.read()
        joined: dict[str, str] = {}
        for name, value in answer.getheaders():
            key = name.lower()
            joined[key] = f"{joined[key]}, {value}" if key in joined else value
        return Response(answer.status, joined, data)
    except http.client.HTTPException as exc:
        raise OSError(f"{method} {target}: {exc!r}") from None
    finally:
        conn.close()


def read_response(sock: socket.socket, method: str, deadline: float) -> Response | None:
    """Read one HTTP response from ``sock`` (Content-Length, chunked, or read to close);
    ``None`` if the connection closed (or the deadline passed) before a status line."""
    buf = bytearray()

    def more() -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, OSError):
            return False
        if not chunk:
            return False
        buf.extend(chunk)
        return True

    while True:  # interim answers (100 Continue) are skipped
        while b"\r\n\r\n" not in buf:
            if len(buf) > 65536 or not more():
                return None
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            return None
        status = int(parts[1])
        if not 100 <= status < 200:
            break
        buf = bytearray(rest)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    buf = bytearray(rest)
    closed = False
    if method == "HEAD" or status in (204, 304):
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            while b"\r\n" not in buf:
                if not more():
                    return Response(status, headers, bytes(out), True)
            size_line, _, tail = bytes(buf).partition(b"\r\n")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            buf = bytearray(tail)
            while len(buf) < size + 2:
                if not more():
                    return Response(status, headers, bytes(out + buf[:size]), True)
            out.extend(buf[:size])
            buf = buf[size + 2 :]
            if size == 0:
                break
        body = bytes(out)
    elif "content-length" in headers and headers["content-length"].isdigit():
        length = int(headers["content-length"])
        while len(buf) < length:
            if not more():
                closed = True
                break
        body = bytes(buf[:length])
    else:
        while more():
            pass
        body, closed = bytes(buf), True
    if "close" in headers.get("connection", "").lower():
        closed = True
    return Response(status, headers, body, closed)


def exchange(url: str, data: bytes, method: str = "GET", timeout: float = 5.0) -> Response | None:
    """Send raw bytes ``data`` on a new connection and read one response (``method`` says how
    to frame it: HEAD has no body); ``None`` if the server closed without a status line, or
    none came within ``timeout``."""
    host, port = host_port(url)
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may answer and close before taking all of it
        return read_response(sock, method, deadline)


def one_line(text: str) -> bool:
    """Whether an error body is one non-empty line (newline-terminated or not)."""
    line = text[:-1] if text.endswith("\n") else text
    return bool(line.strip()) and "\n" not in line and "\r" not in line


# --- the cluster --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NodeState:
    """What a node holds, as a user can see it."""

    role: str
    ballot: tuple[int, ...] | None
    promised: tuple[int, ...]
    commit_index: int
    history: tuple[tuple[int, int | None], ...]


def peer_signature(nodes: LocalNodes, method: str, target: str, body: bytes) -> dict[str, str]:
    """The signature header a member puts on a request (none on a tree without auth)."""
    secret = getattr(nodes, "secret", None)
    if not secret:
        return {}
    from paxgos.net.auth import SIGNATURE, PeerAuth

    return {SIGNATURE: PeerAuth(secret.encode()).sign_request(method, target, body)}


class Arena:
    """A running cluster under attack; see the module docstring."""

    def __init__(self, nodes: LocalNodes, monitor: RssMonitor | None = None):
        self.nodes = nodes
        self.monitor = monitor or RssMonitor(nodes)
        self.values = 10**15  # next value a proposal of ours sends (distinct across a test)
        self.top_slot = 0  # the highest slot a proposal of ours was told

    @property
    def count(self) -> int:
        return self.nodes.count

    def url(self, i: int) -> str:
        return self.nodes.urls[i]

    def port(self, i: int) -> int:
        return host_port(self.nodes.urls[i])[1]

    def close(self) -> None:
        self.monitor.stop()
        self.nodes.close()

    # --- who is who ---

    def leader(self, timeout: float = 15.0, among: list[int] | None = None) -> int:
        if among is None:
            among = [i for i in range(self.count) if self.nodes.procs[i] is not None]
        leader = self.nodes.wait_leader(timeout=timeout, nodes=among)
        self.monitor.leader = leader
        return leader

    def followers(self) -> list[int]:
        leader = self.leader()
        return [i for i in range(self.count) if i != leader and self.nodes.procs[i] is not None]

    def live(self) -> list[int]:
        return [i for i in range(self.count) if self.nodes.procs[i] is not None]

    def ballot(self, leader: int) -> list[int]:
        ballot = self.nodes.status(leader)["ballot"]
        assert isinstance(ballot, list), ballot
        return ballot

    def top_round(self) -> int:
        return max(self.nodes.status(i)["promised"][0] for i in self.live())

    def dead(self) -> list[int]:
        """Nodes that should run but whose process has exited."""
        return [
            i
            for i, proc in enumerate(self.nodes.procs)
            if proc is not None and proc.poll() is not None
        ]

    # --- requests ---

    def unsigned(
        self,
        i: int,
        method: str,
        target: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Response:
        hdrs = {"Content-Type": "application/json"} if body else {}
        hdrs.update(headers or {})
        return request(self.url(i), method, target, body, hdrs, timeout)

    def signed(
        self,
        i: int,
        method: str,
        target: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Response:
        """A request as a member sends it: signed with the cluster secret."""
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(peer_signature(self.nodes, method, target, body))
        hdrs.update(headers or {})
        return request(self.url(i), method, target, body, hdrs, timeout)

    def control(self, i: int, path: str, headers: dict[str, str] | None = None) -> Response:
        """A runtime control (``POST /fault/...``) with the cluster secret, if there is one."""
        secret = getattr(self.nodes, "secret", None)
        hdrs = {"Authorization": f"Bearer {secret}"} if secret else {}
        hdrs.update(headers or {})
        return request(self.url(i), "POST", path, b"", hdrs, 5.0)

    # --- state ---

    def state(self, i: int) -> NodeState:
        status = self.nodes.status(i, timeout=5.0)
        ballot = status.get("ballot")
        return NodeState(
            role=status["role"],
            ballot=tuple(ballot) if isinstance(ballot, list) else None,
            promised=tuple(status["promised"]),
            commit_index=status["commit_index"],
            history=tuple(self.nodes.history(i)),
        )

    def snapshot(
        self, ids: Sequence[int] | None = None, settle: float = 10.0
    ) -> dict[int, NodeState]:
        """Every live node's state once it has settled: every commit index the same, at least
        the highest slot a proposal of ours was told, and on disk (``settle`` seconds)."""
        ids = list(ids) if ids is not None else self.live()
        self.settle(ids, settle)
        return {i: self.state(i) for i in ids}

    def settle(self, ids: Sequence[int], timeout: float = 10.0) -> None:
        def settled() -> bool:
            try:
                statuses = [self.nodes.status(i, timeout=2.0) for i in ids]
            except (OSError, ValueError):
                return False
            commits = {s["commit_index"] for s in statuses}
            commits |= {s.get("chosen_in_memory", s["commit_index"]) for s in statuses}
            return len(commits) == 1 and commits.pop() >= self.top_slot

        wait_for(settled, timeout, 0.05)

    def assert_unchanged(self, before: dict[int, NodeState], what: str) -> None:
        """No node's role, ballot, promise, commit index or log differs from ``before``."""
        time.sleep(0.3)  # what a forged message set off (a Learn, a catch-up) lands by now
        after = {i: self.state(i) for i in before}
        for i in before:
            assert after[i] == before[i], f"{what}: node {i} changed: {_diff(before[i], after[i])}"

    def propose(self, count: int, timeout: float = 10.0, within: float = 15.0) -> list[int]:
        """Propose ``count`` distinct values, following redirects and retrying a 503 until
        ``within`` seconds passed; each must commit.  Their slots."""
        slots: list[int] = []
        for _ in range(count):
            self.values += 1
            value = self.values
            deadline = time.monotonic() + within
            answers: list[str] = []
            while True:
                i = self.monitor.leader if self.monitor.leader in self.live() else self.live()[0]
                outcome, slot, answer = client_propose(self.url(i), value, timeout, follow=True)
                if outcome == "ok" and slot is not None:
                    slots.append(slot)
                    self.top_slot = max(self.top_slot, slot)
                    break
                answers.append(answer)
                if outcome != "fail" or time.monotonic() > deadline:
                    raise AssertionError(f"proposal of {value} did not commit: {answers[-5:]}")
                with contextlib.suppress(TimeoutError):
                    self.leader(timeout=2.0)
                time.sleep(0.05)
        return slots

    def assert_agree(self, ids: Sequence[int] | None = None, at_least: int = 0) -> int:
        """Every live node holds the same log (at least ``at_least`` slots), with no forged
        value in it; the commit index.  (A proposal a client gave up on may still commit while
        the logs are fetched: then they are fetched again.)"""
        ids = list(ids) if ids is not None else self.live()
        at_least = max(at_least, self.top_slot)
        for attempt in range(5):
            commit = self.nodes.wait_converged(timeout=15.0, nodes=ids, at_least=at_least)
            self.settle(ids)
            logs = {i: self.nodes.history(i) for i in ids}
            first = logs[ids[0]]
            for i in ids:
                a, b = dict(first), dict(logs[i])
                slots = sorted(s for s in set(a) & set(b) if a[s] != b[s])
                shown = [(s, a[s], b[s]) for s in slots[:5]]
                assert not slots, (
                    f"node {i}'s log differs from node {ids[0]}'s at {len(slots)} slots "
                    f"(slot, node {ids[0]}, node {i}): {shown}"
                )
            if len({len(log) for log in logs.values()}) == 1:
                break
            time.sleep(0.2 * (attempt + 1))
        else:
            raise AssertionError(f"logs kept growing apart: {[len(v) for v in logs.values()]}")
        commit = len(first)
        assert [s for s, _ in first] == list(range(1, commit + 1))
        forged = [s for s, v in first if v is not None and FORGED <= v < FORGED + 10_000]
        assert not forged, f"forged values chosen at slots {forged[:10]}"
        return commit

    def log_size(self, i: int) -> int:
        try:
            return self.nodes.log_path(i).stat().st_size
        except OSError:
            return 0

    def log_text(self, i: int, since: int = 0) -> str:
        with open(self.nodes.log_path(i), "rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", "replace")


def _diff(a: NodeState, b: NodeState) -> str:
    out = []
    for field in dataclasses.fields(NodeState):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if x != y:
            if field.name == "history":
                out.append(f"history {len(x)} -> {len(y)} entries, tail {list(y[-3:])}")
            else:
                out.append(f"{field.name} {x} -> {y}")
    return "; ".join(out)


class Load:
    """``threads`` clients proposing distinct values through ``arena`` until ``stop()``; each
    answer's status (0: no answer) is counted."""

    def __init__(self, arena: Arena, threads: int = 4, timeout: float = 5.0, base: int = 0):
        self.arena = arena
        self.timeout = timeout
        self.base = base or arena.values + 10**9
        self.statuses: Counter[int] = Counter()
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)
        ]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Load:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        return self

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok_ratio(self) -> float:
        return self.statuses[200] / self.total if self.total else 0.0

    def _run(self, t: int) -> None:
        for n in range(1_000_000):
            if self._stop.is_set():
                return
            value = self.base + t * 10**7 + n
            leader = self.arena.monitor.leader
            i = leader if leader is not None else 0
            start = time.monotonic()
            try:
                outcome, _, answer = client_propose(self.arena.url(i), value, self.timeout, True)
                status = int(answer.split(" ", 1)[0]) if answer[:3].isdigit() else 0
            except (OSError, ValueError):
                status = 0
            with self._lock:
                self.statuses[status] += 1
                self.latencies.append(time.monotonic() - start)
            if status != 200:
                time.sleep(0.05)


# --- messages -------------------------------------------------------------------------------------


def body(**fields: Any) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


def prepare(sender: int, ballot: list[int], from_slot: int = 1, probe: bool = False) -> bytes:
    return body(type="prepare", sender=sender, ballot=ballot, from_slot=from_slot, probe=probe)


def accept(sender: int, ballot: list[int], first: int, values: list[Any], commit: int) -> bytes:
    return body(
        type="accept", sender=sender, ballot=ballot, first=first, values=values, commit=commit
    )


def learn(sender: int, ballot: list[int], commit: int) -> bytes:
    return body(type="learn", sender=sender, ballot=ballot, commit=commit)


# --- a hostile peer -------------------------------------------------------------------------------


class FakePeer:
    """A tiny HTTP server on ``port`` (a stopped peer's) that pretends to be node ``node_id``
    of ``count`` and answers every request as ``mode`` says, never signed:

    - ``forge``: replies that would inject values or fake a majority if believed: an Accept is
      answered by ``accepted ok`` (as the node asked, or as another node), or by a
      ``catchup_reply`` of 1,465 entries of ``FORGED`` from the Accept's first slot; a Prepare
      by an ok Promise reporting ``FORGED`` accepted at the highest ballot; a Learn by a
      ``learn_ack``; a catch-up read by 1,465 forged entries;
    - ``lying``: a member with a bug, its answers signed with ``secret`` (if given): a
      catch-up read is answered at once with no entries and commit 2**63 - 1 (a claim it
      cannot serve); anything else 404;
    - ``huge``: ``Content-Length: 10**12`` and then 64 KiB every 10 ms, until the client goes;
    - ``big``: an 8 MB valid JSON reply of the right type (padded with an extra field).

    ``requests`` counts what it was asked (``"GET /learn"``...), ``catchups`` times each
    catch-up read."""

    def __init__(self, port: int, node_id: int, count: int, mode: str, secret: str | None = None):
        self.secret = secret
        self.port = port
        self.node_id = node_id
        self.count = count
        self.mode = mode
        self.requests: Counter[str] = Counter()
        self.catchups: list[float] = []
        self.answered = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:
            try:
                self._listener.bind(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self._threads: list[threading.Thread] = []
        self._big_replies: dict[str, bytes] = {}
        self._accept_thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakePeer:
        self._accept_thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._accept_thread.join(5)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            thread = threading.Thread(target=self._connection, args=(conn,), daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.2)
            buf = b""
            for _ in range(100_000):  # requests on one kept-alive connection
                if self._stop.is_set():
                    return
                while b"\r\n\r\n" not in buf:
                    chunk = self._receive(conn, len(buf))
                    if chunk is None:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, _, rest = lines[0].partition(" ")
                target = rest.rpartition(" ")[0]
                length = 0
                signature = ""
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length" and value.strip().isdigit():
                        length = int(value.strip())
                    if name.strip().lower() == "paxgos-signature":
                        signature = value.strip()
                while len(buf) < length:
                    chunk = self._receive(conn, 0)
                    if chunk is None:
                        return
                    buf += chunk
                data, buf = buf[:length], buf[length:]
                try:
                    if not self._answer(conn, method, target, data, signature):
                        return
                except OSError:
                    return

    def _receive(self, conn: socket.socket, held: int) -> bytes | None:
        """The next bytes of ``conn`` (``b""`` after a quiet 0.2 s), or ``None`` once it is
        closed, the server stops, or a head grows past 1 MiB (``held`` bytes so far)."""
        if self._stop.is_set() or held > 1 << 20:
            return None
        try:
            return conn.recv(65536) or None
        except TimeoutError:
            return b""
        except OSError:
            return None

    def _answer(
        self, conn: socket.socket, method: str, target: str, data: bytes, signature: str
    ) -> bool:
        path = target.split("?", 1)[0]
        key = f"{method} {path}"
        with self._lock:
            self.requests[key] += 1
            n = self.requests[key]
            if key == "GET /learn":
                self.catchups.append(time.monotonic())
        if self.mode == "huge":
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000000000000\r\n\r\n{"type":"accepted","pad":"'
            )
            chunk = b"x" * 65536
            for _ in range(100_000):
                if self._stop.is_set():
                    return False
                conn.sendall(chunk)  # OSError once the client has gone: the connection ends
                time.sleep(0.01)
            return False
        reply = self._reply(method, target, data, n)
        if reply is None:
            payload, status = b"error: no such path\n", "404 Not Found"
        else:
            payload, status = reply, "200 OK"
        fake_signature = b"Paxgos-Signature: 00\r\n" if n % 2 else b""
        if self.secret and self.mode == "lying" and reply is not None:
            from paxgos.net.auth import PeerAuth

            mac = PeerAuth(self.secret.encode()).sign_reply(signature, 200, payload)
            fake_signature = f"Paxgos-Signature: {mac}\r\n".encode()
        conn.sendall(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n".encode()
            + fake_signature
            + b"\r\n"
            + payload
        )
        with self._lock:
            self.answered += 1
        return True

    def _reply(self, method: str, target: str, data: bytes, n: int) -> bytes | None:
        me = self.node_id
        other = (me + 1 + n % (self.count - 1)) % self.count
        try:
            msg = json.loads(data) if data else {}
        except ValueError:
            msg = {}
        if not isinstance(msg, dict):
            msg = {}
        ballot = msg.get("ballot", [1, 0])
        path, _, query = target.partition("?")
        if method == "GET" and path == "/learn":
            start = 1
            for part in query.split("&"):
                name, _, value = part.partition("=")
                if name == "from" and value.isdigit():
                    start = int(value)
            if self.mode == "lying":
                return body(type="catchup_reply", sender=me, entries=[], commit=2**63 - 1)
            return self._catchup(start)
        if self.mode == "lying":
            return None
        if self.mode == "big":
            return self._big(path, msg)
        if path == "/accept":
            first = msg.get("first", 1)
            values = msg.get("values", [1])
            if n % 3 == 2:
                return self._catchup(first if isinstance(first, int) else 1)
            return body(
                type="accepted", sender=me if n % 3 == 0 else other, ballot=ballot, first=first,
                count=len(values) if isinstance(values, list) else 1, ok=True, promised=ballot,
                commit=0,
            )  # fmt: skip
        if path == "/prepare":
            start = msg.get("from_slot", 1)
            top = [2**62, me]
            accepted = [[start + k, top, FORGED + k] for k in range(50)]
            return body(
                type="promise", sender=me if n % 2 else other, ballot=ballot, ok=True,
                promised=ballot, commit=0, accepted=accepted, probe=bool(msg.get("probe")),
            )  # fmt: skip
        if path == "/learn":
            if n % 2:
                return self._catchup(1)
            return body(
                type="learn_ack", sender=me, ballot=ballot, commit=msg.get("commit", 0),
                promised=ballot,
            )  # fmt: skip
        return None

    def _catchup(self, start: int) -> bytes:
        entries = [[start + k, FORGED + k] for k in range(1465)]
        return body(type="catchup_reply", sender=self.node_id, entries=entries, commit=start + 1464)

    def _big(self, path: str, msg: Json) -> bytes:
        """An 8 MB valid JSON message of the type that answers ``path`` (made once per path:
        building 8 MB per request would cost this process more CPU than the node under test)."""
        with self._lock:
            cached = self._big_replies.get(path)
            if cached is not None:
                return cached
            pad = b"[" + b",".join([b"0"] * 4_000_000) + b"]"
            ballot = msg.get("ballot", [1, 0])
            if path == "/accept":
                fields: Json = dict(
                    type="accepted", sender=self.node_id, ballot=ballot, first=msg.get("first", 1),
                    count=1, ok=True, promised=ballot, commit=0,
                )  # fmt: skip
            elif path == "/prepare":
                fields = dict(
                    type="promise", sender=self.node_id, ballot=ballot, ok=True, promised=ballot,
                    commit=0, accepted=[], probe=bool(msg.get("probe")),
                )  # fmt: skip
            else:
                fields = dict(
                    type="learn_ack", sender=self.node_id, ballot=ballot, commit=0, promised=ballot
                )
            reply = body(**fields)[:-1] + b',"pad":' + pad + b"}"
            self._big_replies[path] = reply
            return reply


# --- slowloris ------------------------------------------------------------------------------------


class HalfOpen:
    """Up to ``count`` connections to ``url``, each holding a request whose head never ends
    (a slowloris); ``refill()`` replaces the ones the server closed (at most ``budget`` new
    connections in all)."""

    HEAD = b"POST /propose/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "

    def __init__(self, url: str, count: int, budget: int = 6000):
        self.address = host_port(url)
        self.count = count
        self.budget = budget
        self.opened = 0
        self.failed = 0
        self.socks: list[socket.socket] = []

    def refill(self) -> None:
        if self.socks:
            for sock in self._readable():  # closed (or answered) by the server
                self.socks.remove(sock)
                sock.close()
        while len(self.socks) < self.count and self.opened < self.budget:
            self.opened += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(1.0)
            try:
                sock.connect(self.address)
                sock.sendall(self.HEAD)
            except OSError:
                self.failed += 1
                sock.close()
                continue
            sock.setblocking(False)
            self.socks.append(sock)

    def _readable(self) -> list[socket.socket]:
        import selectors

        with selectors.DefaultSelector() as sel:
            for sock in self.socks:
                sel.register(sock, selectors.EVENT_READ)
            return [key.fileobj for key, _ in sel.select(0)]  # type: ignore[misc]

    def trickle(self) -> None:
        """One more header byte on every connection (the attack keeps each one busy)."""
        for sock in list(self.socks):
            with contextlib.suppress(OSError):
                sock.send(b"a")

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.socks.clear()


def wait_for(check: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()
