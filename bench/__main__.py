"""``python -m bench``: the phased benchmark (``bench.run``); ``python -m bench --sweep [...]``:
the concurrency sweep against etcd (``bench/sweep.py``)."""

import sys

if sys.argv[1:2] == ["--sweep"]:
    from bench.sweep import main as sweep

    sys.exit(sweep(sys.argv[2:]))

from bench.run import main  # noqa: E402

sys.exit(main())
