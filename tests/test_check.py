"""Tests of the history checker (paxgos.check): each property violated alone, a clean history,
the file formats, the recorder, the CLI, and fetching logs from a stub node over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from paxgos.check import (
    AGREEMENT,
    DURABILITY,
    REALTIME,
    UNIQUENESS,
    VALIDITY,
    CheckResult,
    FetchError,
    History,
    HistoryError,
    Op,
    check,
    dump_logs,
    fetch_log,
    fetch_logs,
    load_logs,
    load_ops,
)
from paxgos.check.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


def clean_ops() -> list[Op]:
    return [
        Op("c1", 10, 0.0, 1.0, "ok", 1),
        Op("c2", 20, 0.5, 1.5, "ok", 2),
        Op("c3", 30, 1.0, 3.0, "unknown"),  # made it: slot 3
        Op("c4", 40, 1.0, 3.0, "unknown"),  # did not make it
        Op("c5", 50, 1.2, 1.3, "fail"),
        Op("c1", 60, 2.0, 2.5, "ok", 5),
    ]


def clean_logs() -> dict[int, list[tuple[int, int | None]]]:
    full = [(1, 10), (2, 20), (3, 30), (4, None), (5, 60)]
    return {0: list(full), 1: list(full), 2: full[:3]}  # node 2 lags


def only(result: CheckResult, prop: str, count: int = 1) -> list:
    """Assert that exactly ``count`` violations were found, all of property ``prop``."""
    assert not result.ok
    assert [v.property for v in result.violations] == [prop] * count, result.summary()
    return [v.details for v in result.violations]


def test_clean_history_passes() -> None:
    result = check(clean_ops(), clean_logs())
    assert result.ok, result.summary()
    assert result.violations == []
    assert result.summary() == "OK: 6 ops (3 ok, 2 unknown, 1 fail), 3 nodes, 5 slots"


def test_clean_history_accepts_dict_ops_and_entries() -> None:
    logs = {n: [{"slot": s, "value": v} for s, v in log] for n, log in clean_logs().items()}
    assert check([op.to_dict() for op in clean_ops()], logs).ok


def test_agreement_value_against_value() -> None:
    logs = clean_logs()
    logs[1][2] = (3, None)  # the unknown op's slot: no other property is involved
    (d,) = only(check(clean_ops(), logs), AGREEMENT)
    assert d == {"slot": 3, "values": {"0": 30, "1": None, "2": 30}}


def test_agreement_noop_against_value_on_lagging_logs() -> None:
    logs = clean_logs()
    logs[1][3] = (4, 40)  # node 0 has a no-op there; node 2 does not reach slot 4
    result = check(clean_ops(), logs)
    (d,) = only(result, AGREEMENT)
    assert d == {"slot": 4, "values": {"0": None, "1": 40}}
    assert "slot 4: nodes disagree: node 0=no-op, node 1=40" in result.summary()


def test_validity_never_proposed() -> None:
    logs = clean_logs()
    for n in (0, 1):
        logs[n][3] = (4, 99)
    (d,) = only(check(clean_ops(), logs), VALIDITY)
    assert d == {"slot": 4, "value": 99, "nodes": [0, 1], "ops": []}


def test_validity_value_only_a_failed_op_proposed() -> None:
    logs = clean_logs()
    logs[0][3] = (4, 50)
    logs[1][3] = (4, 50)
    result = check(clean_ops(), logs)
    (d,) = only(result, VALIDITY)
    assert d["slot"] == 4 and d["value"] == 50 and d["nodes"] == [0, 1]
    assert [op["client"] for op in d["ops"]] == ["c5"]
    assert "proposed only by failed ops: c5:50" in result.summary()


def test_validity_is_conservative_about_failed_ops() -> None:
    """A value a failed op had is fine if an ok or unknown op also proposed it."""
    logs = clean_logs()
    logs[0][3] = (4, 50)
    logs[1][3] = (4, 50)
    ops = clean_ops() + [Op("c6", 50, 2.0, 4.0, "unknown")]
    assert check(ops, logs).ok


def test_durability_acknowledged_value_lost() -> None:
    logs = clean_logs()
    for n in (0, 1):
        logs[n][4] = (5, None)  # every node that reaches slot 5 agrees on a no-op
    (d,) = only(check(clean_ops(), logs), DURABILITY)
    assert d["op"]["client"] == "c1" and d["op"]["value"] == 60
    assert d["slot"] == 5 and d["found"] == {"0": None, "1": None} and d["missing"] == []


def test_durability_complete_requires_every_acknowledged_slot() -> None:
    ops, logs = clean_ops(), clean_logs()
    assert check(ops, logs).ok  # node 2 lags: fine unless the cluster should have converged
    (d,) = only(check(ops, logs, require_complete=True), DURABILITY)
    assert d["op"]["value"] == 60 and d["slot"] == 5 and d["missing"] == [2] and d["found"] == {}
    logs[2] = clean_logs()[0]
    assert check(ops, logs, require_complete=True).ok


def test_durability_slot_acknowledged_twice() -> None:
    ops = clean_ops() + [Op("c7", 30, 1.0, 3.0, "ok", 3)]  # c3 (unknown) or c7 made it
    assert check(ops, clean_logs()).ok
    ops.append(Op("c8", 30, 1.1, 3.0, "ok", 3))
    (d,) = only(check(ops, clean_logs()), DURABILITY)
    assert d["slot"] == 3 and [op["client"] for op in d["ops"]] == ["c7", "c8"]


def test_uniqueness_one_proposal_twice_in_a_log() -> None:
    logs = clean_logs()
    for n in (0, 1):
        logs[n][3] = (4, 30)  # the unknown op c3's value, already at slot 3
    (d,) = only(check(clean_ops(), logs), UNIQUENESS)
    assert d["value"] == 30 and d["nodes"] == [0, 1] and d["slots"] == [3, 4]
    assert d["count"] == 2 and d["proposals"] == 1
    assert [op["client"] for op in d["ops"]] == ["c3"]


def test_uniqueness_counts_each_proposal_of_a_value() -> None:
    """A client that retried a timed-out proposal may find it in the log twice."""
    logs = clean_logs()
    for n in (0, 1):
        logs[n][3] = (4, 30)
    ops = clean_ops() + [Op("c3", 30, 3.0, 4.0, "unknown")]
    assert check(ops, logs).ok


def test_uniqueness_of_an_acknowledged_value() -> None:
    logs = clean_logs()
    logs[0][3] = (4, 10)  # only on node 0, and node 1 has a no-op there: agreement too
    result = check(clean_ops(), logs)
    assert sorted(v.property for v in result.violations) == [AGREEMENT, UNIQUENESS]
    (d,) = [v.details for v in result.violations if v.property == UNIQUENESS]
    assert d["nodes"] == [0] and d["slots"] == [1, 4] and d["value"] == 10


def test_realtime_later_op_ordered_before_an_acknowledged_one() -> None:
    ops = clean_ops()
    ops[0] = Op("c1", 10, 0.0, 1.0, "ok", 5)  # acknowledged at 1.0 with slot 5...
    ops[5] = Op("c1", 60, 2.0, 2.5, "ok", 1)  # ...yet this one, begun at 2.0, got slot 1
    logs = clean_logs()
    for n in (0, 1):
        logs[n][0], logs[n][4] = (1, 60), (5, 10)
    logs[2][0] = (1, 60)
    result = check(ops, logs)
    (d,) = only(result, REALTIME)
    assert d["before"]["value"] == 10 and d["before"]["slot"] == 5
    assert d["after"]["value"] == 60 and d["after"]["slot"] == 1


def test_realtime_later_op_told_the_same_slot() -> None:
    """Told slot 3 after another op was acknowledged slot 3: durability and real-time both break."""
    ops = clean_ops() + [Op("c7", 30, 0.0, 0.9, "ok", 3), Op("c8", 30, 0.95, 4.0, "ok", 3)]
    result = check(ops, clean_logs())
    assert sorted(v.property for v in result.violations) == [DURABILITY, REALTIME]
    (d,) = [v.details for v in result.violations if v.property == REALTIME]
    assert (d["before"]["client"], d["after"]["client"]) == ("c7", "c8")


def test_realtime_concurrent_ops_may_commit_in_any_order() -> None:
    ops = clean_ops()
    ops[0] = Op("c1", 10, 0.0, 2.1, "ok", 5)  # overlaps the op that got slot 1
    ops[5] = Op("c1", 60, 0.2, 2.5, "ok", 1)  # and the one that got slot 2
    logs = clean_logs()
    for n in (0, 1):
        logs[n][0], logs[n][4] = (1, 60), (5, 10)
    logs[2][0] = (1, 60)
    assert check(ops, logs).ok


def test_summary_lists_violations_and_truncates() -> None:
    logs = {0: [(s, s + 1000) for s in range(1, 61)]}
    result = check([], logs)
    assert len(result.violations) == 60
    text = result.summary(limit=5)
    assert text.startswith("FAIL: 60 violations (validity: 60) in 0 ops")
    assert text.splitlines()[1] == "  [validity] slot 1: value 1001 on nodes 0 was never proposed"
    assert text.splitlines()[-1] == "  ... and 55 more"


def test_result_json_round_trip() -> None:
    logs = clean_logs()
    logs[1][2] = (3, None)
    result = check(clean_ops(), logs)
    again = CheckResult.from_json(result.to_json())
    assert again == result and not again.ok
    assert json.loads(result.to_json())["ok"] is False


@pytest.mark.parametrize(
    "bad",
    [
        {"client": "c", "value": 1, "start": 0, "end": 1, "outcome": "ok"},  # ok without slot
        {"client": "c", "value": 1, "start": 0, "end": 1, "outcome": "maybe"},
        {"client": "c", "value": "1", "start": 0, "end": 1, "outcome": "fail"},
        {"client": "c", "value": 1, "start": 2, "end": 1, "outcome": "fail"},
        {"client": "c", "value": 1, "start": 0, "outcome": "fail"},
    ],
)
def test_malformed_ops_are_rejected(bad: dict) -> None:
    with pytest.raises(HistoryError):
        check([bad], {})


@pytest.mark.parametrize(
    "log", [[(2, 1), (1, 2)], [(1, 1), (1, 1)], [(0, 1)], [(1, "x")], [(1,)], [("1", 2)]]
)
def test_malformed_logs_are_rejected(log: list) -> None:
    with pytest.raises(HistoryError):
        check([], {0: log})


def test_history_records_from_threads_and_round_trips(tmp_path: Path) -> None:
    history = History()

    def client(name: str) -> None:
        for i in range(200):
            history.record(name, i, float(i), float(i) + 0.5, "ok" if i % 2 else "unknown", i + 1)

    threads = [threading.Thread(target=client, args=(f"c{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(history) == 800
    path = tmp_path / "ops.jsonl"
    history.dump(path)
    assert len(path.read_text().splitlines()) == 800
    assert sorted(load_ops(path), key=repr) == sorted(history.ops, key=repr)


def test_load_ops_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "ops.jsonl"
    good = json.dumps(clean_ops()[0].to_dict())
    path.write_text(f"{good}\n\n{good}\n{{not json\n")
    with pytest.raises(HistoryError, match=r"ops\.jsonl:4:"):
        load_ops(path)


def test_logs_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "logs.json"
    dump_logs(clean_logs(), path)
    assert load_logs(path) == clean_logs()
    path.write_text('{"0": [{"slot": 1, "value": 5}, {"slot": 2, "value": null}], "a": [[1, 5]]}')
    assert load_logs(path) == {0: [(1, 5), (2, None)], "a": [(1, 5)]}


# -- the command line ---------------------------------------------------------------------------


def write_history(tmp_path: Path, ops: list[Op], logs: dict) -> tuple[str, str]:
    history = History()
    for op in ops:
        history.add(op)
    history.dump(tmp_path / "ops.jsonl")
    dump_logs(logs, tmp_path / "logs.json")
    return str(tmp_path / "ops.jsonl"), str(tmp_path / "logs.json")


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ops, logs = write_history(tmp_path, clean_ops(), clean_logs())
    assert main(["--ops", ops, "--logs", logs]) == 0
    assert capsys.readouterr().out.startswith("OK: 6 ops")
    assert main(["--ops", ops, "--logs", logs, "--complete"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL: 1 violations (durability: 1)") and "nodes 2 lack" in out
    assert main(["--ops", ops, "--logs", logs, "--complete", "--json"]) == 1
    assert not CheckResult.from_json(capsys.readouterr().out).ok


def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ops, logs = write_history(tmp_path, clean_ops(), clean_logs())
    Path(logs).write_text('{"0": [[1, 10], [1, 10]]}')
    assert main(["--ops", ops, "--logs", logs]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: node 0: slot 1 after slot 1") and err.count("\n") == 1
    assert main(["--ops", str(tmp_path / "missing.jsonl"), "--logs", logs]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_cli_as_a_module(tmp_path: Path) -> None:
    ops, logs = write_history(tmp_path, clean_ops(), clean_logs())
    Path(logs).write_text("[")
    proc = subprocess.run(
        [sys.executable, "-m", "paxgos.check", "--ops", ops, "--logs", logs],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


# -- fetching logs from nodes -------------------------------------------------------------------


class StubNode(ThreadingHTTPServer):
    """Serves a node's paged JSON log, at most ``cap`` entries a page, as the real node does."""

    daemon_threads = True

    def __init__(self, node: int, log: list[tuple[int, int | None]], cap: int = 4) -> None:
        super().__init__(("127.0.0.1", 0), StubHandler)
        self.node, self.log, self.cap = node, log, cap
        self.requests: list[tuple[str, str | None]] = []
        self.next_override: Callable[[int], object] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class StubHandler(BaseHTTPRequestHandler):
    server: StubNode

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        stub = self.server
        stub.requests.append((self.path, self.headers.get("Accept")))
        query = parse_qs(urlparse(self.path).query)
        start = int(query["from"][0])
        limit = min(int(query["limit"][0]), stub.cap)
        entries = [{"slot": s, "value": v} for s, v in stub.log if start <= s < start + limit]
        last = stub.log[-1][0] if stub.log else 0
        nxt = start + limit if start + limit <= last else None
        if stub.next_override is not None:
            nxt = stub.next_override(start)
        body = {
            "node": stub.node,
            "commit_index": last,
            "from": start,
            "limit": limit,
            "entries": entries,
            "next": nxt,
        }
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def stub_nodes() -> Iterator[list[StubNode]]:
    full = [(s, None if s == 4 else s * 10) for s in range(1, 11)]
    stubs = [StubNode(0, full), StubNode(1, full[:9]), StubNode(2, [])]
    threads = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True) for s in stubs]
    for t in threads:
        t.start()
    try:
        yield stubs
    finally:
        for s in stubs:
            s.shutdown()
            s.server_close()
        for t in threads:
            t.join(timeout=5)


