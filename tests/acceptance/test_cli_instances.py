"""``statewf instances migrate`` and ``statewf instances counts`` on both stores.

The app of version 1 creates instances; a deploy replaces it with the app of version
2 (the old code is gone), and the bulk command moves the instances: a dry run first,
which changes nothing, then the real run, which exits non-zero while some instance
could not move and says what to add.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from db_snapshot import dump_tables

from statewf import Engine
from statewf.cli import _load_plugins
from statewf.cli import cli as cli_group
from statewf.fold import fold

V1 = """
import statewf

ORDER = statewf.Machine("order", version="1", initial="placed", states={
    "placed": statewf.State(on={"ship": "shipped", "delay": "late", "lose": "lost"}),
    "late": statewf.State(on={"ship": "shipped"}),
    "lost": statewf.State(on={"ship": "shipped"}),
    "shipped": statewf.State(final=True),
})
"""

V2 = """
import statewf
from pydantic import BaseModel


class Order(BaseModel):
    cents: int


ORDER = statewf.Machine("order", version="2", initial="placed", context=Order, states={
    "placed": statewf.State(on={"ship": "shipped", "delay": "delayed"}),
    "delayed": statewf.State(on={"ship": "shipped"}),
    "shipped": statewf.State(final=True),
})


def upgrade(old):
    return {"cents": round(old.get("total", 0) * 100)}
"""


@pytest.fixture
def setup(db: dict[str, Any], tmp_path: Path) -> Any:
    _load_plugins()
    (tmp_path / "app_v1.py").write_text(V1)
    (tmp_path / "app_v2.py").write_text(V2)
    base = ["--database", str(db["url"])]
    if db["schema"]:
        base += ["--schema", str(db["schema"])]

    def run(app: str, *args: str) -> Result:
        """The command with ``--app`` the app file; ``app_v2.py:upgrade`` names its upgrade."""
        args = tuple(str(tmp_path / a) if a.startswith("app_v") else a for a in args)
        return CliRunner().invoke(cli_group, [*base, "--app", str(tmp_path / app), *args])

    for instance_id, event in [("p1", None), ("p2", None), ("l1", "delay"), ("x1", "lose")]:
        assert run("app_v1.py", "create", "order", "--id", instance_id, "--context", '{"total": 2}')
        if event:
            assert run("app_v1.py", "send", instance_id, event).exit_code == 0
    assert run("app_v2.py", "machines").exit_code == 0  # the deploy: version 2 is stored
    with Engine(**db) as engine:
        yield run, engine


MIGRATE = ["instances", "migrate", "--machine", "order", "--from", "1", "--to", "2"]
#: The same command with every state mapped and the context upgraded.
MAPPED = [
    *MIGRATE,
    "--map",
    "late=delayed",
    "--map",
    "lost=placed",
    "--upgrade",
    "app_v2.py:upgrade",
]


def test_the_dry_run_reports_and_changes_nothing(setup: Any) -> None:
    run, engine = setup
    tables = dump_tables(engine)
    result = run("app_v2.py", *MIGRATE, "--upgrade", "app_v2.py:upgrade", "--dry-run")
    assert result.exit_code == 1, result.output  # two states would not map
    out = result.output
    assert "(dry run: nothing changed)" in out
    assert "2  placed -> placed" in out
    assert "2 instance(s) would move to version 2" in out
    assert "2 instance(s) would not migrate" in out
    assert "in late: its state 'late' is not in version '2'" in out
    assert "ids: l1" in out
    assert "next: add --map late=NEW_STATE" in out
    assert "next: add --map lost=NEW_STATE" in out
    assert "then run again: statewf --app " in out  # with the --app that defines version 2
    assert "app_v2.py instances migrate --machine order --from 1 --to 2" in out
    assert dump_tables(engine) == tables

    mapped = run(
        "app_v2.py",
        *MAPPED,
        "--dry-run",
    )
    assert mapped.exit_code == 0, mapped.output
    assert "1  late -> delayed" in mapped.output
    assert "1  lost -> placed" in mapped.output
    assert "4 instance(s) would move" in mapped.output
    assert "run the same command without --dry-run" in mapped.output
    assert dump_tables(engine) == tables


def test_the_real_run_migrates_what_maps_and_says_what_to_type_next(setup: Any) -> None:
    run, engine = setup
    first = run("app_v2.py", *MIGRATE, "--map", "late=delayed", "--upgrade", "app_v2.py:upgrade")
    assert first.exit_code == 1, first.output
    assert "3 instance(s) moved to version 2" in first.output
    assert "1 instance(s) not migrated" in first.output
    assert "in lost:" in first.output
    assert "ids: x1" in first.output
    assert "next: add --map lost=NEW_STATE" in first.output
    migrated = {i: engine.get(i) for i in ("p1", "p2", "l1")}
    assert {i.machine_version for i in migrated.values()} == {"2"}
    assert migrated["l1"].state == "delayed"
    assert migrated["p1"].context == {"cents": 200}
    assert engine.get("x1").machine_version == "1"
    for instance_id in ("p1", "l1", "x1"):
        assert fold(engine.history(instance_id)) == engine.get(instance_id)

    counts = run("app_v2.py", "instances", "counts", "--machine", "order")
    assert counts.exit_code == 0, counts.output
    assert "1  order@1  lost" in counts.output
    assert "version not registered" in counts.output
    assert "2  order@2  placed" in counts.output

    # the instance left behind cannot take events until it moves
    stuck = run("app_v2.py", "send", "x1", "ship")
    assert stuck.exit_code == 1
    assert "statewf instances migrate --machine order --from 1" in stuck.output

    second = run("app_v2.py", *MIGRATE, "--map", "lost=placed", "--upgrade", "app_v2.py:upgrade")
    assert second.exit_code == 0, second.output
    assert "1  lost -> placed" in second.output
    assert run("app_v2.py", "send", "x1", "ship").exit_code == 0
    history = run("app_v2.py", "history", "x1")
    assert "migrate  version 1 -> 2" in history.output
    assert "lost -> placed" in history.output


def test_mistakes_for_every_instance_stop_before_any_is_touched(setup: Any) -> None:
    run, engine = setup
    tables = dump_tables(engine)
    unknown = run("app_v2.py", *MIGRATE[:-1], "3")
    assert unknown.exit_code == 1
    assert "version '3' is not registered" in unknown.output
    assert "pass --app MODULE naming the module that defines version 3" in unknown.output
    typo = run("app_v2.py", *MIGRATE, "--map", "late=delayd")
    assert typo.exit_code == 1
    assert "maps 'late' to 'delayd'" in typo.output
    assert "correct --map late=delayd" in typo.output
    bad = run("app_v2.py", *MIGRATE, "--map", "late")
    assert bad.exit_code == 2
    assert "is not OLD=NEW" in bad.output
    assert dump_tables(engine) == tables


def test_the_report_as_json(setup: Any) -> None:
    run, _ = setup

    result = run(
        "app_v2.py",
        *MAPPED,
        "--dry-run",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["dry_run"] is True
    assert report["migrated"] == 4
    assert report["failures"] == []
    assert {"from_state": "late", "to_state": "delayed", "count": 1} in report["moves"]
