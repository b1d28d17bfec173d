"""Reading runs across code versions: patch answers, runs no code serves, exports.

Nothing here writes. A run's workflow version is fixed when it starts; what serves
it is whatever engine or worker registers that (name, version). A patch's answer
is a ``patch`` row in the run's log (:mod:`durable.log.replay`).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

from durable.control.actions import load_run
from durable.log.export import RunHistory
from durable.log.records import KIND_PATCH, RUN_KIND, RUN_STATUSES, TERMINAL
from statewf.records import Instance
from statewf.store import Tx
from statewf.store.leases import db_now, served_workflows
from statewf.store.runs import instances_of_versions, rows_with_key, run_log, version_counts

#: The statuses of runs still to be executed (or resumed) by some code.
UNFINISHED: tuple[str, ...] = tuple(s for s in RUN_STATUSES if s not in TERMINAL)


def patch_answers(tx: Tx, patch_id: str) -> dict[str, bool]:
    """Run id -> the answer its log recorded for ``ctx.patched(patch_id)``."""
    return {run: bool(meta.get("patched")) for run, meta in rows_with_key(tx, KIND_PATCH, patch_id)}


def on_old_branch(tx: Tx, patch_id: str) -> list[Instance]:
    """The runs whose log records the old branch of ``patch_id`` (answer False)."""
    found = []
    for run_id, answer in patch_answers(tx, patch_id).items():
        snapshot = tx.get_instance(run_id)
        if not answer and snapshot is not None and snapshot.kind == RUN_KIND:
            found.append(snapshot)
    return sorted(found, key=lambda s: (s.created_at, s.id))


def unserved_versions(tx: Tx, served: Collection[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """(workflow, version) -> how many unfinished runs it has, for versions not in ``served``."""
    counts = version_counts(tx, RUN_KIND, UNFINISHED)
    return {pair: n for pair, n in sorted(counts.items()) if pair not in served}


def served_by_workers(tx: Tx, within: float) -> set[tuple[str, str]]:
    """The (workflow, version) pairs that workers alive in the last ``within`` seconds serve."""
    return served_workflows(tx, db_now(tx) - timedelta(seconds=within))


def unserved_runs(
    tx: Tx, served: Collection[tuple[str, str]] | None, limit: int, within: float = 120.0
) -> list[Instance]:
    """Up to ``limit`` unfinished runs of versions not in ``served`` (None: not served by
    any live worker), oldest first."""
    pairs = served_by_workers(tx, within) if served is None else served
    missing = list(unserved_versions(tx, pairs))
    return instances_of_versions(tx, RUN_KIND, missing, UNFINISHED, limit)


def export_run(tx: Tx, run_id: str, resource_id: str | None) -> RunHistory:
    """A run's whole log as a :class:`RunHistory` (RunNotFound for an unknown run)."""
    load_run(tx, run_id, resource_id, lock=False)
    return RunHistory.of(run_log(tx, run_id))
