"""CLI errors tell a command-line user what to type, not what to call in Python."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner

import durable
from statewf.cli import cli

APP = str(Path(__file__).resolve().parent / "cli_app.py")


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stderr


def test_an_unknown_machine_asks_for_app(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    code, err = _run("--database", url, "create", "ticket")
    assert code == 1
    assert "pass --app MODULE" in err
    assert "engine.register" not in err


def test_an_instance_of_an_unregistered_machine_asks_for_app(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    code, _ = _run("--database", url, "--app", APP, "create", "ticket", "--id", "T-1",
                   "--context", '{"title": "Chair"}')
    assert code == 0
    code, err = _run("--database", url, "send", "T-1", "CLOSE")
    assert code == 1
    assert "pass --app MODULE" in err
    assert "'T-1'" in err
    assert "register that version" not in err


def test_a_workflow_run_sent_an_event_points_to_runs_trigger(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"

    @durable.workflow("waiter")
    async def waiter(ctx: durable.Context[None]) -> None:
        await ctx.step.wait_for("go", event="go")

    async def start() -> str:
        async with durable.WorkflowEngine(url, workflows=[waiter]) as engine:
            run = await engine.start_workflow("waiter", run_id="R-1")
            return run.id

    run_id = asyncio.run(start())
    code, err = _run("--database", url, "send", run_id, "go")
    assert code == 1
    assert f"statewf runs trigger {run_id} EVENT" in err
    assert "durable.WorkflowEngine" not in err


def test_a_bad_context_does_not_name_an_instance_that_was_never_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    code, err = _run("--database", url, "--app", APP, "create", "ticket", "--context",
                     '{"nope": 1}')
    assert code == 1
    assert "creating a new instance of 'ticket'" in err
    assert "creating instance '" not in err
    # A chosen id is named: the user typed it.
    code, err = _run("--database", url, "--app", APP, "create", "ticket", "--id", "T-9",
                     "--context", '{"nope": 1}')
    assert "creating instance 'T-9'" in err


def test_an_app_file_imports_its_sibling_modules(tmp_path: Path) -> None:
    """`--app path/flow.py` imports like `python path/flow.py`: the folder is on the path."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "shapes.py").write_text(
        "import statewf\n"
        "door = statewf.Machine('door', initial='closed', states={\n"
        "    'closed': statewf.State(on={'OPEN': 'open'}),\n"
        "    'open': statewf.State(on={'CLOSE': 'closed'})})\n"
    )
    (app_dir / "flow.py").write_text("from shapes import door\n")
    url = f"sqlite:///{tmp_path / 'a.db'}"
    code, err = _run("--database", url, "--app", str(app_dir / "flow.py"), "create", "door",
                     "--id", "d1")
    assert code == 0, err
