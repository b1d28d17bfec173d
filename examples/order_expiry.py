"""Unpaid orders expire after 7 days, with a reminder after 3: delayed transitions.

Run it with ``python examples/order_expiry.py``. A :class:`ManualClock` stands in for
the calendar, so a week passes instantly; in production the engine's clock is the
wall clock and ``statewf timers run --app examples/order_expiry.py`` (or a worker)
fires the timers. Timers are rows in the database: they fire even if every process
was down when they came due, and they are cancelled when the order leaves the state.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta

import statewf
from statewf.testing import ManualClock


def remind(ctx: dict, ev: None) -> dict:
    """Action of an internal delayed transition: count the reminders sent."""
    return {"reminders": ctx.get("reminders", 0) + 1}


order_expiry = statewf.Machine(
    "order-with-expiry",
    initial="awaiting_payment",
    states={
        "awaiting_payment": statewf.State(
            on={"PAY": "paid", "CANCEL": "cancelled"},
            after={
                "3 days": statewf.transition(internal=True, action=remind),
                "7 days": "expired",
            },
        ),
        "paid": statewf.State(on={"SHIP": "shipped"}, timeout="2 days",
                              on_timeout="late"),
        "late": statewf.State(on={"SHIP": "shipped"}),
        "shipped": statewf.State(final=True),
        "expired": statewf.State(final=True),
        "cancelled": statewf.State(final=True),
    },
)


def main() -> None:
    """Two orders, one paid on day 1; a week passes."""
    clock = ManualClock()
    with tempfile.TemporaryDirectory() as tmp:
        engine = statewf.Engine(f"sqlite:///{tmp}/orders.db", clock=clock)
        engine.register(order_expiry)
        unpaid = engine.create(order_expiry, context={"order": "U1"})
        paid = engine.create(order_expiry, context={"order": "P1"})
        print(f"created at {clock.now():%Y-%m-%d}; {unpaid.context['order']} wakes at "
              f"{unpaid.wake_at:%Y-%m-%d}")
        for day in range(1, 9):
            clock.advance(timedelta(days=1))
            if day == 1:
                engine.send(paid.id, "PAY")
            if day == 2:
                engine.send(paid.id, "SHIP")      # shipped in time: its timeout is cancelled
            fired = engine.fire_due_timers()
            u = engine.get(unpaid.id)
            print(f"day {day}: fired {fired}; U1 {u.state} (reminders "
                  f"{u.context.get('reminders', 0)}), P1 {engine.get(paid.id).state}")
        for r in engine.history(unpaid.id):
            print(f"  {r.seq}  {r.kind:<6} {r.event or '(created)':<14} -> {r.target[0]}")
        assert engine.get(unpaid.id).state == "expired"
        assert engine.get(paid.id).state == "shipped"
        engine.close()


if __name__ == "__main__":
    main()
