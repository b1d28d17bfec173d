"""A database written by the release before statecharts loads and works unchanged.

``fixtures/flat_release.db`` was made by statewf at d4bf186 (see
fixtures/flat_release.py). Today's code must register the same flat machine under the
same fingerprint, read its snapshots and logs, fold them to the stored snapshots, fire
its pending timer the old way and take new events.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import statewf
from statewf.testing import ManualClock
from tests.conftest import tracked
from tests.integration.fixtures.flat_release import START, ticket_machine

FIXTURE = Path(__file__).parent / "fixtures" / "flat_release.db"


def _engine(tmp_path: Path, clock: ManualClock) -> statewf.Engine:
    copy = tmp_path / "release.db"
    shutil.copy(FIXTURE, copy)
    engine = tracked(statewf.Engine(f"sqlite:///{copy}", clock=clock))
    engine.register(ticket_machine())  # same fingerprint, or MachineVersionConflict
    return engine


def test_old_snapshots_and_logs_read_and_fold_unchanged(tmp_path: Path) -> None:
    engine = _engine(tmp_path, ManualClock(START + timedelta(minutes=10)))
    waiting, assigned, done = (engine.get(i) for i in ("waiting", "assigned", "done"))
    assert (waiting.state, waiting.configuration, waiting.chart) == ("open", ("open",), False)
    assert waiting.wake_at == START + timedelta(hours=1)
    assert assigned.configuration == ("assigned",)
    assert done.status == "final"
    for inst in (waiting, assigned, done):
        assert engine.replay(inst.id) == inst
        assert inst.matches(inst.state)
    assert [r.target for r in engine.history("done")] == [("open",), ("assigned",), ("resolved",)]
    assert engine.state_at("done", 2).state == "assigned"
    assert engine.allowed_events("assigned") == ["RESOLVE", "REOPEN"]


def test_old_instances_take_events_and_fire_timers(tmp_path: Path) -> None:
    clock = ManualClock(START + timedelta(minutes=10))
    engine = _engine(tmp_path, clock)
    assert engine.send("assigned", "REOPEN").state == "open"
    clock.set(START + timedelta(hours=2))
    assert engine.fire_due_timers() >= 1
    assert engine.get("waiting").state == "escalated"
    for inst_id in ("waiting", "assigned"):
        assert engine.replay(inst_id) == engine.get(inst_id)
    new = engine.create("ticket")
    assert engine.send(new.id, "ASSIGN").configuration == ("assigned",)
