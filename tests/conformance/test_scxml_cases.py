"""SCXML documents with a JSON test script, run through ``load_machine`` and the engine.

The script shape is the one SCXML test suites share: ``initialConfiguration`` (the
atomic state ids after start), then ``events``, each with an optional ``after`` or
``delayBefore`` (milliseconds to let pass first) and the ``nextConfiguration`` it
leads to. W3C-style documents end in a ``pass`` or ``fail`` final state;
``finalConfiguration`` says
where the instance must be once every timer it set has fired. The cases are ours,
written for this suite; both stores run every one.
"""

from __future__ import annotations

import json
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import statewf
from statewf.testing import ManualClock
from tests.conformance.driver import Run
from tests.conftest import tracked

CASES = Path(__file__).parent / "cases"


def _load(path: Path) -> statewf.Machine:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", statewf.SpecWarning)
        return statewf.load_machine(path)


@pytest.mark.parametrize("case", sorted(p.stem for p in CASES.glob("*.scxml")))
def test_case(case: str, db: dict[str, Any]) -> None:
    script = json.loads((CASES / f"{case}.json").read_text())
    machine = _load(CASES / f"{case}.scxml")
    clock = ManualClock()
    engine = tracked(statewf.Engine(**db, clock=clock))
    engine.register(machine)
    inst = engine.create(machine)
    assert sorted(inst.state_ids) == sorted(script["initialConfiguration"])
    for step in script["events"]:
        clock.advance(timedelta(milliseconds=step.get("after", step.get("delayBefore", 0))))
        engine.fire_due_timers()
        inst = engine.send(inst.id, step["event"]["name"])
        assert sorted(inst.state_ids) == sorted(step["nextConfiguration"]), step
        for state_id in step["nextConfiguration"]:
            assert inst.matches(state_id)
    if "finalConfiguration" in script:
        while inst.status == "active" and inst.wake_at is not None:
            clock.set(inst.wake_at)
            engine.fire_due_timers()
            inst = engine.get(inst.id)
        assert sorted(inst.state_ids) == sorted(script["finalConfiguration"])
    assert engine.replay(inst.id) == engine.get(inst.id)


def test_unreachable_states_load_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "lost.scxml"
    path.write_text(
        '<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0">'
        '<state id="a"/><state id="never"/></scxml>'
    )
    with pytest.warns(statewf.SpecWarning, match="never"):
        machine = statewf.load_machine(path)
    assert "never" in machine.unreachable


def test_what_cannot_be_read_is_listed_in_one_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "rich.scxml"
    path.write_text(
        '<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" datamodel="ecmascript">'
        '<datamodel><data id="x" expr="1"/></datamodel>'
        '<state id="a"><onentry><assign location="x" expr="2"/></onentry>'
        '<transition event="e" cond="x &gt; 1" target="b"/>'
        '<invoke src="other.scxml"/></state>'
        '<state id="b"><onentry><send event="e" target="http://example.com" delayexpr="d"/>'
        "</onentry></state></scxml>"
    )
    with pytest.raises(statewf.SpecError) as caught:
        statewf.load_machine(path)
    text = caught.value.message
    for expected in (
        "datamodel 'ecmascript'",
        "<datamodel>",
        "<assign>",
        "cond 'x > 1'",
        "<invoke>",
        "'delayexpr'",
        "'http://example.com'",
    ):
        assert expected in text


def test_a_cond_naming_no_registered_guard_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "guarded.scxml"
    path.write_text(
        '<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0">'
        '<state id="a"><transition event="e" cond="is_big" target="b"/></state>'
        '<state id="b"/></scxml>'
    )
    with pytest.raises(statewf.SpecError, match="is_big"):
        statewf.load_machine(path)


def test_generated_ids_and_bare_ids_in_matches() -> None:
    machine = _load(CASES / "parallel_exit.scxml")
    engine_free = statewf.Machine  # the chart is inspectable without an engine
    assert isinstance(machine, engine_free)
    assert machine.chart is not None
    generated = [n.id for n in machine.chart.nodes if n.id.startswith("_")]
    assert len(generated) == 3
    assert len(set(generated)) == 3


def test_null_datamodel_conditions_and_legacy_attributes() -> None:
    from tests.conformance.driver import scxml

    machine = scxml(
        '<scxml xmlns="http://www.w3.org/2005/07/scxml" xmlns:x="urn:other" version="1.0"'
        ' profile="ecmascript" datamodel="ecmascript" x:note="ignored">'
        "<x:meta>ignored</x:meta>"
        '<parallel id="p"><state id="r1"><state id="a"><transition event="go" target="b"/>'
        '</state><state id="b"/></state>'
        '<state id="r2"><state id="c">'
        '<transition event="t" cond="false" target="fail"/>'
        '<transition event="t" cond="!In(\'b\')" target="d"/>'
        '<transition event="t" cond="In(\'b\') &amp;&amp; In(\'c\')" target="e"/>'
        '</state><state id="d"/><state id="e"/><state id="fail"/></state></parallel></scxml>'
    )
    assert Run(machine).send("t").state_ids == ("a", "d")
    run = Run(machine)
    run.send("go")
    assert run.send("t").state_ids == ("b", "e")


def test_in_of_an_unknown_id_is_false_and_unreachable_states_still_run(tmp_path: Path) -> None:
    # the W3C null-datamodel In() test has an unreachable state it asks about
    path = tmp_path / "in_test.scxml"
    path.write_bytes(
        b'\xef\xbb\xbf<?xml version="1.0" encoding="UTF-8"?>'
        b'<scxml xmlns="http://www.w3.org/2005/07/scxml" initial="p" version="1.0"'
        b' datamodel="null"><parallel id="p"><state id="ps0">'
        b'<transition cond="In(\'s1\')" target="fail"/>'
        b'<transition cond="In(\'nosuch\')" target="fail"/>'
        b'<transition cond="In(\'ps1\')" target="pass"/>'
        b'<transition target="fail"/></state><state id="ps1"/></parallel><state id="s1"/>'
        b'<final id="pass"/><final id="fail"/></scxml>'
    )
    machine = _load(path)
    assert machine.name == "in_test"
    run = Run(machine)
    assert run.ids == ["pass"]
    assert run.snapshot.status == "final"
