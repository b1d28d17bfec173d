"""A woken wait's result committed with the claim that woke it (PostgreSQL's scheduler
claim, :mod:`durable.execution.folding`), and recorded once however that claim ends.

On SQLite the claim and the result commit one after the other, as before; the
outcomes asserted here (one ``wake`` row, one result row, one run of the next step)
are the same on both stores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

import psycopg
import pytest
import sqlalchemy as sa
import wf_flows
from wf_flows import Make, until

import durable
from durable.control import claim as claiming
from durable.control.claim import ClaimedRun
from durable.execution.folding import WakeFold, foldable
from durable.log.records import KIND_STEP
from statewf.records import StepRow
from statewf.store.batched import Row
from statewf.store.claim_statements import Folded
from statewf.store.leases import ClaimScope
from statewf.store.loop_claim import LoopClaimer
from statewf.store.runs import load_replay


@durable.workflow("folded")
async def folded(ctx: durable.Context[None]) -> Any:
    got = await ctx.step.wait_for("go", event="go")
    return await ctx.step.run("after", wf_flows.counted("after", got))


def _status(engine: durable.WorkflowEngine, run_id: str) -> str:
    return engine.engine.get(run_id).status


def _rows(engine: durable.WorkflowEngine, run_id: str) -> list[tuple[str, str | None]]:
    return [(r.kind, r.key) for r in engine.engine.history(run_id)]


def _transactions(engine: durable.WorkflowEngine, run_id: str) -> dict[tuple[str, str], str]:
    """The transaction (``xmin``) of the run's ``wake`` and ``step`` rows (PostgreSQL)."""
    store = engine.engine.store
    t = store.tables.transitions
    query = sa.select(t.c.kind, t.c.key, sa.literal_column("xmin::text")).where(
        t.c.instance_id == run_id, t.c.kind.in_(["wake", "step"])
    )
    with store.engine.connect() as conn:
        return {(kind, key or ""): xmin for kind, key, xmin in conn.execute(query)}


async def _woken(engine: durable.WorkflowEngine, payload: Any) -> str:
    run = await engine.start_workflow(folded)
    await until(lambda: _status(engine, run.id) == "waiting", "the wait")
    await until(lambda: run.id not in engine.executor.tasks, "the execution to end")
    await engine.trigger_event(run.id, "go", payload)
    assert await engine.result(run.id, timeout=15) == payload
    return run.id


def _once(engine: durable.WorkflowEngine, run_id: str) -> None:
    rows = _rows(engine, run_id)
    assert rows.count(("wake", None)) == 1, rows
    assert [key for kind, key in rows if kind == "step"] == ["go", "after"]
    assert wf_flows.CALLS["after"] == 1


def test_a_woken_wait_commits_its_result_with_its_claim(
    make_engine: Make, db: dict[str, str | None]
) -> None:
    async def main() -> None:
        async with make_engine(workflows=[folded]) as engine:
            first = await _woken(engine, {"n": 0})  # the engine's first passes
            run_id = await _woken(engine, {"n": 1})
            rows = _rows(engine, run_id)
            assert rows.count(("wake", None)) == 1
            assert [key for kind, key in rows if kind == "step"] == ["go", "after"]
            if (db["url"] or "").startswith("postgresql"):
                xmin = _transactions(engine, run_id)
                # one transaction for the claim's row and the wait's result; the next
                # step's row commits after them
                assert xmin[("wake", "")] == xmin[("step", "go")]
                assert xmin[("step", "after")] != xmin[("step", "go")]
            assert first != run_id

    asyncio.run(main())


def _on_postgres(db: dict[str, str | None]) -> bool:
    return (db["url"] or "").startswith("postgresql")


