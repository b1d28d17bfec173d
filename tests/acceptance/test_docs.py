"""Every ```python block in README.md and docs/*.md runs, file by file, as written.

The blocks of one file run in order in one fresh interpreter (so a page can build
on its earlier blocks), in a temporary directory, with a fresh SQLite database as
``STATEWF_DATABASE_URL``. A block tagged ```python fragment is shown, not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def runnable_blocks(path: Path) -> list[str]:
    """The code of each block whose info string is exactly ``python``."""
    return [m.group(2) for m in FENCE.finditer(path.read_text()) if m.group(1).strip() == "python"]


PAGES = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
         if runnable_blocks(p)]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_code_blocks_run(page: Path, tmp_path: Path) -> None:
    script = "\n\n".join(runnable_blocks(page))
    env = {**os.environ, "STATEWF_DATABASE_URL": f"sqlite:///{tmp_path / 'docs.db'}",
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{page.name} failed:\n{result.stdout}\n{result.stderr}"


def test_every_page_is_linked_from_the_index() -> None:
    index = (ROOT / "docs" / "index.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "index.md":
            assert f"({page.name})" in index, f"docs/index.md does not link {page.name}"


def test_the_readme_tour_runs_after_the_first_command(tmp_path: Path) -> None:
    """A newcomer runs the README's first command, then pastes the tour, in one folder."""
    env = {k: v for k, v in os.environ.items() if k != "STATEWF_DATABASE_URL"}
    env["PYTHONPATH"] = str(ROOT)
    first = subprocess.run([sys.executable, str(ROOT / "examples" / "order_lifecycle.py")],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    tour = runnable_blocks(ROOT / "README.md")[0]
    result = subprocess.run([sys.executable, "-c", tour], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"the tour failed after the first command:\n{result.stderr}"
