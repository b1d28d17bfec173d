"""Every example runs on a fresh machine: its own directory, a new SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(example: Path, tmp_path: Path) -> None:
    env = {**os.environ, "STATEWF_DATABASE_URL": f"sqlite:///{tmp_path / 'example.db'}"}
    result = subprocess.run([sys.executable, str(example)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{example.name}:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{example.name} printed nothing"


def test_order_lifecycle_prints_its_history(tmp_path: Path) -> None:
    env = {**os.environ, "STATEWF_DATABASE_URL": f"sqlite:///{tmp_path / 'o.db'}"}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "order_lifecycle.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "rejected as expected" in out
    assert "is completed (final) after 6 transitions" in out
    for line in ("PAYMENT_RECEIVED     pending -> processing", "RETURN_RECEIVED",
                 "refunded=True"):
        assert line in out


def test_diagrams_without_graphviz_say_why_once(tmp_path: Path) -> None:
    """Without the graphviz package the example still writes text, and says once why no SVG."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "graphviz.py").write_text("raise ImportError('graphviz hidden for this test')\n")
    env = {**os.environ, "STATEWF_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}",
           "PYTHONPATH": os.pathsep.join([str(shim), str(ROOT)])}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "diagrams.py"),
                             "--out", str(tmp_path / "out")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("pip install statewf[diagrams]") == 1, result.stdout
    assert (tmp_path / "out" / "order-history.mmd").exists()
