"""Engines to close when the current test ends (one list, however this module is reached).

Test modules import helpers as ``tests.conftest``, a second copy of the module that
pytest loaded as ``conftest``; state kept here, imported as ``tests.tracking`` by
both, exists once.
"""

from __future__ import annotations

from typing import Any

_tracked: list[Any] = []


def tracked(engine: Any) -> Any:
    """Close ``engine`` (a statewf Engine) when the current test ends; returns it."""
    _tracked.append(engine)
    return engine


def close_tracked() -> None:
    """Close every engine tracked so far."""
    while _tracked:
        _tracked.pop().close()
