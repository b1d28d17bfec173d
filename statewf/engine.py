"""The engine: the one place that opens transactions around the pure core.

Every write follows one shape: load and lock the snapshot, decide (pure), append the
log row and update the snapshot, commit, then dispatch the transition's effects from
the outbox. Reads never take a write lock.
"""

from __future__ import annotations

import builtins
import functools
import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from statewf.adapter import CompiledMachine
from statewf.aio import off_loop
from statewf.appending import Move, append
from statewf.clock import Clock, SystemClock
from statewf.decide import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Decision,
    allowed_events,
    decide,
    start,
)
from statewf.definition import version_conflict
from statewf.errors import (
    DuplicateInstance,
    EventDiscarded,
    EventRejected,
    InstanceNotFound,
    InvalidInput,
    MachineNotRegistered,
)
from statewf.fold import fold
from statewf.ids import check_event_name as check_event_name
from statewf.ids import check_id as check_id
from statewf.migrate import Upgrade, migrate_instance
from statewf.outbox import OUTCOME_DELAY, Outbox, check_outcome_delay, effect_hook
from statewf.records import EffectRecord, Instance, Page, TransitionRecord
from statewf.snapshots import SnapshotCache
from statewf.spec import Machine
from statewf.store import DatabaseEngine, SqlStore, Tx
from statewf.timers import Claimed, TimerOperations

log = logging.getLogger("statewf")


#: Used when neither ``url`` nor ``STATEWF_DATABASE_URL`` is given.
DEFAULT_URL = "sqlite:///statewf.db"


