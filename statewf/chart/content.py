"""Whether a state's hooks hold statechart content, which makes its machine a statechart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def uses_content(state: Any) -> bool:
    """True if a hook of ``state`` is statechart content (Raise, Send, Cancel, Log, In)."""
    refs: list[Any] = [state.on_enter, state.on_exit]
    options: list[Any] = [*state.after.values(), state.on_timeout]
    for spec in state.on.values() if isinstance(state.on, Mapping) else ():
        options.extend(spec if isinstance(spec, Sequence) and not isinstance(spec, str) else [spec])
    for option in options:
        if hasattr(option, "guards") and hasattr(option, "actions"):  # a Transition
            refs.extend((option.guards, option.unless, option.actions))
    for ref in refs:
        items = ref if isinstance(ref, Sequence) and not isinstance(ref, str) else [ref]
        if any(hasattr(item, "_statewf_content") for item in items):
            return True
    return False
