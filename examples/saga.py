"""A trip booking saga: book flight, hotel and car; if one fails for good, undo the others.

The error-handling pattern of the ai-workflows seed, in Python: a step that fails
for good raises ``durable.StepFailed`` inside the workflow, which catches it and runs
compensating steps in reverse order. Compensations are steps too, recorded in the
log, so a crash during a rollback resumes the rollback instead of repeating it.

Run it: ``python examples/saga.py``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any

from pydantic import BaseModel

import durable

BOOKINGS: dict[str, str] = {}


class Trip(BaseModel):
    """Where to, and whether the hotel is full (to show the rollback)."""

    traveller: str
    city: str
    hotel_full: bool = False


def book(kind: str, trip: dict[str, Any]) -> str:
    """Book one part of the trip with a (fake) provider."""
    if kind == "hotel" and trip["hotel_full"]:
        raise durable.NonRetryableError(f"no rooms left in {trip['city']}")
    step = durable.current_step()
    reference = f"{kind.upper()}-{trip['traveller'][:3].upper()}-{len(BOOKINGS) + 1}"
    # a real provider gets the idempotency key, so a retried request books once
    BOOKINGS[reference] = step.idempotency_key if step else ""
    return reference


def cancel(reference: str) -> str:
    """Cancel a booking (the compensation of ``book``)."""
    BOOKINGS.pop(reference, None)
    return f"cancelled {reference}"


@durable.workflow("book-trip", input=Trip, retries=2, retry_delay=0.01)
async def book_trip(ctx: durable.Context[Trip]) -> dict[str, Any]:
    """Book flight, hotel and car; on a failure, cancel what was booked, newest first."""
    trip = ctx.input.model_dump()
    booked: list[tuple[str, str]] = []
    try:
        for kind in ("flight", "hotel", "car"):
            booked.append((kind, await ctx.step.run(f"book-{kind}", book, kind, trip)))
    except durable.StepFailed as failure:
        undone = [
            await ctx.step.run(f"cancel-{kind}", cancel, reference)
            for kind, reference in reversed(booked)
        ]
        return {"status": "rolled back", "reason": failure.error_message, "undone": undone}
    return {"status": "booked", **dict(booked)}


async def main() -> None:
    url = os.environ.get("STATEWF_DATABASE_URL") or (
        f"sqlite:///{tempfile.mkdtemp(prefix='statewf-')}/saga.db"
    )
    async with durable.WorkflowEngine(url, workflows=[book_trip]) as engine:
        for trip in (
            {"traveller": "alice", "city": "Lisbon"},
            {"traveller": "bob", "city": "Porto", "hotel_full": True},
        ):
            run = await engine.start_workflow("book-trip", trip)
            output = await engine.result(run.id)
            print(f"{trip['traveller']}: {output}")
            for step in await engine.get_timeline(run.id):
                detail = step.error.message if step.error else step.result
                print(f"    {step.key:<14} {step.status:<9} {detail}")
        print(f"bookings still held: {sorted(BOOKINGS)}")
        assert all(not ref.startswith(("FLIGHT-BOB", "HOTEL-BOB")) for ref in BOOKINGS)


if __name__ == "__main__":
    asyncio.run(main())
