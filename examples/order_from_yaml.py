"""The order lifecycle loaded from ``order_lifecycle.yaml``, hooks resolved by name.

Run it with ``python examples/order_from_yaml.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import statewf

try:  # run as a script or imported as examples.order_from_yaml
    from examples import order_lifecycle as hooks
except ImportError:  # pragma: no cover
    import order_lifecycle as hooks  # type: ignore[no-redef]

registry = statewf.Registry()
registry.add_all(
    hooks.Order, hooks.Payment, hooks.Shipment, hooks.Note,
    hooks.covers_total, hooks.mark_paid, hooks.record_tracking, hooks.add_note,
    hooks.mark_refunded, hooks.notify_warehouse, hooks.send_shipping_notification,
    hooks.issue_refund,
)

order_machine = statewf.load_machine(Path(__file__).with_name("order_lifecycle.yaml"), registry)


def main() -> None:
    """Drive one order through the YAML-defined machine."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = statewf.Engine(f"sqlite:///{tmp}/orders.db")
        engine.register(order_machine)
        order = engine.create(order_machine, context={"order_id": "Y1", "total": 20})
        for event, payload in [("PAYMENT_RECEIVED", {"amount": 20}),
                               ("SHIPPED", {"tracking": "1Z1"}), ("DELIVERED", None),
                               ("CONFIRMED", None)]:
            order = engine.send(order.id, event, payload)
        print(f"{order.context['order_id']}: {order.state} after {order.version} transitions")
        engine.close()


if __name__ == "__main__":
    main()
