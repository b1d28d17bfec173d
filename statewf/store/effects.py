"""The outbox queries: effects recorded with a transition, claimed, finished, listed.

Mixed into :class:`~statewf.store.sql.Tx`; like every query, they run inside the
caller's transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    Integer,
    Text,
    Update,
    bindparam,
    case,
    cast,
    func,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from statewf.records import EffectRecord
from statewf.store.prebuilt import statements
from statewf.store.schema import Tables


def version_filter(c: Any, versions: Sequence[tuple[str, str]]) -> Any:
    """Rows of these (machine, version) pairs only."""
    return tuple_(c.machine, c.machine_version).in_([tuple(v) for v in versions])


@functools.lru_cache(maxsize=64)
def finish_effects(tables: Tables) -> Update:
    """Several attempts' outcomes in one PostgreSQL statement (``o_`` arrays, one entry
    per attempt), each with the effect of its ``finish_effect`` statement: ``done``
    and ``dead`` set the status, ``done_at`` and ``last_error``; ``retry`` sets
    ``available_at`` and ``last_error``; an attempt a later one superseded matches none
    (and a success reported late still wins over a "presumed dead" mark).
    """
    e = tables.effects.c
    o = (
        func.unnest(
            cast(bindparam("o_ids"), ARRAY(BigInteger)),
            cast(bindparam("o_attempts"), ARRAY(Integer)),
            cast(bindparam("o_kinds"), ARRAY(Text)),
            cast(bindparam("o_ats"), ARRAY(DateTime(timezone=True))),
            cast(bindparam("o_errors"), ARRAY(Text)),
        )
        .table_valued("id", "attempt", "kind", "at", "error")
        .render_derived()
        .alias("o")
    )
    retry = o.c.kind == "retry"
    return (
        update(tables.effects)
        .where(e.id == o.c.id, e.attempts == o.c.attempt, e.status != "done")
        .values(
            status=case((retry, e.status), else_=o.c.kind),
            done_at=case((retry, e.done_at), else_=o.c.at),
            available_at=case((retry, o.c.at), else_=e.available_at),
            last_error=o.c.error,
        )
        .returning(e.id)
    )


@dataclass(frozen=True)
class EffectRows:
    """The outbox rows a transition records: one per name, in order, sharing ``args``.

    With ``until`` they are written already claimed (attempt 1, leased until
    then) by the process that runs them right after the commit.
    """

    instance_id: str
    seq: int
    names: Sequence[str]
    args: dict[str, Any]
    now: datetime
    until: datetime | None = None

    @property
    def claimed(self) -> bool:
        """Whether the rows are written claimed by the process that records them."""
        return self.until is not None

    def rows(self) -> list[dict[str, Any]]:
        """The rows, as column values."""
        claimed = self.claimed
        return [
            {
                "instance_id": self.instance_id,
                "seq": self.seq,
                "position": i,
                "name": name,
                "args": self.args,
                "status": "pending",
                "attempts": 1 if claimed else 0,
                "available_at": self.until if claimed else self.now,
                "created_at": self.now,
            }
            for i, name in enumerate(self.names)
        ]

    def params(self) -> dict[str, Any]:
        """The ``e_*`` parameters of the one-statement write (see ``prebuilt``)."""
        claimed = self.claimed
        return {
            "e_instance_id": self.instance_id,
            "e_names": list(self.names),
            "e_args": self.args,
            "e_attempts": 1 if claimed else 0,
            "e_available_at": self.until if claimed else self.now,
            "e_created_at": self.now,
        }

    def records(self, ids: Sequence[tuple[int, int]]) -> list[EffectRecord]:
        """The records of the written rows, given their (id, position).

        Built without validation: every value is this module's own, of its field's
        type (tests/unit/test_effect_rows.py holds them equal to validated records).
        """
        by_position = {position: effect_id for effect_id, position in ids}
        return [
            EffectRecord.model_construct(
                id=by_position[row["position"]],
                last_error=None,
                done_at=None,
                **{k: v for k, v in row.items() if k != "args"},
            )
            for row in self.rows()
        ]


@dataclass(frozen=True)
class EffectOutcome:
    """One attempt's outcome: ``done`` or ``dead`` at ``at``, or ``retry`` from ``at``."""

    effect_id: int
    attempt: int
    kind: str
    at: datetime
    error: str | None = None


