"""The Sagewai style: a linear pipeline of decorated steps, each fed the previous output.

A :class:`Pipeline` is a thin layer that builds an ordinary :class:`Workflow`, so
its runs are the same runs, in the same log, with the same engine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from durable.authoring.context import Context
from durable.authoring.retry import RetryPolicy, make_policy
from durable.authoring.workflow import Workflow, check_name
from durable.errors import ApprovalRejected, RunNotFound, WorkflowDefinitionError
from durable.log.codec import return_model
from durable.log.plan import StepPlan
from durable.log.records import WorkflowRun
from statewf.durations import DurationLike


class PipelineEngine(Protocol):
    """What :meth:`Pipeline.run` needs of a :class:`~durable.WorkflowEngine`."""

    async def get_run(self, run_id: str) -> WorkflowRun:
        """The run ``run_id``."""

    async def resume(self, run_id: str) -> WorkflowRun:
        """Execute run ``run_id`` to its end here."""

    async def result(self, run_id: str) -> Any:
        """The output of run ``run_id``, once finished."""

    async def start_workflow(
        self, workflow: Pipeline, input: Any = None, *, run_id: str | None = None
    ) -> WorkflowRun:
        """Start a run of ``workflow``."""


F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class PipelineStep:
    """One step of a pipeline and its options."""

    name: str
    fn: Callable[..., Any]
    retries: int | None
    retry_delay: DurationLike | None
    timeout: DurationLike | None
    retry: RetryPolicy | None = None
    #: set for an approval step (:meth:`Pipeline.approval`)
    approval: PipelineApproval | None = None


@dataclass(frozen=True)
class PipelineApproval:
    """The options of an approval step; ``prompt`` and ``context`` may be functions of
    the previous step's output."""

    prompt: str | Callable[[Any], str] | None
    context: Any
    assignee: str | None
    schema: type[BaseModel] | None
    timeout: DurationLike | None


