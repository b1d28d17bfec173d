"""Records read back from the log are the records validation would build, on both stores.

The log reader builds them without validation and shares one fields-set between
them; nothing a caller can do with one record (copy it, dump it) shows that.
"""

from __future__ import annotations

import pydantic
import pytest

import statewf

lamp = statewf.Machine(
    "lamp",
    initial="off",
    states={
        "off": statewf.State(on={"ON": "on"}),
        "on": statewf.State(on={"OFF": "off"}),
    },
)


def test_history_records_equal_validated_records(db: dict[str, str | None]) -> None:
    with statewf.Engine(**db) as engine:  # type: ignore[arg-type]
        engine.register(lamp)
        engine.create("lamp", id="l-1", context={"n": 1})
        for event in ("ON", "OFF", "ON"):
            engine.send("l-1", event, {"by": "me", "x": [1, 2.5]})
        records = engine.history("l-1")
    assert [r.seq for r in records] == [1, 2, 3, 4]
    for record in records:
        validated = statewf.TransitionRecord.model_validate(record.model_dump())
        assert record == validated
        assert repr(record) == repr(validated)
        assert list(record.__dict__) == list(validated.__dict__)
        assert record.model_dump_json() == validated.model_dump_json()
        assert record.model_fields_set == set(statewf.TransitionRecord.model_fields)
        with pytest.raises(pydantic.ValidationError):
            record.seq = 0  # type: ignore[misc]


def test_copying_a_history_record_leaves_the_others_alone(db: dict[str, str | None]) -> None:
    with statewf.Engine(**db) as engine:  # type: ignore[arg-type]
        engine.register(lamp)
        engine.create("lamp", id="l-2")
        engine.send("l-2", "ON")
        first, second = engine.history("l-2")
    everything = set(statewf.TransitionRecord.model_fields)
    copied = first.model_copy(update={"seq": 9})
    copied.model_fields_set.discard("meta")
    deep = second.model_copy(deep=True)
    deep.model_fields_set.clear()
    assert copied.seq == 9
    assert first.seq == 1
    assert first.model_fields_set == everything
    assert second.model_fields_set == everything
