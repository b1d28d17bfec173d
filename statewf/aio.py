"""Async twins of synchronous methods: the same code, run off the event loop."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


def off_loop(
    method: Callable[Concatenate[S, P], R],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """An ``async`` twin of ``method`` that runs it in a worker thread.

    One code path serves sync and async callers, and the event loop never blocks on
    the database. Assign it in a class body: ``send_async = off_loop(send)``.
    """

    @functools.wraps(method)
    async def twin(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(method, self, *args, **kwargs)

    twin.__doc__ = f":meth:`{method.__name__}` without blocking the event loop."
    return twin
