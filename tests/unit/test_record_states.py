"""Log rows show their states as text, not tuples (issue 14)."""

from __future__ import annotations

from datetime import UTC, datetime

from statewf import TransitionRecord


def _row(source: tuple[str, ...], target: tuple[str, ...]) -> TransitionRecord:
    return TransitionRecord(
        instance_id="i",
        seq=2,
        kind="event",
        event="PAY",
        source=source,
        target=target,
        status="active",
        created_at=datetime.now(UTC),
    )


def test_a_flat_row_reads_as_state_names() -> None:
    row = _row(("pending",), ("paid",))
    assert f"{row.source_state} -> {row.target_state}" == "pending -> paid"


def test_a_chart_row_joins_its_paths_and_a_row_that_did_not_move_has_no_target() -> None:
    row = _row(("p.a.x", "p.b.y"), ())
    assert row.source_state == "p.a.x,p.b.y"
    assert row.target_state == ""
