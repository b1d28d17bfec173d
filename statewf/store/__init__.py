"""Persistence: the only package that imports SQLAlchemy and the database drivers."""

from statewf.store.sql import DatabaseEngine, SqlStore, Tx

__all__ = ["DatabaseEngine", "SqlStore", "Tx"]
