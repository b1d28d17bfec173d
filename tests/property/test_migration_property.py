"""Property: across random events, timer firings and migrations back and forth between
two versions of a machine, folding the log always gives the stored snapshot, and
``state_at`` just before each migration row shows the version it left.

A rejected migration (a state the other version lacks, unmapped) leaves the log and
the snapshot byte-identical.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import timedelta
from typing import Any

from db_snapshot import frozen
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import statewf
from statewf import Engine, EventRejected, MigrationRejected
from statewf.fold import fold
from statewf.testing import ManualClock


def bump(ctx: dict[str, Any], ev: Any) -> dict[str, Any]:
    """Action: count the moves in the context."""
    return {"moves": ctx.get("moves", 0) + 1}


def flat(version: str) -> statewf.Machine:
    """Version 1 has ``late`` and ``lost``; version 2 has ``delayed`` and ``held``."""
    if version == "1":
        states = {
            "placed": statewf.State(
                on={"delay": "late", "lose": "lost", "ship": "shipped"},
                after={"2 days": statewf.transition("late", action=bump)},
            ),
            "late": statewf.State(
                on={"ship": "shipped", "back": "placed"}, after={"1 day": "lost"}
            ),
            "lost": statewf.State(on={"back": "placed"}),
            "shipped": statewf.State(final=True),
        }
    else:
        states = {
            "placed": statewf.State(
                on={"delay": "delayed", "hold": "held", "ship": "shipped"},
                after={"2 days": statewf.transition("delayed", action=bump)},
            ),
            "delayed": statewf.State(
                on={"ship": "shipped", "back": "placed"}, after={"3 days": "held"}
            ),
            "held": statewf.State(on={"back": "placed", "ship": "shipped"}),
            "shipped": statewf.State(final=True),
        }
    return statewf.Machine("parcel", version=version, initial="placed", states=states)


#: The state maps a migration may use towards each version (or none: then a state the
#: other version lacks is a rejection).
MAPS = {
    "2": [None, {"late": "delayed", "lost": "held"}, {"late": "held", "lost": "placed"}],
    "1": [None, {"delayed": "late", "held": "lost"}, {"delayed": "placed", "held": "placed"}],
}

steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.sampled_from(["delay", "lose", "hold", "ship", "back"])),
        st.tuples(st.just("wait"), st.sampled_from([6, 30, 50, 80])),
        st.tuples(st.just("migrate"), st.integers(0, 2)),
    ),
    min_size=1,
    max_size=12,
)


def test_fold_equals_snapshot_across_migrations(db: dict[str, Any]) -> None:
    clock = ManualClock()
    with Engine(**db, clock=clock) as engine:
        engine.register(flat("1"), flat("2"))

        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(steps=steps)
        def run(steps: list[tuple[str, Any]]) -> None:
            instance_id = uuid.uuid4().hex
            engine.create("parcel", id=instance_id, version="1")
            for kind, arg in steps:
                current = engine.get(instance_id)
                if kind == "send":
                    with contextlib.suppress(EventRejected):
                        engine.send(instance_id, arg)
                elif kind == "wait":
                    clock.advance(timedelta(hours=arg))
                    engine.fire_due_timers(limit=1000)
                else:
                    other = "2" if current.machine_version == "1" else "1"
                    before = frozen(engine, instance_id)
                    try:
                        moved = engine.migrate(instance_id, other, state_map=MAPS[other][arg])
                    except MigrationRejected as exc:
                        rejected: MigrationRejected | None = exc
                    else:
                        rejected = None
                    if rejected is not None:
                        assert rejected.state == current.state
                        assert frozen(engine, instance_id) == before
                    else:
                        assert moved.machine_version == other
                        seq = moved.version
                        assert engine.state_at(instance_id, seq - 1).machine_version == (
                            current.machine_version
                        )
                        assert engine.state_at(instance_id, seq) == moved
                log = engine.history(instance_id)
                snapshot = engine.get(instance_id)
                assert fold(log) == snapshot
                assert [r.seq for r in log] == list(range(1, snapshot.version + 1))
                versions = [engine.state_at(instance_id, r.seq).machine_version for r in log]
                for record, version in zip(log, versions, strict=True):
                    if record.kind == "migrate":
                        assert version == record.meta["machine_version"]

        run()
