"""How step calls and runs end, in stored form, and how step functions are called."""

from __future__ import annotations

import asyncio
import inspect
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel

from durable.authoring.current import StepInfo, enter_step, leave_step
from durable.errors import StepFailed, StepTimeout
from durable.execution.timing import sleep_until
from durable.log.codec import decode, import_model, return_model
from durable.log.records import RunError
from durable.log.replay import RecordedStep
from statewf.clock import Clock
from statewf.errors import StatewfError

_MAX_TRACEBACK = 4000


@dataclass(frozen=True)
class Outcome:
    """How an execution of a run ended."""

    kind: Literal["completed", "failed", "suspended", "stopped"]
    output: Any = None
    output_model: str | None = None
    error: RunError | None = None


def failure_of(recorded: RecordedStep, key: str, run_id: str) -> StepFailed:
    """The :class:`StepFailed` a replay raises again for a step the log records as failed."""
    assert recorded.error is not None
    return StepFailed(
        key,
        recorded.error.type,
        recorded.error.message,
        attempts=recorded.attempts,
        instance_id=run_id,
    )


def error_of(exc: BaseException, *, step: str | None = None, trace: bool = False) -> RunError:
    """The stored form of an exception."""
    details: dict[str, Any] = {}
    if isinstance(exc, StatewfError):
        details.update(
            {k: v for k, v in exc.details.items() if isinstance(v, str | int | float | bool)}
        )
        message = exc.message
    else:
        message = str(exc)
    if trace:
        text = "".join(traceback.format_exception(exc))
        details["traceback"] = text[-_MAX_TRACEBACK:]
    return RunError(type=type(exc).__name__, message=message, step=step, details=details)


def decode_result(
    data: Any, model_path: str | None, explicit: type[BaseModel] | None, fn: Callable[..., Any]
) -> Any:
    """A stored result as the step returns it: the same on the first run and on replay."""
    if explicit is None and model_path is not None and import_model(model_path) is None:
        explicit = return_model(fn)  # a model that cannot be imported by name
    return decode(data, model_path, explicit)


def timing(started: datetime, ended: datetime) -> dict[str, Any]:
    """The ``started_at`` and ``duration_ms`` of an attempt, for its log row."""
    return {
        "started_at": started.isoformat(),
        "duration_ms": round((ended - started).total_seconds() * 1000, 3),
    }


async def invoke(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Call a step function: awaited if async, in a thread if sync (its awaitable awaited)."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    result = await asyncio.to_thread(fn, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


def ignore_result(task: asyncio.Future[Any]) -> None:
    """Done-callback of an abandoned task: retrieve its exception so none is reported."""
    if not task.cancelled():
        task.exception()


async def call_once(
    clock: Clock,
    info: StepInfo,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    timeout: float | None,
) -> Any:
    """Call a step function once, within ``timeout`` seconds of ``clock`` time if given."""
    token = enter_step(info)
    try:
        if timeout is None:
            return await invoke(fn, args)
        work = asyncio.ensure_future(invoke(fn, args))
        timer = asyncio.ensure_future(sleep_until(clock, clock.now() + timedelta(seconds=timeout)))
        try:
            done, _ = await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            timer.cancel()
        if work in done:
            return work.result()
        work.cancel()
        work.add_done_callback(ignore_result)
        raise StepTimeout(
            f"step {info.key!r} attempt {info.attempt} did not finish within its "
            f"timeout of {timeout}s",
            instance_id=info.run_id,
        )
    finally:
        leave_step(token)
