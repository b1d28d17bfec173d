"""Fixtures for the durable tests: engines on the shared ``db`` fixture, a manual clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import wf_flows

import durable
import statewf
from statewf.testing import ManualClock


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    wf_flows.CALLS.clear()


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when told to."""
    return ManualClock()


@pytest.fixture
def make_engine(
    db: dict[str, str | None], clock: ManualClock
) -> Iterator[Callable[..., durable.WorkflowEngine]]:
    """``make_engine(workflows=[...], **kw)``: a WorkflowEngine on a fresh statewf Engine."""
    engines: list[statewf.Engine] = []

    def make(**kwargs: Any) -> durable.WorkflowEngine:
        engine = statewf.Engine(db["url"], schema=db["schema"], clock=clock)
        engines.append(engine)
        kwargs.setdefault("seed", 7)
        workflows = durable.WorkflowEngine(engine, **kwargs)
        close = workflows.close

        async def close_both() -> None:  # release connections as soon as a test is done
            await close()
            engine.close()

        workflows.close = close_both  # type: ignore[method-assign]
        return workflows

    yield make
    for engine in engines:
        engine.close()
