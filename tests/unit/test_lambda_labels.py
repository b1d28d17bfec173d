"""Lambda guards are named by their source text in errors and diagrams (issue 14), and a
machine stored when they were named ``<lambda>`` still registers under its version."""

from __future__ import annotations

from pathlib import Path

import pytest

import statewf
import visualize


def _machine() -> statewf.Machine:
    return statewf.Machine(
        "paid",
        initial="pending",
        states={
            "pending": statewf.State(
                on={"PAY": statewf.transition("paid", guard=lambda ctx, ev: ev["amount"] >= 10)}
            ),
            "paid": statewf.State(final=True),
        },
    )


def test_a_rejected_lambda_guard_is_named_by_its_source(tmp_path: Path) -> None:
    with statewf.Engine(f"sqlite:///{tmp_path / 'l.db'}") as engine:
        engine.register(_machine())
        inst = engine.create("paid")
        with pytest.raises(statewf.GuardRejected) as caught:
            engine.send(inst.id, "PAY", {"amount": 1})
    assert 'lambda ctx, ev: ev["amount"] >= 10' in caught.value.message
    assert "<lambda>" not in caught.value.message


def test_diagrams_show_the_lambda_text() -> None:
    dot = visualize.machine_diagram(_machine()).source
    assert "amount" in dot
    assert "&lt;lambda&gt;" not in dot


def test_a_machine_stored_with_lambda_names_still_registers(tmp_path: Path) -> None:
    machine = _machine()
    earlier = machine.earlier_fingerprint
    assert earlier is not None
    assert earlier != machine.fingerprint
    url = f"sqlite:///{tmp_path / 'old.db'}"
    # as a release before labels stored it
    with statewf.Engine(url) as engine, engine.store.transaction() as tx:
        definition = machine.to_definition()
        tx.put_machine(machine.name, machine.version, earlier, definition, engine.clock.now())
    with statewf.Engine(url) as engine:
        engine.register(machine)  # no MachineVersionConflict
        assert engine.create("paid").state == "pending"
