"""Async twins of synchronous methods, and async hooks run from synchronous engine code.

One code path serves sync and async callers: a twin runs the sync method in a worker
thread, so the event loop never blocks on the database. An ``async def`` action,
entry/exit hook or effect returns a coroutine inside that thread; :func:`wait_for_hook`
runs it to completion on the caller's event loop (the loop that awaited the twin), so
it shares the application's loop-bound clients, and the engine goes on only once it
has finished: the decision, and with it the commit, still waits for every hook.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from typing import Any, Concatenate, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")
T = TypeVar("T")

#: The event loop of the ``*_async`` call that this thread is working for, if any.
_caller_loop: ContextVar[asyncio.AbstractEventLoop | None] = ContextVar(
    "statewf_caller_loop", default=None
)


def off_loop(
    method: Callable[Concatenate[S, P], R],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """An ``async`` twin of ``method`` that runs it in a worker thread.

    One code path serves sync and async callers, and the event loop never blocks on
    the database. Assign it in a class body: ``send_async = off_loop(send)``. Async
    hooks that the method reaches run on the loop that awaits the twin.
    """

    @functools.wraps(method)
    async def twin(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        # Set in this task's context, which to_thread copies into the worker thread.
        token = _caller_loop.set(asyncio.get_running_loop())
        try:
            return await asyncio.to_thread(method, self, *args, **kwargs)
        finally:
            _caller_loop.reset(token)

    twin.__doc__ = f":meth:`{method.__name__}` without blocking the event loop."
    return twin


async def _awaited(value: Awaitable[T]) -> T:
    return await value


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def wait_for_hook(value: Awaitable[T], *, what: str) -> T:
    """Run an async hook's awaitable to completion from synchronous engine code.

    Under an ``*_async`` call it runs on the caller's loop; from plain synchronous
    code (a script, a timer thread, a worker) on a private loop. From synchronous
    engine code called *on* a running loop it cannot wait without blocking that loop:
    it raises :class:`RuntimeError` telling the caller to use the ``*_async`` method.
    """
    if _running_loop() is not None:
        if asyncio.iscoroutine(value):
            value.close()
        raise RuntimeError(
            f"{what} is async, and the engine was called synchronously from inside a "
            "running event loop, which it cannot block; await the *_async method "
            "instead (engine.send_async, engine.create_async, "
            "engine.dispatch_effects_async)"
        )
    caller = _caller_loop.get()
    if caller is not None and caller.is_running():
        return asyncio.run_coroutine_threadsafe(_awaited(value), caller).result()
    return asyncio.run(_awaited(value))
