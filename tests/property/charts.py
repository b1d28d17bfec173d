"""Random statecharts for the property and differential tests, written as SCXML documents.

A chart is a tree of at most four levels of compound and parallel states, atomic and
final leaves and shallow or deep history states; every state gets up to three
transitions on a small event alphabet (with a dotted event, so descriptors prefix-match),
to any state or history state or to none (targetless), external or internal, optionally
eventless ones, and sometimes an entry action that raises an event (or, with
``timers=True``, sends one a few seconds later: a durable timer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from statewf.chart.model import COMPOUND, PARALLEL, Chart, Node

EVENTS = ["a", "b", "c", "a.x"]


@dataclass
class Spec:
    """One state of a random chart."""

    id: str
    kind: str  # state, parallel, final, history-shallow, history-deep
    children: list[Spec] = field(default_factory=list)
    transitions: list[tuple[str | None, str | None, str]] = field(default_factory=list)
    raises: list[str] = field(default_factory=list)
    sends: list[tuple[str, int]] = field(default_factory=list)


@st.composite
def _tree(draw: st.DrawFn, counter: list[int], depth: int) -> Spec:
    counter[0] += 1
    sid = f"s{counter[0]}"
    leaf_kinds = ["state", "state", "final"]
    kinds = leaf_kinds + (["state", "parallel"] if depth < 4 else [])
    kind = draw(st.sampled_from(kinds))
    spec = Spec(sid, kind)
    nest = draw(st.integers(0, 3)) > (0 if depth < 3 else 2)
    if depth < 4 and kind in ("state", "parallel") and nest:
        n = draw(st.integers(2, 3))
        spec.children = [draw(_tree(counter, depth + 1)) for _ in range(n)]
        if kind == "parallel":
            # regions are compound states, as in most real charts
            for child in spec.children:
                if child.kind != "state":
                    child.kind = "state"
        if draw(st.booleans()):
            counter[0] += 1
            deep = draw(st.booleans())
            spec.children.insert(0, Spec(f"h{counter[0]}", "history-deep" if deep else "history"))
    elif kind == "parallel":
        spec.kind = "state"
    return spec


def _all(spec: Spec) -> list[Spec]:
    return [spec, *(s for c in spec.children for s in _all(c))]


@st.composite
def charts(draw: st.DrawFn, *, eventless: bool = True, timers: bool = False) -> str:
    """The text of a random SCXML document."""
    counter = [0]
    top = [draw(_tree(counter, 1)) for _ in range(draw(st.integers(2, 3)))]
    everything = [s for t in top for s in _all(t)]
    targets = [s.id for s in everything]
    for spec in everything:
        if spec.kind in ("final",) or spec.kind.startswith("history"):
            continue
        for _ in range(draw(st.integers(0, 3))):
            choices = [*EVENTS, None] if eventless else EVENTS
            event = draw(st.sampled_from(choices))
            if event is None and draw(st.integers(0, 3)) > 0:
                event = "b"  # eventless transitions loop easily: keep them rare
            kind = draw(st.sampled_from(["external", "external", "internal"]))
            target = (
                draw(st.sampled_from([*targets, None])) if event else draw(st.sampled_from(targets))
            )
            spec.transitions.append((event, target, kind))
        if draw(st.integers(0, 4)) == 0:
            spec.raises.append(draw(st.sampled_from(EVENTS)))  # an entry action raising
        if timers and draw(st.integers(0, 3)) == 0:  # an entry action sending later
            spec.sends.append((draw(st.sampled_from(EVENTS)), draw(st.integers(1, 4))))
    body = "".join(_render(t) for t in top)
    return f'<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0">{body}</scxml>'


def _render(spec: Spec, default: str = "") -> str:
    if spec.kind.startswith("history"):
        kind = "deep" if spec.kind == "history-deep" else "shallow"
        return f'<history id="{spec.id}" type="{kind}"><transition target="{default}"/></history>'
    tag = "final" if spec.kind == "final" else spec.kind
    inner = "".join(f'<onentry><raise event="{e}"/></onentry>' for e in spec.raises)
    inner += "".join(f'<onentry><send event="{e}" delay="{s}s"/></onentry>' for e, s in spec.sends)
    inner += "".join(
        f"<transition{f' event={chr(34)}{e}{chr(34)}' if e else ''}"
        f'{f" target={chr(34)}{t}{chr(34)}" if t else ""} type="{k}"/>'
        for e, t, k in spec.transitions
    )
    first = next((c.id for c in spec.children if not c.kind.startswith("history")), "")
    inner += "".join(_render(c, first) for c in spec.children)
    return f'<{tag} id="{spec.id}">{inner}</{tag}>'


def legal(chart: Chart, leaves: tuple[str, ...]) -> None:
    """Assert that ``leaves`` is a legal configuration of ``chart`` (SCXML 3.11)."""
    active: set[Node] = set()
    for path in leaves:
        node = chart.by_path[path]
        assert not node.states, f"{path} is not atomic"
        active.add(node)
        active.update(a for a in node.ancestors if a.parent is not None)
    assert len([c for c in chart.root.states if c in active]) == 1
    for node in active:
        children = [c for c in node.states if c in active]
        if node.kind == COMPOUND:
            assert len(children) == 1, f"{node.path}: {len(children)} active children"
        elif node.kind == PARALLEL:
            assert len(children) == len(node.states), f"{node.path}: a region is inactive"
    assert list(leaves) == [n.path for n in sorted(active, key=lambda n: n.order) if not n.states]
