"""What the engine reports about runs: the run, its error, its progress and step timeline.

All of it is read from the run's instance row and transition log, so a process that
does not have the workflow's code (a CLI, an API service) reads the same answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeAlias, get_args

from pydantic import BaseModel, ConfigDict

# an event row means the same in a run's log as in a machine's: statewf's kind
from statewf.records import KIND_EVENT as KIND_EVENT

#: The instance ``kind`` of workflow runs in the statewf tables.
RUN_KIND = "workflow"

#: Every status a run can have.
RunStatus: TypeAlias = Literal[
    "pending", "running", "waiting", "paused", "completed", "failed", "cancelled", "dead"
]
#: The statuses in order, as filters (``statewf runs list --status``) accept them.
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
PENDING: RunStatus = "pending"
RUNNING: RunStatus = "running"
WAITING: RunStatus = "waiting"
PAUSED: RunStatus = "paused"
COMPLETED: RunStatus = "completed"
FAILED: RunStatus = "failed"
CANCELLED: RunStatus = "cancelled"
#: Dead-lettered: recovering the run kept killing the worker executing it. Nothing
#: executes it until an operator retries (``running`` again) or discards it.
DEAD: RunStatus = "dead"
#: Statuses after which a run changes only by an operator's retry (failed, dead).
TERMINAL: frozenset[str] = frozenset({COMPLETED, FAILED, CANCELLED, DEAD})

# Log-row kinds of workflow runs.
KIND_STEP = "step"
KIND_RETRY = "retry"
KIND_STEP_FAILED = "step_failed"
KIND_RECOVER = "recover"
KIND_CANCEL = "cancel"
KIND_COMPLETED = "completed"
KIND_FAILED = "failed"
# Waiting: suspension rows written by workflow code, and rows written from outside.
KIND_SLEEP = "sleep"
KIND_WAIT = "wait"
KIND_PAUSE = "pause"
KIND_POLL = "poll"
WAIT_KINDS: frozenset[str] = frozenset({KIND_SLEEP, KIND_WAIT, KIND_PAUSE, KIND_POLL})
KIND_RESUME = "resume"
KIND_FAST_FORWARD = "fast_forward"
KIND_WAKE = "wake"
# Workers and operations (durable.Worker, dead letters, retry, fork).
KIND_CLAIM = "claim"  # a worker took a new run (meta: worker, epoch, reason)
KIND_DEAD = "dead_letter"  # moved to the dead letters (meta: reason, takeovers)
KIND_RETRY_RUN = "retry_run"  # an operator retries a failed or dead run
KIND_DISCARD = "discard"  # an operator discards a failed or dead run (-> cancelled)
KIND_FORK = "fork"  # a forked run's first rows: copied from another run (meta: from)
#: the answer of ``ctx.patched(id)`` (key: the patch id; meta: patched, at: the next step position)
KIND_PATCH = "patch"


class RunError(BaseModel):
    """A stored error: its type name, message, and where it happened."""

    model_config = ConfigDict(frozen=True)

    type: str
    message: str
    step: str | None = None
    details: dict[str, Any] = {}


class WorkflowRun(BaseModel):
    """A workflow run as stored: status, input, output or error, timestamps."""

    model_config = ConfigDict(frozen=True)

    id: str
    workflow: str
    version: str
    status: RunStatus
    input: Any = None
    output: Any = None
    error: RunError | None = None
    resource_id: str | None = None
    idempotency_key: str | None = None
    current_step: str | None = None
    completed_steps: int = 0
    created_at: datetime
    updated_at: datetime
    deadline: datetime | None = None
    waiting: dict[str, Any] | None = None
    wake_at: datetime | None = None

    @property
    def finished(self) -> bool:
        """True once the run completed, failed, was cancelled or dead-lettered."""
        return self.status in TERMINAL


class HumanTask(BaseModel):
    """An open human task: a run waiting in ``ctx.step.approval`` or ``ctx.step.human_task``.

    ``answer_schema`` is the JSON Schema the answer must fit (None: any answer, or
    none for an approval); ``timeout_at`` is when the task times out, if it does.
    """

    model_config = ConfigDict(frozen=True)

    run_id: str
    workflow: str
    key: str
    type: Literal["approval", "task"]
    prompt: str | None = None
    context: Any = None
    assignee: str | None = None
    answer_schema: dict[str, Any] | None = None
    resource_id: str | None = None
    waiting_since: datetime
    timeout_at: datetime | None = None


class Progress(BaseModel):
    """How far a run has got.

    ``total_steps`` comes from static analysis of the workflow function, stored with
    the run. Loops, branches and computed step keys make it an estimate; then
    ``approximate`` is True. A completed run is always at 100%.
    """

    model_config = ConfigDict(frozen=True)

    run_id: str
    status: RunStatus
    completed_steps: int
    total_steps: int | None
    completion_percentage: float
    approximate: bool
    current_step: str | None = None


class StepAttempt(BaseModel):
    """One attempt at a step: when it ran, and its error if it failed."""

    model_config = ConfigDict(frozen=True)

    attempt: int
    started_at: datetime | None
    ended_at: datetime
    duration_ms: float | None
    error: RunError | None = None
    retry_at: datetime | None = None


class StepTimeline(BaseModel):
    """A step of a run: its attempts, outcome and result."""

    model_config = ConfigDict(frozen=True)

    key: str
    position: int
    status: Literal["completed", "failed", "retrying"]
    attempts: list[StepAttempt]
    result: Any = None
    error: RunError | None = None
    transactional: bool = False

    @property
    def started_at(self) -> datetime | None:
        """When the first attempt started."""
        return self.attempts[0].started_at if self.attempts else None

    @property
    def ended_at(self) -> datetime | None:
        """When the last attempt ended."""
        return self.attempts[-1].ended_at if self.attempts else None
