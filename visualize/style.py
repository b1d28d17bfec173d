"""The look of diagrams: one palette and one shape/line style per mark.

Rules the palette keeps:

* the canvas is transparent; every text sits on a light fill of its own (state
  boxes, label chips), so it reads the same on white and on dark pages;
* lines and the title use a mid slate that shows on both;
* no mark is told by colour alone: each also has a line style or width and a
  text note in the box (``current state``, ``entered`` with a count, ``failed``...).
"""

from __future__ import annotations

from dataclasses import dataclass

from visualize.graph import EdgeMark, Mark

FONT = "Helvetica,Arial,sans-serif"
#: Lines, arrows and the title: visible on white and on dark backgrounds.
LINE = "#71809a"
#: Lines of edges a history did not take.
LINE_FAINT = "#9aa6b8"
#: Text on light fills.
INK = "#111827"
#: Secondary text on light fills (unvisited, not reached).
INK_SOFT = "#4b5563"
#: Fill of edge-label chips.
CHIP = "#f8fafc"


@dataclass(frozen=True)
class NodeStyle:
    """How one node mark is drawn: fill, border style and width, text colour."""

    fill: str
    style: str
    penwidth: float
    fontcolor: str = INK


@dataclass(frozen=True)
class EdgeStyle:
    """How one edge mark is drawn: line style and width, colour."""

    style: str
    penwidth: float
    color: str = LINE


NODE_STYLES: dict[Mark, NodeStyle] = {
    "none": NodeStyle("#eef2f7", "rounded,filled", 1.2),
    "current": NodeStyle("#fcd34d", "rounded,filled,bold", 3.0),
    "visited": NodeStyle("#dbeafe", "rounded,filled", 1.6),
    "unvisited": NodeStyle("#f8fafc", "rounded,filled,dashed", 1.0, INK_SOFT),
    "done": NodeStyle("#bbf7d0", "rounded,filled", 1.6),
    "running": NodeStyle("#fcd34d", "rounded,filled,bold", 3.0),
    "waiting": NodeStyle("#e9d5ff", "rounded,filled,dashed", 2.2),
    "failed": NodeStyle("#fecaca", "filled,diagonals", 2.2),
    "not-reached": NodeStyle("#f8fafc", "rounded,filled,dotted", 1.2, INK_SOFT),
}

EDGE_STYLES: dict[EdgeMark, EdgeStyle] = {
    "none": EdgeStyle("solid", 1.2),
    "taken": EdgeStyle("bold", 2.6),
    "not-taken": EdgeStyle("dashed", 1.0, LINE_FAINT),
    "extra": EdgeStyle("dotted", 2.0),
}

#: Mermaid ``classDef`` bodies for node marks (Mermaid cannot style single edges).
MERMAID_CLASSES: dict[Mark, str] = {
    mark: (
        f"fill:{s.fill},color:{s.fontcolor},stroke:{LINE},stroke-width:{s.penwidth:g}px"
        + (",stroke-dasharray:5 3" if "dashed" in s.style else "")
        + (",stroke-dasharray:2 2" if "dotted" in s.style else "")
        + (",font-weight:bold" if "bold" in s.style else "")
    )
    for mark, s in NODE_STYLES.items()
    if mark != "none"
}

#: The legend, as documented in docs/diagrams.md: (what, how it is drawn).
LEGEND: tuple[tuple[str, str], ...] = (
    ("initial state", "an arrow from a small filled dot"),
    ("final state", "double border"),
    ("transition", "arrow labelled EVENT [guard, !unless] / action"),
    ("effect", "action marked «effect» (runs after commit, from the outbox)"),
    ("entry / exit actions", "lines under the state name: entry / name, exit / name"),
    ("internal transition", "a line inside the state box: EVENT [guard] / action"),
    ("delayed transition", "arrow labelled after 7 days"),
    ("current state", "amber fill, thick bold border, note 'current state'"),
    ("visited state (history)", "blue fill, note 'entered ×N'"),
    ("unvisited state (history)", "pale fill, dashed border, grey text"),
    ("taken edge (history)", "bold line, label starts with #order ×count"),
    ("edge not taken (history)", "thin dashed pale line"),
    ("log row not in the definition", "dotted line"),
)
