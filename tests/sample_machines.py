"""Machines shared by the statewf test suites (unit, integration, property, acceptance).

Importable as ``sample_machines`` because ``tests/`` (the conftest's folder) is on
``sys.path`` under pytest; subprocess scripts insert it themselves.
"""

from __future__ import annotations

import threading
from typing import Any

from pydantic import BaseModel

import statewf


class Order(BaseModel):
    """Context of the order-lifecycle machine."""

    order_id: str
    total: float
    paid_at: str | None = None
    notes: list[str] = []


class Payment(BaseModel):
    """Payload of PAYMENT_RECEIVED."""

    amount: float


#: Effect calls seen in this process, in order (tests clear it).
EFFECT_CALLS: list[statewf.EffectCall] = []
_effect_lock = threading.Lock()


def covers_total(ctx: Order, ev: Payment) -> bool:
    """Guard: the payment covers the order total."""
    return ev.amount >= ctx.total


def mark_paid(ctx: Order, ev: Payment) -> None:
    """Action: record the payment (mutates the context in place)."""
    ctx.paid_at = "paid"


def notify_warehouse(call: statewf.EffectCall) -> None:
    """Effect: pretend to call the warehouse."""
    with _effect_lock:
        EFFECT_CALLS.append(call)


def send_shipping_notification(call: statewf.EffectCall) -> None:
    """Effect: pretend to e-mail the customer."""
    with _effect_lock:
        EFFECT_CALLS.append(call)


def order_registry() -> statewf.Registry:
    """A registry holding the order machine's hooks and models, for data-file machines."""
    registry = statewf.Registry()
    registry.model(Order)
    registry.model(Payment)
    registry.guard(covers_total)
    registry.action(mark_paid)
    registry.effect(notify_warehouse)
    registry.effect(send_shipping_notification)
    return registry


def order_machine(version: str = "1") -> statewf.Machine:
    """The whole seed order-lifecycle machine, defined in Python."""
    return statewf.Machine(
        name="order-lifecycle",
        version=version,
        initial="pending",
        context=Order,
        states={
            "pending": statewf.State(
                on={
                    "PAYMENT_RECEIVED": statewf.transition(
                        "processing", payload=Payment, guard=covers_total, action=mark_paid
                    ),
                    "CANCEL": "cancelled",
                }
            ),
            "processing": statewf.State(
                on_enter=statewf.effect(notify_warehouse),
                on={"SHIPPED": "shipped", "OUT_OF_STOCK": "backorder"},
            ),
            "backorder": statewf.State(on={"RESTOCKED": "processing", "CANCEL": "cancelled"}),
            "shipped": statewf.State(
                on_enter=statewf.effect(send_shipping_notification),
                on={"DELIVERED": "delivered", "RETURN_REQUESTED": "returning"},
            ),
            "delivered": statewf.State(
                on={"CONFIRMED": "completed", "RETURN_REQUESTED": "returning"}
            ),
            "returning": statewf.State(on={"RETURN_RECEIVED": "cancelled"}),
            "completed": statewf.State(final=True),
            "cancelled": statewf.State(final=True),
        },
    )


ORDER_YAML = """\
name: order-lifecycle
version: "1"
initial: pending
context: Order
states:
  pending:
    on:
      PAYMENT_RECEIVED:
        target: processing
        guard: covers_total
        action: mark_paid
        payload: Payment
      CANCEL: cancelled
  processing:
    on_enter: notify_warehouse
    on:
      SHIPPED: shipped
      OUT_OF_STOCK: backorder
  backorder:
    on: {RESTOCKED: processing, CANCEL: cancelled}
  shipped:
    on_enter: send_shipping_notification
    on: {DELIVERED: delivered, RETURN_REQUESTED: returning}
  delivered:
    on: {CONFIRMED: completed, RETURN_REQUESTED: returning}
  returning:
    on: {RETURN_RECEIVED: cancelled}
  completed: {final: true}
  cancelled: {final: true}
"""

ORDER_JSON = """\
{
  "name": "order-lifecycle",
  "version": "1",
  "initial": "pending",
  "context": "Order",
  "states": {
    "pending": {"on": {
      "PAYMENT_RECEIVED": {"target": "processing", "guard": "covers_total",
                           "action": "mark_paid", "payload": "Payment"},
      "CANCEL": "cancelled"}},
    "processing": {"on_enter": "notify_warehouse",
                   "on": {"SHIPPED": "shipped", "OUT_OF_STOCK": "backorder"}},
    "backorder": {"on": {"RESTOCKED": "processing", "CANCEL": "cancelled"}},
    "shipped": {"on_enter": "send_shipping_notification",
                "on": {"DELIVERED": "delivered", "RETURN_REQUESTED": "returning"}},
    "delivered": {"on": {"CONFIRMED": "completed", "RETURN_REQUESTED": "returning"}},
    "returning": {"on": {"RETURN_RECEIVED": "cancelled"}},
    "completed": {"final": true},
    "cancelled": {"final": true}
  }
}
"""

#: Every event name the order machine knows, plus some it does not.
ORDER_EVENTS = [
    "PAYMENT_RECEIVED",
    "CANCEL",
    "SHIPPED",
    "OUT_OF_STOCK",
    "RESTOCKED",
    "DELIVERED",
    "RETURN_REQUESTED",
    "CONFIRMED",
    "RETURN_RECEIVED",
]


def bump(ctx: dict[str, Any], ev: Any) -> dict[str, Any]:
    """Action: increment the counter (returns a dict of updates)."""
    return {"n": ctx["n"] + 1}


def count_move(ctx: dict[str, Any], ev: Any) -> None:
    """Action: count state changes (mutates the dict in place)."""
    ctx["moves"] = ctx["moves"] + 1


def counter_machine() -> statewf.Machine:
    """A free-dict machine: INC is internal (+1 to n) everywhere; FLIP moves idle<->busy."""
    return statewf.Machine(
        name="counter",
        initial="idle",
        states={
            "idle": statewf.State(
                on={
                    "INC": statewf.transition(action=bump),
                    "FLIP": statewf.transition("busy", action=count_move),
                }
            ),
            "busy": statewf.State(
                on={
                    "INC": statewf.transition(action=bump),
                    "FLIP": statewf.transition("idle", action=count_move),
                }
            ),
        },
    )
