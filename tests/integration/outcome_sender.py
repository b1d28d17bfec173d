"""A process that sends one event recording an effect, runs it, then ends: either dying
at once (``crash``: ``os._exit``, nothing written after the effect) or exiting normally
without closing its engine (``exit``: the interpreter's exit writes the outcome)."""

from __future__ import annotations

import os
import sys

import statewf


@statewf.effect
def ping(call: statewf.EffectCall) -> None:
    print(f"ran {call.idempotency_key} attempt {call.attempt}", flush=True)


MACHINE = statewf.Machine(
    "outcome-sender",
    initial="a",
    states={
        "a": statewf.State(on={"GO": statewf.transition("b", action=ping)}),
        "b": statewf.State(),
    },
)

if __name__ == "__main__":
    url, schema, how = sys.argv[1], sys.argv[2], sys.argv[3]
    engine = statewf.Engine(url, schema=None if schema == "-" else schema, effect_outcome_delay=10)
    engine.register(MACHINE)
    inst = engine.create(MACHINE)
    engine.send(inst.id, "GO")
    print(f"sent {inst.id}", flush=True)
    if how == "crash":
        os._exit(0)  # dies between the effect and its outcome
    sys.exit(0)  # normal exit, the engine left open
