"""Rendering with the real ``dot`` program, and clear errors when Graphviz is missing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from diagram_machines import order_machine

import visualize
from visualize.diagram import format_for

STATE_NAMES = list(order_machine().states)


def svg_text(data: bytes) -> str:
    """All text of an SVG document (it must parse as XML)."""
    return " ".join(t.strip() for t in ET.fromstring(data).itertext())


def test_render_svg_parses_and_names_every_state(tmp_path: Path) -> None:
    path = visualize.machine_diagram(order_machine()).render(tmp_path / "order.svg")
    data = path.read_bytes()
    text = svg_text(data)
    for name in STATE_NAMES:
        assert name in text
    assert "PAY" in text
    assert "payment_covers_total" in text
    assert "«effect» refund_payment" in text


def test_render_png_and_pdf(tmp_path: Path) -> None:
    diagram = visualize.machine_diagram(order_machine())
    png = diagram.render(tmp_path / "order.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pdf = diagram.render(tmp_path / "out" / "order.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")


def test_render_text_formats_need_no_graphviz(tmp_path: Path) -> None:
    diagram = visualize.machine_diagram(order_machine())
    assert diagram.render(tmp_path / "o.dot").read_text() == diagram.source
    assert diagram.render(tmp_path / "o.mmd").read_text() == diagram.mermaid
    assert diagram.render(tmp_path / "o.txt", format="mermaid").read_text() == diagram.mermaid
    assert diagram.render(tmp_path / "o.txt", format="dot").read_text() == diagram.source


def test_format_inference() -> None:
    assert format_for("a/b.SVG") == "svg"
    assert format_for("x.gv") == "dot"
    assert format_for("x.png", "pdf") == "pdf"
    with pytest.raises(visualize.VisualizeError, match=r"\*.svg, \*.png"):
        format_for("diagram.jpeg")
    with pytest.raises(visualize.VisualizeError, match="unknown diagram format 'gif'"):
        format_for("x.svg", "gif")
    diagram = visualize.machine_diagram(order_machine())
    with pytest.raises(visualize.VisualizeError, match="binary format"):
        diagram.text("png")


def test_missing_dot_program_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    diagram = visualize.machine_diagram(order_machine())
    with pytest.raises(visualize.VisualizeError) as info:
        diagram.pipe("svg")
    assert "apt-get install graphviz" in info.value.message
    assert "pip install statewf[diagrams]" in info.value.message
    assert diagram.source.startswith("digraph")  # text still works


def test_missing_graphviz_package_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(visualize.VisualizeError, match=r"pip install statewf\[diagrams\]"):
        visualize.machine_diagram(order_machine()).pipe("png")


def test_visualize_error_is_a_statewf_error() -> None:
    import statewf

    assert issubclass(visualize.VisualizeError, statewf.StatewfError)


BLOCKED = textwrap.dedent(
    """
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "graphviz" or name.startswith("graphviz."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, Block())
    import statewf
    import visualize
    import visualize.cli
    assert "graphviz" not in sys.modules
    m = statewf.Machine("m", initial="a", states={
        "a": statewf.State(on={"GO": "b"}), "b": statewf.State(final=True)})
    d = visualize.machine_diagram(m)
    assert d.source.startswith("digraph") and "stateDiagram-v2" in d.mermaid
    try:
        d.pipe("svg")
    except visualize.VisualizeError as exc:
        assert "pip install statewf[diagrams]" in exc.message
        print("blocked ok")
    """
)


def test_statewf_and_text_diagrams_work_without_the_graphviz_package() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", BLOCKED],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "blocked ok"
