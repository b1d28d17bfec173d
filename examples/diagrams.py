"""Diagrams of the order lifecycle and of an onboarding workflow run.

Run it with ``python examples/diagrams.py [--out DIR]``. It drives one order through
the order-lifecycle machine (``examples/order_lifecycle.py``) and one run of the
onboarding workflow (``examples/onboarding.py``), on ``STATEWF_DATABASE_URL`` if set,
else on a fresh SQLite file in the output directory (``./diagrams-out`` by default,
ignored by git). Then it writes:

* ``order-lifecycle.svg/.dot/.mmd``  the machine itself;
* ``order-now.svg``, ``order-at-3.svg``  the order's current state, and as of transition 3;
* ``order-history.svg/.mmd``  the path the order took, edges numbered and counted;
* ``onboarding-run.svg/.mmd``  the workflow's steps and how far the run got.

DOT and Mermaid text need nothing installed; SVG needs Graphviz (``apt-get install
graphviz``). ``--docs`` also refreshes ``docs/order-lifecycle.svg``, the image the
README shows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import uuid
from pathlib import Path

import durable
import statewf
import visualize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onboarding import onboard_user
from order_lifecycle import order_machine

DOCS_SVG = Path(__file__).resolve().parent.parent / "docs" / "order-lifecycle.svg"


#: Why images cannot be rendered here, once the first attempt has said so.
_NO_IMAGES: list[str] = []


def write(diagram: visualize.Diagram, out: Path, stem: str, *, text: bool = True) -> None:
    """Write ``stem.svg`` (when Graphviz is there) and the DOT/Mermaid text."""
    if text:
        diagram.render(out / f"{stem}.dot")
        diagram.render(out / f"{stem}.mmd")
        print(f"  wrote {stem}.dot, {stem}.mmd")
    if _NO_IMAGES:
        return  # the reason was printed once already
    try:
        path = diagram.render(out / f"{stem}.svg")
    except visualize.VisualizeError as exc:
        _NO_IMAGES.append(exc.message)
        print(f"  no SVG images in this run: {exc.message}")
    else:
        print(f"  wrote {path}")


def drive_order(engine: statewf.Engine) -> str:
    """One order: a note, a rejected payment, backorder, shipment, delivery; its id."""
    engine.register(order_machine)
    order_id = f"A1-{uuid.uuid4().hex[:6]}"
    order = engine.create(order_machine, id=order_id, context={"order_id": order_id, "total": 100})
    engine.send(order.id, "ADD_NOTE", {"text": "gift wrap, please"})
    with contextlib.suppress(statewf.GuardRejected):  # rejected: no trace in the log
        engine.send(order.id, "PAYMENT_RECEIVED", {"amount": 40})
    engine.send(order.id, "PAYMENT_RECEIVED", {"amount": 100})
    engine.send(order.id, "OUT_OF_STOCK")
    engine.send(order.id, "RESTOCKED")
    engine.send(order.id, "SHIPPED", {"tracking": "1Z999"})
    engine.send(order.id, "DELIVERED")
    return order.id


async def run_onboarding(engine: statewf.Engine) -> str:
    """One onboarding run, to completion; its id."""
    async with durable.WorkflowEngine(engine, workflows=[onboard_user]) as workflows:
        run = await workflows.start_workflow(
            "onboard-user", {"email": "ada@example.com", "plan": "pro"}
        )
        await workflows.wait_for_run(run.id, timeout=60)
        return run.id


def main() -> None:
    """Drive an order and a workflow run, then draw them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("diagrams-out"), help="output directory")
    parser.add_argument("--docs", action="store_true", help=f"also write {DOCS_SVG}")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not (out / ".gitignore").exists():
        (out / ".gitignore").write_text("*\n")  # generated files stay out of git
    url = os.environ.get("STATEWF_DATABASE_URL")
    if url is None:  # a fresh SQLite file beside the diagrams
        for stale in out.glob("diagrams.db*"):
            stale.unlink()
        url = f"sqlite:///{out / 'diagrams.db'}"

    with statewf.Engine(url) as engine:
        order_id = drive_order(engine)
        run_id = asyncio.run(run_onboarding(engine))
        print(f"order {order_id} is {engine.get(order_id).state}; drawing into {out}/")
        machine = visualize.machine_diagram(order_machine)
        write(machine, out, "order-lifecycle")
        write(visualize.instance_diagram(engine, order_id), out, "order-now", text=False)
        write(visualize.instance_diagram(engine, order_id, seq=3), out, "order-at-3", text=False)
        write(visualize.history_diagram(engine, order_id), out, "order-history")
        write(visualize.run_diagram(engine, run_id), out, "onboarding-run")
    if args.docs and not _NO_IMAGES:
        DOCS_SVG.write_bytes(machine.pipe("svg"))
        print(f"  wrote {DOCS_SVG}")


if __name__ == "__main__":
    main()
