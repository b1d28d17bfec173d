"""Deeply nested values on the command line and in machine files: a clear error, no crash.

``--data`` 20,000 levels deep used to print a raw ``RecursionError`` traceback;
``load_machine`` on a deeply nested document raised ``RecursionError``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from db_snapshot import dump_tables

import statewf
from tests.acceptance.test_cli import Cli

DEEP = "[" * 20_000 + "]" * 20_000


def one_line_error(result: object) -> str:
    """The error line of a usage error (click's usage hint above it), checked."""
    text = (result.stdout + result.stderr).strip()  # type: ignore[attr-defined]
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) <= 3, text
    assert lines[-1].startswith("Error: "), text
    return lines[-1]


def test_send_with_deeply_nested_data_fails_with_one_line(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli("create", "ticket", "--id", "T-1", "--context", '{"title": "Printer"}')
    engine = statewf.Engine(cli.url)
    before = dump_tables(engine)
    (result,) = cli.run_all(("send", "T-1", "APPROVE", "--data", DEEP))
    assert result.returncode == 2
    text = one_line_error(result)
    assert "nested" in text
    assert dump_tables(engine) == before
    engine.close()


def test_runs_trigger_with_deeply_nested_data_fails_with_one_line(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    (result,) = cli.run_all(("runs", "trigger", "some-run", "go", "--data", DEEP))
    assert result.returncode == 2
    assert "nested" in one_line_error(result)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_load_machine_on_a_deeply_nested_document_is_a_spec_error(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"deep{suffix}"
    if suffix == ".json":
        path.write_text('{"name": "m", "initial": "a", "states": {"a": {"x": ' + DEEP + "}}}")
    else:
        path.write_text(f"name: m\ninitial: a\nstates:\n  a:\n    x: {DEEP}\n")
    with pytest.raises(statewf.SpecError, match="nested too deep"):
        statewf.load_machine(path)
