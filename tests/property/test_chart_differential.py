"""Differential test: statewf's SCXML core against python-statemachine on random charts.

python-statemachine (a dev dependency) reads the same SCXML documents with its own
implementation of the W3C algorithm. After the start and after every event the two
must agree on the active atomic states. Where python-statemachine departs from the
recommendation, the W3C algorithm wins, and the test says why:

- python-statemachine refuses a ``type="internal"`` transition whose target is not a
  descendant of its source. The recommendation accepts it and gives it the domain of
  an external transition (getTransitionDomain falls through to findLCCA). The test
  checks that statewf runs the document exactly as the same document with that
  transition made external, and compares python-statemachine on the latter. It also
  refuses ``type="internal"`` on a transition without a target, where the type
  changes nothing (there is no exit set): the test drops it.
- python-statemachine's default initial state of a compound state skips a ``<final>``
  first child; the recommendation (3.3) takes "the first child state in document
  order", final or not. The test gives such states an explicit ``initial`` naming
  that child (statewf must run both forms the same) before comparing.
- python-statemachine does not let a transition whose source is a descendant of an
  earlier-selected transition's source preempt it (removeConflictingTransitions), so
  events raised on entry can make it loop without end where the recommendation ends the
  macrostep (a chart whose first region's inner state leaves the whole parallel state
  while an outer transition of the same region would have re-entered it). Its loop is
  bounded here (``THEIR_MICROSTEP_LIMIT``); past the bound the example is no longer
  compared, and statewf's configuration is checked legal. Events whose selection drops
  a transition this way are not compared either (``_preemption``).
- Once every region of a parallel state is in a final state, python-statemachine takes
  no more transitions inside it. The recommendation keeps the parallel state active
  (its ``done.state`` event is raised, nothing is exited) and selects transitions from
  its atomic descendants as before (selectTransitions, isInFinalState). From that point
  the example is no longer compared; statewf's configuration is still checked legal.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statewf import MacrostepLimit, SpecWarning
from statewf.chart.algorithm import Interpreter
from statewf.scxml import machine_from_scxml
from tests.conformance.driver import Run
from tests.property.charts import EVENTS, charts, legal

statemachine_io = pytest.importorskip("statemachine.io")
statemachine_sync = pytest.importorskip("statemachine.engines.sync")

#: Microsteps the other engine may take for one event before the example fails. statewf
#: refuses a loop after 1,000 (MacrostepLimit); python-statemachine has no bound, and it
#: turns exceptions raised inside its loop (pytest-timeout's too) into error events, so
#: without this bound a loop of its own would hang the suite instead of failing.
THEIR_MICROSTEP_LIMIT = 2_000


class TheirLoop(BaseException):
    """python-statemachine passed its microstep bound (a BaseException: it is not caught)."""


def _bounded(microstep: Any) -> Any:
    def counted(engine: Any, *args: Any, **kwargs: Any) -> Any:
        engine.statewf_microsteps = getattr(engine, "statewf_microsteps", 0) + 1
        if engine.statewf_microsteps > THEIR_MICROSTEP_LIMIT:
            raise TheirLoop(f"python-statemachine took over {THEIR_MICROSTEP_LIMIT} microsteps")
        return microstep(engine, *args, **kwargs)

    return counted


statemachine_sync.SyncEngine.microstep = _bounded(statemachine_sync.SyncEngine.microstep)


def _theirs(text: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return statemachine_io.load(text, format="scxml")()


def _send(theirs: Any, event: str) -> None:
    """Send to the other engine, its microstep count starting afresh."""
    theirs._engine.statewf_microsteps = 0
    theirs.send(event)


def _normalized(text: str, machine: Any) -> str:
    """The document in the W3C-equivalent form python-statemachine reads as W3C does."""
    root = ET.fromstring(text)
    chart = machine.chart
    for el in root.iter("{http://www.w3.org/2005/07/scxml}state"):
        node = chart.by_id[el.attrib["id"]]
        if node.states and "initial" not in el.attrib:
            el.set("initial", node.states[0].id)
    for parent in root.iter():
        for t in parent.findall("{http://www.w3.org/2005/07/scxml}transition"):
            source = chart.by_id[parent.attrib["id"]]
            if "target" not in t.attrib:
                t.set("type", "external")  # no target, no exit set: the type changes nothing
                continue
            target = chart.by_id[t.attrib["target"]]
            if t.get("type") == "internal" and not (
                target.is_descendant(source) and source.kind == "compound"
            ):
                t.set("type", "external")
    ET.register_namespace("", "http://www.w3.org/2005/07/scxml")
    return ET.tostring(root, encoding="unicode")


def _play(machine: Any, events: list[str]) -> list[list[str]]:
    seen: list[list[str]] = []
    try:
        run = Run(machine)
        seen.append(run.ids)
        for event in events:
            run.send(event)
            seen.append(run.ids)
    except MacrostepLimit:
        seen.append(["(did not settle)"])
    return seen


def _finished_parallel(chart: Any, leaves: tuple[str, ...]) -> bool:
    """True if some active parallel state has every region in a final state."""
    active = {chart.by_path[p] for p in leaves}
    active |= {a for n in list(active) for a in n.ancestors}

    def in_final(node: Any) -> bool:
        if node.kind == "compound":
            return any(c.kind == "final" and c in active for c in node.states)
        if node.kind == "parallel":
            return all(in_final(c) for c in node.states)
        return False

    return any(n.kind == "parallel" and in_final(n) for n in active)


class _NoHooks:
    payload: Any = None

    def check(self, hook: Any) -> bool:
        raise AssertionError("random charts have no guards")

    def run(self, hook: Any) -> None:
        raise AssertionError("random charts have no actions")


def _preemption(run: Run, event: str) -> bool:
    """True if ``event`` makes removeConflictingTransitions drop a transition."""
    snap = run.snapshot
    chart = run.compiled.spec.chart
    interpreter = Interpreter(
        chart, _NoHooks(), now=run.now, seq=0, active=snap.configuration, history=snap.history
    )
    chosen, dropped = interpreter.select(event)
    if dropped:
        # the rule itself: each dropped transition conflicts with a kept one that was
        # selected before it (or whose source is inside its source)
        for t in dropped:
            assert any(interpreter._exit_set([t]) & interpreter._exit_set([k]) for k in chosen)
    return bool(dropped)


def _atomic(sm: Any, atomic_ids: set[str]) -> list[str]:
    return sorted(s.id for s in sm.configuration if s.id in atomic_ids)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=charts(eventless=False), events=st.lists(st.sampled_from(EVENTS), max_size=10))
def test_statewf_and_python_statemachine_agree(text: str, events: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        machine = machine_from_scxml(text)
    chart = machine.chart
    assert chart is not None
    atomic_ids = {n.id for n in chart.nodes if not n.states and n.kind != "history"}
    try:
        ours = Run(machine)
    except MacrostepLimit:
        return
    external = _normalized(text, machine)
    if external != text:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpecWarning)
            assert _play(machine, events) == _play(machine_from_scxml(external), events)
    try:
        theirs = _theirs(external)
    except TheirLoop:  # the preemption departure (see the module docstring)
        legal(chart, ours.snapshot.configuration)
        return
    assert ours.ids == _atomic(theirs, atomic_ids), "initial configuration"
    compared = not _finished_parallel(chart, ours.snapshot.configuration)
    for event in events:
        if ours.snapshot.status == "final":
            break
        preempted = _preemption(ours, event)
        try:
            ours.send(event)
        except MacrostepLimit:
            break  # an eventless loop: refused by statewf; not sent to the other engine
        try:
            _send(theirs, event)
        except TheirLoop:
            legal(chart, ours.snapshot.configuration)
            break
        legal(chart, ours.snapshot.configuration)
        if compared and not preempted:
            assert ours.ids == _atomic(theirs, atomic_ids), f"after {event!r} in\n{external}"
        compared = compared and not _finished_parallel(chart, ours.snapshot.configuration)
        compared = compared and not preempted


#: A chart on which python-statemachine loops at start: raising ``a.x`` on entry
#: selects s2→s3, s6→s24, s9→s6 and s1→s23; by the recommendation s6→s24 preempts
#: s2→s3 (its source is inside s2) and the other two conflict with it, so the
#: macrostep leaves s1 for s19's regions, whose raised ``c`` and ``a`` enable nothing.
PREEMPTING_CHART = (Path(__file__).parent / "preempting_chart.scxml").read_text()


def test_statewf_settles_where_the_preemption_rule_ends_the_macrostep() -> None:
    with pytest.warns(SpecWarning, match="states no run can enter"):
        ours = Run(machine_from_scxml(PREEMPTING_CHART))
    assert ours.ids == ["s20", "s24"]
    with pytest.raises(TheirLoop):  # the departure this module bounds
        _theirs(PREEMPTING_CHART)
