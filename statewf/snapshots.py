"""A bounded, thread-safe cache of the snapshots an engine last read or wrote.

Only the fast path of ``send`` (PostgreSQL, SQLite) reads it, and only to *decide*: the write
that follows is conditional on the instance still being at the cached version, so a
stale entry can cost a retry, never a wrong write. Reads (``get``, ``history``) never
use it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import pydantic_core

from statewf.fold import updated
from statewf.records import Instance


class SnapshotCache:
    """Least-recently-used snapshots by instance id; ``size=0`` disables it."""

    def __init__(self, size: int, max_context_bytes: int = 64 * 1024) -> None:
        self.size = size
        self.max_context_bytes = max_context_bytes
        self._items: OrderedDict[str, Instance] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, instance_id: str) -> Instance | None:
        """The cached snapshot, if any (the engine only reads it, to decide)."""
        with self._lock:
            found = self._items.get(instance_id)
            if found is not None:
                self._items.move_to_end(instance_id)
            return found

    def put(self, snapshot: Instance) -> None:
        """Remember a private copy of a snapshot known to be current.

        The copy matters: callers get the snapshot itself and may change its context
        (it is a plain dict); the cache must not see that. Contexts over
        ``max_context_bytes`` are not cached.
        """
        if self.size <= 0:
            return
        context = snapshot.context
        if context or self.max_context_bytes < 2:  # "{}" is two bytes
            encoded = pydantic_core.to_json(context)
            if len(encoded) > self.max_context_bytes:
                self.drop(snapshot.id)
                return
            # contexts are JSON data: decoding the encoding is an exact, fast deep copy
            snapshot = updated(snapshot, {"context": pydantic_core.from_json(encoded)})
        else:  # an empty one's copy is a new empty dict
            snapshot = updated(snapshot, {"context": {}})
        with self._lock:
            known = self._items.get(snapshot.id)
            if known is not None and known.version > snapshot.version:
                return
            self._items[snapshot.id] = snapshot
            self._items.move_to_end(snapshot.id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def drop(self, instance_id: str) -> None:
        """Forget an instance (after a lost race)."""
        with self._lock:
            self._items.pop(instance_id, None)
