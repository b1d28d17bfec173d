"""``statewf diagram`` through click's CliRunner and as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from diagram_machines import order_machine, walk_order

import statewf
import visualize
from statewf.cli import cli
from visualize.cli import diagram

if "diagram" not in cli.commands:
    cli.add_command(diagram, "diagram")


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A SQLite database holding the order machine's definition and one walked order."""
    database = f"sqlite:///{tmp_path / 'cli.db'}"
    with statewf.Engine(database) as engine:
        walk_order(engine)
    return database


def run(url: str, *args: str) -> tuple[int, str]:
    """Run ``statewf --database URL diagram ARGS``; exit code and output."""
    result = CliRunner().invoke(cli, ["--database", url, "diagram", *args])
    return result.exit_code, result.output


def test_machine_from_stored_definition_to_stdout(url: str) -> None:
    code, out = run(url, "order-lifecycle")
    assert code == 0, out
    assert out == visualize.machine_diagram(order_machine()).source


def test_mermaid_and_svg_to_stdout(url: str) -> None:
    code, out = run(url, "order-lifecycle", "--format", "mermaid")
    assert code == 0, out
    assert out == visualize.machine_diagram(order_machine()).mermaid
    code, out = run(url, "order-lifecycle", "-f", "svg")
    assert code == 0, out
    ET.fromstring(out.encode())


def test_files_by_suffix(url: str, tmp_path: Path) -> None:
    code, out = run(url, "order-lifecycle", "-o", str(tmp_path / "order.svg"))
    assert code == 0, out
    assert "delivered" in (tmp_path / "order.svg").read_text()
    code, out = run(url, "--instance", "order-1", "-o", str(tmp_path / "now.png"))
    assert code == 0, out
    assert (tmp_path / "now.png").read_bytes().startswith(b"\x89PNG")
    code, out = run(url, "--history", "order-1", "-o", str(tmp_path / "h.pdf"))
    assert code == 0, out
    assert (tmp_path / "h.pdf").read_bytes().startswith(b"%PDF")
    code, out = run(url, "--history", "order-1", "-f", "mermaid", "-o", str(tmp_path / "h.md"))
    assert code == 0, out
    assert (tmp_path / "h.md").read_text().startswith("%% order-lifecycle")


def test_instance_and_history_as_of_seq(url: str) -> None:
    code, out = run(url, "--instance", "order-1", "--seq", "4", "-f", "mermaid")
    assert code == 0, out
    assert "class n3 current" in out
    code, out = run(url, "--history", "order-1", "--seq", "3", "-f", "mermaid")
    assert code == 0, out
    assert "#35;2 ×1 PAY" in out


def test_app_machines_are_drawn_without_a_database_row(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        "import statewf\n"
        "m = statewf.Machine('door', initial='shut', states={\n"
        "    'shut': statewf.State(on={'OPEN': 'open'}),\n"
        "    'open': statewf.State(on={'SHUT': 'shut'})})\n"
    )
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = CliRunner().invoke(cli, ["--database", url, "--app", str(app), "diagram", "door"])
    assert result.exit_code == 0, result.output
    assert "<B>OPEN</B>" in result.output


def test_usage_errors(url: str) -> None:
    code, out = run(url)
    assert code == 2
    assert "exactly one of MACHINE" in out
    code, out = run(url, "order-lifecycle", "--instance", "order-1")
    assert code == 2
    code, out = run(url, "order-lifecycle", "--seq", "2")
    assert code == 2
    assert "--seq goes with" in out
    code, out = run(url, "order-lifecycle", "-f", "png")
    assert code == 2
    assert "-o FILE.png" in out
    code, out = run(url, "nope")
    assert code == 1
    assert "VisualizeError: no machine 'nope'" in out
    code, out = run(url, "--instance", "missing")
    assert code == 1
    assert "InstanceNotFound" in out
    code, out = run(url, "order-lifecycle", "-o", "x.jpeg")
    assert code == 1
    assert "cannot tell the format" in out
    assert "-f svg" in out, "the CLI user is told the option to type, not a Python keyword"


def test_real_command_line(url: str, tmp_path: Path) -> None:
    target = tmp_path / "order.svg"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "statewf.cli",
            "--database",
            url,
            "diagram",
            "order-lifecycle",
            "-o",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stderr
    ET.parse(target)
