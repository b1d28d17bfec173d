"""A replay snapshot at any seq, plus the rows after it, folds to exactly the history
of the whole log (hypothesis: random logs of steps, failures, retries, waits, events,
releases, patches and operator retries)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable.log.replay import History
from durable.log.snapshot import decode, encode, history_of
from statewf.records import ReplaySnapshot, StepRow, TransitionRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEYS = st.sampled_from(["a", "b", "c", "d", ""])
POSITIONS = st.integers(min_value=0, max_value=12)
RESULTS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3),
    st.lists(st.integers(min_value=0, max_value=2), max_size=2),
    st.fixed_dictionaries({"from": st.integers(0, 2)}),  # looks like a packed column
)


def _record(seq: int, kind: str, key: str | None, meta: dict[str, Any], **kw: Any) -> Any:
    return TransitionRecord(
        instance_id="r",
        seq=seq,
        kind=kind,
        status="running",
        key=key,
        meta=meta,
        created_at=T0 + timedelta(seconds=seq),
        **kw,
    )


@st.composite
def rows(draw: st.DrawFn) -> list[Any]:
    """A log: a create row, then random rows of every kind replay reads."""
    out: list[Any] = [_record(1, "create", None, {})]
    for seq in range(2, draw(st.integers(min_value=2, max_value=40)) + 2):
        choice = draw(st.integers(min_value=0, max_value=16))
        key, position = draw(KEYS), draw(POSITIONS)
        if choice == 16:  # a long run of plain steps (History takes those in bulk)
            first = draw(st.integers(0, 20))
            for i in range(draw(st.integers(8, 12))):
                meta = {"position": first + i}
                row = StepRow(len(out) + 1, "step", f"k{first + i}", {"result": i}, meta, T0)
                out.append(row)
            continue
        seq = len(out) + 1
        if choice <= 7:  # a finished step, mostly read light, in runs
            meta: dict[str, Any] = {"position": position, "attempt": draw(st.integers(1, 3))}
            if draw(st.booleans()):
                meta["wait"] = draw(st.sampled_from(["run", "sleep", "wait"]))
            if draw(st.integers(0, 5)) == 0:
                meta["timed_out"] = True
            if draw(st.integers(0, 5)) == 0:
                meta["model"] = "M"
            if draw(st.integers(0, 7)) == 0:
                meta["event_seq"] = draw(st.integers(1, seq))
            payload = {"result": draw(RESULTS)}
            if draw(st.booleans()):
                out.append(StepRow(seq, "step", key, payload, meta, T0 + timedelta(seconds=seq)))
            else:
                out.append(_record(seq, "step", key, meta, payload=payload))
        elif choice == 8:
            error = {"type": "ValueError", "message": "no", "step": key, "details": {"n": 1}}
            meta = {"position": position, "attempt": 2}
            out.append(_record(seq, "step_failed", key, meta, payload={"error": error}))
        elif choice == 9:
            retry_at = draw(st.sampled_from([None, (T0 + timedelta(hours=1)).isoformat()]))
            meta = {"position": position, "attempt": 1, "retry_at": retry_at}
            out.append(_record(seq, "retry", key, meta))
        elif choice == 10:
            kind = draw(st.sampled_from(["sleep", "wait", "pause", "poll"]))
            meta = {"position": position, "wait": kind} if draw(st.integers(0, 4)) else {}
            out.append(_record(seq, kind, key, meta, wake_at=T0 + timedelta(days=1)))
        elif choice == 11:
            payload = {"n": seq}
            event = draw(st.sampled_from(["go", "stop"]))
            out.append(_record(seq, "event", None, {}, event=event, payload=payload))
        elif choice == 12:
            kind = draw(st.sampled_from(["resume", "fast_forward"]))
            out.append(_record(seq, kind, None, {"position": position}))
        elif choice == 13:
            meta = {"patched": draw(st.booleans()), "at": position}
            out.append(_record(seq, "patch", draw(st.sampled_from(["p", "q"])), meta))
        elif choice == 14:
            voided = draw(st.lists(POSITIONS, max_size=3))
            out.append(_record(seq, "retry_run", None, {"voided": voided}))
        else:
            out.append(_record(seq, "wake", None, {}))
    return out


def _items(history: History) -> dict[str, Any]:
    """Every part of a history, dictionaries as their items in order."""
    return {
        "steps": list(history.steps.items()),
        "retries": list(history.retries.items()),
        "positions": list(history.positions.items()),
        "calls": list(history.calls.items()),
        "waits": list(history.waits.items()),
        "events": history.events,
        "consumed": history.consumed,
        "released": list(history.released.items()),
        "patches": list(history.patches.items()),
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=rows(), data=st.data())
def test_a_snapshot_at_any_seq_and_the_rows_after_it_fold_to_the_whole_history(
    log: list[Any], data: st.DataObject
) -> None:
    whole = History.from_log(log)
    cut = data.draw(st.integers(min_value=1, max_value=len(log)))
    seq = log[cut - 1].seq
    document = encode(History.from_log(log[:cut]), "r", seq, "w", "1")
    resumed = history_of([ReplaySnapshot(seq, document), *log[cut:]], "r", "w", "1")
    assert resumed is not None
    assert resumed == whole
    assert _items(resumed) == _items(whole)
    # what replay answers from it: the patch answers and the next events, too
    for patch_id in ("p", "q", "new"):
        for position in (0, 6, 13):
            assert resumed.patch(patch_id, position) == whole.patch(patch_id, position)
    for name in ("go", "stop"):
        assert resumed.next_event(name) == whole.next_event(name)
    assert resumed.to_void_on_retry("a") == whole.to_void_on_retry("a")


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=rows())
def test_a_snapshot_is_trusted_only_for_its_run_seq_workflow_and_version(log: list[Any]) -> None:
    seq = log[-1].seq
    document = encode(History.from_log(log), "r", seq, "w", "1")
    assert decode(document, "r", seq, "w", "1") == History.from_log(log)
    for run, at, workflow, version in (
        ("other", seq, "w", "1"),
        ("r", seq + 1, "w", "1"),
        ("r", seq, "other", "1"),
        ("r", seq, "w", "2"),
    ):
        assert decode(document, run, at, workflow, version) is None
    assert decode(document[:-1], "r", seq, "w", "1") is None
    assert decode("[]", "r", seq, "w", "1") is None
    # rows that do not start at the log's first row are not a whole log
    assert history_of(log[1:], "r", "w", "1") is None
