"""Workflow-run diagrams: the static step plan overlaid with the run's log.

The plan is the list of step call sites that :mod:`durable.authoring.analysis` found in the
workflow function's source (the same analysis that gives ``check_progress`` its
total), stored with the run, so a process without the workflow's code draws it
too. Each step recorded in the log is matched to its call site; a call site in a
loop (``f"pack-{item}"``) collapses into one node with a count.

The log has a row when a step ends, not when it starts, so for a run in flight
the step after the last recorded one (in plan order) is drawn as running; with
loops or branches in the plan that is a likely guess and its note says so.

``durable`` is imported when a run diagram is drawn, not when ``visualize`` is,
so machine diagrams never depend on the workflow package.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from statewf.engine import Engine
from statewf.records import Instance, TransitionRecord
from visualize.diagram import Diagram
from visualize.errors import VisualizeError
from visualize.graph import Edge, Graph, Mark, Node

if TYPE_CHECKING:
    from durable.engine import WorkflowEngine
    from durable.log.records import StepTimeline

RUN_KIND = "workflow"
_IN_FLIGHT = frozenset({"pending", "running"})
_SUSPENDED = frozenset({"waiting", "paused"})


def _pattern(key: str) -> re.Pattern[str] | None:
    """A regex for a plan key with ``{...}`` holes, None when the key is all literal."""
    parts = re.split(r"\{[^{}]*\}", key)
    if len(parts) == 1:
        return None
    return re.compile(".+?".join(re.escape(p) for p in parts) + r"\Z", re.DOTALL)


def assign_steps(plan: Sequence[str], keys: Sequence[str]) -> list[int | None]:
    """For each recorded step key, the index of its call site in ``plan`` (None: unplanned).

    Literal keys match exactly; keys with ``{...}`` holes match as patterns, the
    ones with more literal text first; a key that is nothing but a hole (a
    computed key) takes what nothing else matched.
    """
    exact = {k: i for i, k in reversed(list(enumerate(plan)))}
    patterns = [(i, _pattern(k), len(re.sub(r"\{[^{}]*\}", "", k))) for i, k in enumerate(plan)]
    ranked = sorted(
        ((i, p, literal) for i, p, literal in patterns if p is not None),
        key=lambda item: (-item[2], item[0]),
    )
    result: list[int | None] = []
    for key in keys:
        index = exact.get(key)
        if index is None:
            index = next((i for i, p, _ in ranked if p.match(key)), None)
        result.append(index)
    return result


def _duration(ms: float) -> str:
    if ms < 1:
        return "<1 ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


@dataclass
class _Group:
    label: str
    planned: bool
    steps: list[StepTimeline] = field(default_factory=list)


def _status(group: _Group, run_status: str) -> Mark:
    if not group.steps:
        return "not-reached"
    states = {s.status for s in group.steps}
    if "failed" in states:
        return "failed"
    if "retrying" in states:
        return "running" if run_status in _IN_FLIGHT else "waiting"
    return "done"


_END_MARKS: dict[str, Mark] = {"completed": "done", "failed": "failed", "cancelled": "failed"}
_WORDS: dict[Mark, str] = {
    "done": "done",
    "running": "running",
    "waiting": "waiting",
    "failed": "failed",
    "not-reached": "not reached",
}


def _notes(group: _Group, mark: Mark, run_status: str) -> tuple[str, ...]:
    word = _WORDS.get(mark, mark)
    if mark == "waiting" and run_status == "paused":
        word = "paused"
    notes = [word]
    if len(group.steps) > 1:
        notes.append(f"×{len(group.steps)} steps")
    attempts = sum(len(s.attempts) for s in group.steps)
    if attempts > len(group.steps):
        notes.append(f"{attempts} attempts")
    durations = [a.duration_ms for s in group.steps for a in s.attempts if a.duration_ms]
    if durations:
        notes.append(_duration(sum(durations)))
    errors = [s.error or (s.attempts[-1].error if s.attempts else None) for s in group.steps]
    error = next(
        (e for e in errors if e is not None and mark in ("failed", "running", "waiting")), None
    )
    if error is not None:
        message = f"{error.type}: {error.message}"
        notes.append(message if len(message) <= 60 else message[:57] + "...")
    if not group.planned:
        notes.append("not in the step plan")
    return tuple(notes)


def _reached(node: Node) -> bool:
    return node.mark != "not-reached"


def run_graph(snapshot: Instance, records: Sequence[TransitionRecord]) -> Graph:
    """The step graph of a workflow run: plan order, statuses, attempts, durations."""
    from durable.log.plan import StepPlan
    from durable.log.views import progress_of, run_of, timeline_of

    run = run_of(snapshot)
    plan = StepPlan.from_json(snapshot.context.get("plan"))
    timeline = timeline_of(records)
    groups = [_Group(key, True) for key in plan.steps]
    extras: dict[str, _Group] = {}
    for step, index in zip(
        timeline, assign_steps(plan.steps, [s.key for s in timeline]), strict=True
    ):
        if index is not None:
            groups[index].steps.append(step)
        else:
            extras.setdefault(step.key, _Group(step.key, False)).steps.append(step)
    groups += extras.values()
    marks = [_status(g, run.status) for g in groups]
    guessed: int | None = None  # a step without log rows yet, taken to be the current one
    if not run.finished and not any(m in ("running", "waiting") for m in marks):
        reached = [i for i, g in enumerate(groups) if g.steps]
        nxt = next(
            (
                i
                for i in range(reached[-1] + 1 if reached else 0, len(groups))
                if not groups[i].steps
            ),
            None,
        )
        if nxt is not None:
            marks[nxt] = "running" if run.status in _IN_FLIGHT else "waiting"
            guessed = nxt
    nodes = [
        Node(id=f"step{i}", label=g.label, mark=m, notes=_notes(g, m, run.status))
        for i, (g, m) in enumerate(zip(groups, marks, strict=True))
    ]
    if guessed is not None and plan.approximate:
        # branches or loops in the plan: the next call site is only the likely one
        word = nodes[guessed].notes[0]
        nodes[guessed] = replace(nodes[guessed], notes=(f"{word} (next in the plan)",))
    edges = [
        Edge(a.id, b.id, "", mark="taken" if _reached(a) and _reached(b) else "not-taken")
        for a, b in itertools.pairwise(nodes)
    ]
    # the path actually taken around call sites a branch skipped
    reached_in_order = [n for n in nodes if _reached(n)]
    neighbours = {(a.id, b.id) for a, b in itertools.pairwise(nodes)}
    edges += [
        Edge(a.id, b.id, "", mark="taken")
        for a, b in itertools.pairwise(reached_in_order)
        if (a.id, b.id) not in neighbours
    ]
    end_mark = _END_MARKS.get(run.status, "not-reached")
    end = Node(id="end", label=run.status if run.finished else "end", final=True, mark=end_mark)
    reached_nodes = [n for n in nodes if _reached(n)]
    if run.finished and reached_nodes:
        edges.append(Edge(reached_nodes[-1].id, end.id, "", mark="taken"))
    elif nodes:
        edges.append(Edge(nodes[-1].id, end.id, "", mark="not-taken"))
    nodes.append(end)
    progress = progress_of(snapshot)
    about = "about " if progress.approximate else ""
    of_total = f" of {about}{progress.total_steps}" if progress.total_steps is not None else ""
    title = (
        f"{run.workflow} (version {run.version}) · run {run.id} · {run.status} · "
        f"{progress.completed_steps}{of_total} steps done"
    )
    return Graph(
        name=run.workflow,
        kind="run",
        initial=nodes[0].id,
        nodes=tuple(nodes),
        edges=tuple(edges),
        title=title,
    )


def _statewf_engine(engine: WorkflowEngine | Engine) -> Engine:
    if isinstance(engine, Engine):
        return engine
    inner = getattr(engine, "engine", None)
    if isinstance(inner, Engine):
        return inner
    raise VisualizeError(
        "run_diagram takes a durable.WorkflowEngine or a statewf.Engine, "
        f"got {type(engine).__name__}"
    )


def run_diagram(
    engine: WorkflowEngine | Engine, run_id: str, *, resource_id: str | None = None
) -> Diagram:
    """The diagram of a workflow run: its steps done / running / waiting / failed / not reached.

    ``engine`` is a :class:`durable.WorkflowEngine` or the :class:`statewf.Engine`
    under it; the run is read synchronously from the database. With ``resource_id``,
    a run of another resource is not found (``InstanceNotFound``).
    """
    db = _statewf_engine(engine)
    snapshot = db.get(run_id, resource_id=resource_id)
    if snapshot.kind != RUN_KIND:
        raise VisualizeError(
            f"instance {run_id!r} is a {snapshot.kind} instance, not a workflow run; "
            "draw it with visualize.instance_diagram or visualize.history_diagram",
            instance_id=run_id,
        )
    return Diagram(run_graph(snapshot, db.history(run_id, resource_id=resource_id)))
