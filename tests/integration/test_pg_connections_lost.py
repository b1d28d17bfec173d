"""PostgreSQL drops every connection (a restart): an idle engine fails once, then works.

The test does not restart the shared server: it terminates its own engine's backends
(found by a unique ``application_name``), which is what a restart does to them. Every
pooled connection is then dead; the first call that finds one refreshes both pools.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import sample_machines as sm

import statewf
from tests.conftest import PG_URL, require_postgres

pytestmark = pytest.mark.postgres


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def app_engine(pg_schema: str) -> Iterator[tuple[statewf.Engine, str]]:
    require_postgres()
    name = f"statewf-lost-{uuid.uuid4().hex[:10]}"
    engine = statewf.Engine(f"{PG_URL}?application_name={name}", schema=pg_schema)
    engine.register(sm.counter_machine())
    yield engine, name
    engine.close()


def kill_backends(name: str) -> int:
    with psycopg.connect(libpq(PG_URL), autocommit=True) as conn:
        rows = conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s",
            (name,),
        ).fetchall()
    return len(rows)


def test_after_its_connections_die_an_engine_fails_at_most_once(
    app_engine: tuple[statewf.Engine, str], caplog: pytest.LogCaptureFixture
) -> None:
    engine, name = app_engine
    ids = [engine.create("counter", context={"n": 0}).id for _ in range(8)]

    def busy(instance_id: str) -> None:
        for _ in range(5):
            engine.send(instance_id, "INC")
            engine.get(instance_id)

    # fill both pools with several connections each
    threads = [threading.Thread(target=busy, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert kill_backends(name) >= 4

    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    failures = 0
    applied = dict.fromkeys(ids, 5)
    for n in range(30):
        target = ids[n % len(ids)]
        try:
            engine.send(target, "INC")
            applied[target] += 1
            engine.get(target)
            engine.history(target)
        except statewf.StoreError:
            failures += 1
    assert failures <= 1
    # nothing logged a raw traceback (SQLAlchemy's "Exception during reset")
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert {i: engine.get(i).context["n"] for i in ids} == applied
