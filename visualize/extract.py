"""Pure extraction: a machine definition, snapshot or log in, a :class:`Graph` out.

Everything works from the JSON-able definition (``Machine.to_definition()``, the
same dict the engine stores), so a diagram drawn from a stored definition in a
process without the application's code equals the one drawn from the ``Machine``.

Order is stable and independent of how the definition's dicts were ordered (a
PostgreSQL JSONB column does not keep key order): states in breadth-first order
from the initial state, following each state's events sorted by name and their
alternatives in declared order, then its delayed transitions (shortest delay
first); states not reached that way come last, sorted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from statewf.records import KIND_CREATE, Instance, TransitionRecord, state_label
from statewf.spec import Machine
from visualize.errors import VisualizeError
from visualize.graph import Action, Cluster, Edge, Graph, Node
from visualize.statechart import (
    chart_initial,
    chart_states,
    is_chart,
    microstep_entries,
    microstep_transitions,
)

EFFECT_PREFIX = "effect:"


def definition_of(machine: Machine | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-able definition of a :class:`~statewf.Machine`, or a definition dict as is."""
    if isinstance(machine, Machine):
        return machine.to_definition()
    if isinstance(machine, Mapping):
        definition = dict(machine)
        if not is_chart(definition):
            _check_definition(definition)
        return definition
    raise VisualizeError(
        "expected a statewf.Machine or a machine definition dict "
        f"(machine.to_definition() or engine.stored_definitions()), got {type(machine).__name__}"
    )


def _check_definition(definition: Mapping[str, Any]) -> None:
    states = definition.get("states")
    if not isinstance(states, Mapping) or not states:
        raise VisualizeError("a machine definition needs a non-empty 'states' mapping")
    for name, state in states.items():
        if not isinstance(name, str) or not isinstance(state, Mapping):
            raise VisualizeError(f"state {name!r} of the definition is not a mapping")
        on = state.get("on", {})
        if not isinstance(on, Mapping) or not all(
            isinstance(options, Sequence) and not isinstance(options, str)
            for options in on.values()
        ):
            raise VisualizeError(f"state {name!r}: 'on' must map events to lists of transitions")


def _actions(names: Iterable[Any] | None) -> tuple[Action, ...]:
    result = []
    for raw in names or ():
        name = str(raw)
        if name.startswith(EFFECT_PREFIX):
            result.append(Action(name[len(EFFECT_PREFIX) :], effect=True))
        else:
            result.append(Action(name))
    return tuple(result)


def _strings(values: Iterable[Any] | None) -> tuple[str, ...]:
    return tuple(str(v) for v in values or ())


_UNITS = (("day", 86400), ("h", 3600), ("min", 60), ("s", 1))


def describe_delay(after: Any) -> str:
    """A delay for a label: seconds become ``7 days`` / ``2 h 30 min``; text stays as is."""
    if isinstance(after, bool) or not isinstance(after, int | float):
        return str(after)
    remaining = int(after)
    parts = []
    for unit, size in _UNITS:
        count, remaining = divmod(remaining, size)
        if count:
            plural = "s" if unit == "day" and count != 1 else ""
            parts.append(f"{count} {unit}{plural}")
    return " ".join(parts) or f"{after} s"


def _state_order(definition: Mapping[str, Any]) -> list[str]:
    states: Mapping[str, Any] = definition["states"]
    initial = definition.get("initial")
    order: list[str] = []
    seen: set[str] = set()
    queue: deque[str] = deque([initial] if isinstance(initial, str) and initial in states else [])
    seen.update(queue)
    while queue:
        name = queue.popleft()
        order.append(name)
        on: Mapping[str, Any] = states[name].get("on", {})
        options = [o for event in sorted(on) for o in on[event]]
        for option in [*options, *(states[name].get("after") or ())]:
            target = option.get("target")
            if isinstance(target, str) and target in states and target not in seen:
                seen.add(target)
                queue.append(target)
    order.extend(sorted(set(states) - seen))
    return order


