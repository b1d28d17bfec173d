"""What workflow code sees: :class:`Context` (input, run id, ``step``, ``gather``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from dataclasses import replace
from typing import Any, Generic, Protocol, TypeVar, overload

from pydantic import BaseModel

from durable.authoring.current import credentials
from durable.authoring.logger import RunLogger
from durable.authoring.retry import RetryPolicy
from durable.authoring.signals import Abort, Stop, Suspend, WorkflowSignal
from durable.authoring.waits import MIN_POLL_INTERVAL, Approval, PollResult, TaskAnswer, WaitSpec
from durable.log.codec import encode
from durable.log.records import StepTimeline
from statewf.durations import DurationLike, InstantLike, parse_instant, to_seconds
from statewf.errors import InvalidInput

InputT = TypeVar("InputT")
T = TypeVar("T")


class StepRunner(Protocol):
    """What :class:`Steps` delegates to (the run's executor)."""

    def call_step(
        self,
        key: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        *,
        retries: int | None,
        retry_delay: DurationLike | None,
        retry: RetryPolicy | None,
        timeout: DurationLike | None,
        result_type: type[BaseModel] | None,
        transactional: bool,
    ) -> StepCall[Any]: ...

    def call_wait(self, key: str, spec: WaitSpec) -> StepCall[Any]: ...

    def replaying(self) -> bool:
        """Whether the code is still before the last step the log had recorded."""
        ...

    def patched(self, patch_id: str, *, deprecated: bool) -> bool:
        """The answer of ``ctx.patched`` (or ``ctx.deprecate_patch``) for this run."""
        ...

    def timeline(self) -> tuple[StepTimeline, ...]:
        """The steps finished so far, completed or failed, in position order."""
        ...


class StepCall(Generic[T]):
    """A step that was asked for: await it (alone or in :meth:`Context.gather`).

    The step's position in the run is fixed when ``ctx.step.run(...)`` is called,
    not when it is awaited, so parallel steps replay in a fixed order. The work
    starts on the first await; a step call that is never awaited does nothing.
    """

    def __init__(self, factory: Callable[[], Awaitable[T]]) -> None:
        self._factory = factory

    def __await__(self) -> Generator[Any, None, T]:
        return self._factory().__await__()


class Steps:
    """``ctx.step``: record steps in the run's log (``run``, ``transaction``)."""

    def __init__(self, runner: StepRunner) -> None:
        self._runner = runner

    @property
    def runner(self) -> StepRunner:
        """What records the steps (the run's executor)."""
        return self._runner

    @overload
    def run(
        self,
        key: str,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        retries: int | None = None,
        retry_delay: DurationLike | None = None,
        retry: RetryPolicy | None = None,
        timeout: DurationLike | None = None,
        result_type: type[BaseModel] | None = None,
    ) -> StepCall[T]: ...

    @overload
    def run(
        self,
        key: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        retries: int | None = None,
        retry_delay: DurationLike | None = None,
        retry: RetryPolicy | None = None,
        timeout: DurationLike | None = None,
        result_type: type[BaseModel] | None = None,
    ) -> StepCall[T]: ...

    def run(
        self,
        key: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        retries: int | None = None,
        retry_delay: DurationLike | None = None,
        retry: RetryPolicy | None = None,
        timeout: DurationLike | None = None,
        result_type: type[BaseModel] | None = None,
    ) -> StepCall[Any]:
        """Run ``fn(*args)`` once for this run and record its result under ``key``.

        On replay the recorded result is returned and ``fn`` is not called. ``fn``
        may be async or sync (sync functions run in a thread). The result must be
        JSON data or a pydantic model.

        Args:
            key: the step's name, unique within the run (``f"process-{item}"`` in loops).
            fn: the step function; inside it, :func:`durable.current_step` gives the
                attempt number and the step's idempotency key.
            *args: positional arguments for ``fn`` (use a lambda or
                ``functools.partial`` for keyword arguments).
            retries: retries after a failed attempt (default: the workflow's).
            retry_delay: delay before the first retry (default: the workflow's).
            retry: a full :class:`RetryPolicy` for this step.
            timeout: limit for one attempt; a slower attempt fails with
                :class:`~durable.StepTimeout` (and may be retried).
            result_type: the pydantic model to rebuild the result as (default: the
                function's return annotation, or the model it returned).

        Raises:
            StepFailed: the step failed for good; catch it to compensate.
        """
        return self._runner.call_step(
            key,
            fn,
            args,
            retries=retries,
            retry_delay=retry_delay,
            retry=retry,
            timeout=timeout,
            result_type=result_type,
            transactional=False,
        )

    def transaction(
        self,
        key: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        retries: int | None = None,
        retry_delay: DurationLike | None = None,
        retry: RetryPolicy | None = None,
        timeout: DurationLike | None = None,
        result_type: type[BaseModel] | None = None,
    ) -> StepCall[T]:
        """Run ``fn(conn, *args)`` in the same database transaction as the step's log row.

        ``conn`` is a SQLAlchemy ``Connection`` on statewf's database; whatever ``fn``
        writes with it commits together with the step's result, or not at all. So a
        transactional step's database effects happen exactly once. ``fn`` must be a
        plain (sync) function; it runs in a worker thread. On PostgreSQL ``timeout``
        becomes a ``statement_timeout``; SQLite cannot interrupt a statement.
        """
        return self._runner.call_step(
            key,
            fn,
            args,
            retries=retries,
            retry_delay=retry_delay,
            retry=retry,
            timeout=timeout,
            result_type=result_type,
            transactional=True,
        )

    # ------------------------------------------------------------ waiting

    def sleep(self, key: str, duration: DurationLike, /) -> StepCall[None]:
        """Wait for ``duration`` (``"30 days"``, ``{"hours": 2}``, seconds, timedelta).

        The run is suspended (status ``waiting``, nothing held in memory) and resumed
        by the engine's scheduler when the time comes, even after a restart.
        """
        seconds = to_seconds(duration, what=f"duration of sleep {key!r}")
        return self._runner.call_wait(key, WaitSpec("sleep", seconds=seconds))

    def wait_until(self, key: str, when: InstantLike, /) -> StepCall[None]:
        """Wait until ``when``: an aware datetime, an ISO 8601 string with an offset,
        a date (``"2027-01-01"`` or a ``date``: midnight UTC) or ``{"date": ...}``.

        A time in the past continues at once. Naive datetimes, and strings with a
        time but no offset, are rejected with :class:`~statewf.errors.InvalidInput`.
        """
        return self._runner.call_wait(key, WaitSpec("sleep", until=parse_instant(when)))

    def wait_for(
        self,
        key: str,
        /,
        *,
        event: str,
        timeout: DurationLike | None = None,
        schema: type[BaseModel] | None = None,
        timeout_value: Any = None,
    ) -> StepCall[Any]:
        """Wait for an event sent with ``engine.trigger_event(run_id, event, data)``.

        Returns the event's data (validated as ``schema`` when given), or
        ``timeout_value`` (default None) when ``timeout`` passes first; the log
        records the timeout, so a replay returns ``timeout_value`` again. Events that
        arrived before the wait are kept and the oldest one not yet consumed is taken.
        """
        if not isinstance(event, str) or not event:
            raise InvalidInput(f"wait_for {key!r}: event must be a non-empty string")
        seconds = to_seconds(timeout, what=f"timeout of wait {key!r}") if timeout else None
        spec = WaitSpec(
            "wait", seconds=seconds, event=event, schema=schema, timeout_value=timeout_value
        )
        return self._runner.call_wait(key, spec)

    def pause(self, key: str, /) -> StepCall[None]:
        """Pause the run here until ``engine.resume_workflow(run_id)`` is called."""
        return self._runner.call_wait(key, WaitSpec("pause"))

    def poll(
        self,
        key: str,
        fn: Callable[[], Any],
        /,
        *,
        interval: DurationLike = 30.0,
        timeout: DurationLike | None = None,
    ) -> StepCall[PollResult]:
        """Call ``fn`` every ``interval`` until it returns something truthy.

        Returns ``PollResult(timed_out=False, data=value)``, or
        ``PollResult(timed_out=True)`` once ``timeout`` has passed. Each check is
        recorded; between checks the run is suspended. The interval is at least
        one second.
        """
        every = to_seconds(interval, what=f"interval of poll {key!r}")
        if every < MIN_POLL_INTERVAL:
            raise InvalidInput(
                f"poll {key!r}: interval must be at least {MIN_POLL_INTERVAL:g}s, got {every:g}s"
            )
        seconds = to_seconds(timeout, what=f"timeout of poll {key!r}") if timeout else None
        spec = WaitSpec("poll", seconds=seconds, fn=fn, interval=every)
        return self._runner.call_wait(key, spec)

    def approval(
        self,
        key: str,
        /,
        *,
        prompt: str | None = None,
        context: Any = None,
        assignee: str | None = None,
        schema: type[BaseModel] | None = None,
        timeout: DurationLike | None = None,
    ) -> StepCall[Approval]:
        """Wait for ``approve(...)`` or ``reject(...)``; the decision.

        ``prompt``, ``context`` (JSON data) and ``assignee`` are stored with the wait,
        so whoever lists tasks (``client.tasks()``, ``statewf tasks``) sees what to
        decide on. With ``schema`` (a pydantic model), an approval must carry an
        answer that fits it (checked by any client: its JSON Schema is stored too),
        returned as ``Approval.answer``. Who decided, and why, is recorded in the log
        with the event. A rejection is an ``Approval`` with ``approved=False``; a
        timeout is ``approved=False`` with reason ``"timed out"``.
        """
        spec = self._task_spec(
            key, "approval", "answer", Approval, prompt, context, assignee, schema, timeout
        )
        call = self._runner.call_wait(key, spec)

        async def decided() -> Approval:
            result = await call
            return result if result is not None else Approval(approved=False, reason="timed out")

        return StepCall(decided)

    def human_task(
        self,
        key: str,
        /,
        *,
        prompt: str | None = None,
        context: Any = None,
        assignee: str | None = None,
        schema: type[BaseModel] | None = None,
        timeout: DurationLike | None = None,
        timeout_value: Any = None,
    ) -> StepCall[Any]:
        """Wait for a person to complete this task with ``complete_task(...)``; their data.

        Like :meth:`approval`, ``prompt``, ``context`` and ``assignee`` are stored
        with the wait and shown to whoever lists tasks; the data is checked against
        ``schema`` (and returned as an instance of it). The reviewer and comment are
        in the log. ``timeout_value`` is returned when ``timeout`` passes first.
        """
        spec = self._task_spec(
            key, "task", "data", TaskAnswer, prompt, context, assignee, schema, timeout
        )
        call = self._runner.call_wait(key, replace(spec, timeout_value=_TIMED_OUT))

        async def completed() -> Any:
            result = await call
            return timeout_value if result is _TIMED_OUT else result.data

        return StepCall(completed)

    def _task_spec(
        self,
        key: str,
        kind: str,
        field: str,
        envelope: type[BaseModel],
        prompt: str | None,
        context: Any,
        assignee: str | None,
        schema: type[BaseModel] | None,
        timeout: DurationLike | None,
    ) -> WaitSpec:
        what = f"{'approval' if kind == 'approval' else 'human task'} {key!r}"
        if prompt is not None and not isinstance(prompt, str):
            raise InvalidInput(f"{what}: prompt must be a string, got {prompt!r}")
        if assignee is not None and (not isinstance(assignee, str) or not assignee):
            raise InvalidInput(f"{what}: assignee must be a non-empty string, got {assignee!r}")
        if schema is not None and not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            raise InvalidInput(f"{what}: schema must be a pydantic model class, got {schema!r}")
        stored, _ = encode(context, what=f"context of {what}", max_bytes=_MAX_TASK_CONTEXT)
        seconds = to_seconds(timeout, what=f"timeout of {what}") if timeout else None
        task = {"type": kind, "prompt": prompt, "context": stored, "assignee": assignee}
        event = f"{'approval' if kind == 'approval' else 'task'}:{key}"
        return WaitSpec(
            "wait",
            seconds=seconds,
            event=event,
            schema=envelope,
            task=task,
            answer=schema,
            answer_field=field,
        )


#: the largest context a human task stores with its wait (JSON bytes)
_MAX_TASK_CONTEXT = 256 * 1024
#: what a timed-out human task's wait returns inside :meth:`Steps.human_task`
_TIMED_OUT = object()


class Context(Generic[InputT]):
    """What a workflow function receives: its input, its run id, and ``step``.

    ``Context[MyInput]`` types ``ctx.input`` as ``MyInput``.

    Attributes:
        input: the validated input (a model instance when the workflow has ``input=``).
        run_id: the run's id.
        workflow: the workflow's name.
        resource_id: the run's resource (tenant/owner) id, if any.
        step: record steps: ``await ctx.step.run("key", fn, *args)``.
        logger: a :class:`logging.LoggerAdapter` bound to the run (and, inside a
            step function, to the step); see :mod:`durable.authoring.logger`.
    """

    def __init__(
        self,
        *,
        input: InputT,
        run_id: str,
        workflow: str,
        resource_id: str | None,
        steps: Steps,
    ) -> None:
        self.input = input
        self.run_id = run_id
        self.workflow = workflow
        self.resource_id = resource_id
        self.step = steps
        self.logger = RunLogger(run_id, workflow, steps.runner.replaying)

    @property
    def credentials(self) -> Any:
        """The executing worker's credentials (see :func:`durable.credentials`)."""
        return credentials()

    @property
    def timeline(self) -> tuple[StepTimeline, ...]:
        """The steps finished so far (completed or failed), in position order.

        Only steps the code has already asked for, so a replay sees what the first
        execution saw. Read from the run's log as this execution loaded it plus the
        rows it wrote since: no database query. Each is a frozen
        :class:`~durable.StepTimeline` with its attempts and result.
        """
        return self.step.runner.timeline()

    def patched(self, patch_id: str) -> bool:
        """Whether this run takes the new branch of a code change named ``patch_id``.

        True for a run that reaches this point under the patched code, False for a
        run that had already passed it under code without the patch (its log holds
        later steps): ``if ctx.patched("x"): new code else: old code``. The answer
        is recorded in the run's log the first time, and every replay returns it.
        """
        return self.step.runner.patched(patch_id, deprecated=False)

    def deprecate_patch(self, patch_id: str) -> None:
        """Mark where ``ctx.patched(patch_id)`` was, once no run takes its old branch.

        Behaves as if always patched and records nothing; a run that recorded the
        patch's new branch replays on. A run that took the old branch fails with
        :class:`~durable.NonDeterminismError` naming the patch (``statewf runs list
        --patch ID`` lists them before you deploy).
        """
        self.step.runner.patched(patch_id, deprecated=True)

    def idempotency_key(self, step_key: str) -> str:
        """The idempotency key of step ``step_key`` of this run: ``"<run id>:<step key>"``."""
        return f"{self.run_id}:{step_key}"

    async def gather(self, *steps: Awaitable[Any]) -> list[Any]:
        """Await steps concurrently; results in argument order, whichever finishes first.

        Unlike ``asyncio.gather`` this waits for every step before raising, and
        raises the error of the *first argument* that failed (not the first to fail
        in time), so a replay raises the same error as the first execution.
        """
        tasks = [asyncio.ensure_future(s) for s in steps]
        if not tasks:
            return []
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        signals = [t.exception() for t in tasks if not t.cancelled()]
        for kind in (Abort, Stop, Suspend, WorkflowSignal):
            for exc in signals:
                if isinstance(exc, kind):
                    raise exc
        for task in tasks:
            if task.cancelled():
                raise asyncio.CancelledError()
            exc = task.exception()
            if exc is not None:
                raise exc
        return [t.result() for t in tasks]
