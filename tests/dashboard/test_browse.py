"""statewf.browse: newest-first keyset pages give every matching instance once, in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import statewf
from statewf import browse
from statewf.records import state_label

CONFIGURATIONS = [("idle",), ("shipping.packing",), ("shipping.sent", "billing.open"), ("ship",)]
RESOURCES = ["r1", "r2", None]
T0 = datetime(2026, 1, 1, tzinfo=UTC)

rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(["m1", "m2"]),
        st.sampled_from(CONFIGURATIONS),
        st.sampled_from(RESOURCES),
        st.integers(0, 5),  # few distinct times: ties are broken by id
        st.sampled_from(["active", "final"]),
    ),
    max_size=25,
)


def _insert(engine: statewf.Engine, rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    table = engine.store.tables.instances
    values = [
        {
            "id": f"i{n:03d}",
            "machine": machine,
            "machine_version": "1",
            "kind": "machine",
            "state": state_label(config),
            "configuration": list(config),
            "context": {},
            "status": status,
            "version": 1,
            "resource_id": resource,
            "created_at": T0 + timedelta(seconds=second),
            "updated_at": T0,
        }
        for n, (machine, config, resource, second, status) in enumerate(rows)
    ]
    with engine.store.engine.begin() as conn:
        conn.execute(sa.delete(table))
        if values:
            conn.execute(sa.insert(table), values)
    return values


def _in_state(config: list[str], path: str) -> bool:
    return any(p == path or p.startswith(f"{path}.") for p in config)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = Path(tmp_path_factory.mktemp("browse")) / "browse.db"
    made = statewf.Engine(f"sqlite:///{path}")
    yield made
    made.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=rows_strategy,
    limit=st.integers(1, 7),
    machine=st.sampled_from([None, "m1"]),
    state=st.sampled_from([None, "shipping", "ship", "billing.open", "idle"]),
    scope=st.sampled_from([None, {"r1"}, {"r1", "r2"}, set()]),
    status=st.sampled_from([None, "final"]),
)
def test_walking_the_pages_gives_every_match_once_newest_first(
    engine: statewf.Engine,
    rows: list[tuple[Any, ...]],
    limit: int,
    machine: str | None,
    state: str | None,
    scope: set[str] | None,
    status: str | None,
) -> None:
    values = _insert(engine, rows)
    expected = [
        v["id"]
        for v in sorted(values, key=lambda v: (v["created_at"], v["id"]), reverse=True)
        if (machine is None or v["machine"] == machine)
        and (state is None or _in_state(v["configuration"], state))
        and (scope is None or v["resource_id"] in scope)
        and (status is None or v["status"] == status)
    ]
    seen: list[str] = []
    cursor = None
    for _ in range(len(values) + 2):
        page = browse.newest(
            engine,
            machine=machine,
            state=state,
            resource_ids=scope,
            status=status,
            limit=limit,
            cursor=cursor,
        )
        assert len(page.items) <= limit
        seen += [i.id for i in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected


def test_counts_by_status_and_tenant(engine: statewf.Engine) -> None:
    _insert(
        engine,
        [
            ("m1", ("idle",), "r1", 0, "active"),
            ("m1", ("idle",), "r2", 1, "active"),
            ("m2", ("idle",), "r1", 2, "final"),
        ],
    )
    everyone = {(c.machine, c.status): c.count for c in browse.status_counts(engine)}
    assert everyone == {("m1", "active"): 2, ("m2", "final"): 1}
    one = {
        (c.machine, c.status): c.count for c in browse.status_counts(engine, resource_ids={"r2"})
    }
    assert one == {("m1", "active"): 1}
    assert browse.status_counts(engine, resource_ids=set()) == []


def test_bad_filters_are_refused_with_the_name_of_the_filter(engine: statewf.Engine) -> None:
    with pytest.raises(statewf.InvalidInput, match="limit must be between 1 and 1000"):
        browse.newest(engine, limit=0)
    with pytest.raises(statewf.InvalidInput, match="filter state"):
        browse.newest(engine, state="a\x00b")
    with pytest.raises(statewf.InvalidInput, match="created_after must be a timezone-aware"):
        browse.newest(engine, created_after=datetime(2026, 1, 1))
