"""Tenant scoping: every public operation on one instance or run, with the wrong tenant.

An instance and a run belong to ``acme``. Every operation of the API (``statewf``,
``durable``, ``visualize``) and of the CLI that names one instance or run is called
with ``resource_id="globex"``: each raises ``InstanceNotFound`` (the CLI: a one-line
error, exit status 1), and every table stays byte-identical. A new operation that
takes an instance or run id without a ``resource_id`` fails the first test.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from db_snapshot import dump_tables

import durable
import statewf
import visualize
from statewf.cli import _load_plugins
from statewf.cli import cli as cli_group
from tests.acceptance.test_cli import APP

WRONG = "globex"
FLOW = durable.ref("scoped-flow")


def test_every_operation_on_one_instance_or_run_takes_a_resource_id() -> None:
    missing = []
    for owner in (statewf.Engine, durable.WorkflowEngine, durable.Client):
        for name, fn in inspect.getmembers(owner, inspect.isfunction):
            params = list(inspect.signature(fn).parameters)
            if name.startswith("_") or params[1:2] not in (["instance_id"], ["run_id"]):
                continue
            if "resource_id" not in params:
                missing.append(f"{owner.__name__}.{name}")
    for name in visualize.__all__:
        fn = getattr(visualize, name)
        if inspect.isfunction(fn):
            params = list(inspect.signature(fn).parameters)
            if params[1:2] in (["instance_id"], ["run_id"]) and "resource_id" not in params:
                missing.append(f"visualize.{name}")
    assert missing == []


@pytest.fixture
def owned(tmp_path: Path) -> tuple[str, str, str]:
    """A SQLite file with a ticket instance and a workflow run of tenant ``acme``."""
    url = f"sqlite:///{tmp_path / 'scope.db'}"
    app = statewf.Engine(url)
    import importlib.util

    spec = importlib.util.spec_from_file_location("cli_app_scope", APP)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app.register(module.ticket)
    instance = app.create("ticket", context={"title": "Printer"}, resource_id="acme")
    app.send(instance.id, "APPROVE", {"by": "ana"}, resource_id="acme")
    app.close()

    async def start() -> str:
        async with durable.Client(url) as client:
            return (await client.start_workflow(FLOW, None, resource_id="acme")).id

    return url, instance.id, asyncio.run(start())


def api_calls(instance_id: str, run_id: str) -> dict[str, Callable[[statewf.Engine], Any]]:
    """Every operation of the statewf engine and of visualize on one instance or run."""
    r = {"resource_id": WRONG}
    return {
        "get": lambda e: e.get(instance_id, **r),
        "send": lambda e: e.send(instance_id, "APPROVE", {"by": "x"}, **r),
        "history": lambda e: e.history(instance_id, **r),
        "allowed_events": lambda e: e.allowed_events(instance_id, **r),
        "state_at": lambda e: e.state_at(instance_id, 1, **r),
        "replay": lambda e: e.replay(instance_id, **r),
        "effects": lambda e: e.effects(instance_id=instance_id, **r),
        "instance_diagram": lambda e: visualize.instance_diagram(e, instance_id, **r),
        "history_diagram": lambda e: visualize.history_diagram(e, instance_id, **r),
        "run_diagram": lambda e: visualize.run_diagram(e, run_id, **r),
        "get run as instance": lambda e: e.get(run_id, **r),
    }


def client_calls(run_id: str) -> dict[str, Callable[[durable.Client], Any]]:
    """Every operation of the durable client on one run."""
    r = {"resource_id": WRONG}
    return {
        "get_run": lambda c: c.get_run(run_id, **r),
        "check_progress": lambda c: c.check_progress(run_id, **r),
        "get_timeline": lambda c: c.get_timeline(run_id, **r),
        "result": lambda c: c.result(run_id, timeout=1, **r),
        "wait_for_run": lambda c: c.wait_for_run(run_id, timeout=1, **r),
        "trigger_event": lambda c: c.trigger_event(run_id, "go", {"a": 1}, **r),
        "cancel_workflow": lambda c: c.cancel_workflow(run_id, **r),
        "pause_workflow": lambda c: c.pause_workflow(run_id, **r),
        "resume_workflow": lambda c: c.resume_workflow(run_id, **r),
        "fast_forward_workflow": lambda c: c.fast_forward_workflow(run_id, {"a": 1}, **r),
        "fork_run": lambda c: c.fork_run(run_id, from_step="a", **r),
        "retry_run": lambda c: c.retry_run(run_id, **r),
        "discard_run": lambda c: c.discard_run(run_id, reason="x", **r),
        "approve": lambda c: c.approve(run_id, reviewer="x", **r),
        "reject": lambda c: c.reject(run_id, reviewer="x", reason="x", **r),
    }


def test_the_api_refuses_every_operation_for_another_tenant(owned: tuple[str, str, str]) -> None:
    url, instance_id, run_id = owned
    engine = statewf.Engine(url)
    before = dump_tables(engine)
    for name, call in api_calls(instance_id, run_id).items():
        with pytest.raises(statewf.InstanceNotFound):
            call(engine)
        assert dump_tables(engine) == before, name

    async def client_side() -> None:
        async with durable.Client(url) as client:
            for name, call in client_calls(run_id).items():
                with pytest.raises(statewf.InstanceNotFound):
                    await call(client)
                assert dump_tables(engine) == before, name

    asyncio.run(client_side())
    engine.close()


def cli_commands(instance_id: str, run_id: str) -> list[list[str]]:
    """Every CLI command on one instance or run, scoped to the wrong tenant."""
    r = ["--resource", WRONG]
    return [
        ["show", instance_id, *r],
        ["history", instance_id, *r],
        ["state-at", instance_id, "1", *r],
        ["send", instance_id, "APPROVE", "--data", '{"by": "x"}', *r],
        ["effects", "list", "--instance", instance_id, *r],
        ["diagram", "--instance", instance_id, *r],
        ["diagram", "--history", instance_id, *r],
        ["diagram", "--run", run_id, *r],
        ["runs", "show", run_id, *r],
        ["runs", "cancel", run_id, *r],
        ["runs", "trigger", run_id, "go", "--data", "{}", *r],
        ["runs", "pause", run_id, *r],
        ["runs", "resume", run_id, *r],
        ["runs", "fast-forward", run_id, *r],
        ["runs", "fork", run_id, "--from-step", "a", *r],
        ["runs", "dlq", "show", run_id, *r],
        ["runs", "dlq", "retry", run_id, *r],
        ["runs", "dlq", "discard", run_id, "--reason", "x", *r],
        ["approve", run_id, "--reviewer", "x", *r],
        ["reject", run_id, "--reviewer", "x", "--reason", "x", *r],
    ]


def test_the_cli_refuses_every_command_for_another_tenant(owned: tuple[str, str, str]) -> None:
    url, instance_id, run_id = owned
    _load_plugins()  # what the console script does first: diagram, runs, approve, ...
    engine = statewf.Engine(url)
    before = dump_tables(engine)
    for args in cli_commands(instance_id, run_id):
        result = CliRunner().invoke(cli_group, ["--database", url, "--app", APP, *args])
        text = (result.stdout + (result.stderr or "")).strip()
        assert result.exit_code == 1, (args, text)
        assert "NotFound" in text, (args, text)
        assert len(text.splitlines()) == 1, (args, text)
        assert dump_tables(engine) == before, args
    engine.close()
