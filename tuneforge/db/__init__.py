"""Persistence: the tables and the one module that holds tuneforge's SQL."""

from tuneforge.db.store import Store

__all__ = ["Store"]
