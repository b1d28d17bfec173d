"""Hostile names (quotes, <, {, newlines, unicode) are escaped in DOT and Mermaid."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import visualize
from statewf import Machine, State, transition
from visualize.dot import html_text
from visualize.mermaid import mermaid_text

# Names a Machine accepts (no '.', no control characters) ...
MACHINE_NAMES = [
    'say "hi"',
    "<script>alert(1)</script>",
    "{x}|y",
    "ünïcødé—状態😀",
    "back\\slash\\",
    "semi;colon#35;",
    "-->",
    "[*]",
    "%% comment",
    "_emph_ *bold*",
    "a:b",
    "&amp;",
    "]]> <!-- -->",
    "\u202eevil",
    "end",
    'state "x" as n0',
    "label=<<B>x</B>>",
]
# ... and what a hand-edited stored definition could hold besides.
DEFINITION_ONLY = ["two\nlines", "tab\there", "null\x00byte"]


def hostile_machine() -> Machine:
    """A machine whose states, events and hook names are all hostile."""

    def hook(name: str) -> Any:
        fn = lambda ctx, payload: True  # noqa: E731 - a named hook object is what we need
        fn.__qualname__ = name
        return fn

    names = MACHINE_NAMES
    states = {
        name: State(
            on={
                f"E {name}": transition(
                    names[(i + 1) % len(names)],
                    guard=hook(f"g {name}"),
                    unless=hook(f"u {name}"),
                    action=hook(f"a {name}"),
                ),
                f"I {name}": transition(action=hook(f"i {name}")),
            },
            on_enter=hook(f"in {name}"),
        )
        for i, name in enumerate(names)
    }
    return Machine('m "<{\u202e', initial=names[0], states=states)


def hostile_definition() -> dict[str, Any]:
    """A definition dict with newline and control characters in its names."""
    names = MACHINE_NAMES + DEFINITION_ONLY
    return {
        "name": "two\nline machine",
        "initial": names[0],
        "states": {
            name: {
                "on": {f"E {name}": [{"target": names[(i + 1) % len(names)], "guards": [name]}]},
                "on_enter": [f"effect:{name}"],
            }
            for i, name in enumerate(names)
        },
    }


def all_names(diagram: visualize.Diagram) -> list[str]:
    """Every string a diagram shows: state names, event labels, hook names."""
    graph = diagram.graph
    names = [n.label for n in graph.nodes] + [e.label for e in graph.edges]
    names += [a.label for n in graph.nodes for a in (*n.entry, *n.exit)]
    return names


@pytest.fixture(params=["machine", "definition"])
def diagram(request: pytest.FixtureRequest) -> visualize.Diagram:
    """The hostile machine, built as a Machine or given as a stored definition."""
    if request.param == "machine":
        return visualize.machine_diagram(hostile_machine())
    return visualize.machine_diagram(hostile_definition())


def test_html_text_escapes_and_round_trips() -> None:
    for name in MACHINE_NAMES:
        escaped = html_text(name)
        assert not set(escaped) & set('<>"'), escaped
        assert html.unescape(escaped) == name
    assert html_text("a\nb") == 'a<BR ALIGN="LEFT"/>b'
    assert html_text("nul\x00") == "nul\\x00"


def _mermaid_decode(text: str) -> str:
    text = text.replace("<br/>", "\n")
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), text)


def test_mermaid_text_escapes_and_round_trips() -> None:
    for name in [*MACHINE_NAMES, "two\nlines"]:
        escaped = mermaid_text(name)
        bare = re.sub(r"#\d+;", "", escaped).replace("<br/>", "")
        assert not set(bare) & set('"<>{}:;#%*`|\\&\n\u202e'), escaped
        assert _mermaid_decode(escaped) == name
    assert mermaid_text("snake_case") == "snake_case"
    assert mermaid_text("_x_") == "#95;x#95;"


def test_dot_contains_no_raw_hostile_text(diagram: visualize.Diagram) -> None:
    source = diagram.source
    for name in MACHINE_NAMES:
        if set(name) & set('<>"'):
            assert name not in source
        assert html_text(name) in source
    # every quoted attribute value is one of our own constants: no name leaks into one
    for value in re.findall(r'="([^"]*)"', source):
        assert re.fullmatch(r"[\w#.,:\- ]*", value), value


MERMAID_LINE = re.compile(
    r"(%% [^\n]*"
    r"|stateDiagram-v2"
    r"|    direction LR"
    r"|    classDef \w+ [^\s\"]+"
    r'|    state "[^"\n]*" as n\d+'
    r"|    n\d+ : [^\n\"]+"
    r"|    \[\*\] --> n\d+"
    r"|    n\d+ --> \[\*\]"
    r"|    n\d+ --> n\d+ : [^\n\"]+"
    r"|    class [n\d,]+ \w+)"
)


def test_mermaid_lines_follow_the_grammar(diagram: visualize.Diagram) -> None:
    for line in diagram.mermaid.splitlines():
        assert MERMAID_LINE.fullmatch(line), line
        if " : " in line:
            label = re.sub(r"#\d+;", "", line.split(" : ", 1)[1]).replace("<br/>", "")
            assert not set(label) & set(':;#{}<>"%`*\\&'), line


def test_mermaid_round_trips_every_name(diagram: visualize.Diagram) -> None:
    text = _mermaid_decode(diagram.mermaid)
    for name in MACHINE_NAMES:
        assert f'state "{name}" as ' in text


def _svg_text(svg: bytes) -> str:
    root = ET.fromstring(svg)
    return "\n".join(t.strip() for t in root.itertext())


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs the Graphviz 'dot' program")
def test_hostile_names_render_to_valid_svg(diagram: visualize.Diagram) -> None:
    text = _svg_text(diagram.pipe("svg"))
    for name in MACHINE_NAMES:
        assert name in text, name
    for name in DEFINITION_ONLY[:1]:
        if diagram.graph.name.startswith("two"):
            for part in name.split("\n"):
                assert part in text


MERMAID_JS = os.environ.get("STATEWF_MERMAID_NODE_MODULES")
PARSE_JS = """
import { JSDOM } from 'jsdom';
const dom = new JSDOM('<!DOCTYPE html><body></body>');
globalThis.window = dom.window; globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
const text = (await import('fs')).readFileSync(process.argv[2], 'utf8');
await mermaid.parse(text);
"""


@pytest.mark.skipif(
    not MERMAID_JS or shutil.which("node") is None,
    reason="set STATEWF_MERMAID_NODE_MODULES to a node_modules with mermaid and jsdom",
)
def test_mermaid_parses_with_mermaid_js(diagram: visualize.Diagram, tmp_path: Path) -> None:
    assert MERMAID_JS is not None
    script = Path(MERMAID_JS).parent / "statewf-parse-check.mjs"
    script.write_text(PARSE_JS)
    source = tmp_path / "diagram.mmd"
    source.write_text(diagram.mermaid)
    subprocess.run(["node", str(script), str(source)], check=True, timeout=60)
