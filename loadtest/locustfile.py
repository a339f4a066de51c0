"""Locust users that drive ``/propose`` traffic at a Paxgos cluster and check every answer.

    python -m paxgos --nodes 5                                       # a cluster on 9000..9004
    locust -f loadtest/locustfile.py --host http://127.0.0.1:9000    # web UI on :8089
    locust -f loadtest/locustfile.py --host http://127.0.0.1:9000 \\
        --headless -u 64 -r 16 -t 60s --csv out/propose --html out/propose.html
    locust -f loadtest/locustfile.py --host http://127.0.0.1:9000 --processes 2 ...

Each user (a ``FastHttpUser``, closed loop: it proposes, waits for the answer, proposes again)
sends random signed 64-bit integers to ``GET /propose/<v>``. A ``200`` counts as a success only
if its body is ``CommandID: <n>, Value <v>`` with the value sent; any other answer (a 504, a 503,
a connection error, a 200 with a wrong body) is a failure in Locust's statistics. Redirects (a
follower's 307 to the leader) are followed; a 503 is retried after its ``Retry-After``. With
``--cluster`` naming every node, every user starts at ``--host`` and stays with the node that
commits: it moves to the node a 307 names (at once), and from a node that does not answer (or
knows no leader) to the next one, so a killed leader costs the users only the failover.
Optional tasks read a page of the log (``GET /``) or ``GET /status``; their weights, like the
rest of this file's options, come from the command line or the environment, and show in the web
UI's form:

| option | environment | default | meaning |
|---|---|---|---|
| ``--propose-weight`` | ``PAXGOS_PROPOSE_WEIGHT`` | 1 | weight of ``/propose/<v>`` |
| ``--history-weight`` | ``PAXGOS_HISTORY_WEIGHT`` | 0 | weight of ``GET /?limit=100`` |
| ``--status-weight`` | ``PAXGOS_STATUS_WEIGHT`` | 0 | weight of ``GET /status`` |
| ``--record-ops PATH`` | ``PAXGOS_RECORD_OPS`` | off | write every proposal to PATH |
| ``--request-timeout S`` | ``PAXGOS_REQUEST_TIMEOUT`` | 30 | client-side timeout (seconds) |
| ``--cluster URLS`` | ``PAXGOS_CLUSTER`` | ``--host`` | every node's base URL, comma-separated |

``--record-ops PATH`` writes one JSON line per proposal in the history checker's ops format
(``paxgos.check.record``: client, value, start, end, outcome, slot; outcome by
``paxgos.testing.client.classify``), so ``python -m paxgos.check`` and the benchmark can use it.
A process that runs users writes its own file: a standalone Locust writes ``PATH`` itself; a
worker (``--processes N``, or ``--worker``) writes ``PATH`` with its pid before the suffix
(``ops.jsonl`` -> ``ops.12345.jsonl``), so concatenate ``ops*.jsonl`` afterwards. Proposals still
in flight when Locust stops are written as ``unknown`` (they may have been chosen).

Locust monkey-patches the standard library with gevent: never import this file (or locust) in a
node process or any process that runs a Tornado loop.
"""

from __future__ import annotations

import gc
import itertools
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from locust import FastHttpUser, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

try:
    from paxgos.testing.client import classify, retry_after
except ImportError:  # run from a checkout without installing: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from paxgos.testing.client import classify, retry_after

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UNKNOWN = "unknown"
#: The body of every GET: geventhttpclient 2.4 (what Python 3.10 installs) sends a GET without
#: one as an empty chunked body, in a second small write that Nagle's algorithm holds until the
#: server's delayed ACK (up to 40 ms a request); an empty bytes body is sent with the head.
NO_BODY = b""


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    # ``parser.add_argument`` itself, not an argument group's: Locust's own method is the one
    # that puts an option in the web UI's form (and sends it to workers).
    parser.add_argument(
        "--propose-weight", type=int, default=1, env_var="PAXGOS_PROPOSE_WEIGHT",
        help="weight of the GET /propose/<random int64> task",
    )  # fmt: skip
    parser.add_argument(
        "--history-weight", type=int, default=0, env_var="PAXGOS_HISTORY_WEIGHT",
        help="weight of the GET /?limit=100 task (a page of the committed log)",
    )  # fmt: skip
    parser.add_argument(
        "--status-weight", type=int, default=0, env_var="PAXGOS_STATUS_WEIGHT",
        help="weight of the GET /status task",
    )  # fmt: skip
    parser.add_argument(
        "--record-ops", default="", env_var="PAXGOS_RECORD_OPS",
        help="write every proposal as a JSON line (the history checker's ops format) to this "
        "path; workers write PATH with their pid before the suffix",
    )  # fmt: skip
    parser.add_argument(
        "--request-timeout", type=float, default=30.0, env_var="PAXGOS_REQUEST_TIMEOUT",
        help="client-side timeout of one request, in seconds",
    )  # fmt: skip
    parser.add_argument(
        "--cluster", default="", env_var="PAXGOS_CLUSTER",
        help="every node's base URL, comma-separated: a user whose node is down or knows no "
        "leader moves to the next (default: --host only)",
    )  # fmt: skip


