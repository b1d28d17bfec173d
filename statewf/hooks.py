"""Hooks: guards, actions and effects, and the registry data files name them from.

A hook is given as a callable, an :class:`Effect`, or a name looked up in a
:class:`Registry`; :class:`~statewf.spec.Machine` resolves each to a :class:`Hook`,
which keeps a stable name so definitions can be stored and drawn without running code.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from statewf.errors import SpecError
from statewf.lambdas import lambda_source


class Effect:
    """An outside-world action: recorded in the outbox with the transition, run after commit."""

    def __init__(self, fn: Callable[[Any], Any], name: str | None = None) -> None:
        self.fn = fn
        # effects keep their qualified name: outbox rows are dispatched by it
        self.name = name or _qualified_name(fn)

    def __call__(self, call: Any) -> Any:
        """Call the wrapped function with an :class:`~statewf.records.EffectCall`."""
        return self.fn(call)

    def __repr__(self) -> str:
        return f"Effect({self.name!r})"


def effect(fn: Callable[[Any], Any] | None = None, *, name: str | None = None) -> Any:
    """Mark a function as an effect: dispatched after commit from the outbox, at least once."""
    if fn is None:
        return lambda f: effect(f, name=name)
    return Effect(fn, name)


#: Why a guard cannot be async (in the errors for one that is).
ASYNC_GUARD_REASON = (
    "guards must be synchronous and pure: the engine evaluates them while it picks a "
    "transition, before anything is committed, possibly several times (every candidate "
    "of a statechart, again when a concurrent write makes it retry), so a guard cannot "
    "wait on I/O. Fetch what it needs first and pass it in the event payload, or do the "
    "awaiting in an async action or effect"
)


def guard_problem(hook: Hook, where: str) -> str | None:
    """Why ``hook`` cannot be a guard (an effect, an async function), or None."""
    if hook.is_effect:
        return f"{where}: effect {hook.name!r} cannot be a guard"
    if inspect.iscoroutinefunction(hook.fn):
        return f"{where}: {hook.name!r} is an async function; {ASYNC_GUARD_REASON}"
    return None


@dataclass(frozen=True)
class Hook:
    """A resolved guard, action or effect: its stable name and the code to run."""

    name: str
    fn: Callable[..., Any]
    is_effect: bool = False


class Registry:
    """Named guards, actions and effects that data-file machines refer to by name."""

    def __init__(self) -> None:
        self._hooks: dict[str, Hook] = {}
        self._models: dict[str, type[BaseModel]] = {}

    def model(self, cls: type[BaseModel]) -> type[BaseModel]:
        """Decorator: register a pydantic model (context or payload schema) by class name."""
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            raise SpecError(f"registry.model takes a pydantic BaseModel class, got {cls!r}")
        if cls.__name__ in self._models:
            raise SpecError(f"registry already has a model named {cls.__name__!r}")
        self._models[cls.__name__] = cls
        return cls

    def get_model(self, name: str) -> type[BaseModel] | None:
        """The model registered under ``name``, or None."""
        return self._models.get(name)

    def model_names(self) -> list[str]:
        """Every registered model name, sorted."""
        return sorted(self._models)

    def add(self, name: str, fn: Callable[..., Any] | Effect) -> None:
        """Register ``fn`` under ``name``; a second registration of the name is an error."""
        if name in self._hooks:
            raise SpecError(
                f"registry already has a hook named {name!r}; pick another name",
                hook=name,
            )
        if isinstance(fn, Effect):
            self._hooks[name] = Hook(name, fn.fn, is_effect=True)
        else:
            self._hooks[name] = Hook(name, fn)

    def add_all(self, *hooks: Callable[..., Any] | Effect | type[BaseModel]) -> None:
        """Register functions, effects and models under their own names."""
        for hook in hooks:
            if isinstance(hook, type) and issubclass(hook, BaseModel):
                self.model(hook)
            elif isinstance(hook, Effect):
                self.add(hook.name, hook)
            else:
                self.add(_qualified_name(hook), hook)

    def guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: register a guard under its function name."""
        self.add(fn.__name__, fn)
        return fn

    def action(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: register a transition/entry/exit action under its function name."""
        self.add(fn.__name__, fn)
        return fn

    def effect(self, fn: Callable[..., Any]) -> Effect:
        """Decorator: register an outbox effect under its function name."""
        wrapped = Effect(fn)
        self.add(fn.__name__, wrapped)
        return wrapped

    def get(self, name: str) -> Hook | None:
        """The hook registered under ``name``, or None."""
        return self._hooks.get(name)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._hooks)


def _callable_name(fn: Any) -> str:
    """A hook's name: its qualified name, or for a lambda the lambda's source text."""
    return lambda_source(fn) or _qualified_name(fn)


def _qualified_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return str(name) if name else type(fn).__name__


def earlier_name(fn: Any) -> str | None:
    """The name releases before lambda labels gave ``fn`` (``<lambda>``), if it differs."""
    earlier = _qualified_name(fn)
    return earlier if earlier != _callable_name(fn) else None


def _as_list(refs: Any) -> list[Any]:
    if refs is None:
        return []
    if isinstance(refs, str | Effect) or callable(refs) or hasattr(refs, "_statewf_content"):
        return [refs]
    if isinstance(refs, Sequence):
        return list(refs)
    raise SpecError(f"expected a callable, a name or a list of them, got {refs!r}")