def test_a_folded_claim_cut_before_its_commit_wakes_the_run_again(
    make_engine: Make, db: dict[str, str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    cut: list[int] = []
    rows = WakeFold.rows

    async def cut_once(self: WakeFold, woken: list[Any]) -> Any:
        made = await rows(self, woken)
        if made and not cut:
            cut.append(len(made))
            # the worker's connection goes between the claim's statements and its commit
            raise psycopg.DatabaseError("the claim failed here")
        return made

    monkeypatch.setattr(WakeFold, "rows", cut_once)

    async def main() -> None:
        async with make_engine(workflows=[folded], poll_interval=0.2) as engine:
            await _woken(engine, {"n": 0})
            wf_flows.CALLS["after"] = 0
            run_id = await _woken(engine, {"n": 1})
            _once(engine, run_id)
        assert bool(cut) == _on_postgres(db)  # the claim was cut where there was a fold

    asyncio.run(main())


def test_a_folded_claim_committed_but_unanswered_goes_on_once(
    make_engine: Make, db: dict[str, str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    lost: list[int] = []
    committed = WakeFold.committed

    def lose_once(self: WakeFold, returned: Any) -> None:
        if returned and not lost:
            lost.append(len(returned))
            # committed, and the answer lost on the way back
            raise psycopg.DatabaseError("the claim failed here")
        committed(self, returned)

    monkeypatch.setattr(WakeFold, "committed", lose_once)

    async def main() -> None:
        async with make_engine(workflows=[folded], poll_interval=0.2) as engine:
            await _woken(engine, {"n": 0})
            wf_flows.CALLS["after"] = 0
            run_id = await _woken(engine, {"n": 1})
            _once(engine, run_id)
        assert bool(lost) == _on_postgres(db)

    asyncio.run(main())


def _row(kind: str, meta: dict[str, Any], *, release: bool = False) -> Row:
    record = SimpleNamespace(kind=kind, meta=meta)
    return Row(cast(Any, None), cast(Any, record), 3, release)


def test_only_a_wait_or_sleep_result_is_folded() -> None:
    assert foldable(_row("step", {"position": 0, "wait": "wait", "event_seq": 4}))
    assert foldable(_row("step", {"position": 0, "wait": "sleep"}))
    # a poll's result follows the check (workflow code); a step's, the step itself
    assert not foldable(_row("step", {"position": 0, "wait": "poll", "checks": 1}))
    assert not foldable(_row("step", {"position": 0}))
    assert not foldable(_row("step_failed", {"position": 0, "wait": "wait"}))
    assert not foldable(_row("patch", {"patch": "p"}))
    assert not foldable(_row("step", {"position": 0, "wait": "wait"}, release=True))


@durable.workflow("folded_napper")
async def folded_napper(ctx: durable.Context[None]) -> int:
    """Steps, a patch, then a sleep: its claim's replay log holds light and full rows."""
    total = 0
    for i in range(5):
        total += await ctx.step.run(f"s{i}", lambda i=i: i)
    if ctx.patched("p"):
        total += 1
    await ctx.step.sleep("nap", 10)
    return total


class _Recording:
    """A fold that writes nothing and keeps the logs its claim handed it."""

    def __init__(self) -> None:
        self.seen: list[list[ClaimedRun]] = []
        self.answers: list[list[int]] = []

    async def rows(self, woken: list[ClaimedRun]) -> list[Folded]:
        self.seen.append(woken)
        return []

    def committed(self, returned: Sequence[int]) -> None:
        self.answers.append(list(returned))


def test_a_folds_claim_reads_the_logs_with_its_candidates_as_after_its_writes(
    make_engine: Make, clock: Any
) -> None:
    """The logs read in the claim's first round trip, each with its claim row appended,
    are the replay log read from the database after the commit."""

    async def main() -> None:
        async with make_engine(workflows=[folded_napper], poll_interval=0.02) as engine:
            run = await engine.start_workflow("folded_napper")
            await until(lambda: engine.engine.get(run.id).status == "waiting", "the sleep")
        clock.advance(20)
        store = engine.engine.store
        if store.fast_path is None:
            pytest.skip("the claim from the event loop is PostgreSQL's")
        scope = ClaimScope(
            kind="workflow", versions=[("folded_napper", folded_napper.version)], owner="me"
        )
        claimer = claiming.Claimer(owner="me", scope=scope, lease_for=timedelta(seconds=60))
        on_loop = LoopClaimer(store)
        fold = _Recording()
        try:
            done = await claiming.claim_runs_on_loop(
                on_loop, claimer, clock, limit=10, next_wake=True, fold=fold
            )
        finally:
            on_loop.close()
        assert done is not None
        assert [c.snapshot.id for c in done.runs] == [run.id]
        assert [[c.snapshot.id for c in woken] for woken in fold.seen] == [[run.id]]
        assert fold.answers == [[]]
        with store.transaction(readonly=True) as tx:
            light = load_replay(tx, run.id, KIND_STEP)
        assert light is not None
        assert done.runs[0].snapshot == light[0]
        assert done.runs[0].records == light[1] == fold.seen[0][0].records
        assert any(isinstance(row, StepRow) for row in light[1])
        assert light[1][-1].kind == "wake"

    asyncio.run(main())
