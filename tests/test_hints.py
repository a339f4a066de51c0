"""What a user who lacks an optional dependency is told: one line naming what to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run ``python -m bench`` as if matplotlib were not installed: a ``None`` in ``sys.modules``
# makes ``importlib.util.find_spec`` report the module missing, as in an environment without it.
HIDE_AND_RUN = (
    "import runpy, sys; sys.modules['matplotlib'] = None; sys.argv = ['bench', '--quick']; "
    "runpy.run_module('bench', run_name='__main__')"
)


def test_bench_without_matplotlib_says_what_to_install() -> None:
    done = subprocess.run(
        [sys.executable, "-c", HIDE_AND_RUN], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr == (
        "python -m bench needs matplotlib: python -m pip install -e '.[bench]'\n"
    )
