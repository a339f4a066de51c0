"""Paxgos benchmarks, a package of the checkout (not installed): ``python -m bench`` runs the
phased Locust benchmark (``bench.run``) and writes its report; the other modules with a ``main``
run as ``python -m bench.<name>`` (``bench.sweep``, ``bench.ab``, ``bench.failover``, ...)."""
