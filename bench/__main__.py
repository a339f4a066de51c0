"""``python -m bench``: the phased benchmark (``bench.run``); ``python -m bench --sweep [...]``:
the concurrency sweep against etcd (``bench/sweep.py``)."""

import importlib.util
import sys

# The benchmark draws its plots with matplotlib and loads the cluster with Locust (the [bench]
# extra): without them, say what to install instead of a ModuleNotFoundError traceback.
_missing = [m for m in ("matplotlib", "locust") if importlib.util.find_spec(m) is None]
if _missing:
    sys.exit(f"python -m bench needs {' and '.join(_missing)}: python -m pip install -e '.[bench]'")

if sys.argv[1:2] == ["--sweep"]:
    from bench.sweep import main as sweep

    sys.exit(sweep(sys.argv[2:]))

from bench.run import main  # noqa: E402

sys.exit(main())
