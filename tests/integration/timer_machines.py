"""Machines with delayed transitions, shared by the timer tests and their subprocesses."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import statewf
from statewf.testing import ManualClock

START = datetime(2030, 1, 1, tzinfo=UTC)


def remind(ctx: dict, ev: None) -> dict:
    """Count reminders."""
    return {"reminders": ctx.get("reminders", 0) + 1}


def never(ctx: dict, ev: None) -> bool:
    """A guard that always says no."""
    return False


def explode(ctx: dict, ev: None) -> None:
    """An action that fails."""
    raise RuntimeError("boom")


expiring = statewf.Machine(
    "expiring",
    initial="waiting",
    states={
        "waiting": statewf.State(
            on={"PAY": "paid", "POKE": statewf.transition(internal=True)},
            after={"1 day": statewf.transition(internal=True, action=remind),
                   "7 days": "expired"},
        ),
        "paid": statewf.State(on={"REFUND": "waiting"}),
        "expired": statewf.State(final=True),
    },
)

skipping = statewf.Machine(
    "skipping",
    initial="a",
    states={
        "a": statewf.State(after={
            "1 hour": statewf.transition("b", guard=never),
            "2 hours": statewf.transition("b", action=explode),
            "3 hours": "c",
        }),
        "b": statewf.State(final=True),
        "c": statewf.State(final=True),
    },
)


def main() -> None:
    """``python timer_machines.py URL SCHEMA create N`` or ``... fire ISO_TIME``."""
    url, schema, command, arg = sys.argv[1:5]
    engine = statewf.Engine(url, schema=schema or None,
                            clock=ManualClock(datetime.fromisoformat(arg) if command == "fire"
                                              else START))
    engine.register(expiring)
    if command == "create":
        for _ in range(int(arg)):
            print(engine.create(expiring).id)
    else:
        total = 0
        while True:
            fired = engine.fire_due_timers(limit=5)
            total += fired
            if not fired:
                break
        print(total)
    engine.close()


if __name__ == "__main__":
    main()
