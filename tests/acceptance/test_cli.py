"""The ``statewf`` command line on a SQLite file.

The main journey runs the real entry point in subprocesses, as a user runs it
(``python -m statewf.cli``); the wider matrix of error cases goes through click's
runner in-process, on the same kind of database, to keep the suite fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from statewf.cli import cli as cli_group

APP = str(Path(__file__).resolve().parent / "cli_app.py")


class Cli:
    """Runs ``python -m statewf.cli --database ... --app ...`` in a temp directory."""

    def __init__(self, tmp_path: Path) -> None:
        self.cwd = tmp_path
        self.url = f"sqlite:///{tmp_path / 'cli.db'}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STATEWF_")}

    def argv(self, *args: str, app: bool = True) -> list[str]:
        options = ["--database", self.url, *(["--app", APP] if app else [])]
        return [sys.executable, "-m", "statewf.cli", *options, *args]

    def run_all(self, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
        """Run independent commands in parallel subprocesses; their results in order."""
        procs = [
            subprocess.Popen(
                self.argv(*args),
                cwd=self.cwd,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for args in commands
        ]
        results = []
        for args, proc in zip(commands, procs, strict=True):
            out, err = proc.communicate(timeout=60)
            results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
        return results

    def __call__(self, *args: str, app: bool = True) -> str:
        """Run one command that must succeed; its stdout."""
        result = subprocess.run(
            self.argv(*args, app=app),
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
        return result.stdout

    def inproc(self, *args: str) -> Result:
        """The same command through click's runner, in this process."""
        return CliRunner().invoke(cli_group, ["--database", self.url, "--app", APP, *args])


def fields(show_output: str) -> dict[str, str]:
    """The ``name  value`` lines of ``statewf show`` as a dict."""
    out = {}
    for line in show_output.splitlines():
        key, _, value = line.partition(" ")
        out[key] = value.strip()
    return out


def ok(result: Result | subprocess.CompletedProcess[str]) -> str:
    code = result.exit_code if isinstance(result, Result) else result.returncode
    assert code == 0, (result.stdout, result.stderr)
    return result.stdout


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def test_a_ticket_through_the_cli(cli: Cli) -> None:
    assert cli("migrate", app=False).strip() == "applied migrations [1, 2, 3, 4, 5, 6, 7, 8]"
    created = fields(cli("create", "ticket", "--id", "T-1", "--context", '{"title": "Printer"}'))
    assert created["instance"] == "T-1"
    assert created["machine"] == "ticket (version 1)"
    assert created["state"].split() == ["open", "status", "active", "version", "1"]
    assert created["allowed"] == "APPROVE, CLOSE, ESCALATE"
    assert json.loads(created["context"]) == {"title": "Printer", "approvals": 0}
    approved = fields(cli("send", "T-1", "APPROVE", "--data", '{"by": "ana"}'))
    assert json.loads(approved["context"])["approvals"] == 1
    assert approved["state"].split()[0] == "open"

    ok(cli.inproc("send", "T-1", "CLOSE"))
    ok(cli.inproc("create", "ticket", "--id", "T-2", "--context", '{"title": "Desk"}'))
    ok(cli.inproc("send", "T-2", "ESCALATE"))  # accepted although its effect fails

    show, history, listing, effects, ghost, bad_app, bad_url = cli.run_all(
        ("show", "T-1", "--json"),
        ("history", "T-1"),
        ("list", "--machine", "ticket"),
        ("effects", "list"),
        ("show", "ghost"),
        ("--app", "no_such_module_xyz", "list"),
        ("--database", "nosuchdriver://x/y", "list"),
    )
    history_json = cli.inproc("history", "T-1", "--json")
    past = cli.inproc("state-at", "T-1", "1")
    migrate_again = cli.inproc("migrate")
    shown = json.loads(ok(show))
    assert shown["id"] == "T-1"
    assert (shown["state"], shown["status"], shown["version"]) == ("closed", "final", 3)
    assert shown["context"] == {"title": "Printer", "approvals": 1}
    assert shown["allowed_events"] == []

    lines = ok(history).splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]
    assert "create" in lines[0]
    assert "APPROVE" in lines[1]
    assert "open -> open" in lines[1]
    assert "CLOSE" in lines[2]
    assert "open -> closed" in lines[2]
    assert "[final]" in lines[2]
    records = json.loads(ok(history_json))
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert records[1]["payload"] == {"by": "ana"}
    assert records[1]["context_set"] == {"approvals": 1}

    then = fields(ok(past))
    assert then["state"].split()[0] == "open"
    assert json.loads(then["context"]) == {"title": "Printer", "approvals": 0}

    assert [line.split()[:4] for line in ok(listing).splitlines()] == [
        ["T-1", "ticket@1", "closed", "final"],
        ["T-2", "ticket@1", "escalated", "active"],
    ]

    (row,) = ok(effects).splitlines()
    assert "T-2:2:0" in row
    assert "page_oncall" in row
    assert "pending" in row
    assert "attempts=1" in row
    assert "last error: RuntimeError: pager is down" in row

    assert ok(migrate_again).strip() == "schema is up to date"

    for result, message in [
        (ghost, "InstanceNotFound: no instance 'ghost'"),
        (bad_app, "cannot import app 'no_such_module_xyz'"),
        (bad_url, "InvalidInput: cannot use database URL"),
    ]:
        assert result.returncode == 1, (result.args, result.stderr)
        assert result.stdout == ""
        assert result.stderr.startswith(f"Error: {message}"), result.stderr
        assert result.stderr.count("\n") == 1, result.stderr


