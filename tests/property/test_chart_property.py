"""Random statecharts and random events on both stores.

After every event: the configuration is legal (one active child per active compound
state, every region of an active parallel state), folding the log gives the snapshot,
and an event that is rejected or discarded leaves the snapshot and log byte-identical.
At the end, time travel to every seq equals the snapshot the instance had right after
that row was written (the replay of the log's prefix). The charts send themselves
delayed events, fired by the scheduler or before the next event as time passes.
"""

from __future__ import annotations

import itertools
import warnings
from datetime import timedelta
from typing import Any

from db_snapshot import frozen
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from statewf import Engine, EventRejected, SpecWarning
from statewf.fold import fold
from statewf.records import Instance
from statewf.scxml import machine_from_scxml
from statewf.testing import ManualClock
from tests.property.charts import EVENTS, charts, legal

_names = itertools.count()

steps = st.lists(
    st.one_of(
        st.sampled_from([*EVENTS, "a.x.y", "zzz"]).map(lambda e: ("send", e)),
        st.integers(1, 3).map(lambda s: ("wait", s)),
    ),
    max_size=12,
)


def test_random_charts_keep_every_invariant(db: dict[str, Any]) -> None:
    clock = ManualClock()
    with Engine(**db, clock=clock) as engine:

        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(text=charts(timers=True), plan=steps, discard=st.booleans())
        def check(text: str, plan: list[tuple[str, Any]], discard: bool) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SpecWarning)
                machine = machine_from_scxml(
                    text, name=f"chart{next(_names)}", ignore_unmatched=discard
                )
            assert machine.chart is not None
            engine.register(machine)
            try:
                inst = engine.create(machine)
            except EventRejected:
                return  # an eventless loop on entry: refused, nothing stored
            seen: dict[int, Instance] = {1: inst}
            for kind, value in plan:
                if kind == "wait":
                    clock.advance(timedelta(seconds=value))
                    if value == 3:  # sometimes the scheduler fires them, else the next event
                        engine.fire_due_timers()
                        inst = engine.get(inst.id)
                        legal(machine.chart, inst.configuration)
                        assert fold(engine.history(inst.id)) == inst
                        seen[inst.version] = inst
                    continue
                before = frozen(engine, inst.id)
                try:
                    inst = engine.send(inst.id, value)
                except EventRejected:
                    assert frozen(engine, inst.id) == before
                    event("rejected")
                    continue
                if inst.version == engine.get(inst.id).version and (
                    frozen(engine, inst.id) == before
                ):
                    continue  # discarded (SCXML): nothing changed
                legal(machine.chart, inst.configuration)
                assert fold(engine.history(inst.id)) == engine.get(inst.id)
                seen[inst.version] = engine.get(inst.id)
            log = engine.history(inst.id)
            event(f"timer rows: {any(r.kind == 'timer' for r in log)}")
            for record in log:
                travelled = engine.state_at(inst.id, record.seq)
                assert travelled == fold(log[: record.seq])
                if record.seq in seen:
                    assert travelled == seen[record.seq]
                legal(machine.chart, travelled.configuration)

        check()
