"""Code-first durable workflows compiled to the statewf transition log.

A workflow is an ``async def`` of a :class:`Context`; each ``await ctx.step.run(...)``
records its result in the run's log, so a run that is interrupted resumes by
replaying the log instead of repeating finished steps::

    @durable.workflow("onboard-user", input=Signup, retries=3)
    async def onboard_user(ctx: durable.Context[Signup]) -> dict[str, str]:
        user = await ctx.step.run("create-account", create_account, ctx.input.email)
        return {"user_id": user["id"]}

    async with durable.WorkflowEngine("sqlite:///app.db", workflows=[onboard_user]) as engine:
        run = await engine.start_workflow("onboard-user", {"email": "a@example.com"})
        print(await engine.result(run.id))
"""

from durable import testing
from durable.authoring.context import Context, StepCall, Steps
from durable.authoring.current import StepInfo, credentials, current_step
from durable.authoring.pipeline import Pipeline
from durable.authoring.refs import WorkflowRef, ref
from durable.authoring.retry import RetryPolicy
from durable.authoring.waits import Approval, PollResult
from durable.authoring.workflow import Workflow, workflow
from durable.client import Client
from durable.engine import WorkflowEngine
from durable.errors import (
    ApprovalRejected,
    DuplicateStepKey,
    EngineClosed,
    NonDeterminismError,
    NonRetryableError,
    ResultNotSerializable,
    RunFinished,
    RunNotFound,
    StepFailed,
    StepTimeout,
    WorkflowDefinitionError,
    WorkflowFailed,
    WorkflowNotRegistered,
    WorkflowTimeout,
)
from durable.log.plan import StepPlan
from durable.log.records import (
    HumanTask,
    Progress,
    RunError,
    RunStatus,
    StepAttempt,
    StepTimeline,
    WorkflowRun,
)
from durable.worker import Queue, Worker
from statewf.durations import DurationLike as Duration
from statewf.errors import InvalidInput
from statewf.store.runs import Connection

__all__ = [
    "Approval",
    "ApprovalRejected",
    "Client",
    "Connection",
    "Context",
    "DuplicateStepKey",
    "Duration",
    "EngineClosed",
    "HumanTask",
    "InvalidInput",
    "NonDeterminismError",
    "NonRetryableError",
    "Pipeline",
    "PollResult",
    "Progress",
    "Queue",
    "ResultNotSerializable",
    "RetryPolicy",
    "RunError",
    "RunFinished",
    "RunNotFound",
    "RunStatus",
    "StepAttempt",
    "StepCall",
    "StepFailed",
    "StepInfo",
    "StepPlan",
    "StepTimeline",
    "StepTimeout",
    "Steps",
    "Worker",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowEngine",
    "WorkflowFailed",
    "WorkflowNotRegistered",
    "WorkflowRef",
    "WorkflowRun",
    "WorkflowTimeout",
    "credentials",
    "current_step",
    "ref",
    "testing",
    "workflow",
]
