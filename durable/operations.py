"""Operations on finished runs: dead letters, retry from the failed step, discard, fork."""

from __future__ import annotations

from durable.writer import RunHost


class RunOperations:
    """Dead-letter and repair operations of an engine or client (a mixin)."""

    host: RunHost
