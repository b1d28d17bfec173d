"""An order lifecycle as a statechart, end to end, on the SQLite default.

Confirm the order; payment and shipping then run in parallel regions. Put the order
on hold and release it: deep history puts it back into the exact substates it left.
Ship it; when both regions are final, the ``done`` event of ``processing`` moves the
order to ``delivered``. Every outside event is one log row carrying its microsteps.

Run it: ``python examples/order_statechart.py``
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta

from pydantic import BaseModel

import statewf
from statewf.testing import ManualClock


class Order(BaseModel):
    """The order's context."""

    order_id: str
    holds: int = 0


def count_hold(ctx: Order, payload: object) -> None:
    """Action: count how often the order was put on hold."""
    ctx.holds += 1


S = statewf.State

order = statewf.Machine(
    "order",
    initial="open",
    context=Order,
    states={
        "open": S(
            initial="placed",
            on={
                "CANCEL": "cancelled",
                "HOLD": statewf.transition("on_hold", action=count_hold),
            },
            states={
                "placed": S(on={"CONFIRM": "processing"}),
                "processing": S(
                    parallel=True,
                    on_done="delivered",
                    states={
                        "payment": S(
                            initial="unpaid",
                            states={
                                "unpaid": S(on={"PAID": "paid"}),
                                "paid": S(final=True),
                            },
                        ),
                        "shipping": S(
                            initial="picking",
                            states={
                                "picking": S(on={"PICKED": "packing"}, after={"2 days": "late"}),
                                "late": S(on={"PICKED": "packing"}),
                                "packing": S(on={"PACKED": "shipped"}),
                                "shipped": S(final=True),
                            },
                        ),
                    },
                ),
                "resume": statewf.History(deep=True),
            },
        ),
        "on_hold": S(on={"RELEASE": "open.resume"}),
        "delivered": S(final=True),
        "cancelled": S(final=True),
    },
)


def main() -> None:
    """Drive one order through the whole chart and print what the log holds."""
    folder = tempfile.mkdtemp(prefix="statewf-statechart-")
    clock = ManualClock()
    with statewf.Engine(f"sqlite:///{os.path.join(folder, 'orders.db')}", clock=clock) as engine:
        engine.register(order)
        inst = engine.create("order", context={"order_id": "A-1"})
        print("created     ", inst.configuration)

        inst = engine.send(inst.id, "CONFIRM")
        assert inst.configuration == (
            "open.processing.payment.unpaid",
            "open.processing.shipping.picking",
        )
        assert inst.matches("open.processing")
        print("confirmed   ", inst.configuration, "allowed:", engine.allowed_events(inst.id))

        inst = engine.send(inst.id, "PAID")
        clock.advance(timedelta(days=3))  # picking took too long: the after timer fires
        engine.fire_due_timers()
        inst = engine.get(inst.id)
        assert inst.configuration[1] == "open.processing.shipping.late"
        print("late        ", inst.configuration)

        inst = engine.send(inst.id, "HOLD")
        assert inst.configuration == ("on_hold",)
        print("on hold     ", inst.configuration, "history:", inst.history)

        inst = engine.send(inst.id, "RELEASE")
        assert inst.configuration == (
            "open.processing.payment.paid",
            "open.processing.shipping.late",
        )
        print("released    ", inst.configuration)

        inst = engine.send(inst.id, "PICKED")
        inst = engine.send(inst.id, "PACKED")
        assert inst.configuration == ("delivered",)
        assert inst.status == "final"
        assert inst.context["holds"] == 1
        print("delivered   ", inst.configuration, inst.status)

        last = engine.history(inst.id)[-1]
        for step in last.meta["microsteps"]:
            moves = ", ".join(f"{t['source']} -> {t['targets']}" for t in step["transitions"])
            print(f"  microstep on {step['event']}: {moves}")
        assert engine.replay(inst.id) == inst
        print("time travel #5:", engine.state_at(inst.id, 5).configuration)


if __name__ == "__main__":
    main()
