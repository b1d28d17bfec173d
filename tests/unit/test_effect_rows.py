"""Outbox records built from a write's returned ids equal validated records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from statewf.records import EffectRecord
from statewf.store.effects import EffectRows

NOW = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.mark.parametrize("until", [None, NOW + timedelta(seconds=30)])
def test_records_equal_validated_ones(until: datetime | None) -> None:
    rows = EffectRows("order-1", 7, ["notify", "bill"], {"state": "paid"}, NOW, until)
    records = rows.records([(42, 1), (41, 0)])
    expected = [
        EffectRecord.model_validate(
            {
                "id": effect_id,
                "instance_id": "order-1",
                "seq": 7,
                "position": position,
                "name": name,
                "status": "pending",
                "attempts": 1 if until else 0,
                "last_error": None,
                "available_at": until or NOW,
                "created_at": NOW,
                "done_at": None,
            }
        )
        for effect_id, position, name in [(41, 0, "notify"), (42, 1, "bill")]
    ]
    assert records == expected
    assert [repr(r) for r in records] == [repr(r) for r in expected]
    assert [r.model_dump_json() for r in records] == [r.model_dump_json() for r in expected]
    assert [r.model_fields_set for r in records] == [r.model_fields_set for r in expected]