def _clusters(state_names: Iterable[str], states: Mapping[str, Any]) -> dict[str, Cluster]:
    """Every proper prefix of a dotted state path becomes a cluster, outermost first."""
    clusters: dict[str, Cluster] = {}
    for name in state_names:
        parts = name.split(".")
        for depth in range(1, len(parts)):
            path = ".".join(parts[:depth])
            if path not in clusters:
                parent = ".".join(parts[: depth - 1]) or None
                parallel = bool(states.get(path, {}).get("parallel", False))
                initial = (states.get(path, {}).get("initial") or [None])[0]
                clusters[path] = Cluster(path, parts[depth - 1], parent, parallel, initial)
    return clusters


def machine_graph(machine: Machine | Mapping[str, Any]) -> Graph:
    """The graph of a machine definition: states, transitions, clusters."""
    definition = definition_of(machine)
    chart = is_chart(definition)
    states: Mapping[str, Any] = chart_states(definition) if chart else definition["states"]
    order = list(states) if chart else _state_order(definition)
    clusters = _clusters(order, states)
    nodes = []
    for name in order:
        if name in clusters:
            continue  # a compound state is drawn as its cluster
        state = states[name]
        parent, _, leaf = name.rpartition(".")
        nodes.append(
            Node(
                id=name,
                label=state.get("history") or leaf,
                final=bool(state.get("final", False)),
                entry=_actions(state.get("on_enter")),
                exit=_actions(state.get("on_exit")),
                parent=parent or None,
                description=str(state.get("description") or ""),
            )
        )
    edges: list[Edge] = []
    for name in order:
        on: Mapping[str, Any] = states[name].get("on", {})
        for event in sorted(on):
            edges.extend(_edge(name, str(event), option, None) for option in on[event])
        for timer in states[name].get("after") or ():
            seconds = timer.get("seconds")
            label = str(timer.get("label") or f"after {describe_delay(seconds)}")
            delay = describe_delay(seconds) if seconds is not None else label
            edges.append(_edge(name, label, timer, delay))
    name = str(definition.get("name", "machine"))
    version = definition.get("version")
    title = f"{name} (version {version})" if version is not None else name
    initial = chart_initial(definition) if chart else definition.get("initial")
    graph = Graph(
        name=name,
        kind="machine",
        initial=str(initial) if initial in states else None,
        nodes=tuple(nodes),
        edges=tuple(edges),
        clusters=tuple(clusters[c] for c in sorted(clusters, key=lambda c: (c.count("."), c))),
        title=title,
    )
    return _ensure_nodes(graph, (e.target for e in edges))


def _edge(source: str, event: str, option: Mapping[str, Any], after: str | None) -> Edge:
    target = option.get("target")
    return Edge(
        source=source,
        target=source if target is None else str(target),
        event=event,
        guards=_strings(option.get("guards")),
        unless=_strings(option.get("unless")),
        actions=_actions(option.get("actions")),
        internal=target is None,
        after=after,
        description=str(option.get("description") or ""),
    )


def _ensure_nodes(graph: Graph, names: Iterable[str]) -> Graph:
    """Add nodes for states the log or snapshot names but the definition does not."""
    known = {n.id for n in graph.nodes} | {c.id for c in graph.clusters}
    missing = [n for n in dict.fromkeys(names) if n and n not in known]
    if not missing:
        return graph
    extra = tuple(
        Node(id=n, label=n, notes=("not in this definition",), mark="none") for n in missing
    )
    return replace(graph, nodes=graph.nodes + extra)


def instance_graph(
    machine: Machine | Mapping[str, Any], snapshot: Instance, *, seq: int | None = None
) -> Graph:
    """The machine graph with the snapshot's current state(s) marked."""
    graph = _ensure_nodes(machine_graph(machine), snapshot.configuration)
    current = set(snapshot.configuration)
    nodes = tuple(
        replace(n, mark="current", notes=(*n.notes, "current state")) if n.id in current else n
        for n in graph.nodes
    )
    when = f" as of #{seq}" if seq is not None else ""
    title = (
        f"{graph.title} · instance {snapshot.id}{when} · "
        f"{state_label(snapshot.configuration)} ({snapshot.status})"
    )
    return replace(graph, kind="instance", nodes=nodes, title=title)


