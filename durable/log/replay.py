"""Reading a run's log into what replay needs: recorded steps by position. Pure.

A run's log holds one ``step`` (or ``step_failed``) row per finished step and one
``retry`` row per failed attempt that was retried, each with the step's *position*:
its index in the order the workflow code called steps. Replaying the code asks
for steps in the same order, so the position is the step's identity in the log, and
the key recorded there must equal the key the code asks for.

Waits (sleeps, waits for events, pauses, polls) are positional too: a suspension
row (``sleep``, ``wait``, ``pause``, ``poll``) when the run starts waiting, and an
ordinary ``step`` row with the outcome when the wait is over. Events sent to the
run are ``event`` rows; operator actions (``resume``, ``fast_forward``) release
the wait at the position they name.

A ``patch`` row records the answer ``ctx.patched(id)`` gave the first time the
run reached it (``meta["patched"]``), and ``meta["at"]``, the position of the next
step then: the answer replay returns again. A run without that row answers from
where it is: if the log holds a step at ``at`` or later, the run passed that point
under code without the patch and takes the old branch.

An operator's ``retry_run`` row (see :mod:`durable.control.repair`) names in its
``meta["voided"]`` the positions whose recorded outcome it voids: replay forgets
them, so those steps run again, while every other recorded step is replayed.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from operator import attrgetter, contains, getitem
from typing import Any, NamedTuple

from durable.log.records import (
    KIND_EVENT,
    KIND_FAST_FORWARD,
    KIND_PATCH,
    KIND_RESUME,
    KIND_RETRY,
    KIND_RETRY_RUN,
    KIND_STEP,
    KIND_STEP_FAILED,
    WAIT_KINDS,
    RunError,
)
from statewf.records import ReplayRow, ReplaySnapshot, StepRow, TransitionRecord


class RecordedStep(NamedTuple):
    """A finished step as the log has it (a named tuple: a long log holds thousands)."""

    position: int
    key: str
    ok: bool
    result: Any = None
    model: str | None = None
    error: RunError | None = None
    attempts: int = 1
    #: a wait that ended because its timeout passed
    timed_out: bool = False


_new_tuple = tuple.__new__
_META, _KEY, _PAYLOAD = attrgetter("meta"), attrgetter("key"), attrgetter("payload")
#: fewer consecutive step rows than this are taken one by one (the bulk path's setup
#: costs more than it saves on a handful)
_BLOCK = 8


def _recorded_step(
    position: int, key: str, result: Any, model: str | None, attempts: int, timed_out: bool
) -> RecordedStep:
    """A successful :class:`RecordedStep`, equal to the constructor's, without the call
    through its ``__new__``."""
    return _new_tuple(RecordedStep, (position, key, True, result, model, None, attempts, timed_out))


@dataclass(frozen=True)
class RecordedRetries:
    """Failed attempts of a step that had not finished when the log was read."""

    attempts: int
    retry_at: datetime | None


@dataclass
class History:
    """Everything replay needs from one run's log."""

    steps: dict[int, RecordedStep] = field(default_factory=dict)
    retries: dict[int, RecordedRetries] = field(default_factory=dict)
    #: step key -> position, and position -> (key, what kind of call)
    positions: dict[str, int] = field(default_factory=dict)
    calls: dict[int, tuple[str, str]] = field(default_factory=dict)
    #: the latest suspension row of each unfinished wait
    waits: dict[int, TransitionRecord] = field(default_factory=dict)
    #: event rows in arrival order, and the seqs that waits have consumed
    events: list[TransitionRecord] = field(default_factory=list)
    consumed: set[int] = field(default_factory=set)
    #: positions released by an operator (resume, fast-forward) -> the row doing it
    released: dict[int, TransitionRecord] = field(default_factory=dict)
    #: patch id -> the answer ``ctx.patched`` recorded
    patches: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def from_log(cls, records: Iterable[TransitionRecord | StepRow]) -> History:
        """Index a log's rows by position (full records, or steps read light for replay)."""
        history = cls()
        history.fold(records)
        return history

    def fold(self, records: Iterable[TransitionRecord | StepRow]) -> None:
        """Take more rows into account, in log order (what :meth:`from_log` does)."""
        history = self
        add = history.add
        rows = records if isinstance(records, Sequence) else list(records)
        # a long log adds thousands of tuples: the cyclic collector would walk the
        # whole heap several times over while they pile up (it runs again after)
        collecting = gc.isenabled()
        gc.disable()
        try:
            # a long log is mostly runs of successful steps: each run of them is taken
            # in one go (see _steps), every other row one by one, in log order
            start, end = 0, len(rows)
            while start < end:
                record = rows[start]
                if record.kind != KIND_STEP:
                    add(record)
                    start += 1
                    continue
                stop = start + 1
                while stop < end and rows[stop].kind == KIND_STEP:
                    stop += 1
                if stop - start < _BLOCK or not history._steps(rows[start:stop]):
                    for record in rows[start:stop]:
                        history._finished(record)
                start = stop
        finally:
            if collecting:
                gc.enable()

    def _steps(self, block: Sequence[TransitionRecord | StepRow]) -> bool:
        """Take consecutive ``step`` rows at once, as :meth:`_finished` takes each one;
        False (nothing taken) when a row needs :meth:`_finished`'s own care.

        The same values, dictionaries and insertion order as row by row, built by
        ``map`` and ``zip`` (their loops run in C): a 10,000-step log indexes in about
        half the time.
        """
        metas = list(map(_META, block))
        if not all(map(isinstance, metas, repeat(dict))):
            return False
        if not all(map(contains, metas, repeat("position"))) or any(
            map(contains, metas, repeat("event_seq"))
        ):
            return False  # a row without a position, or one that consumed an event
        positions = list(map(int, map(getitem, metas, repeat("position"))))
        keys = list(map(_KEY, block))
        if None in keys:
            keys = [key or "" for key in keys]
        payloads = list(map(_PAYLOAD, block))
        if not all(map(isinstance, payloads, repeat(dict))):
            payloads = [p if isinstance(p, dict) else {} for p in payloads]
        get = dict.get
        self.positions.update(zip(keys, positions, strict=True))
        calls = map(str, map(get, metas, repeat("wait"), repeat("run")))
        self.calls.update(zip(positions, zip(keys, calls, strict=True), strict=True))
        recorded = zip(
            positions,
            keys,
            repeat(True),
            map(get, payloads, repeat("result")),
            map(get, metas, repeat("model")),
            repeat(None),
            map(int, map(get, metas, repeat("attempt"), repeat(1))),
            map(bool, map(get, metas, repeat("timed_out"), repeat(False))),
        )
        steps = map(_new_tuple, repeat(RecordedStep), recorded)
        self.steps.update(zip(positions, steps, strict=True))
        if self.retries:
            for position in positions:
                self.retries.pop(position, None)
        if self.waits:
            for position in positions:
                self.waits.pop(position, None)
        return True

    def add(self, record: ReplayRow) -> None:
        """Take one more row into account (rows must come in log order)."""
        if isinstance(record, ReplaySnapshot):  # see durable.log.snapshot.history_of
            raise TypeError("a log read with its replay snapshot is folded by history_of")
        kind = record.kind
        if kind in (KIND_STEP, KIND_STEP_FAILED):
            self._finished(record)
            return
        if isinstance(record, StepRow):  # replay_logs reads only step rows light
            raise TypeError(f"a {kind!r} row read as a StepRow cannot be replayed")
        if kind == KIND_EVENT:
            self.events.append(record)
            return
        if kind in (KIND_RESUME, KIND_FAST_FORWARD):
            if "position" in record.meta:
                self.released[int(record.meta["position"])] = record
            return
        if kind == KIND_PATCH:
            self.patches[record.key or ""] = bool(record.meta.get("patched"))
            return
        if kind == KIND_RETRY_RUN:
            for position in record.meta.get("voided", ()):
                self.void(int(position))
            return
        if kind != KIND_RETRY and kind not in WAIT_KINDS:
            return
        if "position" not in record.meta:
            return  # a pause from outside, not one the code asked for
        position = int(record.meta["position"])
        key = record.key or ""
        self.positions[key] = position
        self.calls[position] = (
            key,
            str(record.meta.get("wait", kind if kind in WAIT_KINDS else "run")),
        )
        if kind in WAIT_KINDS:
            self.waits[position] = record
            return
        retry_at = record.meta.get("retry_at")
        self.retries[position] = RecordedRetries(
            int(record.meta.get("attempt", 1)),
            datetime.fromisoformat(retry_at) if retry_at else None,
        )

    def _finished(self, record: TransitionRecord | StepRow) -> None:
        """A ``step`` or ``step_failed`` row: the step's outcome at its position."""
        meta = record.meta
        if "position" not in meta:
            return
        position = int(meta["position"])
        key = record.key or ""
        self.positions[key] = position
        self.calls[position] = (key, str(meta.get("wait", "run")))
        attempt = int(meta.get("attempt", 1))
        payload = record.payload if isinstance(record.payload, dict) else {}
        if record.kind == KIND_STEP:
            self.steps[position] = _recorded_step(
                position,
                key,
                payload.get("result"),
                meta.get("model"),
                attempt,
                bool(meta.get("timed_out", False)),
            )
        else:
            self.steps[position] = RecordedStep(
                position,
                key,
                False,
                error=RunError.model_validate(payload["error"]),
                attempts=attempt,
            )
        if "event_seq" in meta:
            # a wait took this event, whether it passed the wait's schema or failed it
            self.consumed.add(int(meta["event_seq"]))
        if self.retries:
            self.retries.pop(position, None)
        if self.waits:
            self.waits.pop(position, None)

    def void(self, position: int) -> None:
        """Forget everything recorded at ``position``: replay runs that step afresh."""
        self.steps.pop(position, None)
        self.retries.pop(position, None)
        self.waits.pop(position, None)
        self.released.pop(position, None)
        key, _ = self.calls.pop(position, ("", ""))
        if self.positions.get(key) == position:
            del self.positions[key]

    def to_void_on_retry(self, failed_step: str | None) -> list[int]:
        """The positions an operator's retry voids, given the step named in the run's error.

        After the last successful step: every failed step (a failed compensation as
        well as the failure it compensated), and the failed attempts of steps left
        unfinished, so they get all their attempts again. Before it, only the failed
        outcome of ``failed_step`` (a sibling of a later successful step in
        ``gather``). Successful steps and unfinished waits (a sleep keeps its time)
        are kept.
        """
        last_ok = max((p for p, s in self.steps.items() if s.ok), default=-1)
        voided = []
        for position in sorted(self.calls):
            step = self.steps.get(position)
            if step is None:
                if position > last_ok and position in self.retries:
                    voided.append(position)
            elif not step.ok and (position > last_ok or step.key == failed_step):
                voided.append(position)
        return voided

    def patch(self, patch_id: str, position: int) -> tuple[bool, bool]:
        """What ``ctx.patched(patch_id)`` answers when the next step is at ``position``,
        and whether the log recorded that answer (else it is new and must be recorded)."""
        if patch_id in self.patches:
            return self.patches[patch_id], True
        return not any(p >= position for p in self.calls), False

    def next_event(self, name: str) -> TransitionRecord | None:
        """The oldest event called ``name`` that no wait has consumed yet."""
        for record in self.events:
            if record.event == name and record.seq not in self.consumed:
                return record
        return None
