"""A run's history as a JSON document: what ``statewf runs export`` writes. Pure.

The document is the run's whole log, row for row as the transitions table holds
it, with a few fields naming the run, so that a test can replay it against new
workflow code (:func:`durable.testing.replay`) without a database::

    {"format": "statewf.run-history", "format_version": 1,
     "run_id": "...", "workflow": "onboard-user", "version": "1", "status": "waiting",
     "rows": [{"seq": 1, "kind": "create", ...}, {"seq": 2, "kind": "step", ...}]}

Each row is a :class:`~statewf.records.TransitionRecord` in its JSON form; the
run's snapshot is the fold of its rows, so nothing else is stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from durable.log.records import RUN_KIND
from statewf.errors import InvalidInput, StatewfError
from statewf.fold import fold
from statewf.records import Instance, TransitionRecord

#: The ``format`` field of an exported history.
FORMAT = "statewf.run-history"


class RunHistory(BaseModel):
    """One run's log with its name: exported by ``statewf runs export``, read by replay."""

    model_config = ConfigDict(frozen=True)

    format: Literal["statewf.run-history"] = "statewf.run-history"
    format_version: Literal[1] = 1
    run_id: str
    workflow: str
    version: str
    status: str
    rows: tuple[TransitionRecord, ...]

    @classmethod
    def of(cls, rows: list[TransitionRecord]) -> RunHistory:
        """The history of the run whose whole log is ``rows``; InvalidInput if it is not a run."""
        snapshot = _fold(rows, "the rows given")
        return cls(
            run_id=snapshot.id,
            workflow=snapshot.machine,
            version=snapshot.machine_version,
            status=snapshot.status,
            rows=tuple(rows),
        )

    def snapshot(self) -> Instance:
        """The run's snapshot: the fold of its rows."""
        return _fold(list(self.rows), f"the history of run {self.run_id!r}")

    def to_json(self) -> str:
        """The document as JSON text (indented, one key order)."""
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "the document") -> RunHistory:
        """Read a document written by :meth:`to_json`; InvalidInput naming what is wrong."""
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{source} is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InvalidInput(
                f"{source} is not a run history (its 'format' is not {FORMAT!r}); write one "
                "with: statewf runs export RUN_ID > FILE.json"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidInput(f"{source}: {where}: {first['msg']}") from None


def load_history(path: str | Path) -> RunHistory:
    """Read an exported run history from a JSON file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read the run history {str(file)!r}: {exc.strerror}") from None
    return RunHistory.from_json(text, source=f"the run history {str(file)!r}")


def _fold(rows: list[TransitionRecord], what: str) -> Instance:
    try:
        snapshot = fold(rows)
    except (StatewfError, KeyError, ValidationError) as exc:
        raise InvalidInput(f"{what} are not a whole log: {exc}") from None
    if snapshot.kind != RUN_KIND:
        raise InvalidInput(f"{what} are the log of machine instance {snapshot.id!r}, not a run")
    return snapshot
