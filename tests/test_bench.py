"""Smoke test of the benchmark: ``python -m bench --quick`` writes a sane report.

It checks that the run happened and was judged (ops recorded, every phase present, commits in
every phase, the history check OK, the report files written), not that it was fast: CI machines
are too noisy for performance bars.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

# Only look for Locust: importing it would monkey-patch this process with gevent (threads become
# greenlets), which breaks every later test that uses threads or multiprocessing.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (pip install -e '.[bench]')", allow_module_level=True)
pytest.importorskip("matplotlib")


from bench.run import main


def test_quick_benchmark_writes_a_sane_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    code = main(["--quick", "--out", str(out), "--seed", "7"])
    assert code == 0, (out / "report.md").read_text() if (out / "report.md").exists() else code

    for name in (
        "report.md", "report.html", "throughput.png", "latency_percentiles.png",
        "latency_cdf.png", "series.csv", "latency.csv.gz", "ops.jsonl.gz", "summary.json",
    ):  # fmt: skip
        assert (out / name).stat().st_size > 0, name

    summary = json.loads((out / "summary.json").read_text())
    assert summary["check"]["ok"], summary["check"]["summary"]
    names = ["healthy", "slowed", "stopped", "healed", "leader killed"]
    assert [p["name"] for p in summary["phases"]] == names
    for phase in summary["phases"]:
        assert phase["commits"] > 0 and phase["commits_per_s"] > 0, phase
        assert 0 < phase["latency_ms"]["p50"] <= phase["latency_ms"]["p99"], phase
        assert any(name.startswith("node 0") for name in phase["cpu_cores"]), phase
        assert "locust" in phase["cpu_cores"], phase
        assert 0 < phase["reference_ms"] < 1000, phase  # the host-speed probe ran in the phase
    actions = {e["action"] for e in summary["events"]}
    assert {"slow", "heal", "pause", "resume", "kill", "restart"} <= actions
    # The leader was killed (node 0 leads at start), another node took over, and the report
    # gives that failover's unavailability window.
    kill = next(e for e in summary["events"] if e["action"] == "kill")
    (failover,) = summary["failovers"]
    assert failover["node"] == kill["nodes"][0] and failover["first_commit"] > kill["t"]

    report = (out / "report.md").read_text()
    assert "History check" in report and "HISTORY CHECK FAILED" not in report
    assert "## Phase: slowed" in report and "## Phase: stopped" in report
    assert (
        "## Phase: leader killed" in report and "(the failover's unavailability window)" in report
    )
    assert "Host speed (a fixed probe" in report
    assert "<img src='throughput.png'" in (out / "report.html").read_text()
