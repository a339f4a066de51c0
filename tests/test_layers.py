"""The layering rule, as imports: the pure parts of Paxgos load without tornado (or asyncio),
and nothing that runs a node imports the test machinery in ``paxgos.testing``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Make ``import tornado`` (and asyncio, for the core) fail in a fresh interpreter, then import.
BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError(f'blocked: {{name}}')
sys.meta_path.insert(0, Block())
import {modules}
"""


def imports_without(blocked: set[str], modules: list[str]) -> subprocess.CompletedProcess[str]:
    code = BLOCK.format(blocked=blocked, modules=", ".join(modules))
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_the_core_imports_without_tornado_or_asyncio() -> None:
    done = imports_without({"tornado", "asyncio"}, ["paxgos.core", "paxgos.core.release"])
    assert done.returncode == 0, done.stderr


def test_the_simulator_checker_and_storage_import_without_tornado() -> None:
    done = imports_without({"tornado"}, ["paxgos.sim", "paxgos.check", "paxgos.storage"])
    assert done.returncode == 0, done.stderr


def test_a_node_does_not_import_the_test_machinery() -> None:
    code = (
        "import sys, paxgos.cli, paxgos.cluster, paxgos.net.server; "
        "print(sorted(m for m in sys.modules if m.startswith('paxgos.testing')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout == "[]\n", (done.stdout, done.stderr)
