"""Checking workflow code against recorded runs, before it is deployed.

:func:`replay` replays a run's history (exported with ``statewf runs export``, or
read from the database) against the workflow code you have now, executing
nothing: no step function is called, no clock is waited on, nothing is written.
It reports where the code and the log part, as a resumed run would find out::

    history = durable.testing.load_history("tests/histories/onboard.json")
    result = durable.testing.replay(onboard_user, history)
    assert result.ok, result.divergence

``statewf runs check`` does the same for stored runs, as a deploy gate.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from durable.authoring.pipeline import Pipeline
from durable.authoring.workflow import Workflow
from durable.execution.replaying import Divergence, ReplayResult, replay_run
from durable.log.export import RunHistory, load_history
from statewf.errors import InvalidInput
from statewf.records import TransitionRecord

__all__ = [
    "Divergence",
    "ReplayResult",
    "RunHistory",
    "load_history",
    "replay",
    "replay_async",
]

HistoryLike = RunHistory | str | Path | list[TransitionRecord]


async def replay_async(
    workflow: Workflow[Any, Any] | Pipeline, history: HistoryLike
) -> ReplayResult:
    """:func:`replay` inside a running event loop."""
    wf = workflow.workflow if isinstance(workflow, Pipeline) else workflow
    if not isinstance(wf, Workflow):
        raise InvalidInput(f"replay() takes a workflow or a pipeline, got {workflow!r}")
    found = _history(history)
    if found.workflow != wf.name:
        raise InvalidInput(
            f"run {found.run_id!r} is a run of workflow {found.workflow!r}, not {wf.name!r}; "
            "replay it against the code of its own workflow"
        )
    return await replay_run(wf, list(found.rows), found.snapshot())


def replay(workflow: Workflow[Any, Any] | Pipeline, history: HistoryLike) -> ReplayResult:
    """Replay a run's history against ``workflow`` without executing anything.

    ``history`` is a :class:`RunHistory`, the path of an exported JSON file, or a
    run's log rows. The result says how far the code got (``reached``), the
    answers its ``ctx.patched`` calls gave, and the :class:`Divergence`, if any:
    the position, the call the log recorded there and the call the code made.
    Call it outside an event loop (inside one, ``await replay_async(...)``).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(replay_async(workflow, history))
    raise InvalidInput(
        "replay() runs its own event loop; inside async code use "
        "`await durable.testing.replay_async(workflow, history)`"
    )


def _history(history: HistoryLike) -> RunHistory:
    if isinstance(history, RunHistory):
        return history
    if isinstance(history, str | Path):
        return load_history(history)
    if isinstance(history, list):
        return RunHistory.of(history)
    raise InvalidInput(
        f"replay() takes a RunHistory, a path to an exported history or a list of log rows, "
        f"got {history!r}"
    )
