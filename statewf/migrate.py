"""Machine migrations: moving an instance to another version of its machine.

A migration is one ``migrate`` row in the instance's log (:data:`~statewf.records.KIND_MIGRATE`),
appended with the instance row's update in one transaction, through
:func:`statewf.appending.append`, conditional on the version read. Its ``meta`` names the
version left (``from_version``) and the version entered (``machine_version``); the fold
switches the snapshot's ``machine_version`` there, so ``state_at`` before the row shows the
old version's state and after it the new one's.

What a migration does, and does not do:

- each active state is mapped through ``state_map`` (old name, statechart path or id, or
  the whole configuration label, to one new state or several); an unmapped state keeps its
  name, which must exist in the new version;
- for a statechart the states mapped to are completed into a configuration the chart can
  be in: a compound state gets its initial child, a parallel state all its regions (so a
  region added in the new version starts in its initial state); two states of one
  compound state are a rejection;
- no hook runs: no entry, exit or transition action, no ``initial`` action, no effect (it
  is a change of definition, not a transition);
- the context passes through the ``context`` upgrade function, if given, and must fit the
  new version's context model;
- delayed transitions: one that the new state shares with the old (same state after the
  map, same label such as ``"after 7 days"``) keeps its deadline, and one that had already
  fired stays fired; any other delayed transition of an active state is scheduled from
  the migration (flat machines: the new state's timers keep the old deadlines only when
  they are the same list as the old state's). A statechart's delayed ``send`` events are
  kept; history values are kept where the history state and what it remembers exist in
  the new version.

Anything that cannot apply raises :class:`~statewf.errors.MigrationRejected` before
anything is written. :func:`migrate_machine` migrates every instance of one version (the
``statewf instances migrate`` command), or only reports what it would do (``dry_run``).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from statewf.adapter import CompiledMachine
from statewf.appending import Move, append
from statewf.errors import (
    ConcurrencyConflict,
    InvalidInput,
    MachineNotRegistered,
    MigrationRejected,
)
from statewf.migrate_plan import (
    Rejecter,
    StateMap,
    Upgrade,
    check_state_map,
    normalize_state_map,
    plan_migration,
)
from statewf.records import Instance, TransitionRecord
from statewf.store import browse as queries

if TYPE_CHECKING:
    from statewf.engine import Engine

__all__ = [
    "MIGRATE_ATTEMPTS",
    "MigrationReport",
    "MoveCount",
    "StateMap",
    "Unmigrated",
    "Upgrade",
    "migrate_instance",
    "migrate_machine",
]

#: How many times :meth:`Engine.migrate <statewf.Engine.migrate>` decides again when
#: another writer moved the instance between its read and its write.
MIGRATE_ATTEMPTS = 5


def target_version(engine: Engine, snapshot: Instance, to_version: str) -> CompiledMachine:
    """The registered version an instance migrates to; :class:`MigrationRejected` if none."""
    reject = Rejecter(snapshot.machine, snapshot.machine_version, to_version, snapshot)
    if snapshot.kind != "machine":
        reject(
            f"it is a {snapshot.kind} run, not a machine instance",
            "workflow runs change version by patching (see docs/howto-versioning.md)",
        )
    if snapshot.machine_version == to_version:
        reject(f"it is on version {to_version!r} already", "nothing to do")
    return registered_target(engine, reject)


def registered_target(engine: Engine, reject: Rejecter) -> CompiledMachine:
    """The compiled target version of ``reject``'s migration, if this engine registered it."""
    try:
        return engine.compiled(reject.machine, reject.to_version)
    except MachineNotRegistered:
        known = [m.version for m in engine.machines() if m.name == reject.machine]
        reject(
            f"version {reject.to_version!r} is not registered with this engine "
            f"(registered versions of {reject.machine!r}: {', '.join(sorted(known)) or 'none'})",
            "register it first: engine.register(the new machine)",
            f"pass --app MODULE naming the module that defines version {reject.to_version}",
        )


def read_for_migration(
    engine: Engine, instance_id: str, resource_id: str | None
) -> tuple[Instance, list[TransitionRecord], dict[str, Any] | None]:
    """An instance, its log (a flat instance's: its timers need it) and its version's
    stored definition, read in one transaction."""
    with engine.store.transaction(readonly=True) as tx:
        snapshot = engine._load(tx, instance_id, resource_id)
        log = tx.log(instance_id) if not snapshot.chart else []
        stored = tx.get_machine(snapshot.machine, snapshot.machine_version)
    return snapshot, log, stored[1] if stored is not None else None


def check_arguments(to_version: Any, upgrade: Any, reason: Any) -> None:
    """:class:`InvalidInput` unless the target version, upgrade and reason are usable."""
    if not isinstance(to_version, str) or not to_version:
        raise InvalidInput(f"to_version must be a version string such as '2', got {to_version!r}")
    if upgrade is not None and not callable(upgrade):
        raise InvalidInput(f"context must be an upgrade function (old -> new), got {upgrade!r}")
    if reason is not None and not isinstance(reason, str):
        raise InvalidInput(f"reason must be a string, got {reason!r}")


