"""What installing the package gives a user: types that resolve, a license, an index page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

USER_CODE = """\
import durable
import statewf
import visualize

machine = statewf.Machine("door", initial="closed", states={
    "closed": statewf.State(on={"OPEN": "open"}),
    "open": statewf.State(on={"CLOSE": "closed"}),
})
engine: statewf.Engine = statewf.Engine("sqlite:///door.db")
state: str = engine.create("door").state
graph: visualize.Diagram = visualize.machine_diagram(machine)
client: durable.Client = durable.Client("sqlite:///door.db")
"""


def test_user_code_type_checks_against_the_installed_package(tmp_path: Path) -> None:
    """mypy finds statewf, durable and visualize as installed (an editable install included)."""
    (tmp_path / "user_code.py").write_text(USER_CODE)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "MYPYPATH"}}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "user_code.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"user code does not type-check:\n{result.stdout}{result.stderr}"


def test_the_declared_license_ships_with_the_package() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0" in text
    assert "LICENSE" in PYPROJECT["project"]["license-files"]


def test_the_package_index_page_has_no_relative_links_or_images() -> None:
    """A package index shows the long description alone: relative links and SVGs break there."""
    page = (ROOT / PYPROJECT["project"]["readme"]).read_text()
    links = re.findall(r"\]\(([^)]+)\)", page)
    relative = [link for link in links if not link.startswith(("https://", "http://", "#"))]
    assert not relative, f"relative links on the index page: {relative}"
    assert "![" not in page, "images do not show on a package index"
    assert "<img" not in page.lower(), "images do not show on a package index"
