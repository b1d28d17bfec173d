"""The W3C SCXML algorithm (appendix D of the recommendation) over a compiled chart.

One :class:`Interpreter` runs one macrostep: the outside event (or a fired timer,
or the start of an instance), the eventless transitions and internal events it
causes, then the events it sent to the external queue, each a macrostep of its
own, until the instance settles. It is pure: guards and actions go through the
runner; sends with a delay become :class:`~statewf.records.PendingTimer` values;
nothing is written anywhere. Names follow the recommendation's pseudo-code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from statewf.chart.model import (
    COMPOUND,
    FINAL,
    HISTORY,
    PARALLEL,
    RESERVED_EVENT,
    Cancel,
    Chart,
    ChartTransition,
    Executable,
    In,
    Log,
    Node,
    Raise,
    Send,
    name_match,
)
from statewf.durations import parse_duration
from statewf.errors import MacrostepLimit
from statewf.hooks import Hook
from statewf.records import PendingTimer

#: Microsteps (and internal events) one outside event may cause before it is refused.
MAX_MICROSTEPS = 1000


class ChartRunner(Protocol):
    """What the algorithm needs from a decision in progress: guards, actions, the payload."""

    payload: Any

    def check(self, hook: Hook) -> bool:
        """Evaluate a guard."""

    def run(self, hook: Hook) -> None:
        """Run an action, or record an effect."""


@dataclass
class Event:
    """An event being processed: its name and data."""

    name: str
    data: Any = None


@dataclass
class Outcome:
    """What a macrostep left: the configuration, history, timers and the path it took."""

    configuration: tuple[str, ...]
    state_ids: tuple[str, ...]
    history: dict[str, tuple[str, ...]]
    timers: tuple[PendingTimer, ...]
    microsteps: list[dict[str, Any]]
    finished: bool
    matched: bool = False
    taken: bool = False


@dataclass
class _Step:
    event: str | None
    transitions: list[dict[str, Any]] = field(default_factory=list)
    exited: list[str] = field(default_factory=list)
    entered: list[str] = field(default_factory=list)
    logs: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": self.event,
            "transitions": self.transitions,
            "exited": self.exited,
            "entered": self.entered,
        }
        if self.logs:
            out["logs"] = self.logs
        return out


def _doc(states: Iterable[Node]) -> list[Node]:
    return sorted(states, key=lambda s: s.order)


def proper_ancestors(state: Node, upto: Node | None) -> list[Node]:
    """Ancestors of ``state`` from its parent outward, stopping before ``upto`` (root excluded)."""
    found = []
    for anc in reversed(state.ancestors):
        if anc is upto or anc.parent is None:
            break
        found.append(anc)
    return found


class Interpreter:
    """One instance's chart state while a macrostep runs (see the module docstring)."""

    def __init__(
        self,
        chart: Chart,
        runner: ChartRunner,
        *,
        now: datetime,
        seq: int,
        active: tuple[str, ...] = (),
        history: dict[str, tuple[str, ...]] | None = None,
        timers: tuple[PendingTimer, ...] = (),
        limit: int = MAX_MICROSTEPS,
    ) -> None:
        self.chart = chart
        self.runner = runner
        self.now = now
        self.seq = seq
        self.limit = limit
        self.configuration: set[Node] = set()
        for path in active:
            leaf = chart.by_path[path]
            self.configuration.add(leaf)
            self.configuration.update(a for a in leaf.ancestors if a.parent is not None)
        self.history: dict[Node, list[Node]] = {
            chart.by_path[h]: [chart.by_path[p] for p in paths]
            for h, paths in (history or {}).items()
        }
        self.timers: list[PendingTimer] = list(timers)
        self.internal: deque[Event] = deque()
        self.external: deque[Event] = deque()
        self.running = True
        self.steps: list[_Step] = []
        self._step = _Step(None)
        self._count = 0
        self._sends = 0
        self.preempted: list[ChartTransition] = []

    # ------------------------------------------------------------ entry points

    def start(self) -> Outcome:
        """Enter the chart's initial configuration and settle (creating an instance)."""
        root_initial = self.chart.root.initial
        assert root_initial is not None
        self._microstep([root_initial], None)
        self._settle()
        self._drain_external()
        return self._outcome(matched=True, taken=True)

    def handle(self, event: Event) -> Outcome:
        """Process one outside event (or fired timer) as a macrostep, then the external queue."""
        matched, enabled = self._select(event)
        if enabled:
            self._microstep(enabled, event.name)
            self._settle()
        self._drain_external()
        return self._outcome(matched=matched, taken=bool(enabled))

    # ------------------------------------------------------------ main loop

    def _settle(self) -> None:
        while self.running:
            enabled = self._select_eventless()
            event_name = None
            if not enabled:
                if not self.internal:
                    return
                event = self.internal.popleft()
                self._tick(f"internal event {event.name!r}")
                self.runner.payload = event.data
                event_name = event.name
                _, enabled = self._select(event)
            if enabled:
                self._microstep(enabled, event_name)

    def _drain_external(self) -> None:
        while self.running and self.external:
            event = self.external.popleft()
            self._tick(f"sent event {event.name!r}")
            self.runner.payload = event.data
            _, enabled = self._select(event)
            if enabled:
                self._microstep(enabled, event.name)
                self._settle()

    def _tick(self, what: str) -> None:
        self._count += 1
        if self._count > self.limit:
            raise MacrostepLimit(
                f"the macrostep did not settle after {self.limit} microsteps (last: {what}); "
                "an eventless transition or a raised event loops. Nothing changed: give the "
                "loop a guard that turns false or a target that leaves it",
                event=what,
            )

    # ------------------------------------------------------------ selection

    def _condition(self, t: ChartTransition) -> bool:
        for guard in t.guards:
            if not self._check(t, guard):
                return False
        return all(not self._check(t, guard) for guard in t.unless)

    def _check(self, t: ChartTransition, guard: Hook | In) -> bool:
        if isinstance(guard, In):
            node = t.in_nodes.get(guard.state)  # None: a name no state has (SCXML: false)
            return node is not None and node in self.configuration
        return self.runner.check(guard)

    def _atomic(self) -> list[Node]:
        return _doc(s for s in self.configuration if not s.states)

    def _select(self, event: Event) -> tuple[bool, list[ChartTransition]]:
        matched = False
        enabled: list[ChartTransition] = []
        for state in self._atomic():
            for s in [state, *proper_ancestors(state, None)]:
                chosen = None
                for t in s.transitions:
                    if t.events and (
                        event.name in t.events if t.exact else name_match(t.events, event.name)
                    ):
                        matched = True
                        if self._condition(t):
                            chosen = t
                            break
                if chosen is not None:
                    if chosen not in enabled:
                        enabled.append(chosen)
                    break
        return matched, self._remove_conflicting(enabled)

    def _select_eventless(self) -> list[ChartTransition]:
        enabled: list[ChartTransition] = []
        for state in self._atomic():
            for s in [state, *proper_ancestors(state, None)]:
                chosen = next(
                    (t for t in s.transitions if t.eventless and self._condition(t)), None
                )
                if chosen is not None:
                    if chosen not in enabled:
                        enabled.append(chosen)
                    break
        return self._remove_conflicting(enabled)

    def select(self, event: str) -> tuple[list[ChartTransition], list[ChartTransition]]:
        """The transitions ``event`` would take now, and those it pre-empted (for tools)."""
        _, chosen = self._select(Event(event))
        return chosen, self.preempted

    def _remove_conflicting(self, enabled: list[ChartTransition]) -> list[ChartTransition]:
        filtered: list[ChartTransition] = []
        for t1 in enabled:
            preempted = False
            to_remove = []
            exit1 = self._exit_set([t1])
            for t2 in filtered:
                if exit1 & self._exit_set([t2]):
                    if t1.source.is_descendant(t2.source):
                        to_remove.append(t2)
                    else:
                        preempted = True
                        break
            if not preempted:
                for t3 in to_remove:
                    filtered.remove(t3)
                filtered.append(t1)
        self.preempted = [t for t in enabled if t not in filtered]
        return filtered

    # ------------------------------------------------------------ microstep

    def _microstep(self, enabled: list[ChartTransition], event: str | None) -> None:
        self._tick(f"transition from {enabled[0].source.path!r}")
        if event is not None and event.startswith(RESERVED_EVENT):
            event = enabled[0].label or event
        self._step = _Step(event)
        self._step.transitions = [
            {
                "source": t.source.path or None,
                "targets": [s.path for s in t.targets],
                "event": t.label or (" ".join(t.events) if t.events else None),
            }
            for t in enabled
        ]
        self.steps.append(self._step)
        self._exit_states(enabled)
        for t in enabled:
            self._execute(t.actions)
        self._enter_states(enabled)

    def _exit_set(self, transitions: list[ChartTransition]) -> set[Node]:
        exits: set[Node] = set()
        for t in transitions:
            if t.targets:
                domain = self._domain(t)
                exits.update(s for s in self.configuration if s.is_descendant(domain))
        return exits

    def _exit_states(self, enabled: list[ChartTransition]) -> None:
        exits = sorted(self._exit_set(enabled), key=lambda s: s.order, reverse=True)
        for s in exits:
            for h in s.history_nodes:
                if h.deep:
                    value = [x for x in self.configuration if not x.states and x.is_descendant(s)]
                else:
                    value = [x for x in self.configuration if x.parent is s]
                self.history[h] = _doc(value)
        for s in exits:
            self._execute(s.on_exit)
            self.timers = [t for t in self.timers if t.state != s.path]
            self.configuration.discard(s)
            self._step.exited.append(s.path)

    def _enter_states(self, enabled: list[ChartTransition]) -> None:
        to_enter: set[Node] = set()
        default_entry: set[Node] = set()
        default_history: dict[Node, tuple[Executable, ...]] = {}
        for t in enabled:
            for s in t.targets:
                self._add_descendants(s, to_enter, default_entry, default_history)
            ancestor = self._domain(t)
            for s in self._effective_targets(t):
                self._add_ancestors(s, ancestor, to_enter, default_entry, default_history)
        for s in _doc(to_enter):
            self.configuration.add(s)
            self._step.entered.append(s.path)
            for timer in s.timers:
                self.timers.append(
                    PendingTimer(
                        id=timer.trigger,
                        event=timer.trigger,
                        due_at=self.now + timer.delay,
                        state=s.path,
                        label=timer.label,
                    )
                )
            self._execute(s.on_entry)
            if s in default_entry and s.initial is not None:
                self._execute(s.initial.actions)
            if s in default_history:
                self._execute(default_history[s])
            if s.kind == FINAL:
                parent = s.parent
                assert parent is not None
                if parent.parent is None:
                    self.running = False
                else:
                    self.internal.append(Event(f"done.state.{parent.id}"))
                    grandparent = parent.parent
                    if grandparent.kind == PARALLEL and all(
                        self._in_final(c) for c in grandparent.states
                    ):
                        self.internal.append(Event(f"done.state.{grandparent.id}"))
        if not self.running:
            for s in sorted(self.configuration, key=lambda s: s.order, reverse=True):
                self._execute(s.on_exit)
            self.timers = []

    def _add_descendants(
        self,
        state: Node,
        to_enter: set[Node],
        default_entry: set[Node],
        default_history: dict[Node, tuple[Executable, ...]],
    ) -> None:
        if state.kind == HISTORY:
            parent = state.parent
            assert parent is not None
            if state in self.history:
                targets = self.history[state]
            else:
                assert state.initial is not None
                default_history[parent] = state.initial.actions
                targets = list(state.initial.targets)
            for s in targets:
                self._add_descendants(s, to_enter, default_entry, default_history)
            for s in targets:
                self._add_ancestors(s, parent, to_enter, default_entry, default_history)
            return
        to_enter.add(state)
        if state.kind == COMPOUND:
            default_entry.add(state)
            assert state.initial is not None
            for s in state.initial.targets:
                self._add_descendants(s, to_enter, default_entry, default_history)
            for s in state.initial.targets:
                self._add_ancestors(s, state, to_enter, default_entry, default_history)
        elif state.kind == PARALLEL:
            for child in state.states:
                if not any(s is child or s.is_descendant(child) for s in to_enter):
                    self._add_descendants(child, to_enter, default_entry, default_history)

    def _add_ancestors(
        self,
        state: Node,
        ancestor: Node | None,
        to_enter: set[Node],
        default_entry: set[Node],
        default_history: dict[Node, tuple[Executable, ...]],
    ) -> None:
        for anc in proper_ancestors(state, ancestor):
            to_enter.add(anc)
            if anc.kind == PARALLEL:
                for child in anc.states:
                    if not any(s is child or s.is_descendant(child) for s in to_enter):
                        self._add_descendants(child, to_enter, default_entry, default_history)

    def _in_final(self, state: Node) -> bool:
        if state.kind == COMPOUND:
            return any(c.kind == FINAL and c in self.configuration for c in state.states)
        if state.kind == PARALLEL:
            return all(self._in_final(c) for c in state.states)
        return False

    def _effective_targets(self, t: ChartTransition) -> list[Node]:
        targets: list[Node] = []
        for s in t.targets:
            if s.kind == HISTORY:
                if s in self.history:
                    found = self.history[s]
                else:
                    assert s.initial is not None
                    found = self._effective_targets(s.initial)
                targets.extend(x for x in found if x not in targets)
            elif s not in targets:
                targets.append(s)
        return targets

    def _domain(self, t: ChartTransition) -> Node:
        targets = self._effective_targets(t)
        if not targets or t.source.parent is None:
            return t.source
        if (
            t.internal
            and t.source.kind == COMPOUND
            and all(s.is_descendant(t.source) for s in targets)
        ):
            return t.source
        return self._lcca([t.source, *targets])

    @staticmethod
    def _lcca(states: list[Node]) -> Node:
        head, tail = states[0], states[1:]
        for anc in reversed(head.ancestors):
            compound = anc.kind == COMPOUND or anc.parent is None
            if compound and all(s.is_descendant(anc) for s in tail):
                return anc
        raise AssertionError("the root is an ancestor of every state")

    # ------------------------------------------------------------ executable content

    def _execute(self, content: tuple[Executable, ...]) -> None:
        for item in content:
            if isinstance(item, Hook):
                self.runner.run(item)
            elif isinstance(item, Raise):
                self.internal.append(Event(item.event))
            elif isinstance(item, Send):
                self._send(item)
            elif isinstance(item, Cancel):
                self.timers = [t for t in self.timers if not (t.id == item.id and t.state is None)]
            elif isinstance(item, Log):
                self._step.logs.append({"label": item.label, "expr": item.expr})

    def _send(self, send: Send) -> None:
        delay = parse_duration(send.delay) if send.delay not in (None, "", 0) else None
        if delay is None or delay.total_seconds() <= 0:
            (self.internal if send.internal else self.external).append(Event(send.event))
            return
        self._sends += 1
        self.timers.append(
            PendingTimer(
                id=send.id or f"send.{self.seq}.{self._sends}",
                event=send.event,
                due_at=self.now + delay,
                label=f"send {send.event}",
            )
        )

    # ------------------------------------------------------------ result

    def _outcome(self, *, matched: bool, taken: bool) -> Outcome:
        leaves = self._atomic()
        history = {
            h.path: tuple(s.path for s in value)
            for h, value in sorted(self.history.items(), key=lambda kv: kv[0].order)
        }
        return Outcome(
            configuration=tuple(s.path for s in leaves),
            state_ids=tuple(s.id for s in leaves),
            history=history,
            timers=tuple(sorted(self.timers, key=lambda t: t.due_at)),
            microsteps=[s.as_dict() for s in self.steps],
            finished=not self.running,
            matched=matched,
            taken=taken,
        )
