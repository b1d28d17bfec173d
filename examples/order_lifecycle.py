"""The order lifecycle from the seed, as a statewf machine, run end to end.

Run it with ``python examples/order_lifecycle.py``: it uses an SQLite file
(``statewf.db`` in the current directory, or ``STATEWF_DATABASE_URL``), creates two
orders, drives them through the machine, shows a rejected event, and prints each
order's history. The CLI can drive the same machine::

    statewf --app examples/order_lifecycle.py show <order id>
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pydantic import BaseModel

import statewf


class Order(BaseModel):
    """The context every order instance carries."""

    order_id: str
    total: float
    paid_at: str | None = None
    tracking: str | None = None
    notes: list[str] = []
    refunded: bool = False


class Payment(BaseModel):
    """Payload of PAYMENT_RECEIVED."""

    amount: float


class Shipment(BaseModel):
    """Payload of SHIPPED."""

    tracking: str


class Note(BaseModel):
    """Payload of ADD_NOTE."""

    text: str


def covers_total(ctx: Order, ev: Payment) -> bool:
    """Guard: the payment covers the order total."""
    return ev.amount >= ctx.total


def mark_paid(ctx: Order, ev: Payment) -> None:
    """Action: remember when the order was paid (the time comes from outside)."""
    ctx.paid_at = datetime.now(UTC).isoformat(timespec="seconds")


def record_tracking(ctx: Order, ev: Shipment) -> dict[str, str]:
    """Action: keep the tracking number (returning a dict updates the context)."""
    return {"tracking": ev.tracking}


def add_note(ctx: Order, ev: Note) -> None:
    """Action of an internal transition: the state is not exited or re-entered."""
    ctx.notes.append(ev.text)


def mark_refunded(ctx: Order, ev: object) -> None:
    """Action: the order's money went back."""
    ctx.refunded = True


# Effects talk to the outside world. They are written to the outbox in the same
# database transaction as the transition and run after it commits, at least once,
# with a stable idempotency key to hand to the service they call.
@statewf.effect
def notify_warehouse(call: statewf.EffectCall) -> None:
    """Effect: ask the warehouse to pick the order."""
    print(f"  [warehouse] pick order {call.context['order_id']} (key {call.idempotency_key})")


@statewf.effect
def send_shipping_notification(call: statewf.EffectCall) -> None:
    """Effect: tell the customer the parcel is on its way."""
    ctx = call.context
    print(f"  [email] order {ctx['order_id']} shipped, tracking {ctx['tracking']}")


@statewf.effect
def issue_refund(call: statewf.EffectCall) -> None:
    """Effect: refund the customer through the payment provider."""
    print(f"  [payments] refund {call.context['total']} for {call.context['order_id']}")


order_machine = statewf.Machine(
    "order-lifecycle",
    version="1",
    initial="pending",
    context=Order,
    description="An order from payment to delivery, with backorders and returns.",
    states={
        "pending": statewf.State(
            on={
                "PAYMENT_RECEIVED": statewf.transition(
                    "processing", payload=Payment, guard=covers_total, action=mark_paid
                ),
                "ADD_NOTE": statewf.transition(internal=True, payload=Note, action=add_note),
                "CANCEL": "cancelled",
            }
        ),
        "processing": statewf.State(
            on_enter=notify_warehouse,
            on={
                "SHIPPED": statewf.transition("shipped", payload=Shipment,
                                              action=record_tracking),
                "OUT_OF_STOCK": "backorder",
                "CANCEL": statewf.transition("cancelled", action=[mark_refunded, issue_refund]),
            },
        ),
        "backorder": statewf.State(
            on={
                "RESTOCKED": "processing",
                "CANCEL": statewf.transition("cancelled", action=[mark_refunded, issue_refund]),
            }
        ),
        "shipped": statewf.State(
            on_enter=send_shipping_notification,
            on={"DELIVERED": "delivered"},
        ),
        "delivered": statewf.State(
            on={"CONFIRMED": "completed", "RETURN_REQUESTED": "returning"},
        ),
        "returning": statewf.State(
            on={
                "RETURN_RECEIVED": statewf.transition(
                    "cancelled", action=[mark_refunded, issue_refund]
                ),
            }
        ),
        "completed": statewf.State(final=True),
        "cancelled": statewf.State(final=True),
    },
)


def print_history(engine: statewf.Engine, instance_id: str) -> None:
    """Print an instance's log, one transition a line."""
    for r in engine.history(instance_id):
        moved = f"{','.join(r.source) or '-':>10} -> {','.join(r.target):<10}"
        print(f"  {r.seq:>2}  {r.kind:<6} {r.event or '(created)':<17} {moved} {r.context_set}")


def main() -> None:
    """Create two orders, drive them, and print what the log holds."""
    engine = statewf.Engine()  # SQLite file by default; STATEWF_DATABASE_URL overrides
    engine.register(order_machine)
    print(f"database: {engine.store.url}")

    suffix = uuid.uuid4().hex[:6]
    order = engine.create(order_machine, id=f"A1-{suffix}",
                          context={"order_id": f"A1-{suffix}", "total": 100})
    print(f"\norder {order.id}: {order.state}, allowed {engine.allowed_events(order.id)}")
    engine.send(order.id, "ADD_NOTE", {"text": "gift wrap, please"})
    try:
        engine.send(order.id, "PAYMENT_RECEIVED", {"amount": 40})
    except statewf.GuardRejected as exc:
        print(f"rejected as expected: {exc}")
    order = engine.send(order.id, "PAYMENT_RECEIVED", {"amount": 100})
    assert order.state == "processing"
    engine.send(order.id, "SHIPPED", {"tracking": "1Z999"})
    engine.send(order.id, "DELIVERED")
    order = engine.send(order.id, "CONFIRMED")
    print(f"order {order.id} is {order.state} ({order.status}) after {order.version} transitions")
    print_history(engine, order.id)
    print(f"  time travel, as of transition 3: {engine.state_at(order.id, seq=3).state}")

    returned = engine.create(order_machine, context={"order_id": f"B2-{suffix}", "total": 30})
    for event, payload in [("PAYMENT_RECEIVED", {"amount": 30}), ("OUT_OF_STOCK", None),
                           ("RESTOCKED", None), ("SHIPPED", {"tracking": "1Z777"}),
                           ("DELIVERED", None), ("RETURN_REQUESTED", None),
                           ("RETURN_RECEIVED", None)]:
        returned = engine.send(returned.id, event, payload)
    print(f"\norder {returned.context['order_id']} is {returned.state}, "
          f"refunded={returned.context['refunded']}")
    print_history(engine, returned.id)
    engine.close()


if __name__ == "__main__":
    main()
