"""Declarative machine definitions: :class:`Machine`, :class:`State`, :func:`transition`.

A definition is validated when it is built. Guards and actions may be given as
callables or as names resolved from a :class:`Registry` (the form data files use).
Every hook is normalized to a :class:`Hook` that keeps its name, so a definition
can be fingerprinted, stored and drawn without running any of its code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

from pydantic import BaseModel

from statewf.chart.content import uses_content
from statewf.chart.model import History
from statewf.durations import format_duration, parse_duration
from statewf.errors import SpecError, StatewfError
from statewf.hooks import (
    Effect,
    Hook,
    Registry,
    _as_list,
    _callable_name,
    earlier_name,
    guard_problem,
)

if TYPE_CHECKING:
    from statewf.chart.model import Cancel, Chart, In, Log, Raise, Send

GuardFn: TypeAlias = Callable[[Any, Any], bool]
ActionFn: TypeAlias = Callable[[Any, Any], Any]
#: A guard, action or effect: a callable, an Effect, a registry name, or (in a
#: statechart) SCXML content (Raise, Send, Cancel, Log) and the In() guard.
HookRef: TypeAlias = "str | Callable[..., Any] | Effect | Raise | Send | Cancel | Log | In"
HookRefs: TypeAlias = "HookRef | Sequence[HookRef] | None"

MAX_NAME_LENGTH = 200


@dataclass(frozen=True)
class Transition:
    """One transition for an event: target, guards, actions and payload schema.

    ``target=None`` (or ``internal=True``) makes an internal transition: actions run,
    the state is not exited or re-entered. A target equal to the source state is an
    external self-transition: exit and entry actions run.
    """

    target: str | tuple[str, ...] | None
    guards: tuple[HookRef, ...] = ()
    unless: tuple[HookRef, ...] = ()
    actions: tuple[HookRef, ...] = ()
    payload: type[BaseModel] | None = None
    internal: bool = False
    description: str = ""
    event: str | None = None
    type: str = "external"


def transition(
    target: str | Sequence[str] | None = None,
    *,
    guard: HookRefs = None,
    unless: HookRefs = None,
    action: HookRefs = None,
    payload: type[BaseModel] | None = None,
    internal: bool = False,
    description: str = "",
    event: str | None = None,
    type: str = "external",
) -> Transition:
    """Build a :class:`Transition`; ``guard``/``unless``/``action`` take one or a list.

    In a statechart, ``target`` may name several states (one per parallel region),
    ``event`` gives the descriptors of a transition listed in ``State(transitions=[...])``
    (space-separated; None: eventless), and ``type="internal"`` is SCXML's internal
    transition: it does not exit its compound source state when every target is inside.
    """
    targets = target if isinstance(target, str | None) else tuple(target)
    return Transition(
        target=None if internal else targets,
        guards=tuple(_as_list(guard)),
        unless=tuple(_as_list(unless)),
        actions=tuple(_as_list(action)),
        payload=payload,
        internal=internal or target is None,
        description=description,
        event=event,
        type=type,
    )


TransitionLike: TypeAlias = "str | Transition | Sequence[Transition]"


@dataclass(frozen=True)
class State:
    """A state: its transitions by event, delayed transitions, entry/exit actions, finality.

    ``after`` maps a delay (``"7 days"``, ``{"hours": 2}``, a timedelta, seconds) to a
    target or a :func:`transition`; it fires once that long after the instance entered
    the state, unless the instance left first. An internal one
    (``transition(internal=True, action=...)``) runs its actions and leaves the
    state's other timers running; any other one re-enters, which restarts them.
    ``timeout`` with ``on_timeout`` is the same thing for the common single case.
    """

    on: Mapping[str, TransitionLike] = field(default_factory=dict)
    on_enter: HookRefs = None
    on_exit: HookRefs = None
    final: bool = False
    description: str = ""
    after: Mapping[Any, str | Transition] = field(default_factory=dict)
    timeout: Any = None
    on_timeout: str | Transition | None = None
    states: Mapping[str, State | History] = field(default_factory=dict)
    initial: str | Sequence[str] | Transition | None = None
    parallel: bool = False
    on_done: TransitionLike | None = None
    always: TransitionLike | None = None
    transitions: Sequence[Transition] = ()
    id: str | None = None

    @property
    def is_chart(self) -> bool:
        """True if this state uses a statechart feature (nesting, parallel, always, ...)."""
        return bool(
            self.states
            or self.parallel
            or self.on_done is not None
            or self.always is not None
            or self.transitions
            or self.id is not None
            or self.initial is not None
            or uses_content(self)
        )


@dataclass(frozen=True)
class ResolvedTransition:
    """A transition with its hooks resolved and its source known."""

    source: str
    event: str
    target: str | None
    guards: tuple[Hook, ...]
    unless: tuple[Hook, ...]
    actions: tuple[Hook, ...]
    payload: type[BaseModel] | None
    description: str

    @property
    def internal(self) -> bool:
        """True when the transition does not exit and re-enter its state."""
        return self.target is None

    @property
    def destination(self) -> str:
        """The state the instance is in after the transition."""
        return self.target if self.target is not None else self.source


#: Prefix of the trigger names timers use inside ``transitions``. Event names may not
#: contain control characters, so no event a user sends can collide with a timer.
TIMER_TRIGGER = "\x1ftimer:"


@dataclass(frozen=True)
class ResolvedTimer:
    """A delayed transition: fires ``delay`` after its state was entered."""

    label: str
    delay: timedelta
    transition: ResolvedTransition
    trigger: str


@dataclass(frozen=True)
class ResolvedState:
    """A state with its hooks resolved."""

    name: str
    on_enter: tuple[Hook, ...]
    on_exit: tuple[Hook, ...]
    final: bool
    description: str


class Machine:
    """A declarative state machine definition, validated when built.

    Args:
        name: the machine's name, unique within an engine.
        initial: the state new instances start in (a statechart: one name or several,
            one per parallel region, at any depth).
        states: state name to :class:`State` (or :class:`History` inside a state).
        context: a pydantic model for the instance context (or None for a free dict).
        version: bump it whenever the definition changes; instances keep theirs.
        registry: where hook names (strings) are looked up.
        description: free text shown in diagrams and the CLI.
        statechart: run it on the SCXML core; None decides from the definition
            (nesting, parallel, history, ``always``, ``on_done``... make a statechart).
        allow_unreachable: keep states no run can enter instead of refusing them.
        ignore_unmatched: discard events no transition takes (SCXML semantics: ``send``
            returns the unchanged instance) instead of raising ``UnknownEvent``.
    """

    def __init__(
        self,
        name: str,
        *,
        initial: str | Sequence[str],
        states: Mapping[str, State | History],
        context: type[BaseModel] | None = None,
        version: str = "1",
        registry: Registry | None = None,
        description: str = "",
        statechart: bool | None = None,
        allow_unreachable: bool = False,
        ignore_unmatched: bool = False,
    ) -> None:
        self.name = name
        self.version = str(version)
        self.initial = initial
        self.context = context
        self.description = description
        self.registry = registry
        # a lambda hook's label -> the name releases before labels gave it ("<lambda>")
        self._earlier_names: dict[str, str] = {}
        self.chart: Chart | None = None
        #: states a run can never enter (only SCXML documents and allow_unreachable keep them)
        self.unreachable: tuple[str, ...] = ()
        problems: list[str] = []
        if statechart is None:
            statechart = (
                ignore_unmatched
                or not isinstance(initial, str)
                or (
                    isinstance(states, Mapping)
                    and any(
                        isinstance(s, History) or (isinstance(s, State) and s.is_chart)
                        for s in states.values()
                    )
                )
            )
        _check_name("machine name", name, problems)
        _check_name("machine version", self.version, problems)
        if context is not None and not (
            isinstance(context, type) and issubclass(context, BaseModel)
        ):
            problems.append(f"context must be a pydantic BaseModel subclass, got {context!r}")
        self.states: dict[str, ResolvedState] = {}
        self.transitions: dict[str, dict[str, tuple[ResolvedTransition, ...]]] = {}
        self.timers: dict[str, tuple[ResolvedTimer, ...]] = {}
        if statechart:
            self._build_chart(states, problems, allow_unreachable, ignore_unmatched)
            self._raise_problems(problems)
            return
        if not isinstance(states, Mapping):
            problems.append(f"states must be a mapping of name to State, got {states!r}")
            states = {}
        if not states:
            problems.append("a machine needs at least one state")
        for state_name, state in states.items():
            self._add_state(state_name, state, problems)
        if not isinstance(initial, str) or initial not in states:
            known = ", ".join(sorted(map(str, states))) or "none"
            problems.append(f"initial state {initial!r} is not declared (states: {known})")
        if not problems:
            self._check_graph(problems)
        if not problems:
            self._check_effect_names(problems)
        self._raise_problems(problems)

    def _raise_problems(self, problems: list[str]) -> None:
        if problems:
            listing = "; ".join(problems)
            raise SpecError(
                f"machine {self.name!r} is invalid: {listing}",
                machine=self.name,
                problems=problems,
            )

    def _build_chart(
        self,
        states: Any,
        problems: list[str],
        allow_unreachable: bool,
        ignore_unmatched: bool,
    ) -> None:
        # The builder imports this module's State and History: import it when used.
        from statewf.chart.build import compile_chart

        self.chart = compile_chart(
            self,
            states,
            problems,
            allow_unreachable=allow_unreachable,
            ignore_unmatched=ignore_unmatched,
        )
        if self.chart is not None:
            self._check_effect_names(problems)

    # ------------------------------------------------------------ building

    def _resolve(self, ref: Any, where: str, problems: list[str]) -> Hook | None:
        hook = self._resolve_any(ref, where, problems)
        if hook is not None and where.endswith(("guard", "unless")):
            problem = guard_problem(hook, where)
            if problem is not None:
                problems.append(problem)
                return None
        return hook

    def _resolve_any(self, ref: Any, where: str, problems: list[str]) -> Hook | None:
        if isinstance(ref, Effect):
            return Hook(ref.name, ref.fn, is_effect=True)
        if isinstance(ref, str):
            hook = self.registry.get(ref) if self.registry is not None else None
            if hook is None:
                hint = (
                    "register it in the machine's Registry"
                    if self.registry is not None
                    else "pass registry= to the Machine"
                )
                problems.append(f"{where}: no hook named {ref!r}; {hint}")
            return hook
        if callable(ref):
            name = _callable_name(ref)
            earlier = earlier_name(ref)
            if earlier is not None:
                self._earlier_names[name] = earlier
            return Hook(name, ref)
        problems.append(f"{where}: expected a callable or a hook name, got {ref!r}")
        return None

    def _hooks(self, refs: Any, where: str, problems: list[str]) -> tuple[Hook, ...]:
        try:
            items = _as_list(refs)
        except SpecError as exc:
            problems.append(f"{where}: {exc.message}")
            return ()
        hooks = (self._resolve(ref, where, problems) for ref in items)
        return tuple(h for h in hooks if h is not None)

    def _add_state(self, name: str, state: Any, problems: list[str]) -> None:
        _check_name("state name", name, problems)
        if isinstance(name, str) and "." in name:
            problems.append(f"state name {name!r} may not contain '.' (reserved for nesting)")
        if not isinstance(state, State):
            problems.append(f"state {name!r} must be a statewf.State, got {type(state).__name__}")
            return
        where = f"state {name!r}"
        self.states[name] = ResolvedState(
            name=name,
            on_enter=self._hooks(state.on_enter, f"{where} on_enter", problems),
            on_exit=self._hooks(state.on_exit, f"{where} on_exit", problems),
            final=state.final,
            description=state.description,
        )
        by_event: dict[str, tuple[ResolvedTransition, ...]] = {}
        if not isinstance(state.on, Mapping):
            problems.append(f"{where} on= must be a mapping of event to transition")
        for event, spec in state.on.items() if isinstance(state.on, Mapping) else ():
            _check_name("event name", event, problems)
            if isinstance(spec, str | Transition):
                options = [spec]
            elif isinstance(spec, Sequence):
                options = list(spec)
            else:
                problems.append(f"{where} event {event!r}: expected a target name or transitions")
                continue
            resolved = []
            for option in options:
                item = transition(option) if isinstance(option, str) else option
                if not isinstance(item, Transition):
                    problems.append(
                        f"{where} event {event!r}: expected a target name or "
                        f"statewf.transition(...), got {item!r}"
                    )
                    continue
                if item.target is not None and not isinstance(item.target, str):
                    problems.append(f"{where} event {event!r}: target must be a state name")
                    continue
                if item.payload is not None and not (
                    isinstance(item.payload, type) and issubclass(item.payload, BaseModel)
                ):
                    problems.append(f"{where} event {event!r}: payload must be a BaseModel")
                resolved.append(
                    self._resolve_transition(
                        name, event, item, f"{where} event {event!r}", problems
                    )
                )
            if not options:
                problems.append(f"{where} event {event!r} has no transitions")
            by_event[event] = tuple(resolved)
        if state.final and by_event:
            problems.append(f"final state {name!r} cannot have outgoing transitions")
        self.transitions[name] = by_event
        self._add_timers(name, state, problems)

    def _resolve_transition(
        self, source: str, event: str, item: Transition, where: str, problems: list[str]
    ) -> ResolvedTransition:
        return ResolvedTransition(
            source=source,
            event=event,
            target=item.target if isinstance(item.target, str) else None,
            guards=self._hooks(item.guards, f"{where} guard", problems),
            unless=self._hooks(item.unless, f"{where} unless", problems),
            actions=self._hooks(item.actions, f"{where} action", problems),
            payload=item.payload,
            description=item.description,
        )

    def _add_timers(self, name: str, state: State, problems: list[str]) -> None:
        where = f"state {name!r}"
        if not isinstance(state.after, Mapping):
            problems.append(f"{where}: after= must be a mapping of delay to target")
            return
        delays: list[tuple[Any, Any, str]] = [(k, v, "after") for k, v in state.after.items()]
        if state.timeout is not None or state.on_timeout is not None:
            if state.timeout is None or state.on_timeout is None:
                problems.append(f"{where}: timeout and on_timeout go together")
            else:
                delays.append((state.timeout, state.on_timeout, "timeout"))
        if delays and state.final:
            problems.append(f"final state {name!r} cannot have delayed transitions")
        timers = []
        for index, (when, spec, kind) in enumerate(delays):
            try:
                delay = parse_duration(when)
            except StatewfError as exc:
                problems.append(f"{where} {kind} {when!r}: {exc.message}")
                continue
            label = when if isinstance(when, str) else format_duration(delay)
            label = f"timeout {label}" if kind == "timeout" else f"after {label}"
            item = transition(spec) if isinstance(spec, str) else spec
            if not isinstance(item, Transition) or not isinstance(item.target, str | None):
                problems.append(
                    f"{where} {label}: expected a target name or statewf.transition(...)"
                )
                continue
            if item.payload is not None:
                problems.append(f"{where} {label}: a delayed transition takes no payload")
            resolved = self._resolve_transition(name, label, item, f"{where} {label}", problems)
            timers.append(ResolvedTimer(label, delay, resolved, f"{TIMER_TRIGGER}{name}:{index}"))
        self.timers[name] = tuple(sorted(timers, key=lambda t: t.delay))

    def _check_effect_names(self, problems: list[str]) -> None:
        # The outbox finds an effect again by name, after a restart: names must be unique.
        seen: dict[str, Callable[..., Any]] = {}
        for hook in self._all_hooks():
            if not hook.is_effect:
                continue
            known = seen.setdefault(hook.name, hook.fn)
            if known is not hook.fn:
                problems.append(
                    f"two different effects are named {hook.name!r}; the outbox finds "
                    "effects by name, so give one another with statewf.effect(name=...)"
                )

    def _all_hooks(self) -> Iterator[Hook]:
        if self.chart is not None:
            for node in self.chart.nodes:
                yield from (h for h in (*node.on_entry, *node.on_exit) if isinstance(h, Hook))
            for ct in self.chart.transitions():
                for h in (*ct.guards, *ct.unless, *ct.actions):
                    if isinstance(h, Hook):
                        yield h
            return
        for state in self.states.values():
            yield from (*state.on_enter, *state.on_exit)
        for t in self.all_transitions():
            yield from (*t.guards, *t.unless, *t.actions)
        for timer in self.all_timers():
            yield from (
                *timer.transition.guards,
                *timer.transition.unless,
                *timer.transition.actions,
            )

    def _check_graph(self, problems: list[str]) -> None:
        for timer in self.all_timers():
            if timer.transition.destination not in self.states:
                problems.append(
                    f"state {timer.transition.source!r} {timer.label} targets unknown "
                    f"state {timer.transition.target!r}"
                )
        for t in self.all_transitions():
            if t.target is not None and t.target not in self.states:
                problems.append(
                    f"state {t.source!r} event {t.event!r} targets unknown state {t.target!r}"
                )
            payloads = {x.payload for x in self.transitions[t.source][t.event]}
            if len(payloads) > 1:
                problems.append(
                    f"state {t.source!r} event {t.event!r}: alternative transitions "
                    "must share one payload schema"
                )
        if problems or not isinstance(self.initial, str):
            return
        seen = {self.initial}
        frontier = [self.initial]
        while frontier:
            for t in self.outgoing(frontier.pop()):
                if t.destination not in seen:
                    seen.add(t.destination)
                    frontier.append(t.destination)
        for unreachable in sorted(set(self.states) - seen):
            problems.append(
                f"state {unreachable!r} is unreachable from initial state {self.initial!r}"
            )

    # ------------------------------------------------------------ queries

    def all_transitions(self) -> Iterator[ResolvedTransition]:
        """Every event transition, in declaration order (timers: :meth:`all_timers`)."""
        for by_event in self.transitions.values():
            for options in by_event.values():
                yield from options

    def all_timers(self) -> Iterator[ResolvedTimer]:
        """Every delayed transition, by state, shortest delay first."""
        for timers in self.timers.values():
            yield from timers

    def outgoing(self, state: str) -> Iterator[ResolvedTransition]:
        """The transitions leaving ``state``: events in declaration order, then timers."""
        for options in self.transitions.get(state, {}).values():
            yield from options
        for timer in self.timers.get(state, ()):
            yield timer.transition

    def events_from(self, state: str) -> list[str]:
        """The events with a transition from ``state`` (and, in a chart, its ancestors)."""
        if self.chart is not None:
            node = self.chart.by_path.get(state)
            if node is None:
                return []
            found: dict[str, None] = {}
            for n in (node, *reversed(node.ancestors)):
                for ct in n.transitions:
                    if ct.sendable:
                        found.update(dict.fromkeys(ct.events))
            return list(found)
        return list(self.transitions.get(state, {}))

    def effect_hooks(self) -> dict[str, Hook]:
        """Every effect the machine can record, by name."""
        return {h.name: h for h in self._all_hooks() if h.is_effect}

    @property
    def events(self) -> list[str]:
        """Every event name the machine knows, sorted."""
        if self.chart is not None:
            return sorted({e for t in self.chart.transitions() if t.sendable for e in t.events})
        return sorted({t.event for t in self.all_transitions()})

    def to_definition(self) -> dict[str, Any]:
        """A JSON-able description of the machine (hooks by name), stored on register."""
        from statewf.definition import machine_definition  # it reads this module's types

        return machine_definition(self)

    @property
    def fingerprint(self) -> str:
        """A hash of the definition's structure; it changes when the machine changes."""
        from statewf.definition import digest

        return digest(self.to_definition())

    @property
    def earlier_fingerprint(self) -> str | None:
        """The fingerprint releases that named lambda hooks ``<lambda>`` gave this machine."""
        from statewf.definition import earlier_fingerprint

        return earlier_fingerprint(self, self._earlier_names)

    def __repr__(self) -> str:
        return f"Machine({self.name!r}, version={self.version!r}, states={len(self.states)})"


def _check_name(what: str, value: Any, problems: list[str]) -> None:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{what} must be a non-empty string, got {value!r}")
    elif len(value) > MAX_NAME_LENGTH:
        problems.append(f"{what} {value[:40]!r}... is longer than {MAX_NAME_LENGTH} characters")
    elif any(ord(c) < 32 for c in value):
        problems.append(f"{what} {value!r} contains control characters")
