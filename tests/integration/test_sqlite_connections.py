"""A SQLite file engine keeps its connections: opening one runs PRAGMAs, closing the
last one of a WAL database checkpoints it, and a send should pay for neither."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

import statewf
from tests.conftest import tracked

flip = statewf.Machine(
    "flip",
    initial="a",
    states={"a": statewf.State(on={"F": "b"}), "b": statewf.State(on={"F": "a"})},
)


def test_sends_reuse_pooled_connections(sqlite_url: str) -> None:
    engine = tracked(statewf.Engine(sqlite_url))
    engine.register(flip)
    inst = engine.create("flip")
    opened: list[Any] = []
    sa.event.listen(engine.store.engine, "connect", lambda conn, rec: opened.append(conn))
    for _ in range(50):
        inst = engine.send(inst.id, "F")
    assert opened == []
    assert inst.version == 51
    assert [r.seq for r in engine.history(inst.id)][-1] == 51


def test_a_pooled_connection_serves_the_async_twins_threads(sqlite_url: str) -> None:
    engine = tracked(statewf.Engine(sqlite_url))
    engine.register(flip)
    ids = [engine.create("flip").id for _ in range(4)]

    async def main() -> None:
        for _ in range(10):
            await asyncio.gather(*(engine.send_async(i, "F") for i in ids))

    asyncio.run(main())
    assert all(engine.get(i).version == 11 for i in ids)
