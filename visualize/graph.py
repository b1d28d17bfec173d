"""The small, frozen graph every diagram is drawn from.

Extraction (:mod:`visualize.extract`) builds a :class:`Graph`; the DOT and Mermaid
writers only read it. Everything here is plain data with a stable order, so two
extractions of the same machine compare equal and serialize to the same text.

Extension points kept open for statecharts and timers:

* a :class:`Node` whose ``parent`` names a :class:`Cluster` is drawn inside it
  (nested states are paths with ``.``; a cluster marked ``parallel`` holds regions);
* an :class:`Edge` with ``after`` set is a delayed transition (``after`` holds its
  delay, ``7 days``); its event is the timer's label, ``after 7 days`` or
  ``timeout 2 days``, which is also what the log records as the event.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeAlias

#: How a node is marked on top of its definition. ``none`` is a plain machine
#: diagram; ``current`` is the instance's state; ``visited`` / ``unvisited`` come
#: from a history; the rest are workflow-run step statuses.
Mark: TypeAlias = Literal[
    "none",
    "current",
    "visited",
    "unvisited",
    "done",
    "running",
    "waiting",
    "failed",
    "not-reached",
]

#: How an edge is marked: ``taken`` / ``not-taken`` in a history; ``extra`` for a
#: log row that matches no transition of the definition.
EdgeMark: TypeAlias = Literal["none", "taken", "not-taken", "extra"]

#: What a diagram shows.
GraphKind: TypeAlias = Literal["machine", "instance", "history", "run"]


@dataclass(frozen=True)
class Action:
    """A named action; ``effect`` when it is an outbox effect run after commit."""

    name: str
    effect: bool = False

    @property
    def label(self) -> str:
        """The action as shown in a diagram (effects get a «effect» mark)."""
        return f"«effect» {self.name}" if self.effect else self.name


@dataclass(frozen=True)
class Cluster:
    """A compound state (or parallel region) drawn as a box around its children."""

    id: str
    label: str
    parent: str | None = None
    parallel: bool = False
    #: the child its initial transition enters (statecharts draw an arrow at every level)
    initial: str | None = None


@dataclass(frozen=True)
class Node:
    """A state (or workflow step): its id, display name, entry/exit actions and mark."""

    id: str
    label: str
    final: bool = False
    entry: tuple[Action, ...] = ()
    exit: tuple[Action, ...] = ()
    parent: str | None = None
    description: str = ""
    mark: Mark = "none"
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Edge:
    """A transition: event, guards (``unless`` shown negated), actions, and its marks.

    ``after`` is the delay of a delayed transition (None for an event).
    ``internal`` transitions do not exit their state; they are drawn inside the
    state's box, like entry and exit actions. ``taken`` and ``order`` come from a
    history: how many times the edge was followed and the rank of its first use.
    """

    source: str
    target: str
    event: str
    guards: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    actions: tuple[Action, ...] = ()
    internal: bool = False
    after: str | None = None
    description: str = ""
    mark: EdgeMark = "none"
    taken: int = 0
    order: int | None = None

    @property
    def trigger(self) -> str:
        """The event part of the label: the event name, or a timer's ``after 7 days``."""
        return self.event

    @property
    def label(self) -> str:
        """The UML/XState label ``EVENT [guard, !unless] / action``."""
        text = self.trigger
        conditions = [*self.guards, *(f"!{u}" for u in self.unless)]
        if conditions:
            text += f" [{', '.join(conditions)}]"
        if self.actions:
            text += " / " + ", ".join(a.label for a in self.actions)
        return text

    @property
    def traversal(self) -> str:
        """The history part of the label: ``#2`` (order of first use) and the count; or ''."""
        if not self.taken:
            return ""
        order = f"#{self.order} " if self.order is not None else ""
        return f"{order}×{self.taken}"


@dataclass(frozen=True)
class Graph:
    """A whole diagram: nodes, edges and clusters in a stable order."""

    name: str
    kind: GraphKind
    initial: str | None
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    clusters: tuple[Cluster, ...] = ()
    title: str = ""

    def node(self, node_id: str) -> Node:
        """The node with ``node_id``; KeyError when there is none."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def to_dict(self) -> dict[str, Any]:
        """The graph as plain JSON-able data (the golden-file form)."""
        return asdict(self)
