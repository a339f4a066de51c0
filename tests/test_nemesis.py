"""Nemesis tests: random SIGSTOP/SIGCONT, slow nodes and kill -9 restarts of a minority (the
leader included) under concurrent clients, then the history checker on every node's log.

The quick variant runs in the default suite; the long one is ``pytest -m slow``.  A failing run
names its directory, which holds ops.jsonl, logs.json, nemesis.log and every node's log.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from paxgos.testing.nemesis import run_nemesis

SEED = int(os.environ.get("PAXGOS_NEMESIS_SEED", "1"))


def test_nemesis_quick(tmp_path: Path) -> None:
    result = run_nemesis(tmp_path, seed=SEED, duration=12.0)
    assert result.ok, f"{result.summary()}\n(history and logs in {tmp_path})"
    assert result.stats["ok"] > 50, result.summary()


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(SEED, SEED + 3))
def test_nemesis_long(tmp_path: Path, seed: int) -> None:
    result = run_nemesis(tmp_path, seed=seed, duration=120.0)
    assert result.ok, f"{result.summary()}\n(history and logs in {tmp_path})"