def _matches(edge: Edge, record: TransitionRecord, internal: bool) -> bool:
    if edge.event != record.event or edge.internal != internal:
        return False
    if edge.source not in record.source and not any(
        s.startswith(edge.source + ".") for s in record.source
    ):
        return False
    return (
        internal
        or edge.target in record.target
        or any(t.startswith(edge.target + ".") for t in record.target)
    )


def history_graph(
    machine: Machine | Mapping[str, Any],
    records: Sequence[TransitionRecord],
    *,
    seq: int | None = None,
) -> Graph:
    """The machine graph overlaid with a log: edges taken (count, order), states visited.

    ``seq`` keeps only the records up to and including that transition number.
    """
    log = sorted(records, key=lambda r: r.seq)
    if seq is not None:
        log = [r for r in log if r.seq <= seq]
    graph = machine_graph(machine)
    graph = _ensure_nodes(graph, (s for r in log for s in (*r.source, *r.target)))
    edges = list(graph.edges)
    taken = [0] * len(edges)
    first: dict[int, int] = {}
    extra: dict[tuple[str, str, str, bool], int] = {}
    visits: dict[str, int] = {}
    configuration: tuple[str, ...] = ()
    for record in log:
        if record.meta.get("skipped"):
            continue  # a timer whose guard said no: nothing moved
        if "microsteps" in record.meta:  # a statechart's row: count every microstep
            if record.target:
                configuration = record.target
            for state in microstep_entries(record.meta):
                visits[state] = visits.get(state, 0) + 1
            for source, target, event in microstep_transitions(record.meta):
                index = next(
                    (
                        i
                        for i, e in enumerate(edges)
                        if (e.source, e.target, e.event) == (source, target, event)
                    ),
                    None,
                )
                if index is None:
                    key = (source, target, event, False)
                    if key not in extra:
                        extra[key] = len(edges)
                        edges.append(Edge(source, target, event, mark="extra"))
                        taken.append(0)
                    index = extra[key]
                taken[index] += 1
                first.setdefault(index, record.seq)
            continue
        internal = bool(record.meta.get("internal", False))
        if record.target:
            configuration = record.target
        if not internal:
            for state in record.target:
                visits[state] = visits.get(state, 0) + 1
        if record.kind == KIND_CREATE or not record.source or not record.target:
            continue
        index = next((i for i, e in enumerate(edges) if _matches(e, record, internal)), None)
        if index is None:
            label = record.event or record.key or record.kind
            key = (record.source[0], record.target[0], label, internal)
            if key not in extra:
                extra[key] = len(edges)
                edges.append(Edge(key[0], key[1], label, internal=internal, mark="extra"))
                taken.append(0)
            index = extra[key]
        taken[index] += 1
        first.setdefault(index, record.seq)
    rank = {index: n for n, index in enumerate(sorted(first, key=first.__getitem__), start=1)}
    marked_edges = tuple(
        replace(
            e,
            mark="extra" if e.mark == "extra" else ("taken" if taken[i] else "not-taken"),
            taken=taken[i],
            order=rank.get(i),
        )
        for i, e in enumerate(edges)
    )
    current = set(configuration)
    nodes = []
    for n in graph.nodes:
        count = visits.get(n.id, 0)
        notes = (*n.notes, f"entered ×{count}") if count else n.notes
        if n.id in current:
            nodes.append(replace(n, mark="current", notes=(*notes, "current state")))
        else:
            nodes.append(replace(n, mark="visited" if count else "unvisited", notes=notes))
    instance_id = log[0].instance_id if log else "?"
    upto = f" up to #{seq}" if seq is not None else ""
    title = f"{graph.title} · history of {instance_id}{upto} · {len(log)} transitions"
    return replace(graph, kind="history", nodes=tuple(nodes), edges=marked_edges, title=title)