class Engine(TimerOperations):
    """Machines, instances and their transition log on one database.

    Args:
        url: a SQLAlchemy URL. ``sqlite:///file.db`` (the default, from
            ``STATEWF_DATABASE_URL`` if set) or ``postgresql+psycopg://user@host/db``;
            or the application's own SQLAlchemy ``Engine``, whose pool statewf then
            shares and leaves open on :meth:`close`.
        schema: PostgreSQL schema for statewf's tables (created if missing).
        table_prefix: prefix of statewf's table names.
        clock: where the time comes from; :class:`statewf.testing.ManualClock` in tests.
        migrate: apply pending schema migrations on start (under a lock).
        dispatch_effects: run a transition's effects right after it commits; when
            False they wait in the outbox for :meth:`dispatch_effects` or a worker.
        max_payload_bytes: cap on the JSON size of one payload or context.
        effect_max_attempts: dispatch attempts before an effect is marked dead.
        effect_outcome_delay: seconds an inline effect's outcome waits to be written
            together with others, off the caller's path (0: each at once, a commit
            of its own); this engine's outbox reads and :meth:`close` write them first.
        pool_size: database connections kept per pool.
        snapshot_cache_size: snapshots remembered for the fast path of :meth:`send`
            (0 turns it off); a stale one costs a retry, never a wrong write.
    """

    def __init__(
        self,
        url: str | DatabaseEngine | None = None,
        *,
        schema: str | None = None,
        table_prefix: str = "statewf_",
        clock: Clock | None = None,
        migrate: bool = True,
        dispatch_effects: bool = True,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        effect_max_attempts: int = 10,
        effect_outcome_delay: float = OUTCOME_DELAY,
        pool_size: int = 10,
        snapshot_cache_size: int = 1_000,
    ) -> None:
        check_outcome_delay(effect_outcome_delay)
        self.store = SqlStore(
            url or os.environ.get("STATEWF_DATABASE_URL") or DEFAULT_URL,
            schema=schema,
            table_prefix=table_prefix,
            pool_size=pool_size,
        )
        #: The database, as a URL with its password hidden.
        self.url: str = self.store.url
        self.clock: Clock = clock or SystemClock()
        self.max_payload_bytes = max_payload_bytes
        self.inline_effects = dispatch_effects
        self._compiled: dict[tuple[str, str], CompiledMachine] = {}
        # The resolver sees the compiled machines, not the engine: no reference
        # cycle, so an engine nobody closed still frees its pool promptly.
        self.outbox = Outbox(
            self.store,
            self.clock,
            functools.partial(effect_hook, self._compiled),
            functools.partial(sorted, self._compiled),
            max_attempts=effect_max_attempts,
            outcome_delay=effect_outcome_delay,
        )
        # effects written already claimed by this process, run right after the commit
        self._snapshots = SnapshotCache(snapshot_cache_size if self.store.conditional_writes else 0)
        self._latest: dict[str, str] = {}
        self._lock = threading.Lock()
        if migrate:
            try:
                self.store.migrate()
            except BaseException:
                self.store.dispose()
                raise

    # ------------------------------------------------------------ machines

    def register(self, *machines: Machine) -> None:
        """Register machines; a changed machine under a stored name+version is an error."""
        for machine in machines:
            if not isinstance(machine, Machine):
                raise InvalidInput(f"register() takes statewf.Machine objects, got {machine!r}")
            key = (machine.name, machine.version)
            fingerprint = machine.fingerprint
            with self._lock:
                known = self._compiled.get(key)
                if known is not None and known.spec.fingerprint != fingerprint:
                    raise version_conflict(machine, known.spec.fingerprint)
            with self.store.transaction() as tx:
                stored = tx.get_machine(machine.name, machine.version)
                if stored is None:
                    tx.put_machine(
                        machine.name,
                        machine.version,
                        fingerprint,
                        machine.to_definition(),
                        self.clock.now(),
                    )
                    # another process may have registered it between the two statements
                    stored = tx.get_machine(machine.name, machine.version)
                # A machine stored before lambda guards were named by their source text
                # has the earlier fingerprint; it is the same machine.
                if stored is not None and stored[0] not in (
                    fingerprint,
                    machine.earlier_fingerprint,
                ):
                    raise version_conflict(machine, stored[0])
            compiled = CompiledMachine(machine)
            with self._lock:
                self._compiled[key] = compiled
                self._latest[machine.name] = machine.version

    def machines(self) -> list[Machine]:
        """The machines registered with this engine, by name and version."""
        return [self._compiled[k].spec for k in sorted(self._compiled)]

    def machine(self, name: str, version: str | None = None) -> Machine:
        """A registered machine (its latest registered version unless ``version``)."""
        return self.compiled(name, version).spec

    def compiled(self, name: str, version: str | None = None) -> CompiledMachine:
        """The compiled form of a registered machine, built once per name and version."""
        version = version if version is not None else self._latest.get(name)
        compiled = self._compiled.get((name, version)) if version is not None else None
        if compiled is None:
            known = ", ".join(f"{n}@{v}" for n, v in sorted(self._compiled)) or "none"
            which = f"{name!r} version {version!r}" if version else repr(name)
            raise MachineNotRegistered(
                f"machine {which} is not registered with this engine (registered: {known}); "
                "call engine.register(machine) first",
                cli_message=f"machine {which} is not known to this command (registered: "
                f"{known}); pass --app MODULE (or --app path/to/file.py) naming the module "
                "that defines it",
                machine=name,
            )
        return compiled

    def stored_definitions(self) -> list[dict[str, Any]]:
        """Every machine definition stored in the database, including other processes'."""
        with self.store.transaction(readonly=True) as tx:
            return tx.machine_definitions()

    # ------------------------------------------------------------ writes

    def create(
        self,
        machine: str | Machine,
        *,
        context: Mapping[str, Any] | BaseModel | None = None,
        id: str | None = None,
        resource_id: str | None = None,
        idempotency_key: str | None = None,
        version: str | None = None,
    ) -> Instance:
        """Create an instance in the machine's initial state; idempotent on ``idempotency_key``.

        A second create with the same machine and idempotency key returns the first
        instance unchanged. A caller-chosen ``id`` that exists already raises
        :class:`~statewf.errors.DuplicateInstance`.
        """
        name = machine.name if isinstance(machine, Machine) else machine
        if isinstance(machine, Machine) and version is None:
            version = machine.version
        compiled = self.compiled(name, version)
        instance_id = check_id(id, "instance id") if id is not None else uuid.uuid4().hex
        if resource_id is not None:
            check_id(resource_id, "resource_id")
        if idempotency_key is not None:
            check_id(idempotency_key, "idempotency_key")
            existing = self._existing(name, idempotency_key, resource_id)
            if existing is not None:
                return existing
        decision = start(
            compiled,
            instance_id=instance_id,
            context=context,
            now=self.clock.now(),
            resource_id=resource_id,
            idempotency_key=idempotency_key,
            max_bytes=self.max_payload_bytes,
            id_chosen=id is not None,
        )
        claimed: Claimed = []
        with self.store.transaction() as tx:
            inserted = append(tx, [decision.record], Move(decision.snapshot, None))
            if inserted:
                claimed = self._write(tx, decision)
        if not inserted:
            return self._lost_create_race(name, instance_id, idempotency_key, resource_id)
        self._snapshots.put(decision.snapshot)
        self._after_commit(claimed)
        return decision.snapshot

    def _existing(self, machine: str, key: str, resource_id: str | None) -> Instance | None:
        with self.store.transaction() as tx:
            found = tx.find_by_idempotency_key(machine, key)
        if found is not None and resource_id is not None and found.resource_id != resource_id:
            raise InvalidInput(
                f"idempotency key {key!r} of {machine!r} is already used by another resource; "
                "idempotency keys are unique per machine",
                machine=machine,
            )
        return found

    def _lost_create_race(
        self, machine: str, instance_id: str, key: str | None, resource_id: str | None
    ) -> Instance:
        if key is not None:
            existing = self._existing(machine, key, resource_id)
            if existing is not None:
                return existing
        raise DuplicateInstance(
            f"an instance with id {instance_id!r} already exists; choose another id or "
            "omit id= to get a generated one",
            instance_id=instance_id,
        )

    def send(
        self,
        instance_id: str,
        event: str,
        payload: Mapping[str, Any] | BaseModel | None = None,
        *,
        resource_id: str | None = None,
    ) -> Instance:
        """Apply ``event`` to an instance in one transaction and return the new snapshot.

        Raises a subclass of :class:`~statewf.errors.EventRejected` (and changes
        nothing) when the event does not apply.
        """
        check_id(instance_id, "instance id")
        check_event_name(event)
        if self.store.conditional_writes:
            decision = self._send_optimistic(instance_id, event, payload, resource_id)
            if decision is not None:
                return decision.snapshot
        with self.store.transaction() as tx:
            snapshot = self._load(tx, instance_id, resource_id, lock=True)
            compiled = self._compiled_for(snapshot)
            now = self.clock.now()
            fired = self._fire_due(tx, compiled, snapshot, now)
            current = fired[-1].snapshot if fired else snapshot
            try:
                steps = [
                    *fired,
                    decide(
                        compiled, current, event, payload, now, max_bytes=self.max_payload_bytes
                    ),
                ]
            except EventDiscarded:  # a statechart that discards events no transition takes
                steps = fired
            claimed = [c for step in steps for c in self._write(tx, step)]
            if steps:
                append(
                    tx,
                    [step.record for step in steps],
                    Move(steps[-1].snapshot, snapshot.version),
                )
        result = steps[-1].snapshot if steps else current
        self._snapshots.put(result)
        self._after_commit(claimed)
        return result

    def _send_optimistic(
        self, instance_id: str, event: str, payload: Any, resource_id: str | None
    ) -> Decision | None:
        """Decide from a known snapshot, then write only if nobody moved the instance.

        The snapshot comes from the cache (one round trip in all) or an autocommitted
        read (two), instead of a locked transaction's five. Returns None, with nothing
        written, when the instance moved meanwhile or the transition records effects;
        the caller then takes the locked path, which always makes progress. A
        rejection decided on a cached snapshot is not trusted: it is decided again
        on a fresh read.
        """
        cached = self._snapshots.get(instance_id)
        for snapshot in (cached, None):
            if snapshot is None:
                snapshot = self.store.read_instance(instance_id)
                if snapshot is None:
                    return None  # the locked path raises the proper InstanceNotFound
            if resource_id is not None and snapshot.resource_id != resource_id:
                return None
            if snapshot.wake_at is not None and snapshot.wake_at <= self.clock.now():
                return None  # due timers fire first, on the locked path
            try:
                decision = decide(
                    self._compiled_for(snapshot),
                    snapshot,
                    event,
                    payload,
                    self.clock.now(),
                    max_bytes=self.max_payload_bytes,
                )
            except EventRejected as exc:
                if snapshot is cached:
                    continue
                if isinstance(exc, EventDiscarded):
                    return None  # the locked path returns the snapshot unchanged
                raise
            if decision.effects:  # the row and its outbox rows in one statement
                rows = self.outbox.rows(
                    decision.snapshot, decision.record, decision.effects, self.inline_effects
                )
                written = self.store.write_with_effects(
                    decision.snapshot, decision.record, snapshot.version, rows, previous=snapshot
                )
                if written is not None:
                    self._snapshots.put(decision.snapshot)
                    self._after_commit([(e, rows.args) for e in written] if rows.claimed else [])
                    return decision
            elif self.store.write_if_version(
                decision.snapshot, decision.record, snapshot.version, previous=snapshot
            ):
                self._snapshots.put(decision.snapshot)
                return decision
            self._snapshots.drop(instance_id)
            if snapshot is not cached:
                return None
        return None

    def _write(self, tx: Tx, decision: Decision) -> Claimed:
        """Record the decision's effects in the outbox (its row goes in with ``append``).

        When this engine dispatches inline, the effects are written already claimed
        by it (saving a claim transaction) and returned, to run after the commit.
        """
        if not decision.effects:
            return []
        snap, record = decision.snapshot, decision.record
        rows = self.outbox.rows(snap, record, decision.effects, self.inline_effects)
        effects = tx.add_effects(
            rows.instance_id, rows.seq, rows.names, rows.args, rows.now, claimed_until=rows.until
        )
        return [(effect, rows.args) for effect in effects] if rows.claimed else []

    def _after_commit(self, claimed: Claimed) -> None:
        # The transition is committed: nothing here may make the caller think it was
        # not. A failed dispatch leaves the effect in the outbox for the next one.
        if not claimed:
            return
        try:
            self.outbox.run_claimed(claimed)
        except Exception:
            log.exception("dispatching effects after commit failed; they stay in the outbox")

    def _compiled_for(self, snapshot: Instance) -> CompiledMachine:
        if snapshot.kind != "machine":
            raise InvalidInput(
                f"instance {snapshot.id!r} is a {snapshot.kind} run, not a machine instance; "
                "drive it through its own engine (durable.WorkflowEngine)",
                cli_message=f"instance {snapshot.id!r} is a {snapshot.kind} run, not a machine "
                f"instance; send it an event with: statewf runs trigger {snapshot.id} EVENT "
                "--data '{...}'",
                instance_id=snapshot.id,
            )
        try:
            return self.compiled(snapshot.machine, snapshot.machine_version)
        except MachineNotRegistered as exc:
            raise MachineNotRegistered(
                f"instance {snapshot.id!r} is on machine {snapshot.machine!r} version "
                f"{snapshot.machine_version!r}, which this engine has not registered; register "
                "that version too so its instances can go on, or move the instance to a "
                f"registered version with engine.migrate({snapshot.id!r}, VERSION) "
                f"({exc.message})",
                cli_message=f"instance {snapshot.id!r} is on machine {snapshot.machine!r} "
                f"version {snapshot.machine_version!r}, which this command does not know; pass "
                "--app MODULE naming the module that defines that version, or move its "
                f"instances: statewf instances migrate --machine {snapshot.machine} --from "
                f"{snapshot.machine_version} --to VERSION --dry-run",
                instance_id=snapshot.id,
                machine=snapshot.machine,
                version=snapshot.machine_version,
            ) from None

    def migrate(
        self,
        instance_id: str,
        to_version: str,
        *,
        state_map: Mapping[str, str | Sequence[str]] | None = None,
        context: Upgrade | None = None,
        resource_id: str | None = None,
        reason: str | None = None,
    ) -> Instance:
        """Move an instance to version ``to_version`` of its machine: one ``migrate`` log row.

        ``state_map`` maps old states (names, statechart paths or ids, or a whole
        configuration label) to new ones; unmapped states keep their name. ``context``
        turns the old context into the new one. No hook runs. Raises
        :class:`~statewf.errors.MigrationRejected`, changing nothing, when it cannot
        apply (see :mod:`statewf.migrate`).
        """
        check_id(instance_id, "instance id")
        moved = migrate_instance(
            self, instance_id, to_version, state_map, context, resource_id, reason
        )
        self._snapshots.put(moved)
        return moved

    # ------------------------------------------------------------ reads

    def _load(
        self, tx: Tx, instance_id: str, resource_id: str | None, *, lock: bool = False
    ) -> Instance:
        snapshot = tx.get_instance(instance_id, lock=lock)
        if snapshot is None or (resource_id is not None and snapshot.resource_id != resource_id):
            scope = f" for resource {resource_id!r}" if resource_id is not None else ""
            raise InstanceNotFound(
                f"no instance {instance_id!r}{scope}; check the id (and resource_id)",
                instance_id=instance_id,
            )
        return snapshot

    def get(self, instance_id: str, *, resource_id: str | None = None) -> Instance:
        """The current snapshot of an instance."""
        check_id(instance_id, "instance id")
        with self.store.transaction(readonly=True) as tx:
            return self._load(tx, instance_id, resource_id)

    def list(
        self,
        *,
        machine: str | None = None,
        state: str | None = None,
        status: str | Sequence[str] | None = None,
        resource_id: str | None = None,
        kind: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Instance]:
        """A page of instances, oldest first, filtered; follow ``next_cursor`` for more."""
        with self.store.transaction(readonly=True) as tx:
            items, next_cursor = tx.list_instances(
                machine=machine,
                state=state,
                status=status,
                resource_id=resource_id,
                kind=kind,
                created_after=created_after,
                created_before=created_before,
                limit=limit,
                cursor=cursor,
            )
        return Page[Instance](items=items, next_cursor=next_cursor)

    def history(
        self, instance_id: str, *, resource_id: str | None = None
    ) -> builtins.list[TransitionRecord]:
        """Every transition of an instance, numbered from 1 (the create record)."""
        check_id(instance_id, "instance id")
        with self.store.transaction(readonly=True) as tx:
            self._load(tx, instance_id, resource_id)
            return tx.log(instance_id)

    def allowed_events(
        self, instance_id: str, *, resource_id: str | None = None
    ) -> builtins.list[str]:
        """The events with a transition from the instance's current state."""
        snapshot = self.get(instance_id, resource_id=resource_id)
        return allowed_events(self._compiled_for(snapshot), snapshot)

    def state_at(self, instance_id: str, seq: int, *, resource_id: str | None = None) -> Instance:
        """Time travel: the snapshot as it was right after transition ``seq``."""
        check_id(instance_id, "instance id")
        with self.store.transaction(readonly=True) as tx:
            current = self._load(tx, instance_id, resource_id)
            if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= current.version:
                raise InvalidInput(
                    f"seq must be between 1 and {current.version} for instance "
                    f"{instance_id!r}, got {seq!r}",
                    instance_id=instance_id,
                )
            return fold(tx.log(instance_id, upto=seq))

    def replay(self, instance_id: str, *, resource_id: str | None = None) -> Instance:
        """Fold the whole log again: equals :meth:`get` unless the database was edited."""
        return fold(self.history(instance_id, resource_id=resource_id))

    # ------------------------------------------------------------ outbox

    def dispatch_effects(
        self, *, limit: int = 100, instance_id: str | None = None, seq: int | None = None
    ) -> int:
        """Run due effects from the outbox (at least once each); the number attempted."""
        return self.outbox.dispatch(limit=limit, instance_id=instance_id, seq=seq)

    def effects(
        self,
        *,
        status: str | None = None,
        instance_id: str | None = None,
        limit: int = 100,
        resource_id: str | None = None,
    ) -> builtins.list[EffectRecord]:
        """Outbox rows (pending, done or dead), oldest first; ``resource_id`` scopes them."""
        if resource_id is not None:
            if instance_id is None:
                raise InvalidInput("effects of one resource: pass the instance_id too")
            self.get(instance_id, resource_id=resource_id)  # InstanceNotFound if not theirs
        return self.outbox.list(status=status, instance_id=instance_id, limit=limit)

    # ------------------------------------------------------------ lifecycle

    def add_index(self, name: str) -> builtins.list[str]:
        """Build an optional index (``"state"``, for ``list(state=...)``); the names built."""
        return self.store.add_index(name)

    def drop_index(self, name: str) -> builtins.list[str]:
        """Drop an optional index (see :meth:`add_index`); the database index names dropped."""
        return self.store.drop_index(name)

    def close(self) -> None:
        """Write the effect outcomes not written yet; release the database connections."""
        try:
            self.outbox.close()
        finally:
            self.store.dispose()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ async twins

    create_async = off_loop(create)
    send_async = off_loop(send)
    get_async = off_loop(get)
    list_async = off_loop(list)
    history_async = off_loop(history)
    allowed_events_async = off_loop(allowed_events)
    state_at_async = off_loop(state_at)
    migrate_async = off_loop(migrate)
    fire_due_timers_async = off_loop(TimerOperations.fire_due_timers)
    dispatch_effects_async = off_loop(dispatch_effects)
