"""Machinery for tests and benchmarks, not part of a node: real node processes on free ports
(``procs.LocalNodes``), Linux network namespaces for partitions (``netns``), the nemesis that
stops, slows and kills minorities (``nemesis``), a recording HTTP client whose answers the
history checker reads (``client``), and a plain HTTP request helper (``http``).

Nothing in ``paxgos.core``, ``paxgos.net``, ``paxgos.storage`` or the supervisor imports it.
"""