class OpRecorder:
    """Writes each proposal of this process as one line of the checker's ops format.

    ``begin`` notes a proposal in flight, ``end`` writes it; ``close`` writes the proposals
    still in flight as ``unknown`` (a stopped user's request may still have been chosen), so the
    file names every value this process ever sent.
    """

    def __init__(self, path: Path):
        self.path = path
        self._file: TextIO = open(path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115
        self._in_flight: dict[tuple[str, int], float] = {}
        self._last_flush = time.monotonic()

    def begin(self, client: str, value: int, start: float) -> None:
        self._in_flight[(client, value)] = start

    def end(self, client: str, value: int, end: float, outcome: str, slot: int | None) -> None:
        start = self._in_flight.pop((client, value), end)
        self._write(client, value, start, end, outcome, slot)
        now = time.monotonic()
        if now - self._last_flush > 1.0:  # a crash or kill -9 of Locust loses at most ~1 s
            self._file.flush()
            self._last_flush = now

    def _write(
        self, client: str, value: int, start: float, end: float, outcome: str, slot: int | None
    ) -> None:
        slot_text = "null" if slot is None else str(slot)
        self._file.write(
            f'{{"client":"{client}","value":{value},"start":{start!r},"end":{max(end, start)!r},'
            f'"outcome":"{outcome}","slot":{slot_text}}}\n'
        )

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        """Write the proposals still in flight as ``unknown`` and close the file."""
        if self._file.closed:
            return
        now = time.time()
        for (client, value), start in self._in_flight.items():
            self._write(client, value, start, now, UNKNOWN, None)
        self._in_flight.clear()
        self._file.close()


_recorder: OpRecorder | None = None


def recorder_for(environment: Environment) -> OpRecorder | None:
    """This process's recorder (opened on first use), or None when not recording."""
    global _recorder
    if _recorder is not None:
        return _recorder
    options = environment.parsed_options
    raw = getattr(options, "record_ops", "") if options is not None else ""
    if not raw:
        return None
    path = Path(raw)
    if isinstance(environment.runner, WorkerRunner):
        path = path.with_name(f"{path.stem}.{os.getpid()}{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    _recorder = OpRecorder(path)
    return _recorder


@events.test_stop.add_listener
def _close_on_stop(**_: Any) -> None:
    if _recorder is not None:
        _recorder.flush()


@events.quitting.add_listener
def _close_on_quit(environment: Environment, **_: Any) -> None:
    if _recorder is None:
        return
    # On SIGTERM Locust fires ``quitting`` before it stops the users: stop them here first, so
    # each finishes (within --stop-timeout) and records the request it has in flight.
    runner = environment.runner
    if runner is not None and not isinstance(runner, MasterRunner) and runner.user_count:
        runner.stop()
    _recorder.close()


@events.test_start.add_listener
def _quiet_gc(**_: Any) -> None:
    # Locust's heap is large (gevent, its statistics, the web UI) and a full collection of it
    # took 45-63 ms on our 2-core machine, every few seconds: every request in flight waited
    # for it, and those pauses were the benchmark's p99.  The users' garbage is freed by
    # reference counting (full collections here found nothing to collect), so freeze what
    # exists when the test starts and collect young objects less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


_user_ids = itertools.count()


@events.init.add_listener
def _apply_timeout(environment: Environment, **_: Any) -> None:
    # Class attributes are read when each user builds its HTTP session, after init. (A remote
    # ``--worker`` reads its own command line or environment here, not the master's.)
    timeout = getattr(environment.parsed_options, "request_timeout", None)
    if timeout:
        Proposer.network_timeout = float(timeout)


class Proposer(FastHttpUser):
    """One closed-loop client: propose (or read), check the answer, repeat."""

    # 64 users each keep one request in flight: one connection per user is all they need.
    concurrency = 1
    network_timeout = 30.0
    connection_timeout = 10.0
    max_redirects = 3  # without --cluster, a 307 is followed by the client itself

    def wait_time(self) -> float:
        # No think time while answers are good; a short back-off after an error, so a node
        # that is down or overloaded is not hammered in a busy loop.
        backoff, self._backoff = self._backoff, 0.0
        return backoff

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self._backoff = 0.0
        self.client_id = f"p{os.getpid()}u{next(_user_ids)}"
        self.rng = random.Random()
        weights = [
            max(0, getattr(options, "propose_weight", 1)),
            max(0, getattr(options, "history_weight", 0)),
            max(0, getattr(options, "status_weight", 0)),
        ]
        if not any(weights):
            weights[0] = 1
        self.actions = [self.propose, self.read_history, self.read_status]
        self.weights = weights
        self.recorder = recorder_for(self.environment)
        cluster = getattr(options, "cluster", "") or ""
        self.nodes = [u.strip().rstrip("/") for u in cluster.split(",") if u.strip()]
        host = (self.host or "").rstrip("/")
        self.node = self.nodes.index(host) if host in self.nodes else 0
        # With --cluster a 307 moves this user to the leader (see propose); else the client
        # follows it.
        self.redirects = not self.nodes

    def _url(self, path: str) -> str:
        """``path`` on this user's current node (``--host`` without ``--cluster``)."""
        return self.nodes[self.node] + path if self.nodes else path

    def _follow(self, location: str) -> bool:
        """Move to the node a redirect names; whether it is one of ``--cluster``."""
        for i, url in enumerate(self.nodes):
            if location.startswith(url + "/"):
                self.node = i
                return True
        return False

    def _next_node(self) -> None:
        if self.nodes:
            self.node = (self.node + 1) % len(self.nodes)

    @task
    def act(self) -> None:
        # One task that draws by the weights given at run time (the weights are options, and a
        # worker learns them from the master only after its classes are built).
        if self.weights[1] == 0 and self.weights[2] == 0:
            self.propose()
        else:
            self.rng.choices(self.actions, self.weights)[0]()

    def propose(self) -> None:
        value = self.rng.randint(INT64_MIN, INT64_MAX)
        recorder = self.recorder
        start = time.time()
        if recorder is not None:
            recorder.begin(self.client_id, value, start)
        with self.client.get(
            self._url(f"/propose/{value}"),
            name="/propose/[value]",
            catch_response=True,
            allow_redirects=self.redirects,
            data=NO_BODY,
        ) as response:
            end = time.time()
            status = response.status_code or 0
            body = (response.text or "") if status else ""
            outcome, slot = classify(status, body, value)
            if outcome == "ok":
                response.success()
            else:
                self._backoff = 0.05
                if status == 0:
                    # Unknown even when the error says "connection refused": geventhttpclient
                    # retries a request whose keep-alive connection broke on a new connection,
                    # so a request a killed leader had already taken (and maybe chosen) ends as
                    # "refused" by its dead port.
                    response.failure(f"no answer: {response.error!r}")
                    self._next_node()
                elif status == 200:
                    response.failure(f"200 with an unexpected body: {body[:80]!r}")
                elif status == 307 and self._follow(response.headers.get("Location", "")):
                    response.failure("307 to the leader")  # not proposed; ask the leader now
                    self._backoff = 0.0
                else:
                    response.failure(f"{status} {body.strip()[:120]}")
                    if status == 503:
                        self._backoff = retry_after(response.headers.get("Retry-After"))
                        if "no leader" in body:
                            self._next_node()
            if recorder is not None:
                recorder.end(self.client_id, value, end, outcome, slot)

    def read_history(self) -> None:
        with self.client.get(
            self._url("/?limit=100"), name="/", catch_response=True, data=NO_BODY
        ) as response:
            if response.status_code == 200 and (response.text or "").startswith("History:"):
                response.success()
            else:
                response.failure(f"{response.status_code} {(response.text or '')[:80]!r}")
                self._backoff = 0.05

    def read_status(self) -> None:
        with self.client.get(
            self._url("/status"), name="/status", catch_response=True, data=NO_BODY
        ) as response:
            if response.status_code == 200 and '"commit_index"' in (response.text or ""):
                response.success()
            else:
                response.failure(f"{response.status_code} {(response.text or '')[:80]!r}")
                self._backoff = 0.05