class Pipeline:
    """A named, linear pipeline of steps (Sagewai's ``DurableWorkflow``).

    The first step is called with the run's input (as keyword arguments when the
    input is a dict), every later step with the previous step's result, and the
    last step's result is the run's output::

        wf = durable.Pipeline("article")

        @wf.step("research")
        async def research(topic: str) -> str: ...

        @wf.step("draft", retries=3, retry_delay=2.0)
        async def draft(findings: str) -> str: ...

        output = await wf.run(engine, topic="quantum computing")

    Args:
        name: the workflow name of the pipeline's runs.
        input: optional type to validate the input against.
        timeout: limit for the whole run.
        version: stored with each run (see :func:`durable.workflow`).
    """

    def __init__(
        self,
        name: str,
        *,
        input: type[Any] | None = None,
        timeout: DurationLike | None = None,
        version: str = "1",
    ) -> None:
        self.name = check_name(name)
        self._input = input
        self._timeout = timeout
        self._version = version
        self._steps: list[PipelineStep] = []
        self._workflow: Workflow[Any, Any] | None = None

    @property
    def steps(self) -> tuple[PipelineStep, ...]:
        """The steps in order."""
        return tuple(self._steps)

    def step(
        self,
        name: str,
        *,
        retries: int | None = None,
        retry_delay: DurationLike | None = None,
        retry: RetryPolicy | None = None,
        timeout: DurationLike | None = None,
    ) -> Callable[[F], F]:
        """Append the decorated function as the next step (the function is returned as is).

        Args:
            name: the step's name, unique in the pipeline.
            retries: retry attempts on failure (default: none).
            retry_delay: seconds between retries (a constant delay, unless ``retry``
                gives a backoff).
            retry: a full :class:`RetryPolicy` (fixed, linear or exponential backoff).
            timeout: limit for one attempt.
        """
        self._check_new(name)
        make_policy(retry, retries, retry_delay, RetryPolicy())  # validates the options

        def add(fn: F) -> F:
            self._steps.append(PipelineStep(name, fn, retries, retry_delay, timeout, retry))
            return fn

        return add

    def approval(
        self,
        name: str,
        *,
        prompt: str | Callable[[Any], str] | None = None,
        context: Any = None,
        assignee: str | None = None,
        schema: type[BaseModel] | None = None,
        timeout: DurationLike | None = None,
    ) -> None:
        """Append an approval step: the run waits until ``approve``/``reject`` (Sagewai's
        ``request_approval``), like ``ctx.step.approval``.

        An approval passes the previous step's output on to the next step; a rejection
        (or a timeout) fails the run with :class:`~durable.ApprovalRejected`.
        ``prompt`` and ``context`` may be functions of the previous output, so the
        reviewer sees what they approve.
        """
        self._check_new(name)
        options = PipelineApproval(prompt, context, assignee, schema, timeout)
        self._steps.append(PipelineStep(name, _no_call, None, None, None, approval=options))

    def _check_new(self, name: str) -> None:
        check_name(name, "step name")
        if self._workflow is not None:
            raise WorkflowDefinitionError(
                f"pipeline {self.name!r} is already registered; add its steps before "
                "passing it to a WorkflowEngine"
            )
        if any(s.name == name for s in self._steps):
            raise WorkflowDefinitionError(f"pipeline {self.name!r} already has a step {name!r}")

    @property
    def workflow(self) -> Workflow[Any, Any]:
        """The workflow this pipeline runs as (built once, on first use)."""
        if self._workflow is None:
            if not self._steps:
                raise WorkflowDefinitionError(f"pipeline {self.name!r} has no steps")
            plan = StepPlan(len(self._steps), False, tuple(s.name for s in self._steps))
            self._workflow = Workflow(
                self.name,
                self._run,
                input=self._input,
                timeout=self._timeout,
                version=self._version,
                plan=plan,
            )
        return self._workflow

    async def _run(self, ctx: Context[Any]) -> Any:
        value: Any = ctx.input
        for index, step in enumerate(self._steps):
            if step.approval is not None:
                await _approve(ctx, step.name, step.approval, value)
                continue
            if index == 0 and isinstance(value, dict):
                call: Callable[..., Any] = functools.partial(step.fn, **value)
                args: tuple[Any, ...] = ()
            elif index == 0 and value is None:
                call, args = step.fn, ()
            else:
                call, args = step.fn, (value,)
            value = await ctx.step.run(
                step.name,
                call,
                *args,
                retries=step.retries,
                retry_delay=step.retry_delay,
                retry=step.retry,
                timeout=step.timeout,
                result_type=return_model(step.fn),
            )
        return value

    async def run(
        self, engine: PipelineEngine, /, *, run_id: str | None = None, **input: Any
    ) -> Any:
        """Run the pipeline to its end and return the last step's output.

        Passing the ``run_id`` of an unfinished run resumes it (completed steps are
        not run again); of a completed run returns its output.
        """
        if run_id is not None:
            try:
                existing = await engine.get_run(run_id)
            except RunNotFound:
                existing = None
            if existing is not None:
                if not existing.finished:
                    await engine.resume(run_id)
                return await engine.result(run_id)
        run = await engine.start_workflow(self, input or None, run_id=run_id)
        return await engine.result(run.id)


def _no_call(*_args: Any) -> None:
    """The function of an approval step: never called."""


async def _approve(ctx: Context[Any], key: str, options: PipelineApproval, value: Any) -> None:
    prompt = options.prompt(value) if callable(options.prompt) else options.prompt
    context = options.context(value) if callable(options.context) else options.context
    decision = await ctx.step.approval(
        key,
        prompt=prompt,
        context=context,
        assignee=options.assignee,
        schema=options.schema,
        timeout=options.timeout,
    )
    if not decision.approved:
        by = f" by {decision.reviewer}" if decision.reviewer else ""
        raise ApprovalRejected(
            f"approval {key!r} of pipeline {ctx.workflow!r} was rejected{by}: "
            f"{decision.reason or 'no reason given'}",
            instance_id=ctx.run_id,
        )
