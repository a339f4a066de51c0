"""Smoke test of the concurrency sweep (``bench/sweep.py``, ``bench/etcd.py``, ``bench/put.lua``).

The pieces without processes (wrk's output parsed, the report written from made-up results)
always run; a one-point, one-second sweep of a 3-node Paxgos cluster needs wrk; the etcd
cluster and its wrk script need etcd too, and are skipped with the reason when it is missing.
They check that the sweep works, not how fast anything is.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib")


from bench import sweep
from bench.etcd import INSTALL_HINT, EtcdCluster, etcd_binary

needs_wrk = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
needs_etcd = pytest.mark.skipif(etcd_binary() is None, reason=INSTALL_HINT)

WRK_OUTPUT = """\
Running 8s test @ http://127.0.0.1:40000/propose/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     8.51ms    2.10ms  41.00ms   80.00%
    Req/Sec     7.50k   300.00     8.00k    70.00%
  Latency Distribution
     50%    8.20ms
     75%    9.10ms
     90%   10.50ms
     99%    1.02s
  60000 requests in 8.00s, 5.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 400
Requests/sec:   7500.00
Transfer/sec:    640.00KB
"""


def test_wrk_output_is_parsed_counting_2xx_only() -> None:
    r = sweep.parse_wrk(WRK_OUTPUT)
    assert r["requests"] == 60000 and r["seconds"] == 8.0 and r["non_2xx"] == 400
    assert r["ok"] == 59600 and r["ok_per_s"] == pytest.approx(7450.0)
    assert r["p50_ms"] == 8.2 and r["p90_ms"] == 10.5 and r["p99_ms"] == 1020.0
    assert r["socket_errors"] == {"connect": 0, "read": 3, "write": 0, "timeout": 2}
    clean = sweep.parse_wrk(WRK_OUTPUT.replace("  Non-2xx or 3xx responses: 400\n", ""))
    assert clean["ok"] == 60000
    assert sweep.to_ms("512.00us") == pytest.approx(0.512) and math.isnan(sweep.to_ms("?"))
    with pytest.raises(RuntimeError):
        sweep.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_points_are_checked() -> None:
    assert sweep.parse_args(["--points", "1,4,1024"]).points == [1, 4, 1024]
    assert sweep.parse_args([]).points == [1, 4, 16, 64, 256, 1024]
    for bad in ("0", "1,x", str(sweep.MAX_CONNECTIONS + 1)):
        with pytest.raises(SystemExit):
            sweep.parse_args(["--points", bad])


def made_up(point: int, connections: int, system: str, ok_per_s: float) -> dict[str, Any]:
    names = ["node 0", "node 1"] if system == "paxgos" else ["member 0", "member 1"]
    return {
        "point": point, "connections": connections, "system": system, "order": 0,
        "ok_per_s": ok_per_s, "requests_per_s": ok_per_s, "requests": 100, "ok": 100,
        "non_2xx": 1 if connections > 1 else 0,
        "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0},
        "p50_ms": 1.0 * connections, "p90_ms": 2.0 * connections, "p99_ms": 3.0 * connections,
        "leader": 0, "leader_after": 0, "leader_counted_per_s": math.nan,
        "cores": {names[0]: 0.9, names[1]: 0.1, "wrk": 0.05}, "machine_cores": 1.9,
        "outside_cores": 0.85, "busiest": names[0], "busiest_cores": 0.9,
        "duration_s": 1, "warmup_s": 0, "elapsed_s": 1.0,
    }  # fmt: skip


def test_report_directory_from_made_up_results(tmp_path: Path) -> None:
    results = [
        made_up(0, 1, "paxgos", 100.0),
        made_up(0, 1, "etcd", 400.0),
        made_up(1, 64, "etcd", 1000.0),
        made_up(1, 64, "paxgos", 2000.0),
    ]
    host = sweep.host_info(["--points", "1,64"], etcd=False, fd_limit=1024)
    assert host["cpu_count"] == os.cpu_count() and host["python"] and host["tornado"]
    sweep.write_report(tmp_path, results, host, nodes=2)
    for name in ("sweep.json", "sweep.csv", "throughput.png", "latency.png", "README.md"):
        assert (tmp_path / name).stat().st_size > 0, name
    raw = json.loads((tmp_path / "sweep.json").read_text(), parse_constant=pytest.fail)
    assert raw["results"][0]["leader_counted_per_s"] is None  # NaN written as null
    assert raw["host"]["command"].startswith("python -m bench.sweep")
    readme = (tmp_path / "README.md").read_text()
    assert "| 1 | 100 | 400 | 0.25x | 3.0 / 3.0 |" in readme
    assert "| 64 | 2,000 | 1,000 | 2.00x | 192.0 / 192.0 |" in readme
    assert "node 0 (leader) 0.90 (saturated)" in readme
    assert "at 1 of 2 points (missed at N = 1)" in readme
    assert "Caution:" in readme and "| 64 | paxgos | 1 |" in readme  # the errors table
    lines = (tmp_path / "sweep.csv").read_text().splitlines()
    assert len(lines) == 5 and "cores member 0" in lines[0]

    sweep.write_report(tmp_path / "alone", [results[0], results[3]], host, nodes=2)
    assert "apt-get install etcd-server" in (tmp_path / "alone" / "README.md").read_text()


def test_rounds_are_averaged_and_counted(tmp_path: Path) -> None:
    """With ``--rounds`` the table gives each point's mean throughput, median latencies and
    the rounds Paxgos led."""
    results = [
        {**made_up(0, 1, "paxgos", 100.0), "round": 0},
        {**made_up(0, 1, "etcd", 200.0), "round": 0, "p99_ms": 5.0},
        {**made_up(0, 1, "etcd", 150.0), "round": 1, "p99_ms": 1.0},
        {**made_up(0, 1, "paxgos", 300.0), "round": 1, "p99_ms": 2.0},
        {**made_up(0, 1, "paxgos", 200.0), "round": 2, "p99_ms": 900.0},
        {**made_up(0, 1, "etcd", 175.0), "round": 2, "p99_ms": 4.0},
    ]
    host = sweep.host_info(["--rounds", "3"], etcd=True, fd_limit=1024)
    sweep.write_report(tmp_path, results, host, nodes=2)
    readme = (tmp_path / "README.md").read_text()
    assert "| 1 | 200 | 175 | 1.14x | 2 of 3 | 3.0 / 4.0 |" in readme
    assert "means of 3 rounds, latencies their medians" in readme
    assert "(the rounds' mean throughput, their median p99), at 1 of 1 points." in readme
    assert "| 1 | paxgos, round 3 |" in readme  # every run in the CPU table, named
    nan_round = {**made_up(0, 1, "etcd", 100.0), "round": 3, "p99_ms": math.nan}
    again = sweep.by_point([*results, nan_round])[0]["etcd"]
    assert again["p99_ms"] == 4.0 and again["ok_per_s"] == pytest.approx(156.25)
    assert sweep.ahead(sweep.by_point(results)[0]["paxgos"], again) == (2, 3)
    assert len((tmp_path / "sweep.csv").read_text().splitlines()) == 7  # every run
    assert sweep.parse_args(["--rounds", "3"]).rounds == 3
    for bad in ("0", "21"):
        with pytest.raises(SystemExit):
            sweep.parse_args(["--rounds", bad])


@needs_wrk
def test_a_short_sweep_of_paxgos_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sweep, "etcd_binary", lambda: None)  # as on a host without etcd
    out = tmp_path / "report"
    args = ["--points", "2", "--duration", "1", "--warmup", "0", "--nodes", "3", "--out", str(out)]
    assert sweep.main(args) == 0
    assert "apt-get install etcd-server" in capsys.readouterr().out
    raw = json.loads((out / "sweep.json").read_text())
    (r,) = raw["results"]
    assert r["system"] == "paxgos" and r["connections"] == 2
    assert r["ok"] > 0 and r["non_2xx"] == 0 and r["p50_ms"] > 0
    assert set(r["cores"]) == {"node 0", "node 1", "node 2", "wrk"}
    assert raw["host"]["etcd"] is None
    assert (out / "throughput.png").stat().st_size > 0


@needs_wrk
@needs_etcd
def test_etcd_cluster_takes_the_put_script_and_leaves_nothing_behind(tmp_path: Path) -> None:
    with EtcdCluster(3, tmp_path) as cluster:
        cluster.start()
        leader = cluster.leader()
        pids = list(cluster.pids.values())
        assert len(pids) == 3
        target = sweep.EtcdTarget(cluster)
        r = sweep.measure(target, connections=2, duration=1, warmup=0, tag="smoke")
        assert r["ok"] > 0 and r["non_2xx"] == 0, r  # the gateway took every key and value
        assert set(r["cores"]) == {"member 0", "member 1", "member 2", "wrk"}
        assert r["leader_counted_per_s"] > 0  # one revision per put
        assert cluster.count_prefix(leader, "sweep/smoke/") >= r["ok"]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
