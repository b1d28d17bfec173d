"""The pure plan of a machine migration: the ``migrate`` row and the snapshot it implies.

No database here: :mod:`statewf.migrate` reads the instance, calls
:func:`plan_migration` and writes the row. What a migration does to states, context,
timers and history is told there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NoReturn

import pydantic_core
from pydantic import BaseModel

from statewf.adapter import CompiledMachine
from statewf.chart.algorithm import Outcome
from statewf.chart.model import COMPOUND, HISTORY, PARALLEL, Chart, Node
from statewf.chart.model import FINAL as FINAL_NODE
from statewf.decide import timer_position
from statewf.errors import InvalidInput, InvalidPayload, MigrationRejected
from statewf.fold import apply, context_diff
from statewf.macrostep import chart_meta
from statewf.records import (
    ACTIVE,
    FINAL,
    KIND_MIGRATE,
    Instance,
    PendingTimer,
    TransitionRecord,
)
from statewf.running import dump_context

#: A context upgrade: the old context (a private copy) in, the new one out.
Upgrade = Callable[[dict[str, Any]], Mapping[str, Any] | BaseModel]
#: Old state (name, path, id or configuration label) to the new state or states.
StateMap = Mapping[str, str | Sequence[str]]


class Rejecter:
    """Builds the :class:`MigrationRejected` errors of one migration (who, which versions)."""

    def __init__(
        self, machine: str, from_version: str, to_version: str, instance: Instance | None
    ) -> None:
        self.machine = machine
        self.from_version = from_version
        self.to_version = to_version
        self.instance = instance

    def __call__(
        self, reason: str, hint: str, cli_hint: str | None = None, *, state: str | None = None
    ) -> NoReturn:
        """Raise the rejection: what is wrong (``reason``) and what to do (``hint``)."""
        who = (
            f"instance {self.instance.id!r} of machine {self.machine!r}"
            if self.instance is not None
            else f"instances of machine {self.machine!r}"
        )
        head = f"cannot migrate {who} from version {self.from_version!r} to {self.to_version!r}"
        raise MigrationRejected(
            f"{head}: {reason}; {hint}; nothing changed",
            cli_message=f"{head}: {reason}; {cli_hint or hint}; nothing changed",
            instance_id=self.instance.id if self.instance is not None else None,
            state=state if state is not None else (self.instance.state if self.instance else None),
            machine=self.machine,
            from_version=self.from_version,
            to_version=self.to_version,
            reason=reason,
            next=cli_hint or hint,
        )


# ---------------------------------------------------------------- the state map


def normalize_state_map(state_map: StateMap | None) -> dict[str, tuple[str, ...]]:
    """``state_map`` with every value a tuple of state names; :class:`InvalidInput` if malformed."""
    if state_map is None:
        return {}
    if not isinstance(state_map, Mapping):
        raise InvalidInput(
            f"state_map must be a mapping of old state to new state, got {state_map!r}"
        )
    found: dict[str, tuple[str, ...]] = {}
    for old, new in state_map.items():
        values = (new,) if isinstance(new, str) else new
        if (
            not isinstance(old, str)
            or not old
            or not isinstance(values, Sequence)
            or not values
            or not all(isinstance(v, str) and v for v in values)
        ):
            raise InvalidInput(
                f"state_map entry {old!r}: {new!r} is not a state name mapped to a state "
                "name (or, for a statechart, a list of them)"
            )
        found[old] = tuple(values)
    return found


def defined_states(definition: Mapping[str, Any]) -> set[str]:
    """The state names a stored definition has: a flat machine's states, a chart's paths and ids."""
    if "chart" in definition:
        nodes = definition["chart"]["nodes"]
        return {p for p in nodes if p} | {n["id"] for p, n in nodes.items() if p}
    return set(definition["states"])


def _listing(names: Sequence[str] | set[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def check_state_map(
    state_map: Mapping[str, tuple[str, ...]],
    old_definition: Mapping[str, Any] | None,
    target: CompiledMachine,
    reject: Rejecter,
) -> None:
    """Every key is a state of the old version, every value a state of the new one."""
    spec = target.spec
    if old_definition is not None:
        old_states = defined_states(old_definition)
        for key in state_map:
            missing = [part for part in key.split(",") if part not in old_states]
            if missing:
                reject(
                    f"state_map names {missing[0]!r}, which version {reject.from_version!r} "
                    f"does not have (its states: {_listing(old_states)})",
                    "correct or remove that entry",
                    f"correct or remove --map {key}=...",
                )
    chart = spec.chart
    new_states = (
        set(spec.states)
        if chart is None
        else {n.path for n in chart.nodes if n.path} | {n.id for n in chart.nodes if n.path}
    )
    for key, values in state_map.items():
        for value in values:
            node = chart.node(value) if chart is not None else None
            if value not in new_states or (node is not None and node.kind == HISTORY):
                reject(
                    f"state_map maps {key!r} to {value!r}, which is not a state of version "
                    f"{reject.to_version!r} (its states: {_listing(new_states)})",
                    "map it to one of those states",
                    f"correct --map {key}={value}",
                )


def _map(
    snapshot: Instance, state_map: Mapping[str, tuple[str, ...]]
) -> list[tuple[str, tuple[str, ...], bool, str]]:
    """(old state, new refs, mapped explicitly, the old state's id) for each active state."""
    if snapshot.state in state_map:
        return [(snapshot.state, state_map[snapshot.state], True, snapshot.state)]
    ids = snapshot.state_ids or snapshot.configuration
    found = []
    for path, state_id in zip(snapshot.configuration, ids, strict=False):
        if path in state_map:
            found.append((path, state_map[path], True, state_id))
        elif state_id in state_map:
            found.append((state_id, state_map[state_id], True, state_id))
        else:
            found.append((path, (path,), False, state_id))
    return found


def _unmapped(reject: Rejecter, old: str, states: Sequence[str] | set[str]) -> NoReturn:
    reject(
        f"its state {old!r} is not in version {reject.to_version!r} (its states: "
        f"{_listing(states)}) and state_map does not map it",
        f"map it: state_map={{{old!r}: 'NEW_STATE'}}",
        f"add --map {old}=NEW_STATE",
        state=old,
    )


# ---------------------------------------------------------------- the pure plan


def plan_migration(
    snapshot: Instance,
    log: Sequence[TransitionRecord],
    target: CompiledMachine,
    old_definition: Mapping[str, Any] | None,
    state_map: Mapping[str, tuple[str, ...]],
    upgrade: Upgrade | None,
    now: datetime,
    *,
    reason: str | None = None,
    max_bytes: int,
) -> tuple[TransitionRecord, Instance]:
    """The migration row and the snapshot after it; :class:`MigrationRejected` if it cannot apply.

    ``log`` is the instance's log (only a flat instance's is read, for its timers);
    ``old_definition`` the stored definition of the version it is on.
    """
    spec = target.spec
    reject = Rejecter(spec.name, snapshot.machine_version, spec.version, snapshot)
    check_state_map(state_map, old_definition, target, reject)
    meta: dict[str, Any] = {
        "from_version": snapshot.machine_version,
        "machine_version": spec.version,
    }
    if spec.chart is None:
        state = _flat_state(snapshot, spec.states, state_map, reject)
        configuration: tuple[str, ...] = (state,)
        status = FINAL if spec.states[state].final else ACTIVE
        timers_from, skipped = _flat_timers(snapshot, log, old_definition, target, state, now)
        meta.update(timers_from=timers_from.isoformat(), timers_skipped=skipped)
        timers = spec.timers.get(state, ())
        wake = timers_from + timers[skipped].delay if skipped < len(timers) else None
    else:
        outcome = _chart_outcome(snapshot, log, spec.chart, old_definition, state_map, now, reject)
        configuration = outcome.configuration
        status = FINAL if outcome.finished else ACTIVE
        meta["chart"] = chart_meta(outcome)
        wake = min((t.due_at for t in outcome.timers), default=None)
    changed, removed = _context(snapshot, target, upgrade, max_bytes, reject)
    meta["states"] = {old: list(new) for old, new, _, _ in _map(snapshot, state_map)}
    if reason is not None:
        meta["reason"] = reason
    record = TransitionRecord(
        instance_id=snapshot.id,
        seq=snapshot.version + 1,
        kind=KIND_MIGRATE,
        source=snapshot.configuration,
        target=configuration,
        context_set=changed,
        context_unset=removed,
        status=status,
        wake_at=wake if status == ACTIVE else None,
        meta=meta,
        created_at=now,
    )
    return record, apply(snapshot, record)


def _flat_state(
    snapshot: Instance,
    states: Mapping[str, Any],
    state_map: Mapping[str, tuple[str, ...]],
    reject: Rejecter,
) -> str:
    """The one state of the new flat version the instance's configuration maps to."""
    targets: list[str] = []
    for old, refs, mapped, _ in _map(snapshot, state_map):
        if not mapped and refs[0] not in states:
            _unmapped(reject, old, set(states))
        targets.extend(r for r in refs if r not in targets)
    if len(targets) != 1:
        reject(
            f"its states {snapshot.state!r} map to {', '.join(targets)}, but version "
            f"{reject.to_version!r} is a flat machine, in one state at a time",
            f"map the whole configuration to one state: state_map={{{snapshot.state!r}: 'STATE'}}",
            f"add --map '{snapshot.state}=STATE'",
        )
    return targets[0]


def _old_timers(
    snapshot: Instance, log: Sequence[TransitionRecord], old_definition: Mapping[str, Any] | None
) -> tuple[dict[tuple[str, str], datetime], set[tuple[str, str]]]:
    """The old version's delayed transitions by (state, label): pending ones with their
    deadlines, and those of active states that already fired."""
    pending: dict[tuple[str, str], datetime] = {}
    fired: set[tuple[str, str]] = set()
    if snapshot.chart:
        nodes = (old_definition or {}).get("chart", {}).get("nodes", {})
        for t in snapshot.timers:
            if t.state is not None:
                pending[(t.state, t.label)] = t.due_at
        for path in snapshot.configuration:
            parts = path.split(".")
            for depth in range(1, len(parts) + 1):
                node = ".".join(parts[:depth])
                for timer in nodes.get(node, {}).get("after", ()):
                    if (node, timer["label"]) not in pending:
                        fired.add((node, timer["label"]))
        return pending, fired
    state = snapshot.configuration[0]
    after = (old_definition or {}).get("states", {}).get(state, {}).get("after", ())
    if after and snapshot.status == ACTIVE:
        entered_at, skipped = timer_position(list(log))
        for index, timer in enumerate(after):
            if index < skipped:
                fired.add((state, timer["label"]))
            else:
                due = entered_at + timedelta(seconds=timer["seconds"])
                pending[(state, timer["label"])] = due
    return pending, fired


def _flat_timers(
    snapshot: Instance,
    log: Sequence[TransitionRecord],
    old_definition: Mapping[str, Any] | None,
    target: CompiledMachine,
    state: str,
    now: datetime,
) -> tuple[datetime, int]:
    """Where the new state's delayed transitions count from, and how many are done."""
    new_labels = [t.label for t in target.spec.timers.get(state, ())]
    if snapshot.chart or not new_labels or old_definition is None or "states" not in old_definition:
        return now, 0
    old = old_definition["states"].get(snapshot.configuration[0], {}).get("after", ())
    if [t["label"] for t in old] != new_labels:
        return now, 0
    return timer_position(list(log))


def _chart_outcome(
    snapshot: Instance,
    log: Sequence[TransitionRecord],
    chart: Chart,
    old_definition: Mapping[str, Any] | None,
    state_map: Mapping[str, tuple[str, ...]],
    now: datetime,
    reject: Rejecter,
) -> Outcome:
    """The new configuration, history values and timers of a statechart instance."""
    entered: list[Node] = []
    for old, refs, mapped, state_id in _map(snapshot, state_map):
        for ref in refs:
            node = chart.node(ref) or (None if mapped else chart.node(state_id))
            if node is None or node.kind == HISTORY:
                _unmapped(reject, old, {n.path for n in chart.nodes if n.path})
            entered.append(node)
    active = _complete(chart, entered, reject)
    leaves = sorted(
        (n for n in active if not any(c in active for c in n.states)), key=lambda n: n.order
    )
    finished = any(n.kind == FINAL_NODE and n.parent is chart.root for n in leaves)

    def moved(path: str) -> str:
        values = state_map.get(path)
        return values[0] if values is not None and len(values) == 1 else path

    timers: list[PendingTimer] = []
    if not finished:
        timers = [t for t in snapshot.timers if t.state is None]  # delayed sends stay
        pending, fired = _old_timers(snapshot, log, old_definition)
        pending = {(moved(s), label): due for (s, label), due in pending.items()}
        fired = {(moved(s), label) for s, label in fired}
        for node in sorted(active, key=lambda n: n.order):
            for timer in node.timers:
                key = (node.path, timer.label)
                if key in fired and key not in pending:
                    continue
                timers.append(
                    PendingTimer(
                        id=timer.trigger,
                        event=timer.trigger,
                        due_at=pending.get(key, now + timer.delay),
                        state=node.path,
                        label=timer.label,
                    )
                )
    return Outcome(
        configuration=tuple(n.path for n in leaves),
        state_ids=tuple(n.id for n in leaves),
        history=_history(snapshot, chart, moved),
        timers=tuple(sorted(timers, key=lambda t: t.due_at)),
        microsteps=[],
        finished=finished,
    )


def _entry(node: Node) -> list[Node]:
    """The states entering ``node`` puts in the configuration first (a history: its default)."""
    if node.kind != HISTORY or node.initial is None:
        return [node]
    return [s for t in node.initial.targets for s in _entry(t)]


def _complete(chart: Chart, entered: list[Node], reject: Rejecter) -> set[Node]:
    """``entered`` and their ancestors, completed with default children into a valid
    configuration (one child of each compound state, every region of a parallel one)."""
    active: set[Node] = set()

    def add(node: Node) -> None:
        active.add(node)
        active.update(a for a in node.ancestors if a.parent is not None)

    for node in entered:
        add(node)
    grown = True
    while grown:
        grown = False
        for node in sorted(active, key=lambda n: n.order):
            children = [c for c in node.states if c in active]
            if node.kind == COMPOUND and not children and node.initial is not None:
                for target in node.initial.targets:
                    for s in _entry(target):
                        add(s)
                grown = True
            elif node.kind == PARALLEL and len(children) < len(node.states):
                for child in node.states:
                    if child not in active:
                        add(child)
                grown = True
            if grown:
                break
    for parent in [chart.root, *sorted(active, key=lambda n: n.order)]:
        if parent.kind == PARALLEL:
            continue
        names = [c.path for c in parent.states if c in active]
        if len(names) > 1:
            where = f"state {parent.path!r}" if parent.parent is not None else "the top level"
            reject(
                f"it would be in {' and '.join(repr(c) for c in names)} at once, but "
                f"{where} of version {reject.to_version!r} is in one of them at a time",
                "map its states so that each compound state has one active child",
            )
    return active


def _history(
    snapshot: Instance, chart: Chart, moved: Callable[[str], str]
) -> dict[str, tuple[str, ...]]:
    """The history values that still make sense in the new chart (the others are forgotten)."""
    found: dict[str, tuple[str, ...]] = {}
    for path, remembered in snapshot.history.items():
        node = chart.node(moved(path))
        if node is None or node.kind != HISTORY or node.parent is None:
            continue
        states = [chart.node(moved(p)) for p in remembered]
        if all(s is not None and s.is_descendant(node.parent) for s in states):
            found[node.path] = tuple(s.path for s in states if s is not None)
    return found


def _context(
    snapshot: Instance,
    target: CompiledMachine,
    upgrade: Upgrade | None,
    max_bytes: int,
    reject: Rejecter,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The context change: the old context through ``upgrade``, checked against the new model."""
    value: Any = pydantic_core.from_json(pydantic_core.to_json(snapshot.context))
    if upgrade is not None:
        name = getattr(upgrade, "__qualname__", repr(upgrade))
        try:
            value = upgrade(value)
        except Exception as exc:
            reject(
                f"the context upgrade {name} raised {type(exc).__name__}: {exc}",
                "fix the upgrade function (it gets the old context as a dict and returns "
                "the new one)",
                "fix the --upgrade function (it gets the old context as a dict and returns "
                "the new one)",
            )
        if isinstance(value, BaseModel) and target.spec.context is None:
            value = value.model_dump(mode="json")
    where = f"migrating instance {snapshot.id!r} to version {target.spec.version!r}"
    try:
        new = dump_context(target, value, where, max_bytes)
    except (InvalidInput, InvalidPayload) as exc:
        reject(
            f"its context does not fit version {target.spec.version!r}: {exc.message}",
            "pass context=FUNCTION turning the old context into a valid new one",
            "pass --upgrade module:function turning the old context into a valid new one",
        )
    return context_diff(snapshot.context, new)
