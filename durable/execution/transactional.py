"""A transactional step: the step's function and its log row in one transaction.

``ctx.step.transaction(...)`` runs a plain function of a connection inside the
transaction that appends the step's row, so the step's own writes and the record of
its outcome commit together, or not at all (a replay then finds neither).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from durable.authoring.current import StepInfo, enter_step, leave_step
from durable.execution.outcomes import decode_result, timing
from durable.execution.writer import RunWriter
from durable.log.codec import encode
from durable.log.records import KIND_STEP
from durable.log.rows import step_row
from statewf.errors import InvalidInput
from statewf.records import Instance
from statewf.store import Tx
from statewf.store.runs import set_statement_timeout


async def run_transactional(
    writer: RunWriter,
    info: StepInfo,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    timeout: float | None,
    model: type[BaseModel] | None,
    meta: dict[str, Any],
    started: datetime,
) -> Any:
    """Run ``fn(conn, *args)`` in the transaction of its row (written by ``writer``); its
    result as the step returns it."""
    host = writer.host
    encoded: list[tuple[Any, str | None]] = []

    def make(tx: Tx | None, snap: Instance) -> dict[str, Any]:
        assert tx is not None  # written with needs_tx=True
        if timeout is not None:
            set_statement_timeout(tx, timeout)
        token = enter_step(info)
        try:
            value = fn(tx.conn, *args)
        finally:
            leave_step(token)
        if inspect.isawaitable(value):
            raise InvalidInput(
                f"transactional step {info.key!r} returned an awaitable; transactional "
                "steps must be plain (sync) functions of a connection"
            )
        result, result_model = encode(
            value, what=f"result of step {info.key!r}", max_bytes=host.max_bytes
        )
        encoded[:] = [(result, result_model)]
        row_meta = {**meta, **timing(started, host.clock.now())}
        if result_model is not None:
            row_meta["model"] = result_model
        return step_row(
            KIND_STEP, info.key, {"result": result}, row_meta, snap, True, writer.suspending
        )

    await writer.write(make, needs_tx=True, position=info.position)
    result, result_model = encoded[0]
    return decode_result(result, result_model, model, fn)
