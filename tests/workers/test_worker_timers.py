"""Workers fire the due timers of declarative machines (no separate timer process)."""

from __future__ import annotations

import asyncio
from typing import Any

import durable
import statewf


def _expiring() -> statewf.Machine:
    return statewf.Machine(
        "quote",
        initial="open",
        states={
            "open": statewf.State(on={"ACCEPT": "accepted"}, after={"0.3s": "expired"}),
            "accepted": statewf.State(final=True),
            "expired": statewf.State(final=True),
        },
    )


def test_a_worker_fires_a_machines_due_timer_once(db: dict[str, Any]) -> None:
    machine = _expiring()
    engine = statewf.Engine(db["url"], schema=db["schema"])
    engine.register(machine)

    async def main(quote: statewf.Instance) -> None:
        # two workers, as in a deployment: the timer still fires once
        first = durable.Worker(
            db["url"], schema=db["schema"], machines=[machine], poll_interval=0.1
        )
        second = durable.Worker(
            db["url"], schema=db["schema"], machines=[machine], poll_interval=0.1
        )
        tasks = [asyncio.create_task(w.run(install_signal_handlers=False)) for w in (first, second)]
        try:
            for _ in range(400):
                if engine.get(quote.id).state == "expired":
                    break
                await asyncio.sleep(0.01)
        finally:
            first.request_stop()
            second.request_stop()
            await asyncio.gather(*tasks)

    try:
        quote = engine.create("quote", id="q-1")
        kept = engine.create("quote", id="q-2")
        engine.send(kept.id, "ACCEPT")
        asyncio.run(main(quote))
        assert engine.get(quote.id).state == "expired"
        timers = [r for r in engine.history(quote.id) if r.kind == "timer"]
        assert len(timers) == 1  # fired once, by one of the two workers
        assert engine.get(kept.id).state == "accepted"  # left alone: it had left the state
        assert [r.kind for r in engine.history(kept.id)] == ["create", "event"]
    finally:
        engine.close()


def test_a_worker_without_machines_runs_no_timer_loop(db: dict[str, Any]) -> None:
    engine = statewf.Engine(db["url"], schema=db["schema"])
    try:
        assert durable.Worker(engine)._wants_timers() is False
        assert durable.Worker(engine, timers=True)._wants_timers() is True
        engine.register(_expiring())
        assert durable.Worker(engine)._wants_timers() is True  # machines registered there
    finally:
        engine.close()
