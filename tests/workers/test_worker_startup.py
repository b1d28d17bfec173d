"""A worker whose database does not answer yet keeps trying instead of exiting."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import durable
import statewf
from statewf.errors import StoreError


def test_a_worker_retries_its_start_while_the_database_refuses(
    tmp_path: Path, caplog: Any, monkeypatch: Any
) -> None:
    engine = statewf.Engine(f"sqlite:///{tmp_path / 'w.db'}")
    worker = durable.Worker(engine, poll_interval=0.05)
    refusals = {"left": 2}
    register = worker._register

    async def flaky_register() -> None:
        if refusals["left"]:
            refusals["left"] -= 1
            raise StoreError("database error: sorry, too many clients already")
        await register()

    monkeypatch.setattr(worker, "_register", flaky_register)
    caplog.set_level(logging.WARNING, logger="durable.worker")

    async def main() -> None:
        task = asyncio.create_task(worker.run(install_signal_handlers=False))
        for _ in range(500):
            if worker._registered:
                break
            await asyncio.sleep(0.01)
        assert worker._registered  # it got through after two refusals
        worker.request_stop()
        await task

    try:
        asyncio.run(main())
        warnings = [r.getMessage() for r in caplog.records if "cannot start yet" in r.getMessage()]
        assert len(warnings) == 2
        assert "too many clients" in warnings[0]
        assert durable.worker.live_workers(engine) == []  # stopped cleanly afterwards
    finally:
        engine.close()


def test_a_worker_asked_to_stop_while_waiting_for_the_database_exits(tmp_path: Path) -> None:
    engine = statewf.Engine(f"sqlite:///{tmp_path / 'w.db'}")
    worker = durable.Worker(engine, poll_interval=0.05)

    async def refuse() -> None:
        raise StoreError("database error: connection refused")

    worker._register = refuse  # type: ignore[method-assign]

    async def main() -> None:
        task = asyncio.create_task(worker.run(install_signal_handlers=False))
        await asyncio.sleep(0.2)
        worker.request_stop()
        await asyncio.wait_for(task, timeout=10)

    try:
        asyncio.run(main())
        assert worker._closed
    finally:
        engine.close()
