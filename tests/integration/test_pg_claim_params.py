"""The pipelined claim on PostgreSQL sends its lists as array text: names that array
syntax would misread (quotes, backslashes, commas, braces, ``NULL``) still select
exactly the runs they name."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import durable
import statewf
from durable.control import claim as claiming
from statewf.clock import SystemClock
from statewf.store import pg_write, pgclaim
from statewf.store.leases import ClaimScope
from tests.conftest import PG_URL

AWKWARD = ['q"uote', "back\\slash", "com,ma", "{brace}", "NULL", " sp ", "é", "x"]


def test_text_array_reads_back_as_the_same_strings() -> None:
    url = PG_URL.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        conn = psycopg.connect(url, connect_timeout=3)
    except psycopg.OperationalError as exc:  # the suite's rule: no server is a failure
        pytest.fail(f"PostgreSQL unreachable: {exc}")
    with conn:
        row = conn.execute(
            "SELECT %s::varchar[], %s::varchar[]",
            [pg_write.text_array([*AWKWARD, ""]), pg_write.text_array([])],
        ).fetchone()
    assert row == ([*AWKWARD, ""], [])


def test_a_claim_takes_exactly_the_runs_of_awkward_queues_versions_and_ids(
    pg_schema: str,
) -> None:
    flows = [durable.workflow("awk", version=v)(_body) for v in ('v"1', "v\\2", "v,{3}")]

    async def create() -> dict[str, list[str]]:
        made: dict[str, list[str]] = {}
        async with durable.Client(PG_URL, schema=pg_schema) as client:
            for flow in flows:
                for queue in [*AWKWARD, "plain"]:
                    run = await client.start_workflow(flow, queue=queue)
                    made.setdefault(f"{flow.version}|{queue}", []).append(run.id)
        return made

    made = asyncio.run(create())
    engine = statewf.Engine(PG_URL, schema=pg_schema)
    try:
        assert pgclaim.available(engine.store)
        versions = [("awk", 'v"1'), ("awk", "v,{3}")]
        queues = AWKWARD[:5]
        excluded = made[f'v"1|{AWKWARD[0]}']
        scope = ClaimScope(
            kind="workflow", versions=versions, queues=queues, owner="me", executing=True
        )
        claimer = claiming.Claimer(owner="me", scope=scope, lease_for=timedelta(seconds=60))
        done = claiming.claim_runs(
            engine.store, claimer, SystemClock(), limit=100, exclude=excluded, next_wake=True
        )
        got = sorted(r.snapshot.id for r in done.runs)
        want = sorted(
            rid
            for v in ('v"1', "v,{3}")
            for q in queues
            for rid in made[f"{v}|{q}"]
            if rid not in excluded
        )
        assert got == want
        assert len(got) == 9
        assert all(r.lease.owner == "me" for r in done.runs)
    finally:
        engine.close()


async def _body(ctx: durable.Context[Any]) -> int:
    return 1
