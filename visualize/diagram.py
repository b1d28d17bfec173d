"""The :class:`Diagram` handle and rendering: the only code that needs Graphviz.

``graphviz`` (the Python package) is imported when an image is rendered, never on
import, so ``import statewf`` and ``import visualize`` work without it, and DOT or
Mermaid text needs neither the package nor the ``dot`` program.
"""

from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visualize.dot import to_dot
from visualize.errors import INSTALL_HINT, VisualizeError
from visualize.graph import Graph
from visualize.mermaid import to_mermaid

#: Output formats by file suffix; ``dot`` and ``mermaid`` are text and need no Graphviz.
FORMATS: dict[str, str] = {
    "svg": "svg",
    "png": "png",
    "pdf": "pdf",
    "dot": "dot",
    "gv": "dot",
    "mmd": "mermaid",
    "mermaid": "mermaid",
}
IMAGE_FORMATS = frozenset({"svg", "png", "pdf"})


def format_for(path: str | Path, format: str | None = None) -> str:
    """The output format: ``format`` if given, else inferred from the file suffix."""
    if format is not None:
        chosen = FORMATS.get(format.lower().lstrip("."))
        if chosen is None:
            raise VisualizeError(
                f"unknown diagram format {format!r}; use one of svg, png, pdf, dot, mermaid"
            )
        return chosen
    suffix = Path(path).suffix.lower().lstrip(".")
    chosen = FORMATS.get(suffix)
    if chosen is None:
        raise VisualizeError(
            f"cannot tell the format of {str(path)!r} from its suffix; name the file "
            '*.svg, *.png, *.pdf, *.dot or *.mmd, or name the format: format="svg" '
            "(in the CLI: -f svg|png|pdf|dot|mermaid)"
        )
    return chosen


def _graphviz() -> Any:
    try:
        return importlib.import_module("graphviz")
    except ImportError as exc:
        raise VisualizeError(
            f"rendering images needs the graphviz Python package, which is not installed; "
            f"{INSTALL_HINT}"
        ) from exc


def render_bytes(source: str, format: str) -> bytes:
    """Render DOT ``source`` to image bytes (svg, png or pdf) with the ``dot`` program."""
    if format not in IMAGE_FORMATS:
        raise VisualizeError(f"cannot render {format!r} as an image; use svg, png or pdf")
    graphviz = _graphviz()
    if shutil.which("dot") is None:
        raise VisualizeError(f"the Graphviz 'dot' program is not on PATH; {INSTALL_HINT}")
    try:
        data = graphviz.pipe("dot", format, source.encode("utf-8"), quiet=True)
    except graphviz.ExecutableNotFound as exc:
        raise VisualizeError(f"the Graphviz 'dot' program was not found; {INSTALL_HINT}") from exc
    except graphviz.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode("utf-8", "replace").strip()
        raise VisualizeError(f"Graphviz could not render the diagram: {detail}") from exc
    return bytes(data)


@dataclass(frozen=True)
class Diagram:
    """A diagram: its graph, DOT source and Mermaid text, and a way to render it."""

    graph: Graph
    source: str = field(init=False)
    mermaid: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", to_dot(self.graph))
        object.__setattr__(self, "mermaid", to_mermaid(self.graph))

    def text(self, format: str) -> str:
        """The diagram as text: ``dot`` or ``mermaid`` (``svg`` is rendered and decoded)."""
        chosen = format_for("", format)
        if chosen == "dot":
            return self.source
        if chosen == "mermaid":
            return self.mermaid
        if chosen == "svg":
            return self.pipe("svg").decode("utf-8")
        raise VisualizeError(f"{format!r} is a binary format; render it to a file instead")

    def pipe(self, format: str = "svg") -> bytes:
        """The diagram rendered to bytes in ``format`` (svg, png, pdf, dot or mermaid)."""
        chosen = format_for("", format)
        if chosen == "dot":
            return self.source.encode("utf-8")
        if chosen == "mermaid":
            return self.mermaid.encode("utf-8")
        return render_bytes(self.source, chosen)

    def render(self, path: str | Path, format: str | None = None) -> Path:
        """Write the diagram to ``path``; the format comes from the suffix unless given."""
        target = Path(path)
        data = self.pipe(format_for(target, format))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target

    def _repr_svg_(self) -> str:
        """Jupyter display hook."""
        return self.pipe("svg").decode("utf-8")
