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
    """``make_engine(workflows=[...], **kw)``: a WorkflowEngine on the test's database.

    The WorkflowEngines of one test share one statewf Engine (one connection pool):
    closing a WorkflowEngine, as a crash test does, stops its execution only.
    """
    engines: list[statewf.Engine] = []

    def make(**kwargs: Any) -> durable.WorkflowEngine:
        if not engines:
            engines.append(statewf.Engine(db["url"], schema=db["schema"], clock=clock))
        kwargs.setdefault("seed", 7)
        return durable.WorkflowEngine(engines[0], **kwargs)

    yield make
    for engine in engines:
        engine.close()
