"""An execution's lifecycle: one phase at a time, only the written-down moves, modes
that only accumulate."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durable.execution.lifecycle import MOVES, Lifecycle, Mode, Phase


def test_a_new_execution_is_ready_and_a_finished_run_is_finished() -> None:
    assert Lifecycle(finished=False).phase is Phase.READY
    finished = Lifecycle(finished=True)
    assert finished.phase is Phase.FINISHED
    finished.begin()  # replaying a finished run writes nothing: it stays finished
    assert finished.ended


def test_nothing_leaves_cancelled_and_an_end_is_not_undone() -> None:
    life = Lifecycle(finished=False)
    life.begin()
    life.move(Phase.CANCELLED)
    with pytest.raises(RuntimeError, match="cannot go from cancelled to executing"):
        life.move(Phase.EXECUTING)
    life.end(Phase.STOPPED)  # already ended: not a new fact
    assert life.phase is Phase.CANCELLED


@given(st.lists(st.sampled_from(list(Phase)), max_size=8))
def test_every_move_is_in_the_table_or_refused(moves: list[Phase]) -> None:
    life = Lifecycle(finished=False)
    for to in moves:
        before = life.phase
        if to is before or to in MOVES[before]:
            life.move(to)
            assert life.phase is to
        else:
            with pytest.raises(RuntimeError):
                life.move(to)
            assert life.phase is before  # a refused move changes nothing


@given(st.lists(st.sampled_from(list(Mode)), max_size=6))
def test_modes_accumulate_while_executing_and_not_after_the_end(modes: list[Mode]) -> None:
    life = Lifecycle(finished=False)
    life.begin()
    for mode in modes:
        life.take(mode)
    assert life.modes == set(modes)
    life.end(Phase.FINISHED)
    life.take(Mode.DRAINING)
    assert life.modes == set(modes)
