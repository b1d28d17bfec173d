"""Fixtures for the durable tests: engines on the shared ``db`` fixture, a manual clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import wf_flows

import durable
import statewf
from statewf.testing import ManualClock
from tests.conftest import database

#: Modules whose tests use the database only through ``make_engine``: they run on the
#: in-memory store too (the others open the database's URL a second time).
MEMORY_MODULES = {
    "test_wf_bare_numbers",
    "test_wf_basics",
    "test_wf_lifecycle",
    "test_wf_observe",
    "test_wf_recovery_and_versions",
    "test_wf_replay",
    "test_wf_retries_timeouts",
    "test_wf_step_writes",
    "test_wf_units",
}


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str | None]]:
    """The shared ``db`` fixture, plus the in-memory store (``sqlite://``)."""
    yield from database(request.param, tmp_path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run only :data:`MEMORY_MODULES` on the in-memory store."""
    keep, drop = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        memory = spec is not None and spec.params.get("db") == "memory"
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        (drop if memory and module not in MEMORY_MODULES else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


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
