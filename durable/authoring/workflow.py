"""Workflow definitions: the ``@durable.workflow`` decorator and what it builds."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError

from durable.authoring.analysis import analyze
from durable.authoring.retry import RetryPolicy, make_policy
from durable.errors import WorkflowDefinitionError
from durable.log.codec import encode
from durable.log.plan import StepPlan
from statewf.decide import DEFAULT_MAX_PAYLOAD_BYTES
from statewf.durations import DurationLike, to_seconds
from statewf.errors import InvalidInput, validation_summary
from statewf.values import too_deep

if TYPE_CHECKING:
    from durable.authoring.context import Context

InputT = TypeVar("InputT")
R = TypeVar("R")

#: Longest workflow name (the ``machine`` column of the instances table).
MAX_NAME = 200


def check_name(name: Any, what: str = "workflow name") -> str:
    """``name`` if it is a usable workflow or step name."""
    if not isinstance(name, str) or not name.strip():
        raise WorkflowDefinitionError(f"{what} must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise WorkflowDefinitionError(
            f"{what} {name[:40]!r} must be at most {MAX_NAME} printable characters"
        )
    return name


def validate_input(name: str, adapter: TypeAdapter[Any] | None, data: Any, max_bytes: int) -> Any:
    """The JSON form of the input ``data`` of workflow ``name``, validated by ``adapter``."""
    deep = too_deep(data)  # before validating: deep data overflows the validator's stack
    if deep is not None:
        raise InvalidInput(f"input of workflow {name!r} {deep}; no run was created", workflow=name)
    if adapter is not None:
        try:
            value = adapter.validate_python(data)
        except ValidationError as exc:
            problems = validation_summary(exc, root="input")
            raise InvalidInput(
                f"input of workflow {name!r} is invalid: {problems}; no run was created",
                workflow=name,
            ) from None
        data = adapter.dump_python(value, mode="json")
    try:
        stored, _ = encode(data, what=f"input of workflow {name!r}", max_bytes=max_bytes)
    except InvalidInput as exc:
        raise InvalidInput(exc.message + "; no run was created", workflow=name) from None
    return stored


class Workflow(Generic[InputT, R]):
    """A registered-able workflow: a name, an async function of a :class:`Context`, options.

    Build it with :func:`workflow`; pass it to :class:`~durable.WorkflowEngine`.

    Attributes:
        name: the workflow's name (``start_workflow(name, ...)``).
        fn: the workflow function.
        version: stored with each run; a run resumes only under the same version.
        input_type: the type input is validated against (None: any JSON value).
        retry: the default retry policy of the workflow's steps.
        timeout: seconds the whole run may take (None: no limit).
        plan: the steps found in the function's source, for progress reports.
        queue: the queue its runs go to by default.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[[Context[InputT]], Awaitable[R]],
        *,
        input: type[Any] | None = None,
        retry: RetryPolicy | None = None,
        timeout: DurationLike | None = None,
        version: str = "1",
        plan: StepPlan | None = None,
        queue: str = "default",
    ) -> None:
        self.name = check_name(name)
        if not inspect.iscoroutinefunction(fn):
            raise WorkflowDefinitionError(
                f"workflow {name!r} must be an async function (async def ...), got {fn!r}"
            )
        self.fn = fn
        self.version = check_name(version, "workflow version")
        self.input_type = input
        self._adapter: TypeAdapter[Any] | None = TypeAdapter(input) if input is not None else None
        self.retry = retry if retry is not None else RetryPolicy()
        try:
            self.timeout = to_seconds(timeout, what="workflow timeout") if timeout else None
        except InvalidInput as exc:
            raise WorkflowDefinitionError(exc.message) from None
        self.plan = plan if plan is not None else analyze(fn)
        #: the queue runs started in-process go to (a ref's queue when implemented from one)
        self.queue = check_name(queue, "queue name")

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r} version {self.version!r}>"

    def validate_input(self, data: Any, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Any:
        """The JSON form of ``data`` to store; :class:`InvalidInput` if it does not validate."""
        return validate_input(self.name, self._adapter, data, max_bytes)

    def load_input(self, stored: Any) -> InputT:
        """The input value the workflow function sees, from its stored JSON."""
        if self._adapter is None:
            return stored  # type: ignore[no-any-return]  # untyped workflows get raw JSON
        return self._adapter.validate_python(stored)  # type: ignore[no-any-return]


def workflow(
    name: str,
    *,
    input: type[Any] | None = None,
    retries: int | None = None,
    retry_delay: DurationLike | None = None,
    retry: RetryPolicy | None = None,
    timeout: DurationLike | None = None,
    version: str = "1",
) -> Callable[[Callable[[Context[InputT]], Awaitable[R]]], Workflow[InputT, R]]:
    """Declare a durable workflow.

    Args:
        name: the name runs are started by.
        input: a pydantic model (or any type pydantic can validate) for the input;
            invalid input is rejected at start with :class:`~statewf.errors.InvalidInput`.
        retries: default retries for every step of the workflow (a step's own
            ``retries=`` wins).
        retry_delay: default delay before the first retry.
        retry: a full default :class:`RetryPolicy` (``retries``/``retry_delay`` override it).
        timeout: the longest the whole run may take (seconds, ``"1h"``, timedelta),
            enforced: a run past it is failed with ``WorkflowTimeout``.
        version: stored with each run; bump it when a change would make recorded runs
            replay differently, and keep the old version registered until they finish.

    Example::

        @durable.workflow("onboard-user", input=Signup, retries=3, timeout="1h")
        async def onboard_user(ctx: durable.Context[Signup]) -> dict[str, str]:
            user = await ctx.step.run("create-account", create_account, ctx.input.email)
            return {"user_id": user["id"]}
    """
    policy = make_policy(retry, retries, retry_delay, RetryPolicy())

    def decorate(fn: Callable[[Context[InputT]], Awaitable[R]]) -> Workflow[InputT, R]:
        return Workflow(name, fn, input=input, retry=policy, timeout=timeout, version=version)

    return decorate
