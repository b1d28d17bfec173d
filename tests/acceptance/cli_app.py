"""App module for the CLI acceptance tests: ``statewf --app tests/acceptance/cli_app.py``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

import statewf


class Ticket(BaseModel):
    """Context of a support ticket."""

    title: str
    approvals: int = 0


class Approve(BaseModel):
    """Payload of APPROVE."""

    by: str


def approved(ctx: Ticket, ev: Any) -> bool:
    """Guard: someone approved the ticket."""
    return ctx.approvals >= 1


def count_approval(ctx: Ticket, ev: Approve) -> None:
    """Action: one more approval."""
    ctx.approvals += 1


@statewf.effect
def page_oncall(call: statewf.EffectCall) -> None:
    """Effect that always fails, so the outbox keeps it pending."""
    raise RuntimeError("pager is down")


ticket = statewf.Machine(
    name="ticket",
    initial="open",
    context=Ticket,
    states={
        "open": statewf.State(
            on={
                "APPROVE": statewf.transition(
                    internal=True, payload=Approve, action=count_approval
                ),
                "CLOSE": statewf.transition("closed", guard=approved),
                "ESCALATE": "escalated",
            }
        ),
        "escalated": statewf.State(on_enter=page_oncall, on={"CLOSE": "closed"}),
        "closed": statewf.State(final=True),
    },
)