def test_rejections_are_one_line_and_change_nothing(cli: Cli) -> None:
    ok(cli.inproc("create", "ticket", "--id", "T-3", "--context", '{"title": "Chair"}'))
    before = ok(cli.inproc("history", "T-3", "--json"))
    cases = [
        (("send", "T-3", "NOPE"), "UnknownEvent: event 'NOPE' rejected"),
        (("send", "T-3", "CLOSE"), "GuardRejected: event 'CLOSE' rejected"),
        (("send", "T-3", "APPROVE", "--data", '{"who": 1}'), "InvalidPayload: event 'APPROVE'"),
        (("send", "T-3", "CLOSE", "--resource", "x"), "InstanceNotFound: no instance 'T-3' for"),
        (("create", "ticket", "--context", '{"nope": 1}'), "InvalidInput: context is not a valid"),
        (
            ("create", "ticket", "--id", "T-3", "--context", '{"title": "x"}'),
            "DuplicateInstance: an instance with id 'T-3'",
        ),
        (("create", "no-such-machine"), "MachineNotRegistered: machine 'no-such-machine'"),
        (("create", "ticket", "--context", "[1, 2]"), "InvalidInput: context must be a JSON"),
        (("state-at", "T-3", "9"), "InvalidInput: seq must be between 1 and 1"),
        (("list", "--cursor", "garbage"), "InvalidInput: cursor 'garbage' is not valid"),
        (("history", "ghost"), "InstanceNotFound: no instance 'ghost'"),
    ]
    for args, message in cases:
        result = cli.inproc(*args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stdout == ""
        assert result.stderr.startswith(f"Error: {message}"), (args, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert ok(cli.inproc("history", "T-3", "--json")) == before
    assert len(ok(cli.inproc("list")).splitlines()) == 1


def test_bad_json_options_name_the_option(cli: Cli) -> None:
    for args, option in [
        (("send", "T-1", "APPROVE", "--data", "{not json"), "--data"),
        (("create", "ticket", "--context", "[1,"), "--context"),
    ]:
        result = cli.inproc(*args)
        assert result.exit_code != 0
        assert f"{option} is not valid JSON" in result.stderr
        assert not isinstance(result.exception, Exception) or isinstance(
            result.exception, SystemExit
        )


def test_list_pages_and_filters(cli: Cli) -> None:
    for n, resource in [(1, "acme"), (2, "acme"), (3, "globex")]:
        ok(
            cli.inproc(
                "create",
                "ticket",
                "--id",
                f"L-{n}",
                "--context",
                '{"title": "t"}',
                "--resource",
                resource,
            )
        )
    ok(cli.inproc("send", "L-2", "ESCALATE"))
    assert [
        line.split()[0] for line in ok(cli.inproc("list", "--resource", "acme")).splitlines()
    ] == [
        "L-1",
        "L-2",
    ]
    assert ok(cli.inproc("list", "--state", "escalated")).split()[0] == "L-2"
    assert ok(cli.inproc("list", "--status", "final")) == ""
    seen = []
    args: tuple[str, ...] = ("list", "--limit", "2")
    while True:
        lines = ok(cli.inproc(*args)).splitlines()
        if lines[-1].startswith("next page: --cursor "):
            seen += [line.split()[0] for line in lines[:-1]]
            args = ("list", "--limit", "2", "--cursor", lines[-1].split("--cursor ")[1])
        else:
            seen += [line.split()[0] for line in lines]
            break
    assert seen == ["L-1", "L-2", "L-3"]


def test_database_and_app_from_the_environment(tmp_path: Path) -> None:
    env = {
        "STATEWF_DATABASE_URL": f"sqlite:///{tmp_path / 'env.db'}",
        "STATEWF_APP": APP,
    }
    result = CliRunner(env=env).invoke(
        cli_group, ["create", "ticket", "--context", '{"title": "x"}']
    )
    assert fields(ok(result))["machine"] == "ticket (version 1)"
    assert (tmp_path / "env.db").exists()


def test_machines_dispatch_and_show_without_app(cli: Cli) -> None:
    ok(cli.inproc("create", "ticket", "--id", "M-1", "--context", '{"title": "t"}'))
    ok(cli.inproc("send", "M-1", "ESCALATE"))
    machines = ok(cli.inproc("machines")).splitlines()
    assert machines == ["ticket@1  initial=open  states=3  final=closed"]
    # the failed effect is backing off: nothing is due yet
    assert ok(cli.inproc("effects", "dispatch")).strip() == "dispatched 0 effect(s)"
    assert "pending" in ok(cli.inproc("effects", "list", "--status", "pending"))
    assert ok(cli.inproc("effects", "list", "--status", "done")) == ""
    bare = CliRunner().invoke(cli_group, ["--database", cli.url, "show", "M-1"])
    shown = ok(bare)
    assert fields(shown)["state"].split()[0] == "escalated"
    assert "(pass --app to see allowed events)" in shown
