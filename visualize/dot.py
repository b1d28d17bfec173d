"""Graph to Graphviz DOT text: pure, and needs no Graphviz installed.

Safety: node and cluster ids are generated (``n0``, ``cluster_1``), and every
name from a definition or log reaches DOT only inside an HTML-like label, escaped
with :func:`html_text`. HTML labels have one well-defined escaping (``&<>"'``),
unlike DOT's quoted strings, where a trailing backslash can swallow the closing
quote. Newlines become ``<BR/>``; other control characters are shown as ``\\xNN``.
"""

from __future__ import annotations

import html
from collections.abc import Iterator

from visualize.graph import Edge, Graph, Node
from visualize.style import (
    CHIP,
    EDGE_STYLES,
    FONT,
    INK,
    LINE,
    NODE_STYLES,
)

INDENT = "  "


def html_text(text: str) -> str:
    """``text`` escaped for a Graphviz HTML-like label."""
    out = []
    for char in html.escape(text, quote=True):
        if char == "\n":
            out.append('<BR ALIGN="LEFT"/>')
        elif ord(char) < 32 or ord(char) == 127:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def _table(rows: list[str], *, bgcolor: str | None = None) -> str:
    bg = f' BGCOLOR="{bgcolor}"' if bgcolor else ""
    body = "".join(rows)
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1"{bg}>{body}</TABLE>>'


def _row(content: str, align: str = "CENTER") -> str:
    return f'<TR><TD ALIGN="{align}">{content}</TD></TR>'


def internal_line(edge: Edge) -> str:
    """An internal transition as a line inside its state box (histories add order, count)."""
    prefix = f"{edge.traversal} " if edge.traversal else ""
    return prefix + edge.label


def node_label(node: Node, internal: list[Edge]) -> str:
    """The HTML label of a state: bold name; entry/exit and internal transitions; notes."""
    rows = [_row(f"<B>{html_text(node.label)}</B>")]
    compartment = [f"entry / {a.label}" for a in node.entry]
    compartment += [f"exit / {a.label}" for a in node.exit]
    compartment += [internal_line(e) for e in internal]
    if compartment:
        rows.append("<HR/>")
        rows += [_row(html_text(line), "LEFT") for line in compartment]
    rows += [_row(f"<I>{html_text(note)}</I>") for note in node.notes]
    return _table(rows)


def edge_label(edge: Edge) -> str:
    """The HTML label of a transition: ``EVENT [guards]`` over ``/ actions``, on a chip.

    An event is bold; a delayed transition's ``after 7 days`` is italic.
    """
    # a timer's trigger is set in italics, an event's in bold (and the words differ)
    tag = "I" if edge.after is not None else "B"
    head = f"<{tag}>{html_text(edge.trigger)}</{tag}>"
    conditions = [*edge.guards, *(f"!{u}" for u in edge.unless)]
    if conditions:
        head += f" [{html_text(', '.join(conditions))}]"
    if edge.traversal:
        head = f"<B>{html_text(edge.traversal)}</B> {head}"
    rows = [_row(head, "LEFT")]
    if edge.actions:
        actions = ", ".join(a.label for a in edge.actions)
        rows.append(_row(f"/ {html_text(actions)}", "LEFT"))
    if edge.mark == "extra":
        rows.append(_row("<I>not in the definition</I>", "LEFT"))
    return _table(rows, bgcolor=CHIP)


def _attrs(**attrs: str | float) -> str:
    parts = []
    for key, value in attrs.items():
        if isinstance(value, str) and value.startswith("<"):
            parts.append(f"{key}={value}")
        elif isinstance(value, float):
            parts.append(f"{key}={value:g}")
        else:
            parts.append(f'{key}="{value}"')
    return "[" + ", ".join(parts) + "]"


