"""Compiling a tree of :class:`statewf.State` / :class:`statewf.History` into a :class:`Chart`.

Nodes get their dotted path (``open.processing.payment``) and their place in
document order (the order the mapping lists them). Targets are names resolved like
variables in nested scopes: a sibling first, then a sibling of each ancestor, then
a descendant of the source; a dotted name walks down from the scope that has its
first part, and ``#id`` names a state by its id. Problems are collected, not raised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from statewf.chart.model import (
    ATOMIC,
    COMPOUND,
    FINAL,
    HISTORY,
    PARALLEL,
    RESERVED_EVENT,
    Cancel,
    Chart,
    ChartTimer,
    ChartTransition,
    Executable,
    History,
    In,
    Log,
    Node,
    Raise,
    Send,
)
from statewf.durations import format_duration, parse_duration
from statewf.errors import StatewfError
from statewf.hooks import Hook, _as_list, guard_problem
from statewf.spec import Machine, ResolvedState, State, Transition, transition

#: Resolves one hook reference (a callable, an Effect or a registry name), or notes a problem.
Resolver = Callable[[Any, str, list[str]], Hook | None]

_CONTENT = (Raise, Send, Cancel, Log)


class ChartBuilder:
    """Builds one chart; ``problems`` collects everything wrong with the definition."""

    def __init__(self, resolve: Resolver, problems: list[str]) -> None:
        self.resolve = resolve
        self.problems = problems
        self.nodes: list[Node] = []
        self.by_path: dict[str, Node] = {}
        self.by_id: dict[str, Node] = {}
        self.payloads: dict[str, Any] = {}
        self._specs: list[tuple[Node, State | History]] = []
        #: SCXML semantics for names: In() of an id no state has is false, not an error
        self.lenient = False

    # ------------------------------------------------------------ tree

    def build(
        self, initial: str | Sequence[str], states: Mapping[str, Any], *, ignore_unmatched: bool
    ) -> Chart:
        """The compiled chart (check ``problems`` afterwards)."""
        self.lenient = ignore_unmatched
        root = Node(id="", path="", kind=COMPOUND, parent=None, order=0)
        self._add_children(root, states)
        for node, spec in self._specs:
            self._resolve_node(node, spec)
        root.initial = self._initial(root, initial, "machine initial")
        return Chart(root, self.nodes, self.by_path, self.by_id, self.payloads, ignore_unmatched)

    def _add_children(self, parent: Node, states: Mapping[str, Any]) -> None:
        if not isinstance(states, Mapping):
            self.problems.append(f"{_where(parent)}: states= must be a mapping of name to State")
            return
        for name, spec in states.items():
            if not isinstance(name, str) or not name or "." in name or name.startswith("#"):
                self.problems.append(
                    f"{_where(parent)}: state name {name!r} must be a non-empty string "
                    "without '.' (reserved for nesting) and not starting with '#'"
                )
                continue
            path = f"{parent.path}.{name}" if parent.path else name
            if not isinstance(spec, State | History):
                self.problems.append(
                    f"state {path!r} must be a statewf.State or statewf.History, "
                    f"got {type(spec).__name__}"
                )
                continue
            node = Node(
                id=spec.id or path,
                path=path,
                kind=_kind(spec),
                parent=parent,
                order=len(self.nodes) + 1,
                description=spec.description,
                ancestors=(*parent.ancestors, parent),
            )
            if node.id in self.by_id:
                self.problems.append(f"state id {node.id!r} is used twice; ids must be unique")
            self.nodes.append(node)
            self.by_path[path] = node
            self.by_id[node.id] = node
            parent.children.append(node)
            self._specs.append((node, spec))
            if isinstance(spec, State):
                if spec.final and spec.states:
                    self.problems.append(f"final state {path!r} cannot have child states")
                if spec.parallel and not spec.states:
                    self.problems.append(f"parallel state {path!r} needs child states (regions)")
                self._add_children(node, spec.states)
        if parent.kind == PARALLEL and parent.history_nodes == parent.children:
            self.problems.append(f"parallel state {parent.path!r} has no regions")

    # ------------------------------------------------------------ one node

    def _resolve_node(self, node: Node, spec: State | History) -> None:
        where = _where(node)
        if isinstance(spec, History):
            node.deep = spec.deep
            parent = node.parent
            assert parent is not None
            if parent.parent is None:
                self.problems.append(f"{where}: a history state must be inside a compound state")
                return
            default = spec.default
            if default is None:
                default = (
                    transition(tuple(t.path for t in parent.initial.targets))
                    if parent.initial is not None
                    else None
                )
            node.initial = self._initial(parent, default, f"{where} default", source=node)
            return
        node.on_entry = self._content(spec.on_enter, f"{where} on_enter")
        node.on_exit = self._content(spec.on_exit, f"{where} on_exit")
        if node.kind == COMPOUND:
            node.initial = self._initial(node, spec.initial, f"{where} initial")
        elif spec.initial is not None:
            self.problems.append(f"{where}: only a compound state takes initial=")
        if node.kind == FINAL and (spec.on or spec.transitions or spec.always or spec.after):
            self.problems.append(f"final state {node.path!r} cannot have outgoing transitions")
        if not isinstance(spec.on, Mapping):
            self.problems.append(f"{where}: on= must be a mapping of event to transition")
        else:
            for event, options in spec.on.items():
                if (
                    not isinstance(event, str)
                    or not event.strip()
                    or event.startswith(RESERVED_EVENT)
                ):
                    self.problems.append(f"{where}: event name {event!r} is not usable")
                    continue
                for item in self._options(options, f"{where} event {event!r}"):
                    self._add(node, item, tuple(event.split()), f"{where} event {event!r}")
        for item in spec.transitions:
            if not isinstance(item, Transition):
                self.problems.append(f"{where} transitions: expected statewf.transition(...)")
                continue
            events = tuple((item.event or "").split())
            self._add(node, item, events, f"{where} transition {item.event or '(eventless)'}")
        if spec.always is not None:
            for item in self._options(spec.always, f"{where} always"):
                self._add(node, item, (), f"{where} always")
        if spec.on_done is not None:
            for item in self._options(spec.on_done, f"{where} on_done"):
                done = self._add(node, item, (f"done.state.{node.id}",), f"{where} on_done")
                if done is not None:
                    done.exact = True
        self._timers(node, spec, where)

    def _timers(self, node: Node, spec: State, where: str) -> None:
        delays: list[tuple[Any, Any, str]] = [(k, v, "after") for k, v in spec.after.items()]
        if spec.timeout is not None or spec.on_timeout is not None:
            if spec.timeout is None or spec.on_timeout is None:
                self.problems.append(f"{where}: timeout and on_timeout go together")
            else:
                delays.append((spec.timeout, spec.on_timeout, "timeout"))
        timers = []
        for index, (when, target, kind) in enumerate(delays):
            try:
                delay = parse_duration(when)
            except StatewfError as exc:
                self.problems.append(f"{where} {kind} {when!r}: {exc.message}")
                continue
            label = when if isinstance(when, str) else format_duration(delay)
            label = f"{kind} {label}"
            trigger = f"{RESERVED_EVENT}after:{node.path}:{index}"
            for item in self._options(target, f"{where} {label}"):
                t = self._add(node, item, (trigger,), f"{where} {label}")
                if t is not None:
                    t.label = label
            timers.append(ChartTimer(trigger, delay, label))
        node.timers = tuple(timers)

    def _options(self, spec: Any, where: str) -> list[Transition]:
        options = [spec] if isinstance(spec, str | Transition) else spec
        if not isinstance(options, Sequence) or not options:
            self.problems.append(f"{where}: expected a target name or transitions")
            return []
        found = []
        for option in options:
            item = transition(option) if isinstance(option, str) else option
            if isinstance(item, Transition):
                found.append(item)
            else:
                self.problems.append(f"{where}: expected statewf.transition(...), got {option!r}")
        return found

    def _add(
        self, node: Node, item: Transition, events: tuple[str, ...], where: str
    ) -> ChartTransition | None:
        targets = self._targets(node, item.target, where)
        if item.type not in ("external", "internal"):
            self.problems.append(f"{where}: type must be 'external' or 'internal'")
        guards = self._guards(item.guards, f"{where} guard")
        unless = self._guards(item.unless, f"{where} unless")
        t = ChartTransition(
            source=node,
            events=events,
            targets=targets,
            guards=guards,
            unless=unless,
            actions=self._content(item.actions, f"{where} action"),
            internal=item.type == "internal",
            payload=item.payload,
            label=" ".join(events) if events and not events[0].startswith(RESERVED_EVENT) else "",
            description=item.description,
        )
        t.in_nodes = self._in_nodes((*guards, *unless), where)
        for event in events:
            known = self.payloads.setdefault(event, item.payload)
            if known is not item.payload:
                self.problems.append(
                    f"{where}: every transition for event {event!r} must share one payload schema"
                )
        node.transitions.append(t)
        return t

    def _initial(
        self, node: Node, spec: Any, where: str, *, source: Node | None = None
    ) -> ChartTransition | None:
        if spec is None:
            children = node.states
            if not children:
                return None
            spec = transition(f"#{children[0].id}")
        if (
            isinstance(spec, Sequence)
            and not isinstance(spec, str)
            and spec
            and all(isinstance(name, str) for name in spec)
        ):
            # several names: one initial transition entering all of them (one per
            # parallel region), as SCXML's initial="a b" and <initial> with "a b"
            spec = transition(list(spec))
        items = self._options(spec, where)
        if not items:
            return None
        if len(items) > 1:
            self.problems.append(f"{where}: an initial is one transition, got {len(items)}")
        item = items[0]
        targets = self._targets(node, item.target, where, scope=node)
        for t in targets:
            if not t.is_descendant(node):
                self.problems.append(f"{where}: {t.path!r} is not inside {_where(node)}")
        return ChartTransition(
            source=source or node,
            events=(),
            targets=targets,
            actions=self._content(item.actions, f"{where} action"),
        )

    # ------------------------------------------------------------ names

    def _targets(
        self, node: Node, target: Any, where: str, *, scope: Node | None = None
    ) -> tuple[Node, ...]:
        if target is None:
            return ()
        names = (target,) if isinstance(target, str) else tuple(target)
        found = []
        for name in names:
            hit = self.lookup(name, node, scope=scope)
            if hit is None:
                self.problems.append(f"{where} targets unknown state {name!r}")
            else:
                found.append(hit)
        return tuple(found)

    def lookup(self, name: Any, node: Node, *, scope: Node | None = None) -> Node | None:
        """The node ``name`` refers to from ``node`` (see the module docstring)."""
        if not isinstance(name, str) or not name:
            return None
        if name.startswith("#"):
            return self.by_id.get(name[1:]) or self.by_path.get(name[1:])
        scopes: list[Node] = [scope] if scope is not None else []
        scopes += [*reversed(node.ancestors), node]
        for base in scopes:
            path = f"{base.path}.{name}" if base.path else name
            if path in self.by_path:
                return self.by_path[path]
        return None

    def _guards(self, refs: Any, where: str) -> tuple[Hook | In, ...]:
        found: list[Hook | In] = []
        for ref in self._list(refs, where):
            if isinstance(ref, In):
                found.append(ref)
                continue
            hook = self.resolve(ref, where, self.problems)
            if hook is not None:
                problem = guard_problem(hook, where)
                if problem is not None:
                    self.problems.append(problem)
                else:
                    found.append(hook)
        return tuple(found)

    def _in_nodes(self, guards: tuple[Hook | In, ...], where: str) -> dict[str, Node]:
        found = {}
        for guard in guards:
            if isinstance(guard, In):
                hit = self.by_id.get(guard.state) or self.by_path.get(guard.state)
                if hit is None and not self.lenient:
                    self.problems.append(f"{where}: In({guard.state!r}) names no state")
                elif hit is not None:
                    found[guard.state] = hit
        return found

    def _content(self, refs: Any, where: str) -> tuple[Executable, ...]:
        found: list[Executable] = []
        for ref in self._list(refs, where):
            if isinstance(ref, _CONTENT):
                if isinstance(ref, Send) and ref.delay not in (None, "", 0):
                    try:
                        parse_duration(ref.delay)
                    except StatewfError as exc:
                        self.problems.append(f"{where}: send delay {ref.delay!r}: {exc.message}")
                found.append(ref)
                continue
            hook = self.resolve(ref, where, self.problems)
            if hook is not None:
                found.append(hook)
        return tuple(found)

    def _list(self, refs: Any, where: str) -> list[Any]:
        if isinstance(refs, (*_CONTENT, In)):
            return [refs]
        try:
            return list(_as_list(refs))
        except StatewfError as exc:
            self.problems.append(f"{where}: {exc.message}")
            return []


def compile_chart(
    machine: Machine,
    states: Any,
    problems: list[str],
    *,
    allow_unreachable: bool,
    ignore_unmatched: bool,
) -> Chart | None:
    """Compile ``machine``'s states into a chart, filling ``machine.states`` by path."""
    if not states:
        problems.append("a machine needs at least one state")
        return None
    initial = machine.initial
    if not isinstance(initial, str) and not (
        isinstance(initial, Sequence) and all(isinstance(i, str) for i in initial)
    ):
        problems.append(f"initial must be a state name or names, got {initial!r}")
        return None
    builder = ChartBuilder(machine._resolve_any, problems)
    chart = builder.build(initial, states, ignore_unmatched=ignore_unmatched)
    if problems:
        return None
    for node in chart.nodes:
        if node.kind != HISTORY:
            machine.states[node.path] = ResolvedState(
                name=node.path,
                on_enter=tuple(h for h in node.on_entry if isinstance(h, Hook)),
                on_exit=tuple(h for h in node.on_exit if isinstance(h, Hook)),
                final=node.kind == FINAL,
                description=node.description,
            )
    seen = reachable(chart)
    unreachable = [n.path for n in chart.nodes if n not in seen]
    if unreachable and not allow_unreachable:
        problems.extend(
            f"state {path!r} is unreachable from the initial configuration; remove it, "
            "target it, or pass allow_unreachable=True"
            for path in unreachable
        )
    machine.unreachable = tuple(unreachable)
    return chart


def reachable(chart: Chart) -> set[Node]:
    """The nodes some run of the chart can enter (guards assumed to pass)."""
    seen: set[Node] = set()
    frontier: list[Node] = []

    def mark(node: Node) -> None:
        for n in (*node.ancestors, node):
            if n not in seen and n.parent is not None:
                seen.add(n)
                frontier.append(n)

    assert chart.root.initial is not None
    for t in chart.root.initial.targets:
        mark(t)
    while frontier:
        node = frontier.pop()
        if node.kind == PARALLEL:
            for child in node.states:
                mark(child)
        for ct in [*node.transitions, *([node.initial] if node.initial else [])]:
            for target in ct.targets:
                mark(target)
    return seen


def _kind(spec: State | History) -> str:
    if isinstance(spec, History):
        return HISTORY
    if spec.final:
        return FINAL
    if spec.parallel:
        return PARALLEL
    if any(isinstance(s, State) for s in spec.states.values()):
        return COMPOUND
    return ATOMIC


def _where(node: Node) -> str:
    return f"state {node.path!r}" if node.path else "the machine"
