"""Paxgos benchmarks. ``python -m bench`` runs the phased Locust benchmark (``bench.run``) and
writes its report; the other modules here are standalone scripts (``python bench/<name>.py``)."""
