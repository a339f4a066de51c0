"""The layering rule of docs/architecture.md, as imports, each in a fresh interpreter in which
the imports a layer may not make fail: the core loads without the shell (tornado, asyncio,
sockets, SQLite), the simulator, the history checker and the stores without tornado, the core's
tests run without tornado installed, and nothing that runs a node loads ``paxgos.testing``.
And no two modules import each other, however indirectly (``TYPE_CHECKING`` and function-level
imports included: a cycle is a design fault even when Python can load it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Makes every import of a blocked name (or of a module under it) fail, then runs ``code``.
BLOCKED = """
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in {blocked!r}):
            raise ImportError(f"blocked: {{name}}")

sys.meta_path.insert(0, Blocked())
{code}
"""


def run_without(blocked: set[str], code: str) -> subprocess.CompletedProcess[str]:
    script = BLOCKED.format(blocked=sorted(blocked), code=code)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_the_core_imports_nothing_of_the_shell() -> None:
    shell = {"tornado", "asyncio", "socket", "sqlite3", "paxgos.net", "paxgos.storage"}
    done = run_without(shell, "import paxgos.core, paxgos.core.release")
    assert done.returncode == 0, done.stderr


def test_the_simulator_checker_and_stores_import_without_tornado() -> None:
    done = run_without({"tornado"}, "import paxgos.sim, paxgos.check, paxgos.storage")
    assert done.returncode == 0, done.stderr


def test_the_core_tests_collect_without_tornado() -> None:
    """``pytest tests/test_core.py`` (and the other pure tests) on a machine without tornado:
    neither they nor ``conftest.py`` may import it."""
    pure = ["test_core.py", "test_sim.py", "test_release.py", "test_messages.py", "test_check.py"]
    args = ["--collect-only", "-q", "-p", "no:cacheprovider", *(f"tests/{t}" for t in pure)]
    done = run_without({"tornado"}, f"import pytest; sys.exit(pytest.main({args!r}))")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


#: Imports every module of Paxgos outside ``paxgos.testing`` (``__main__`` modules would run).
EVERY_MODULE = """
import importlib, pkgutil, paxgos
for module in pkgutil.walk_packages(paxgos.__path__, "paxgos."):
    if not module.name.startswith("paxgos.testing") and not module.name.endswith("__main__"):
        importlib.import_module(module.name)
"""


def test_nothing_outside_the_test_machinery_imports_it() -> None:
    done = run_without({"paxgos.testing"}, EVERY_MODULE)
    assert done.returncode == 0, done.stderr


def import_graph() -> dict[str, set[str]]:
    """Every module of ``paxgos`` and the modules of ``paxgos`` it imports, anywhere in it."""
    files = {}
    for path in (ROOT / "paxgos").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:  # a module of a package, or a name in one
                    module = f"{node.module}.{alias.name}"
                    imported.add(module if module in files else node.module)
        graph[name] = {m for m in imported if m in files and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import one another (Tarjan's strongly connected
    components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = [stack.pop()]
            while group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "paxgos.net.transport" in graph and "paxgos.core" in graph["paxgos.net.host"]
    assert cycles(graph) == []
