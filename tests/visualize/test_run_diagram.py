"""Workflow-run diagrams on both stores: plan order, statuses, loops, retries, failures."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from diagram_machines import walk_order
from diagram_workflows import ATTEMPTS, GATE, onboard_user

import durable
import statewf
import visualize
from statewf.cli import cli
from visualize.cli import diagram
from visualize.run import assign_steps

if "diagram" not in cli.commands:
    cli.add_command(diagram, "diagram")

PLAN = ["create-account", "send-welcome-{n}", "flaky", "wait-for-gate", "explode", "finish"]


@pytest.fixture(autouse=True)
def _fresh_attempts() -> None:
    ATTEMPTS.clear()
    GATE.clear()


@pytest.fixture
def engine(db: dict[str, str | None]) -> Iterator[statewf.Engine]:
    """A statewf engine on one real database."""
    eng = statewf.Engine(**db)  # type: ignore[arg-type]
    yield eng
    eng.close()


def run_to_end(engine: statewf.Engine, run_id: str, data: dict[str, bool]) -> None:
    """Start the onboarding workflow and wait until it is finished."""

    async def go() -> None:
        wf = durable.WorkflowEngine(engine, workflows=[onboard_user], recover=False)
        try:
            await wf.start_workflow("onboard-user", data, run_id=run_id)
            await wf.wait_for_run(run_id, timeout=60)
        finally:
            await wf.close()

    asyncio.run(go())


def by_label(graph: visualize.Graph) -> dict[str, visualize.Node]:
    """Nodes by label."""
    return {n.label: n for n in graph.nodes}


def test_assign_steps_matches_literal_then_patterns() -> None:
    plan = ["a", "pack-{item}", "pack-{item}-gift", "{computed}", "z"]
    keys = ["a", "pack-x", "pack-y-gift", "pack-", "other", "z"]
    assert assign_steps(plan, keys) == [0, 1, 2, 3, 3, 4]
    assert assign_steps(["a"], ["b"]) == [None]
    assert assign_steps([], ["b"]) == [None]


def test_completed_run(engine: statewf.Engine) -> None:
    run_to_end(engine, "run-ok", {})
    diagram = visualize.run_diagram(engine, "run-ok")
    graph = diagram.graph
    assert graph.kind == "run"
    assert [n.label for n in graph.nodes] == [*PLAN, "completed"]
    nodes = by_label(graph)
    assert nodes["create-account"].mark == "done"
    assert nodes["send-welcome-{n}"].notes[:2] == ("done", "×3 steps")
    assert nodes["flaky"].notes[:2] == ("done", "3 attempts")
    assert nodes["explode"].mark == "not-reached"
    assert nodes["wait-for-gate"].mark == "not-reached"
    assert nodes["finish"].mark == "done"
    assert nodes["completed"].final
    assert nodes["completed"].mark == "done"
    taken = {(e.source, e.target) for e in graph.edges if e.mark == "taken"}
    assert ("step5", "end") in taken
    assert ("step2", "step3") not in taken
    assert ("step2", "step5") in taken  # around the call sites the branches skipped
    assert "run run-ok · completed" in graph.title
    assert "    class n0,n1,n2,n5,n6 done" in diagram.mermaid.splitlines()
    text = " ".join(ET.fromstring(diagram.pipe("svg")).itertext())
    for label in PLAN:
        assert label in text


def test_failed_run(engine: statewf.Engine) -> None:
    run_to_end(engine, "run-bad", {"fail": True})
    graph = visualize.run_diagram(engine, "run-bad").graph
    nodes = by_label(graph)
    explode = nodes["explode"]
    assert explode.mark == "failed"
    assert explode.notes[:2] == ("failed", "4 attempts")
    assert explode.notes[-1] == 'ValueError: bad <data> "here"'
    assert nodes["finish"].mark == "not-reached"
    assert nodes["failed"].mark == "failed"
    ends = [e for e in graph.edges if e.target == "end"]
    assert [(e.source, e.mark) for e in ends] == [("step4", "taken")]


def test_run_in_flight_shows_the_running_step(engine: statewf.Engine) -> None:
    async def go() -> visualize.Diagram:
        GATE["run-gate"] = asyncio.Event()
        wf = durable.WorkflowEngine(engine, workflows=[onboard_user], recover=False)
        try:
            await wf.start_workflow("onboard-user", {"gate": True}, run_id="run-gate")
            for _ in range(600):
                progress = await wf.check_progress("run-gate")
                if progress.completed_steps >= 5:
                    break
                await asyncio.sleep(0.01)
            drawn = await asyncio.to_thread(visualize.run_diagram, wf, "run-gate")
            GATE["run-gate"].set()
            await wf.wait_for_run("run-gate", timeout=60)
            return drawn
        finally:
            await wf.close()

    graph = asyncio.run(go()).graph
    nodes = by_label(graph)
    assert nodes["flaky"].mark == "done"
    assert nodes["wait-for-gate"].mark == "running"
    assert nodes["wait-for-gate"].notes == ("running (next in the plan)",)
    assert nodes["finish"].mark == "not-reached"
    assert nodes["end"].mark == "not-reached"
    after = visualize.run_diagram(engine, "run-gate").graph
    assert by_label(after)["wait-for-gate"].mark == "done"


def test_run_drawn_without_the_workflow_code(
    engine: statewf.Engine, db: dict[str, str | None]
) -> None:
    run_to_end(engine, "run-ok", {})
    bare = statewf.Engine(**db)  # type: ignore[arg-type]
    try:
        assert visualize.run_diagram(bare, "run-ok").graph == (
            visualize.run_diagram(engine, "run-ok").graph
        )
    finally:
        bare.close()


def test_runs_and_machine_instances_are_not_mixed_up(engine: statewf.Engine) -> None:
    run_to_end(engine, "run-ok", {})
    order_id = walk_order(engine)
    with pytest.raises(visualize.VisualizeError, match="not a workflow run"):
        visualize.run_diagram(engine, order_id)
    with pytest.raises(visualize.VisualizeError, match=r"draw it with visualize\.run_diagram"):
        visualize.instance_diagram(engine, "run-ok")
    with pytest.raises(visualize.VisualizeError, match=r"draw it with visualize\.run_diagram"):
        visualize.history_diagram(engine, "run-ok")
    with pytest.raises(visualize.VisualizeError, match=r"takes a durable\.WorkflowEngine"):
        visualize.run_diagram("sqlite://", "run-ok")  # type: ignore[arg-type]
    with pytest.raises(statewf.InstanceNotFound):
        visualize.run_diagram(engine, "missing")


def test_cli_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with statewf.Engine(url) as engine:
        run_to_end(engine, "run-ok", {})
    target = tmp_path / "run.svg"
    result = CliRunner().invoke(
        cli, ["--database", url, "diagram", "--run", "run-ok", "-o", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert "send-welcome-{n}" in " ".join(ET.parse(target).getroot().itertext())
    result = CliRunner().invoke(
        cli, ["--database", url, "diagram", "--run", "run-ok", "--seq", "2"]
    )
    assert result.exit_code == 2
