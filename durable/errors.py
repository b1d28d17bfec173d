"""Errors of durable workflows, all under :class:`statewf.errors.StatewfError`.

Errors a caller of :class:`~durable.WorkflowEngine` sees are ordinary exceptions.
:class:`StepFailed` and :class:`NonRetryableError` are raised *inside* workflow code
and may be caught there. The engine's own control-flow signals (suspension, abort)
live in :mod:`durable.authoring.signals` and derive from ``BaseException`` instead.
"""

from __future__ import annotations

from typing import Any

from statewf.errors import (
    InstanceNotFound,
    InvalidInput,
    MachineNotRegistered,
    SpecError,
    StatewfError,
)


class WorkflowDefinitionError(SpecError):
    """A workflow or pipeline is malformed: bad name, options, or duplicate registration."""


class WorkflowNotRegistered(MachineNotRegistered):
    """The engine has no workflow by that name (or not the version a run was started with)."""


class RunNotFound(InstanceNotFound):
    """No workflow run with that id exists (or it belongs to another resource)."""


class RunFinished(StatewfError):
    """The run already completed, failed or was cancelled; the operation does not apply."""


class EngineClosed(StatewfError):
    """The :class:`~durable.WorkflowEngine` was closed; make a new one to go on."""


class ResultNotSerializable(InvalidInput):
    """A step result or workflow output is neither JSON-serializable nor a pydantic model."""


class DuplicateStepKey(StatewfError):
    """Workflow code asked for a step key that it already used earlier in the same run.

    Step keys name a step's recorded result, so they must be unique within a run:
    derive them from loop data (``f"process-{item}"``).
    """


class NonDeterminismError(StatewfError):
    """Replay diverged from the recorded history: the code asked for another step.

    Raised when the workflow code, re-run against the log, requests a step key at a
    position where the log recorded a different one (or returns before consuming a
    recorded step). The run is failed rather than mixing two histories; deploy code
    that takes the recorded path, and start a new run for the new path.

    Attributes:
        position: the step position (0-based, in call order) where code and log differ.
        recorded: the step key the log holds at that position (None if none).
        requested: the step key the code asked for (None if the code returned).
    """

    def __init__(
        self,
        message: str,
        *,
        instance_id: str | None = None,
        position: int | None = None,
        recorded: str | None = None,
        requested: str | None = None,
        **details: Any,
    ) -> None:
        super().__init__(
            message,
            instance_id=instance_id,
            position=position,
            recorded=recorded,
            requested=requested,
            **details,
        )
        self.position = position
        self.recorded = recorded
        self.requested = requested


class StepTimeout(StatewfError):
    """A step attempt ran longer than its ``timeout``; retried like any failure."""


class WorkflowTimeout(StatewfError):
    """The run exceeded the workflow's ``timeout``; the run is failed."""


class NonRetryableError(StatewfError):
    """Raise this (or a subclass) from a step to fail it at once, without retries.

    Use it for errors that another attempt cannot fix (bad request, invalid card).
    The workflow receives a :class:`StepFailed` carrying the original message.
    """


class ApprovalRejected(NonRetryableError):
    """A pipeline's approval step was rejected (or timed out): the run fails with it."""


class StepFailed(StatewfError):
    """A step failed for good (retries exhausted or not retryable).

    Raised inside workflow code at the ``await ctx.step.run(...)`` so the code can
    catch it and run compensating steps. The same error is raised again, from the
    log, when the run is replayed.

    Attributes:
        step: the step key.
        error_type: the class name of the original error (e.g. ``"TimeoutError"``).
        error_message: the original error's message.
        attempts: how many attempts were made.
    """

    def __init__(
        self,
        step: str,
        error_type: str,
        error_message: str,
        *,
        attempts: int,
        instance_id: str | None = None,
    ) -> None:
        super().__init__(
            f"step {step!r} failed after {attempts} attempt(s): {error_type}: {error_message}",
            instance_id=instance_id,
            step=step,
            error_type=error_type,
            error_message=error_message,
            attempts=attempts,
        )
        self.step = step
        self.error_type = error_type
        self.error_message = error_message
        self.attempts = attempts


class WorkflowFailed(StatewfError):
    """Raised by :meth:`~durable.WorkflowEngine.result` when the run failed or was cancelled.

    Attributes:
        status: ``"failed"`` or ``"cancelled"``.
        error_type: the stored error's type name (None for a cancellation).
        error_message: the stored error's message.
    """

    def __init__(
        self,
        message: str,
        *,
        instance_id: str,
        status: str,
        error_type: str | None,
        error_message: str | None,
    ) -> None:
        super().__init__(
            message,
            instance_id=instance_id,
            status=status,
            error_type=error_type,
            error_message=error_message,
        )
        self.status = status
        self.error_type = error_type
        self.error_message = error_message


def diverged(
    run_id: str,
    workflow: str,
    position: int,
    recorded: str | None,
    requested: str,
    elsewhere: int | None,
) -> NonDeterminismError:
    """The error for a run whose code asked for another step than its log recorded."""
    where = f" (the log has {requested!r} at position {elsewhere})" if elsewhere else ""
    return NonDeterminismError(
        f"run {run_id!r} of workflow {workflow!r} diverged from its log at step position "
        f"{position}: the log recorded {recorded!r}, the code asked for {requested!r}{where}. "
        "The workflow code changed while the run was in progress; keep the old code path "
        'for runs in progress (put the new code under `if ctx.patched("PATCH-ID"):`, or '
        "give the changed workflow a new version and keep the old one registered) and "
        "check the change with `statewf runs check --app MODULE` before deploying it.",
        instance_id=run_id,
        position=position,
        recorded=recorded,
        requested=requested,
    )


def deprecated_patch_on_old_run(
    run_id: str, workflow: str, patch_id: str, position: int
) -> NonDeterminismError:
    """The error for a run that took the old branch of a patch the code now deprecates."""
    return NonDeterminismError(
        f"run {run_id!r} of workflow {workflow!r} took the old branch of patch {patch_id!r} "
        f"(it passed step position {position} before the patch was deployed), but the code "
        f"now calls ctx.deprecate_patch({patch_id!r}), which only takes the new branch. Keep "
        f"ctx.patched({patch_id!r}) and the old branch until `statewf runs list --patch "
        f"{patch_id}` shows no run in progress.",
        instance_id=run_id,
        position=position,
        recorded=f"patch {patch_id} (old branch)",
        requested=f"deprecate_patch {patch_id}",
    )
