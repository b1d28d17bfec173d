"""A run's replay snapshot on the execution's side: the history it starts from, the
whole log when the snapshot cannot be used, and a new snapshot after a long read.

An executor's log comes from a claim (or ``load_replay``), read with the run's replay
snapshot when it has one (:func:`statewf.store.runs.replay_logs`). :func:`load_history`
folds it (:func:`durable.log.snapshot.history_of`); when the snapshot is unusable
(another format or version, undecodable, or rows missing) it reads the whole log
again without snapshots, so a snapshot can only ever save reading, never change what
replay sees. An execution that read :data:`~durable.log.snapshot.SNAPSHOT_ROWS` rows
or more past its snapshot writes a new one up to its last loaded row once it stops
executing (:func:`write_snapshot`); one whose own rows made the log that long reads
the log again then (:func:`refresh_snapshot`). Each in its own transaction after the
rows it folds were committed: a crash before it leaves the older snapshot (or none),
which is still right.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from durable.execution.writer import RunHost
from durable.log.records import KIND_STEP
from durable.log.replay import History
from durable.log.snapshot import FORMAT, SNAPSHOT_ROWS, encode, history_of
from statewf.records import Instance, ReplayRow, ReplaySnapshot
from statewf.store import runs

log = logging.getLogger("durable")


def load_history(
    host: RunHost, snapshot: Instance, records: Sequence[ReplayRow]
) -> tuple[History, Sequence[ReplayRow]]:
    """The history of a loaded log, and the log it came from (read again whole, up to
    ``snapshot``'s version, when its replay snapshot cannot be used)."""
    history = history_of(records, snapshot.id, snapshot.machine, snapshot.machine_version)
    if history is not None:
        return history, records
    if host.store is None:  # a replay without a database (durable.testing.replay)
        if records and isinstance(records[0], ReplaySnapshot):
            raise ValueError(f"run {snapshot.id!r}: a replay snapshot needs its whole log")
        return History.from_log(records), records
    log.warning("run %s: its replay snapshot cannot be used; reading its whole log", snapshot.id)
    whole = read_whole(host, snapshot)
    return History.from_log(whole), whole  # type: ignore[arg-type]


def read_whole(host: RunHost, snapshot: Instance) -> list[ReplayRow]:
    """The run's log for replay without its snapshot, up to the row ``snapshot`` knows."""
    with host.store.transaction(readonly=True) as tx:
        logs = runs.replay_logs(tx, [snapshot.id], KIND_STEP, snapshots=False)
    return [r for r in logs.get(snapshot.id, []) if r.seq <= snapshot.version]


def _read(records: Sequence[ReplayRow]) -> int:
    """How many log rows a load read past its replay snapshot."""
    return len(records) - (1 if records and isinstance(records[0], ReplaySnapshot) else 0)


def _due(records: Sequence[ReplayRow]) -> int:
    """How many rows past its snapshot make a run's next snapshot due: at least
    :data:`SNAPSHOT_ROWS`, and an eighth of the rows the snapshot covers, so a run's
    snapshots, which hold every step's result, are rewritten a bounded number of times
    as its log grows (their sizes in all at most ~9 times the last one's)."""
    covered = records[0].seq if records and isinstance(records[0], ReplaySnapshot) else 0
    return max(SNAPSHOT_ROWS, covered // 8)


def snapshot_due(records: Sequence[ReplayRow], written: int) -> bool:
    """Whether an execution that loaded ``records`` and wrote ``written`` rows should
    leave a new replay snapshot: the next resume would read that many rows past it."""
    return _read(records) + written >= _due(records)


def write_snapshot(host: RunHost, snapshot: Instance, records: Sequence[ReplayRow]) -> bool:
    """Store the replay snapshot of ``records`` (a loaded log) up to its last row; False
    when nothing was written (a newer snapshot is there, or the log was not whole).

    Blocking (run it in the host's threads); the history is folded again from the
    records, so rows absorbed since the load never enter it.
    """
    history = history_of(records, snapshot.id, snapshot.machine, snapshot.machine_version)
    if history is None or not records:
        return False
    seq = records[-1].seq
    document = encode(history, snapshot.id, seq, snapshot.machine, snapshot.machine_version)
    with host.store.transaction() as tx:
        return runs.write_replay_snapshot(
            tx, snapshot.id, seq, document, host.clock.now(), format=FORMAT
        )


def refresh_snapshot(host: RunHost, run_id: str) -> bool:
    """Read a run's log for replay (from its snapshot, if any) and store the snapshot of
    all of it; False when nothing was written. Blocking."""
    with host.store.transaction(readonly=True) as tx:
        loaded = runs.load_replay(tx, run_id, KIND_STEP)
    return loaded is not None and write_snapshot(host, *loaded)


async def leave_snapshot(
    host: RunHost, snapshot: Instance, records: Sequence[ReplayRow], written: int
) -> None:
    """Once an execution stopped: the snapshot of what it loaded when that was a long read
    (:func:`write_snapshot`), else, when its own rows made the log long, of the log read
    again (:func:`refresh_snapshot`), in the host's threads. A failure is logged, never
    raised (the snapshot is derived: the next resume reads the whole log instead)."""
    try:
        if _read(records) >= _due(records):
            await host.db(write_snapshot, host, snapshot, records)
        elif written:
            await host.db(refresh_snapshot, host, snapshot.id)
    except Exception:
        log.warning("run %s: could not write its replay snapshot", snapshot.id, exc_info=True)


def had_snapshot(records: Sequence[ReplayRow]) -> bool:
    """Whether a loaded log began with the run's replay snapshot."""
    return bool(records) and isinstance(records[0], ReplaySnapshot)


async def drop_snapshot(host: RunHost, run_id: str) -> None:
    """Once a run completed: its replay snapshot is of no more use (a fork is a new run,
    and nothing resumes a completed one), so the document of its every step's result
    goes. A failure is logged, never raised."""

    def drop() -> None:
        with host.store.transaction() as tx:
            runs.delete_replay_snapshot(tx, run_id)

    try:
        await host.db(drop)
    except Exception:
        log.warning("run %s: could not delete its replay snapshot", run_id, exc_info=True)
