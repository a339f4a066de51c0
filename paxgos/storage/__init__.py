"""Durable node state behind one interface (``Store``): SQLite by default, memory for demos."""

from paxgos.storage.base import StorageError, Store
from paxgos.storage.memory import MemoryStore
from paxgos.storage.sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "StorageError", "Store"]
