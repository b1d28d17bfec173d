"""A compiled statechart: nodes in document order, their transitions and executable content.

Built once per machine version by :mod:`statewf.chart.build`; read, never changed,
by :mod:`statewf.chart.algorithm`. Executable content is either a resolved
:class:`~statewf.hooks.Hook` (a guard, action or effect) or one of the SCXML
elements below, which the algorithm runs itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any, ClassVar, TypeAlias

from pydantic import BaseModel

from statewf.hooks import Hook

ATOMIC = "atomic"
COMPOUND = "compound"
PARALLEL = "parallel"
FINAL = "final"
HISTORY = "history"

#: Prefix of the event names ``after`` timers send to their own state. Events a user
#: sends cannot contain control characters, and descriptors (prefixes, ``*``) never
#: match these names: only the state's own delayed transition takes them.
RESERVED_EVENT = "\x1f"


@dataclass(frozen=True)
class Raise:
    """Executable content: put ``event`` on the internal queue (handled before outside events)."""

    _statewf_content: ClassVar[bool] = True

    event: str


@dataclass(frozen=True)
class Send:
    """Executable content: send ``event`` to this instance, after ``delay`` if given.

    Without a delay the event goes to the external queue and is handled after the
    current macrostep, in the same transaction; ``internal=True`` (SCXML's
    ``target="#_internal"``) puts it on the internal queue instead. With a delay it
    becomes a durable timer of the instance, which :class:`Cancel` with the same
    ``id`` removes.
    """

    _statewf_content: ClassVar[bool] = True

    event: str
    delay: Any = None
    id: str | None = None
    internal: bool = False


@dataclass(frozen=True)
class Cancel:
    """Executable content: cancel the delayed :class:`Send` with this ``id``, if still pending."""

    _statewf_content: ClassVar[bool] = True

    id: str


@dataclass(frozen=True)
class Log:
    """Executable content: note ``label`` and ``expr`` in the row's microstep (nothing printed)."""

    _statewf_content: ClassVar[bool] = True

    label: str = ""
    expr: str = ""


@dataclass(frozen=True)
class In:
    """A guard true while the state with this id or path is active (SCXML's ``In()``)."""

    _statewf_content: ClassVar[bool] = True

    state: str


Executable: TypeAlias = "Hook | Raise | Send | Cancel | Log"


@dataclass(frozen=True)
class History:
    """A history pseudo-state: entering it restores the parent's last active children.

    ``deep=True`` restores the last active leaf states at every depth; shallow history
    restores the direct children (which then enter their defaults). ``default`` is
    where to go when the parent was never left (its initial state if None).
    """

    deep: bool = False
    default: Any = None  # a target, targets, or a statewf.transition(...)
    description: str = ""
    id: str | None = None


@dataclass(frozen=True)
class ChartTimer:
    """An ``after`` delay of a state: scheduled when the state is entered, cancelled on exit."""

    trigger: str
    delay: timedelta
    label: str


@dataclass(eq=False)
class ChartTransition:
    """A transition of a node: descriptors (empty: eventless), conditions, targets, content."""

    source: Node
    events: tuple[str, ...]
    targets: tuple[Node, ...]
    guards: tuple[Hook | In, ...] = ()
    unless: tuple[Hook | In, ...] = ()
    actions: tuple[Executable, ...] = ()
    internal: bool = False
    payload: type[BaseModel] | None = None
    label: str = ""
    description: str = ""
    #: match the event name exactly (``on_done``: a dotted path must not prefix-match a child's)
    exact: bool = False
    #: the In() guards' nodes, resolved by the builder
    in_nodes: dict[str, Node] = field(default_factory=dict)

    @property
    def sendable(self) -> bool:
        """True if an outside event can take it (not eventless, a timer or an ``on_done``)."""
        return (
            bool(self.events) and not self.exact and not self.events[0].startswith(RESERVED_EVENT)
        )

    @property
    def eventless(self) -> bool:
        """True for an eventless (``always``) transition."""
        return not self.events


@dataclass(eq=False)
class Node:
    """One state of a chart (or the root, path ``""``), with its place in document order."""

    id: str
    path: str
    kind: str
    parent: Node | None
    order: int
    children: list[Node] = field(default_factory=list)
    on_entry: tuple[Executable, ...] = ()
    on_exit: tuple[Executable, ...] = ()
    initial: ChartTransition | None = None
    transitions: list[ChartTransition] = field(default_factory=list)
    timers: tuple[ChartTimer, ...] = ()
    deep: bool = False
    description: str = ""
    ancestors: tuple[Node, ...] = ()

    @property
    def name(self) -> str:
        """The node's own key in its parent."""
        return self.path.rsplit(".", 1)[-1] if self.parent is not None else ""

    @cached_property
    def states(self) -> list[Node]:
        """The child states (``state``, ``parallel``, ``final``), without history nodes.

        Read only once the chart is built (the builder adds children before).
        """
        return [c for c in self.children if c.kind != HISTORY]

    @cached_property
    def history_nodes(self) -> list[Node]:
        """The history pseudo-states directly inside this node."""
        return [c for c in self.children if c.kind == HISTORY]

    def is_descendant(self, other: Node) -> bool:
        """True if this node is strictly inside ``other``."""
        return other in self.ancestors

    def __repr__(self) -> str:
        return f"Node({self.path or '<root>'!r}, {self.kind})"


@dataclass
class Chart:
    """A compiled chart: the root node and every node by path and by id, in document order."""

    root: Node
    nodes: list[Node]
    by_path: dict[str, Node]
    by_id: dict[str, Node]
    payloads: dict[str, type[BaseModel] | None]
    ignore_unmatched: bool = False

    def node(self, ref: str) -> Node | None:
        """The node with this path, or else this id."""
        return self.by_path.get(ref) or self.by_id.get(ref)

    def atomic_ids(self, paths: tuple[str, ...]) -> tuple[str, ...]:
        """The ids of the nodes at ``paths`` (the SCXML ids for a loaded document)."""
        return tuple(self.by_path[p].id for p in paths if p in self.by_path)

    def transitions(self) -> list[ChartTransition]:
        """Every transition, initial and history defaults included, in document order."""
        found: list[ChartTransition] = []
        for node in self.nodes:
            if node.initial is not None:
                found.append(node.initial)
            found.extend(node.transitions)
        return found


def name_match(descriptors: tuple[str, ...], event: str) -> bool:
    """SCXML event matching: ``*``, the name itself, or a prefix of its ``.``-separated tokens."""
    reserved = event.startswith(RESERVED_EVENT)
    for descriptor in descriptors:
        if descriptor == event:
            return True
        if reserved:
            continue
        if descriptor == "*":
            return True
        if descriptor.endswith(".*"):
            descriptor = descriptor[:-2]
        if descriptor and (event == descriptor or event.startswith(descriptor + ".")):
            return True
    return False