class OutboxQueries:
    """Queries on the outbox table."""

    conn: Connection
    t: Tables

    def add_effects(
        self,
        instance_id: str,
        seq: int,
        names: Sequence[str],
        args: dict[str, Any],
        now: datetime,
        *,
        claimed_until: datetime | None = None,
    ) -> list[EffectRecord]:
        """Record effects for a transition, in the transition's own database transaction.

        With ``claimed_until`` the rows are written already claimed (attempt 1, leased
        until then) by the process that will run them right after the commit, which
        saves a claim transaction; if that process dies, the lease runs out and any
        dispatcher takes them.
        """
        if not names:
            return []
        effects = EffectRows(instance_id, seq, names, args, now, claimed_until)
        ids = self.conn.execute(statements(self.t).add_effects, effects.rows()).all()
        return effects.records([(int(i), int(p)) for i, p in ids])

    def claim_effects(
        self,
        now: datetime,
        lease_until: datetime,
        *,
        limit: int,
        versions: Sequence[tuple[str, str]],
        max_attempts: int,
        instance_id: str | None = None,
        seq: int | None = None,
    ) -> list[tuple[EffectRecord, dict[str, Any]]]:
        """Claim due pending effects (SKIP LOCKED on PostgreSQL) until ``lease_until``.

        Only effects of instances of the given (machine, version) pairs are claimed.
        An effect whose attempts are used up (its last dispatcher died mid-run) is
        marked dead here instead of being claimed again.
        """
        c = self.t.effects.c
        owners = select(self.t.instances.c.id).where(version_filter(self.t.instances.c, versions))
        query = select(self.t.effects).where(
            c.status == "pending", c.available_at <= now, c.instance_id.in_(owners)
        )
        if instance_id is not None:
            query = query.where(c.instance_id == instance_id)
        if seq is not None:
            query = query.where(c.seq == seq)
        query = query.order_by(c.id).limit(limit).with_for_update(skip_locked=True)
        claimed = []
        for row in self.conn.execute(query).all():
            if row.attempts >= max_attempts:
                self.conn.execute(
                    update(self.t.effects)
                    .where(c.id == row.id)
                    .values(
                        status="dead",
                        done_at=now,
                        last_error=row.last_error
                        or "attempts used up (a dispatcher died while running it)",
                    )
                )
                continue
            self.conn.execute(
                update(self.t.effects)
                .where(c.id == row.id)
                .values(available_at=lease_until, attempts=c.attempts + 1)
            )
            m = dict(row._mapping)
            args = m.pop("args")
            m["attempts"] += 1
            m["available_at"] = lease_until
            claimed.append((EffectRecord(**m), args))
        return claimed

    def finish_effect(
        self,
        effect_id: int,
        *,
        attempt: int,
        now: datetime,
        error: str | None,
        retry_at: datetime | None,
        give_up: bool,
    ) -> bool:
        """Record the outcome of attempt ``attempt``; False if a later attempt owns it."""
        params: dict[str, Any] = {"f_id": effect_id, "f_attempt": attempt, "f_error": error}
        if error is None:
            outcome, params = "done", {"f_id": effect_id, "f_attempt": attempt, "f_now": now}
        elif give_up:
            outcome, params["f_now"] = "dead", now
        else:
            outcome, params["f_retry_at"] = "retry", retry_at
        result = self.conn.execute(statements(self.t).finish_effect[outcome], params)
        return result.first() is not None

    def finish_effects(self, outcomes: Sequence[EffectOutcome]) -> set[int]:
        """Record several attempts' outcomes at once; the ids whose outcome was written
        (an attempt a later one superseded is left out). PostgreSQL: one statement."""
        if not outcomes:
            return set()
        if self.conn.dialect.name == "postgresql":
            params = {
                "o_ids": [o.effect_id for o in outcomes],
                "o_attempts": [o.attempt for o in outcomes],
                "o_kinds": [o.kind for o in outcomes],
                "o_ats": [o.at for o in outcomes],
                "o_errors": [o.error for o in outcomes],
            }
            found = self.conn.execute(finish_effects(self.t), params).all()
            return {int(effect_id) for (effect_id,) in found}
        written = set()
        for o in outcomes:
            retry = o.kind == "retry"
            if self.finish_effect(
                o.effect_id,
                attempt=o.attempt,
                now=o.at,
                error=o.error,
                retry_at=o.at if retry else None,
                give_up=o.kind == "dead",
            ):
                written.add(o.effect_id)
        return written

    def list_effects(
        self, *, status: str | None = None, instance_id: str | None = None, limit: int = 100
    ) -> list[EffectRecord]:
        """Outbox rows, oldest first."""
        c = self.t.effects.c
        query = select(*[col for col in self.t.effects.c if col.name != "args"])
        if status is not None:
            query = query.where(c.status == status)
        if instance_id is not None:
            query = query.where(c.instance_id == instance_id)
        rows = self.conn.execute(query.order_by(c.id).limit(limit))
        return [EffectRecord(**dict(r._mapping)) for r in rows]
