"""The history checker: what clients were told, checked against every node's log.

Shared by the integration and nemesis tests and by the benchmark. Clients record each proposal as
an :class:`Op` (``History.record``); after the run the nodes' logs are fetched (``fetch_logs``) and
:func:`check` reports every violation of agreement, validity, durability, uniqueness and real-time
order, naming the offending slots, nodes, values and operations.

Modules: ``model`` (ops, violations, results, their JSON forms), ``checker`` (the properties),
``record`` (the recorder and the file formats), ``fetch`` (logs from live nodes over HTTP) and
``__main__`` (the command line: ``python -m paxgos.check``).
"""

from paxgos.check.checker import PROPERTIES, check
from paxgos.check.fetch import FetchError, fetch_log, fetch_logs
from paxgos.check.model import (
    AGREEMENT,
    DURABILITY,
    FAIL,
    OK,
    OUTCOMES,
    REALTIME,
    UNIQUENESS,
    UNKNOWN,
    VALIDITY,
    CheckResult,
    HistoryError,
    Logs,
    Op,
    Violation,
)
from paxgos.check.record import History, dump_logs, dump_ops, load_logs, load_ops

__all__ = [
    "AGREEMENT",
    "DURABILITY",
    "FAIL",
    "OK",
    "OUTCOMES",
    "PROPERTIES",
    "REALTIME",
    "UNIQUENESS",
    "UNKNOWN",
    "VALIDITY",
    "CheckResult",
    "FetchError",
    "History",
    "HistoryError",
    "Logs",
    "Op",
    "Violation",
    "check",
    "dump_logs",
    "dump_ops",
    "fetch_log",
    "fetch_logs",
    "load_logs",
    "load_ops",
]
