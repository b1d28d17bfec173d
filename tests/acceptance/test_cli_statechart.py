"""The CLI on a statechart: ``show``, ``history``, ``state-at`` print configurations, microsteps."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from statewf.cli import cli

APP = str(Path(__file__).resolve().parents[2] / "examples" / "order_statechart.py")


def test_show_history_and_state_at_print_configurations_and_microsteps(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--database", f"sqlite:///{tmp_path / 'c.db'}", "--app", APP]

    def run(*args: str) -> str:
        result = runner.invoke(cli, [*base, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    run("create", "order", "--id", "o1", "--context", '{"order_id": "A"}')
    run("send", "o1", "CONFIRM")
    run("send", "o1", "HOLD")
    shown = run("show", "o1")
    assert "active    on_hold" in shown
    assert "history   open.resume = open.processing.payment.unpaid, " in shown
    run("send", "o1", "RELEASE")
    shown = run("show", "o1")
    assert "active    open.processing.payment.unpaid" in shown
    assert "active    open.processing.shipping.picking" in shown
    assert "timer     after 2 days due" in shown
    history = run("history", "o1")
    assert "microstep RELEASE: on_hold -> open.resume" in history
    assert "entered open, open.processing, open.processing.payment" in history
    at = run("state-at", "o1", "2")
    assert "active    open.processing.shipping.picking" in at
    assert "(statechart)" in run("machines")
