"""The dashboard: a page that shows a running cluster's nodes and the protocol's messages, and
changes the real cluster (faults, kill -9, restart, proposals).

- ``paxgos.dashboard.watch``: the ``Watcher``, which polls every node (``/status``,
  ``/events`` with its latency histogram, the leader's latest entries) and builds one
  snapshot per tick;
- ``paxgos.dashboard.server``: the Tornado application that serves the page, pushes the
  snapshots over Server-Sent Events and carries out the page's actions; the supervisor
  (``paxgos.cluster``) runs it in a thread of its own, ``paxgos dashboard`` alone;
- ``static/``: the page itself (HTML, JavaScript, CSS; no external library, no CDN).

How to use it is in ``docs/dashboard.md``.
"""