def test_fetch_log_pages_through_a_node(stub_nodes: list[StubNode]) -> None:
    node = stub_nodes[0]
    log = fetch_log(node.url + "/", page=1000, timeout=2.0)
    assert log == node.log
    assert [path for path, _ in node.requests] == [
        "/?from=1&limit=1000",
        "/?from=5&limit=1000",
        "/?from=9&limit=1000",
    ]
    assert {accept for _, accept in node.requests} == {"application/json"}


def test_fetch_logs_by_node_index(stub_nodes: list[StubNode]) -> None:
    logs = fetch_logs([s.url for s in stub_nodes], page=3, timeout=2.0)
    assert logs == {0: stub_nodes[0].log, 1: stub_nodes[1].log, 2: []}
    ops = [Op("c", s * 10, s, s + 0.5, "ok", s) for s in range(1, 11) if s != 4]
    assert check(ops, logs).ok
    result = check(ops, logs, require_complete=True)
    assert [v.details["missing"] for v in result.violations] == [[2]] * 8 + [[1, 2]]


def test_fetch_log_stops_a_node_that_does_not_move_forward(stub_nodes: list[StubNode]) -> None:
    node = stub_nodes[0]
    node.next_override = lambda start: 1
    with pytest.raises(FetchError, match="does not move"):
        fetch_log(node.url, timeout=2.0)
    node.next_override = lambda start: start + 1  # never the end: the page cap ends it
    with pytest.raises(FetchError, match="not finished after 3 pages"):
        fetch_log(node.url, timeout=2.0, max_pages=3)


