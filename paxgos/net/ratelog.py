"""Log lines that anyone on the network can provoke, at a bounded rate.

A refused forgery, a malformed answer or an exhausted file table may recur thousands of times a
second; one line each would fill the disk (a log flood is a denial of service of its own).
``RateLimitedLog`` writes the first occurrence of each kind at once, then at most one line per
``interval`` seconds per kind, saying how many were suppressed meanwhile.
"""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """At most one line per ``interval`` seconds for each ``kind`` of event."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0):
        self.logger = logger
        self.interval = interval
        #: kind -> (when its last line was written, occurrences suppressed since).
        self.kinds: dict[str, tuple[float, int]] = {}

    def warning(self, kind: str, message: str, *args: object) -> bool:
        """Log ``message % args`` under ``kind`` unless a line of that kind went out less than
        ``interval`` seconds ago; whether it was written."""
        now = time.monotonic()
        last, suppressed = self.kinds.get(kind, (-self.interval, 0))
        if now - last < self.interval:
            self.kinds[kind] = (last, suppressed + 1)
            return False
        if len(self.kinds) > 1000:  # kinds come from a fixed set; never let them grow unbounded
            self.kinds.clear()
        self.kinds[kind] = (now, 0)
        if suppressed:
            message += f" ({suppressed} more like it in the last {now - last:.0f}s)"
        self.logger.warning(message, *args)
        return True