def to_dot(graph: Graph) -> str:
    """The DOT text of a graph: left-to-right, deterministic, every name escaped."""
    node_ids = {node.id: f"n{i}" for i, node in enumerate(graph.nodes)}
    cluster_ids = {c.id: f"cluster_{i}" for i, c in enumerate(graph.clusters)}
    internal: dict[str, list[Edge]] = {}
    initial_edges: list[tuple[str, str]] = []
    for edge in graph.edges:
        if edge.internal:
            internal.setdefault(edge.source, []).append(edge)

    def node_line(node: Node, depth: int) -> str:
        style = NODE_STYLES[node.mark]
        attrs = _attrs(
            label=node_label(node, internal.get(node.id, [])),
            style=style.style,
            fillcolor=style.fill,
            fontcolor=style.fontcolor,
            penwidth=style.penwidth,
            peripheries="2" if node.final else "1",
        )
        return f"{INDENT * depth}{node_ids[node.id]} {attrs}"

    def cluster_lines(parent: str | None, depth: int) -> Iterator[str]:
        for node in graph.nodes:
            if node.parent == parent:
                yield node_line(node, depth)
        for cluster in graph.clusters:
            if cluster.parent != parent:
                continue
            pad = INDENT * depth
            yield f"{pad}subgraph {cluster_ids[cluster.id]} {{"
            label = _table([_row(f"<B>{html_text(cluster.label)}</B>")])
            style = "rounded,dashed" if cluster.parallel else "rounded"
            yield f"{pad}{INDENT}graph {_attrs(label=label, style=style, color=LINE)}"
            if cluster.initial is not None:
                point = f"{cluster_ids[cluster.id]}_start"
                dot = _attrs(shape="point", width="0.12", color=LINE, fillcolor=LINE)
                yield f"{pad}{INDENT}{point} {dot}"
                initial_edges.append((point, cluster.initial))
            yield from cluster_lines(cluster.id, depth + 1)
            yield f"{pad}}}"

    title = _table([_row(html_text(graph.title or graph.name))])
    lines = [
        "digraph statewf {",
        INDENT
        + "graph "
        + _attrs(
            rankdir="LR",
            bgcolor="transparent",
            fontname=FONT,
            fontsize="12",
            fontcolor=LINE,
            labelloc="t",
            label=title,
            nodesep="0.45",
            ranksep="0.6",
            compound="true" if graph.clusters else "false",
        ),
        INDENT
        + "node "
        + _attrs(shape="box", fontname=FONT, fontsize="11", color=LINE, margin="0.12,0.06"),
        INDENT
        + "edge "
        + _attrs(fontname=FONT, fontsize="10", fontcolor=INK, color=LINE, arrowsize="0.8"),
    ]
    if graph.initial is not None:
        lines.append(
            INDENT + "start " + _attrs(shape="point", width="0.16", color=LINE, fillcolor=LINE)
        )
    lines.extend(cluster_lines(None, 1))
    if graph.initial is not None:
        lines.append(
            f"{INDENT}start -> {_endpoint(graph, graph.initial, node_ids, cluster_ids)[0]}"
        )
    for point, child in initial_edges:
        target, lhead = _endpoint(graph, child, node_ids, cluster_ids)
        clip = f" {_attrs(lhead=lhead)}" if lhead else ""
        lines.append(f"{INDENT}{point} -> {target}{clip}")
    for edge in graph.edges:
        if edge.internal:
            continue
        source, ltail = _endpoint(graph, edge.source, node_ids, cluster_ids)
        target, lhead = _endpoint(graph, edge.target, node_ids, cluster_ids)
        style = EDGE_STYLES[edge.mark]
        values: dict[str, str | float] = {}
        if edge.label or edge.traversal or edge.mark == "extra":
            values["label"] = edge_label(edge)
        values.update(style=style.style, penwidth=style.penwidth, color=style.color)
        if ltail:
            values["ltail"] = ltail
        if lhead:
            values["lhead"] = lhead
        attrs = _attrs(**values)
        lines.append(f"{INDENT}{source} -> {target} {attrs}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _endpoint(
    graph: Graph, state: str, node_ids: dict[str, str], cluster_ids: dict[str, str]
) -> tuple[str, str | None]:
    """The DOT node for a state, and the cluster to clip at when the state is compound."""
    if state in node_ids:
        return node_ids[state], None
    if state in cluster_ids:
        inside = [n for n in graph.nodes if n.id.startswith(state + ".")]
        if inside:
            return node_ids[inside[0].id], cluster_ids[state]
    raise KeyError(f"edge endpoint {state!r} is neither a node nor a cluster of the graph")