def test_fetch_log_unreachable_node() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
    port = server.server_address[1]
    server.server_close()  # a port nobody listens on
    with pytest.raises(FetchError, match=f"127.0.0.1:{port}"):
        fetch_log(f"http://127.0.0.1:{port}", timeout=2.0)


def test_cli_fetches_live_nodes(
    stub_nodes: list[StubNode], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ops = [Op("c", s * 10, s, s + 0.5, "ok", s) for s in range(1, 11) if s != 4]
    ops_path, _ = write_history(tmp_path, ops, {})
    urls = ",".join(s.url for s in stub_nodes[:2])
    assert main(["--ops", ops_path, "--nodes", urls]) == 0
    assert capsys.readouterr().out == "OK: 9 ops (9 ok, 0 unknown, 0 fail), 2 nodes, 10 slots\n"


# -- scale --------------------------------------------------------------------------------------


def test_large_history_is_checked_quickly() -> None:
    n = 100_000
    ops = [Op(f"c{i % 50}", i, i * 1e-3, i * 1e-3 + 0.05, "ok", i + 1) for i in range(n)]
    ops += [Op("u", n + i, 0.0, 200.0, "unknown") for i in range(1000)]
    log = [(i + 1, i) for i in range(n)] + [(n + 1, None), (n + 2, n + 5)]
    logs = {k: list(log) for k in range(5)}
    logs[4] = log[: n // 2]  # a lagging node
    began = time.perf_counter()
    result = check(ops, logs)
    elapsed = time.perf_counter() - began
    assert result.ok, result.summary()
    assert result.stats["slots"] == n + 2
    assert elapsed < 10, f"check took {elapsed:.1f}s"