def migrate_instance(
    engine: Engine,
    instance_id: str,
    to_version: str,
    state_map: StateMap | None,
    upgrade: Upgrade | None,
    resource_id: str | None,
    reason: str | None,
) -> Instance:
    """Migrate one instance (see :meth:`Engine.migrate <statewf.Engine.migrate>`).

    Decided on a snapshot read without a lock (the upgrade function runs outside any
    transaction), written only if the instance is still at that version; when another
    writer moved it first, decided again, :data:`MIGRATE_ATTEMPTS` times at most.
    """
    check_arguments(to_version, upgrade, reason)
    mapping = normalize_state_map(state_map)
    for _ in range(MIGRATE_ATTEMPTS):
        snapshot, log, definition = read_for_migration(engine, instance_id, resource_id)
        target = target_version(engine, snapshot, to_version)
        record, moved = plan_migration(
            snapshot,
            log,
            target,
            definition,
            mapping,
            upgrade,
            engine.clock.now(),
            reason=reason,
            max_bytes=engine.max_payload_bytes,
        )
        try:
            with engine.store.transaction() as tx:
                append(tx, [record], Move(moved, snapshot.version))
        except ConcurrencyConflict:
            continue
        return moved
    raise ConcurrencyConflict(
        f"instance {instance_id!r} kept changing while it was being migrated to version "
        f"{to_version!r} ({MIGRATE_ATTEMPTS} attempts); nothing was migrated, try again",
        instance_id=instance_id,
    )


class MoveCount(BaseModel):
    """How many instances moved (or would move) from one state to another."""

    model_config = ConfigDict(frozen=True)

    from_state: str
    to_state: str
    count: int


class Unmigrated(BaseModel):
    """An instance that could not be migrated, why, and what to do (for a CLI user)."""

    model_config = ConfigDict(frozen=True)

    instance_id: str
    state: str
    reason: str
    next: str = Field(description="what to change, told as command-line options")


class MigrationReport(BaseModel):
    """What :func:`migrate_machine` did, or would do with ``dry_run``."""

    model_config = ConfigDict(frozen=True)

    machine: str
    from_version: str
    to_version: str
    dry_run: bool
    moves: list[MoveCount]
    failures: list[Unmigrated]

    @property
    def migrated(self) -> int:
        """How many instances moved (would move, on a dry run)."""
        return sum(m.count for m in self.moves)


def migrate_machine(
    engine: Engine,
    machine: str,
    from_version: str,
    to_version: str,
    *,
    state_map: StateMap | None = None,
    context: Upgrade | None = None,
    dry_run: bool = False,
    reason: str | None = None,
    batch: int = 100,
) -> MigrationReport:
    """Migrate every instance of ``machine`` version ``from_version`` to ``to_version``.

    Each instance is migrated on its own (one transaction each, as
    :meth:`Engine.migrate <statewf.Engine.migrate>`); one that cannot be is left as it
    is and listed in the report's ``failures``. ``dry_run`` plans every migration and
    writes nothing. A state map or target version that is wrong for every instance
    raises :class:`~statewf.errors.MigrationRejected` before any is touched.
    """
    check_arguments(to_version, context, reason)
    for name, value in (("machine", machine), ("from_version", from_version)):
        if not isinstance(value, str) or not value:
            raise InvalidInput(f"{name} must be a non-empty string, got {value!r}")
    mapping = normalize_state_map(state_map)
    reject = Rejecter(machine, from_version, to_version, None)
    if from_version == to_version:
        reject("the two versions are the same", "name the version to migrate to")
    target = registered_target(engine, reject)
    with engine.store.transaction(readonly=True) as tx:
        stored = tx.get_machine(machine, from_version)
    check_state_map(mapping, stored[1] if stored is not None else None, target, reject)
    moves: Counter[tuple[str, str]] = Counter()
    failures: list[Unmigrated] = []
    after: str | None = None
    while True:
        with engine.store.transaction(readonly=True) as tx:
            page = queries.of_version(tx, machine, from_version, after=after, limit=batch)
        if not page:
            break
        after = page[-1].id
        for listed in page:
            try:
                if dry_run:
                    snapshot, log, definition = read_for_migration(engine, listed.id, None)
                    _, moved = plan_migration(
                        snapshot,
                        log,
                        target,
                        definition,
                        mapping,
                        context,
                        engine.clock.now(),
                        max_bytes=engine.max_payload_bytes,
                    )
                else:
                    snapshot = listed
                    moved = engine.migrate(
                        listed.id, to_version, state_map=mapping, context=context, reason=reason
                    )
            except (MigrationRejected, ConcurrencyConflict) as exc:
                failures.append(
                    Unmigrated(
                        instance_id=listed.id,
                        state=listed.state,
                        reason=str(exc.details.get("reason", exc.message)),
                        next=str(exc.details.get("next", "run the command again")),
                    )
                )
                continue
            moves[(snapshot.state, moved.state)] += 1
    return MigrationReport(
        machine=machine,
        from_version=from_version,
        to_version=to_version,
        dry_run=dry_run,
        moves=[MoveCount(from_state=a, to_state=b, count=n) for (a, b), n in sorted(moves.items())],
        failures=failures,
    )
