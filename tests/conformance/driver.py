"""Drive a statechart through the pure core only (no database): create, send, let time pass."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

from statewf import EventDiscarded, Machine
from statewf.adapter import CompiledMachine
from statewf.decide import Decision, decide, fire_timer, start
from statewf.records import Instance, TransitionRecord
from statewf.scxml import machine_from_scxml

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def scxml(text: str, registry: Any = None) -> Machine:
    """An SCXML machine; unreachable-state warnings are not what these tests are about."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return machine_from_scxml(text, registry)


class Run:
    """One instance of a machine, decided in memory; ``log`` keeps every record."""

    def __init__(self, machine: Machine, context: Any = None) -> None:
        self.compiled = CompiledMachine(machine)
        self.now = T0
        first = start(self.compiled, instance_id="i", context=context, now=self.now)
        self.snapshot: Instance = first.snapshot
        self.log: list[TransitionRecord] = [first.record]
        self.effects: list[str] = list(first.effects)

    def _take(self, decision: Decision) -> Instance:
        self.snapshot = decision.snapshot
        self.log.append(decision.record)
        self.effects += decision.effects
        return self.snapshot

    def send(self, event: str, payload: Any = None) -> Instance:
        """Apply an outside event (a discarded one changes nothing)."""
        self.fire_due()
        try:
            decision = decide(self.compiled, self.snapshot, event, payload, self.now)
        except EventDiscarded:
            return self.snapshot
        return self._take(decision)

    def advance(self, seconds: float) -> Instance:
        """Move time forward and fire every timer that came due."""
        self.now += timedelta(seconds=seconds)
        self.fire_due()
        return self.snapshot

    def fire_due(self) -> None:
        """Fire due timers, earliest first."""
        while self.snapshot.wake_at is not None and self.snapshot.wake_at <= self.now:
            self._take(fire_timer(self.compiled, self.snapshot, self.log, self.now))

    @property
    def ids(self) -> list[str]:
        """The active atomic states by id, sorted (how SCXML test scripts compare them)."""
        return sorted(self.snapshot.state_ids)

    @property
    def microsteps(self) -> list[dict[str, Any]]:
        """The microsteps of the last record."""
        steps: list[dict[str, Any]] = self.log[-1].meta.get("microsteps", [])
        return steps
