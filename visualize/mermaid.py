"""Graph to Mermaid ``stateDiagram-v2`` text, for pasting into Markdown and GitHub.

States get generated ids (``n0``...) and their names appear only as escaped
labels: letters, digits, spaces, printable non-ASCII and a few plain punctuation
marks pass through; every other character (quotes, ``#``, ``;``, ``:``, ``<``,
``{``, ``*``, an ``_`` that is not inside a word (Mermaid reads ``*x*`` and
``_x_`` as emphasis), invisible format characters) becomes a Mermaid entity code (``#35;`` for
``#``, ``#60;`` for ``<``), and newlines become ``<br/>``. Internal transitions and entry/exit
actions are description lines of their state; marks become ``classDef`` classes
plus a text note, so nothing is told by colour alone.
"""

from __future__ import annotations

from collections.abc import Iterator

from visualize.dot import internal_line
from visualize.graph import Edge, Graph, Mark
from visualize.style import MERMAID_CLASSES

INDENT = "    "
_PLAIN = frozenset(" -.,/!=+?@'()[]")


def mermaid_text(text: str) -> str:
    """``text`` escaped for a Mermaid label: safe characters kept, the rest as ``#NN;``."""
    out = []
    for i, char in enumerate(text):
        if char == "\n":
            out.append("<br/>")
        elif char.isprintable() and (char.isalnum() or char in _PLAIN or ord(char) > 127):
            out.append(char)
        elif char == "_" and _inside_word(text, i):
            out.append(char)  # snake_case stays; a leading/trailing _ would be emphasis
        else:
            out.append(f"#{ord(char)};")
    return "".join(out)


def _inside_word(text: str, i: int) -> bool:
    return 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()


def _class_name(mark: Mark) -> str:
    return mark.replace("-", "")


def _edge_text(edge: Edge) -> str:
    text = f"{edge.traversal} {edge.label}" if edge.traversal else edge.label
    if edge.mark == "extra":
        text += " (not in the definition)"
    return text


def to_mermaid(graph: Graph) -> str:
    """The Mermaid ``stateDiagram-v2`` text of a graph; deterministic, names escaped."""
    ids = {node.id: f"n{i}" for i, node in enumerate(graph.nodes)}
    ids.update({c.id: f"c{i}" for i, c in enumerate(graph.clusters)})
    lines = [
        f"%% {mermaid_text(graph.title or graph.name)}",
        "stateDiagram-v2",
        f"{INDENT}direction LR",
    ]
    used = sorted({n.mark for n in graph.nodes if n.mark != "none"})
    for mark in used:
        lines.append(f"{INDENT}classDef {_class_name(mark)} {MERMAID_CLASSES[mark]}")

    def declare(parent: str | None, depth: int) -> Iterator[str]:
        pad = INDENT * depth
        owner = next((c for c in graph.clusters if c.id == parent), None)
        if owner is not None and owner.initial is not None and owner.initial in ids:
            yield f"{pad}[*] --> {ids[owner.initial]}"
        regions = 0
        for node in graph.nodes:
            if node.parent == parent:
                if owner is not None and owner.parallel and regions:
                    yield f"{pad}--"  # a concurrent region
                regions += 1
                yield f'{pad}state "{mermaid_text(node.label)}" as {ids[node.id]}'
        for cluster in graph.clusters:
            if cluster.parent == parent:
                if owner is not None and owner.parallel and regions:
                    yield f"{pad}--"
                regions += 1
                yield f'{pad}state "{mermaid_text(cluster.label)}" as {ids[cluster.id]}'
                yield f"{pad}state {ids[cluster.id]} {{"
                yield from declare(cluster.id, depth + 1)
                yield f"{pad}}}"

    lines.extend(declare(None, 1))
    for node in graph.nodes:
        described = [f"entry / {a.label}" for a in node.entry]
        described += [f"exit / {a.label}" for a in node.exit]
        described += [internal_line(e) for e in graph.edges if e.internal and e.source == node.id]
        described += list(node.notes)
        for line in described:
            lines.append(f"{INDENT}{ids[node.id]} : {mermaid_text(line)}")
    if graph.initial is not None and graph.initial in ids:
        lines.append(f"{INDENT}[*] --> {ids[graph.initial]}")
    for edge in graph.edges:
        if not edge.internal:
            text = _edge_text(edge)
            label = f" : {mermaid_text(text)}" if text else ""
            lines.append(f"{INDENT}{ids[edge.source]} --> {ids[edge.target]}{label}")
    for node in graph.nodes:
        if node.final:
            lines.append(f"{INDENT}{ids[node.id]} --> [*]")
    for mark in used:
        members = ",".join(ids[n.id] for n in graph.nodes if n.mark == mark)
        lines.append(f"{INDENT}class {members} {_class_name(mark)}")
    return "\n".join(lines) + "\n"
