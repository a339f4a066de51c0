"""Paxgos: a Multi-Paxos replicated log of 64-bit integers, served by Tornado nodes over HTTP."""

__version__ = "0.1.0"
