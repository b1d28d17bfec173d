"""``examples/diagrams.py`` runs on a fresh directory, and the committed SVG is current."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_example_writes_every_diagram(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "diagrams.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for stem in ("order-lifecycle", "order-now", "order-at-3", "order-history", "onboarding-run"):
        ET.parse(out / f"{stem}.svg")
    for name in ("order-lifecycle", "order-history", "onboarding-run"):
        assert (out / f"{name}.mmd").read_text().startswith("%% ")
        assert (out / f"{name}.dot").read_text().startswith("digraph statewf {")
    assert (out / ".gitignore").read_text() == "*\n"


def test_committed_readme_svg_shows_the_order_machine() -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from order_lifecycle import order_machine
    finally:
        sys.path.remove(str(ROOT / "examples"))
    svg = ROOT / "docs" / "order-lifecycle.svg"
    text = " ".join(ET.parse(svg).getroot().itertext())
    for state in order_machine.states:
        assert state in text
    for event in order_machine.events:
        assert event in text
