"""Templates (autoescaped Jinja2 shipped in the package) and diagrams as inline SVG."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from visualize.diagram import Diagram
from visualize.errors import VisualizeError


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _as_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def environment() -> Environment:
    """The dashboard's template environment: every value is HTML-escaped unless marked safe."""
    env = Environment(
        loader=PackageLoader("visualize.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["as_json"] = _as_json
    env.filters["ms"] = _ms
    return env


_PROLOG = re.compile(r"<\?xml.*?\?>|<!DOCTYPE.*?>|<!--.*?-->", re.DOTALL)
_ACTIVE = re.compile(r"<\s*(script|foreignObject|iframe|object|embed)\b", re.IGNORECASE)
_HANDLER = re.compile(r"\son[a-z]+\s*=|javascript:", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")


def inline_svg(diagram: Diagram) -> Markup:
    """The diagram as an ``<svg>`` element to put in a page (the DOT text if it cannot render).

    Graphviz escapes every label; the element is checked anyway for anything that
    could run script, and refused if it has any.
    """
    try:
        svg = diagram.pipe("svg").decode("utf-8")
    except VisualizeError as exc:
        return Markup('<p class="muted">{}</p><pre class="dot">{}</pre>').format(
            exc.message, diagram.source
        )
    svg = _PROLOG.sub("", svg).strip()
    if _ACTIVE.search(svg) or any(_HANDLER.search(tag) for tag in _TAG.findall(svg)):
        return Markup('<p class="error">diagram refused: it holds active content</p>')
    return Markup(svg)  # Graphviz output: labels escaped by it, checked above
