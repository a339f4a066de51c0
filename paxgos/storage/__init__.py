"""Durable node state behind one interface (``Store``): SQLite by default, memory for demos."""

from paxgos.storage.base import StorageError, Store
from paxgos.storage.memory import MemoryStore

__all__ = ["MemoryStore", "StorageError", "Store"]
