"""The checker's command line: ``python -m paxgos.check --ops OPS.jsonl (--logs LOGS.json |
--nodes URL,URL,...) [--complete] [--json]``.

Prints the summary (or the result as JSON) and exits 0 when the history is correct, 1 when it
violates a property, 2 on bad input (a one-line error on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from paxgos.check.checker import check
from paxgos.check.fetch import fetch_logs
from paxgos.check.model import HistoryError
from paxgos.check.record import load_logs, load_ops

EXIT_OK, EXIT_VIOLATIONS, EXIT_BAD_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m paxgos.check",
        description="Check a Paxgos history: what clients were told against every node's log.",
    )
    p.add_argument("--ops", required=True, help="client operations, JSON Lines")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--logs", help="node logs, JSON: {node id: [[slot, value], ...]}")
    source.add_argument(
        "--nodes", help="comma-separated node base URLs to fetch the logs from (node i = URL i)"
    )
    p.add_argument(
        "--complete",
        action="store_true",
        help="every node's log must hold every acknowledged slot (after convergence)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--page", type=int, default=10000, help="entries per request with --nodes")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per request with --nodes")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        ops = load_ops(args.ops)
        if args.logs is not None:
            logs = load_logs(args.logs)
        else:
            urls = [u.strip() for u in args.nodes.split(",") if u.strip()]
            if not urls:
                raise HistoryError("--nodes needs at least one URL")
            logs = fetch_logs(urls, page=max(1, args.page), timeout=args.timeout)
        result = check(ops, logs, require_complete=args.complete)
    except (HistoryError, OSError) as e:  # FetchError is a HistoryError
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(result.to_json(indent=2) if args.json else result.summary())
    return EXIT_OK if result.ok else EXIT_VIOLATIONS


if __name__ == "__main__":
    sys.exit(main())
