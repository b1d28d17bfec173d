"""Workflow references: a workflow's name, version, input type and routing, without its code.

A service that only starts and inspects runs (an API) imports refs; the worker
service implements them::

    # myapp/refs.py: importable by the API service, no handler code
    onboard = durable.ref("onboard-user", input=Signup, queue="signups")

    # worker_service.py
    @onboard.implement(retries=3)
    async def onboard_impl(ctx: durable.Context[Signup]) -> dict[str, str]: ...
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar, overload

from pydantic import TypeAdapter

from durable.authoring.context import Context
from durable.authoring.retry import RetryPolicy
from durable.authoring.workflow import Workflow, check_name, validate_input, workflow
from durable.log.rows import route_columns
from statewf.decide import DEFAULT_MAX_PAYLOAD_BYTES
from statewf.durations import DurationLike

InputT = TypeVar("InputT")
R = TypeVar("R")


class WorkflowRef(Generic[InputT]):
    """A workflow as a client knows it: name, version, input type, queue, priority, labels.

    Build it with :func:`ref`. :meth:`implement` turns it into the
    :class:`~durable.Workflow` a worker runs, with the same name, version and queue.
    """

    def __init__(
        self,
        name: str,
        *,
        input: type[InputT] | None = None,
        version: str = "1",
        queue: str = "default",
        priority: int = 0,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.name = check_name(name)
        self.version = check_name(version, "workflow version")
        self.input_type = input
        self._adapter: TypeAdapter[Any] | None = TypeAdapter(input) if input is not None else None
        route = route_columns(queue, priority, labels)  # validated now, not at first start
        self.queue: str = route["queue"]
        self.priority: int = route["priority"]
        self.labels: dict[str, str] = dict(labels or {})

    def __repr__(self) -> str:
        return f"<WorkflowRef {self.name!r} version {self.version!r} queue {self.queue!r}>"

    def validate_input(self, data: Any, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Any:
        """The JSON form of ``data`` to store; :class:`InvalidInput` if it does not validate."""
        return validate_input(self.name, self._adapter, data, max_bytes)

    @overload
    def implement(
        self,
        fn: Callable[[Context[InputT]], Awaitable[R]],
        *,
        retries: int | None = None,
        retry_delay: DurationLike | None = None,
        retry: RetryPolicy | None = None,
        timeout: DurationLike | None = None,
    ) -> Workflow[InputT, R]: ...

    @overload
    def implement(
        self,
        fn: None = None,
        *,
        retries: int | None = None,
        retry_delay: DurationLike | None = None,
        retry: RetryPolicy | None = None,
        timeout: DurationLike | None = None,
    ) -> Callable[[Callable[[Context[InputT]], Awaitable[R]]], Workflow[InputT, R]]: ...

    def implement(
        self,
        fn: Callable[[Context[InputT]], Awaitable[R]] | None = None,
        *,
        retries: int | None = None,
        retry_delay: DurationLike | None = None,
        retry: RetryPolicy | None = None,
        timeout: DurationLike | None = None,
    ) -> (
        Workflow[InputT, R]
        | Callable[[Callable[[Context[InputT]], Awaitable[R]]], Workflow[InputT, R]]
    ):
        """The workflow that runs this ref's runs: ``ref.implement(fn)`` or ``@ref.implement()``."""

        def build(func: Callable[[Context[InputT]], Awaitable[R]]) -> Workflow[InputT, R]:
            made = workflow(
                self.name,
                input=self.input_type,
                retries=retries,
                retry_delay=retry_delay,
                retry=retry,
                timeout=timeout,
                version=self.version,
            )(func)
            made.queue = self.queue
            return made

        return build if fn is None else build(fn)


def ref(
    name: str,
    *,
    input: type[InputT] | None = None,
    version: str = "1",
    queue: str = "default",
    priority: int = 0,
    labels: Mapping[str, str] | None = None,
) -> WorkflowRef[InputT]:
    """A reference to workflow ``name``: what a client needs to start its runs.

    Args:
        input: the input type (a pydantic model, say); a client validates input with
            it before anything is written.
        version: the version runs are started under; a worker must implement it.
        queue: the queue runs go to; workers claim from the queues they serve.
        priority: higher runs are claimed first.
        labels: what a worker must offer to run them (``{"gpu": "true"}``).
    """
    return WorkflowRef(
        name, input=input, version=version, queue=queue, priority=priority, labels=labels
    )


#: What serves a workflow version: its code, a reference, or a (name, version) pair.
Served = Workflow[Any, Any] | WorkflowRef[Any] | tuple[str, str]
