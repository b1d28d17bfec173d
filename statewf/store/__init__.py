"""Persistence: the only package that imports SQLAlchemy and the database drivers."""

from statewf.store.sql import SqlStore, Tx

__all__ = ["SqlStore", "Tx"]
