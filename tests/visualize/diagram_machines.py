"""The order machine the diagram tests draw, and helpers shared by them."""

from __future__ import annotations

import statewf
from statewf import Machine, State, effect, transition


def payment_covers_total(ctx: object, payload: object) -> bool:
    """Guard: the payment covers the order total."""
    return True


def in_stock(ctx: object, payload: object) -> bool:
    """Guard: every item is in stock."""
    return True


def return_requested(ctx: object, payload: object) -> bool:
    """Guard: the customer asked to return the order."""
    return False


def within_return_window(ctx: object, payload: object) -> bool:
    """Guard: the return window is still open."""
    return True


def record_payment(ctx: object, payload: object) -> None:
    """Action: store the payment on the order."""


def reserve_stock(ctx: object, payload: object) -> None:
    """Entry action of processing."""


def assign_tracking(ctx: object, payload: object) -> None:
    """Action: attach a tracking number."""


def set_address(ctx: object, payload: object) -> None:
    """Action of an internal transition."""


@effect
def notify_customer(call: object) -> None:
    """Effect: email the customer (after commit)."""


@effect(name="refund_payment")
def refund(call: object) -> None:
    """Effect: refund through the payment provider (after commit)."""


def order_machine(version: str = "1") -> Machine:
    """An order lifecycle with guards, unless, actions, effects, entry/exit, internal and self."""
    return Machine(
        "order-lifecycle",
        version=version,
        initial="pending",
        description="An order from payment to delivery or cancellation",
        states={
            "pending": State(
                on={
                    "PAY": transition(
                        "processing", guard=payment_covers_total, action=record_payment
                    ),
                    "UPDATE_ADDRESS": transition(action=set_address),
                    "CANCEL": "cancelled",
                }
            ),
            "processing": State(
                on_enter=reserve_stock,
                on={
                    "SHIP": transition("shipped", guard=in_stock, action=assign_tracking),
                    "OUT_OF_STOCK": "backorder",
                    "CANCEL": transition("cancelled", action=refund),
                },
            ),
            "backorder": State(
                on={
                    "RESTOCK": "processing",
                    "CHECK_STOCK": transition("backorder"),
                    "CANCEL": transition("cancelled", action=refund),
                }
            ),
            "shipped": State(on_enter=notify_customer, on={"DELIVER": "delivered"}),
            "delivered": State(
                on={
                    "CLOSE": transition("completed", unless=return_requested),
                    "REQUEST_RETURN": transition("returning", guard=within_return_window),
                },
                on_exit=notify_customer,
            ),
            "returning": State(on={"RETURN_RECEIVED": transition("cancelled", action=refund)}),
            "completed": State(final=True),
            "cancelled": State(final=True, on_enter=notify_customer),
        },
    )


def walk_order(engine: statewf.Engine) -> str:
    """Create an order and drive it through backorder to delivered; its id."""
    engine.register(order_machine())
    order = engine.create("order-lifecycle", id="order-1")
    for event in ("UPDATE_ADDRESS", "PAY", "OUT_OF_STOCK", "CHECK_STOCK", "CHECK_STOCK"):
        engine.send(order.id, event)
    for event in ("RESTOCK", "SHIP", "DELIVER"):
        engine.send(order.id, event)
    return order.id
