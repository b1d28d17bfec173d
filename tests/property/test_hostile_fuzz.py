"""Fuzzing the public API and the CLI with hostile values, on SQLite and PostgreSQL.

Ids, event names, tenants, contexts, payloads, workflow inputs, event data and machine
specs are drawn from strategies that mix ordinary values with what breaks stores and
parsers: NUL characters, lone surrogates, NaN and ±Infinity, huge integers, very long
strings, deep nesting, look-alike keys. Every call either succeeds and reads back
exactly what was written, or raises a ``StatewfError`` subclass (the CLI: a short
error and exit status 1 or 2) and leaves every table byte-identical.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sample_machines as sm
from click.testing import CliRunner
from db_snapshot import dump_tables
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durable
import statewf
from statewf.cli import cli as cli_group

FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: text with NULs, lone surrogates, controls and look-alikes mixed in
hostile_text = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec=None, categories=None), max_size=12),
    st.sampled_from(["\x00", "a\x00b", "\ud800", "", " ", "é", "ｉｄ", "x" * 300, "😀" * 70]),
)
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, hostile_text)


def nest(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"k": [value]}
    return value


class Deep:
    """A value nested ``n`` deep, built only inside the test (short to print)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"nest({self.n})"


def real(value: Any) -> Any:
    """The value a drawn one stands for (a :class:`Deep` at the top or one level down)."""
    if isinstance(value, Deep):
        return nest(value.n)
    if isinstance(value, dict):
        return {k: real(v) if isinstance(v, Deep) else v for k, v in value.items()}
    return value


json_values = st.one_of(
    st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)
        ),
        max_leaves=12,
    ),
    st.sampled_from([60, 120, 3000]).map(Deep),
)
objects = st.dictionaries(hostile_text, json_values, max_size=4)


def numbers_exact(value: Any) -> Any:
    """``value`` with every number as the exact decimal its JSON text names.

    PostgreSQL's JSONB keeps numbers as decimals, not as ints and floats: 1e17 comes
    back as the int 100000000000000000. The value is the same; its Python type is not.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: numbers_exact(v) for k, v in value.items()}
    return [numbers_exact(v) for v in value]


def same_json(value: Any) -> Any:
    """What reading ``value`` back must give: its JSON round trip, numbers exact."""
    return numbers_exact(json.loads(json.dumps(value, allow_nan=False)))


def attempt(engine: statewf.Engine, call: Any) -> Any:
    """``call()``; on a StatewfError, check that no table changed. The result or None."""
    before = dump_tables(engine)
    try:
        return call()
    except statewf.StatewfError:
        assert dump_tables(engine) == before
        return None


@pytest.fixture
def machines(db: dict[str, str | None]) -> Any:
    engine = statewf.Engine(db["url"], schema=db["schema"])
    engine.register(sm.counter_machine())
    yield engine
    engine.close()


@FUZZ
@given(
    instance_id=st.one_of(st.none(), hostile_text),
    context=objects,
    tenant=st.one_of(st.none(), hostile_text),
    event=st.one_of(st.just("INC"), st.just("FLIP"), hostile_text),
    payload=json_values,
    scope=st.one_of(st.none(), hostile_text),
)
def test_machines_take_hostile_values_or_refuse_them_cleanly(
    machines: statewf.Engine,
    instance_id: str | None,
    context: dict[str, Any],
    tenant: str | None,
    event: str,
    payload: Any,
    scope: str | None,
) -> None:
    context, payload = {**real(context), "n": 0, "moves": 0}, real(payload)
    unique = None if instance_id is None else f"{instance_id}-{uuid.uuid4().hex[:6]}"
    created = attempt(
        machines,
        lambda: machines.create("counter", id=unique, context=context, resource_id=tenant),
    )
    if created is None:
        return
    got = machines.get(created.id, resource_id=tenant)
    assert numbers_exact(got.context) == same_json(context)
    assert got.resource_id == tenant
    sent = attempt(machines, lambda: machines.send(created.id, event, payload, resource_id=scope))
    if sent is not None:
        last = machines.history(created.id)[-1]
        assert last.event == event
        assert numbers_exact(last.payload) == same_json(payload)
        now = machines.get(created.id)
        assert (now.version, now.state) == (sent.version, sent.state)
        assert numbers_exact(now.context) == numbers_exact(sent.context)


@FUZZ
@given(
    run_id=st.one_of(st.none(), hostile_text),
    data=json_values,
    tenant=st.one_of(st.none(), hostile_text),
    event=hostile_text,
    event_data=json_values,
)
def test_workflow_clients_take_hostile_values_or_refuse_them_cleanly(
    machines: statewf.Engine,
    run_id: str | None,
    data: Any,
    tenant: str | None,
    event: str,
    event_data: Any,
) -> None:
    ref = durable.ref("fuzzed")
    data, event_data = real(data), real(event_data)
    unique = None if run_id is None else f"{run_id}-{uuid.uuid4().hex[:6]}"

    async def main() -> None:
        async with durable.Client(machines) as client:
            before = dump_tables(machines)
            try:
                run = await client.start_workflow(ref, data, run_id=unique, resource_id=tenant)
            except statewf.StatewfError:
                assert dump_tables(machines) == before
                return
            stored = await client.get_run(run.id, resource_id=tenant)
            assert numbers_exact(stored.input) == same_json(data)
            before = dump_tables(machines)
            try:
                await client.trigger_event(run.id, event, event_data, resource_id=tenant)
            except statewf.StatewfError:
                assert dump_tables(machines) == before
                return
            last = machines.history(run.id)[-1]
            assert last.event == event
            assert numbers_exact(last.payload) == same_json(event_data)

    asyncio.run(main())


spec_values = st.recursive(
    st.one_of(scalars, st.sampled_from(["a", "b", "idle", "on"])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(st.sampled_from(["name", "initial", "states", "on", "a", "b"]), hostile_text),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=15,
)


@settings(max_examples=60, deadline=None)
@given(
    spec=st.one_of(
        spec_values,
        st.fixed_dictionaries(
            {"name": hostile_text, "initial": hostile_text, "states": spec_values}
        ),
        st.sampled_from([60, 3000]).map(Deep),
    )
)
def test_load_machine_on_hostile_specs_gives_a_machine_or_a_spec_error(spec: Any) -> None:
    if isinstance(spec, Deep):
        spec = {"name": "m", "initial": "a", "states": nest(spec.n)}
    try:
        machine = statewf.load_machine(spec) if isinstance(spec, dict) else None
    except statewf.SpecError:
        return
    if machine is not None:
        assert isinstance(machine, statewf.Machine)


@pytest.fixture
def cli_engine(sqlite_url: str) -> Any:
    """An engine on a SQLite file the CLI opens too (the CLI takes a URL)."""
    engine = statewf.Engine(sqlite_url)
    engine.register(sm.counter_machine())
    yield engine, sqlite_url
    engine.close()


@FUZZ
@given(
    args=st.lists(
        st.one_of(hostile_text, st.sampled_from(["INC", "--data", "--resource"])), max_size=3
    ),
    data=st.one_of(hostile_text, json_values),
    command=st.sampled_from(["send", "show", "history", "state-at", "create"]),
)
def test_the_cli_answers_hostile_arguments_with_a_short_error(
    cli_engine: tuple[statewf.Engine, str], args: list[str], data: Any, command: str
) -> None:
    machines, url = cli_engine
    if isinstance(data, Deep):
        data = '{"k": [' * data.n + '"bottom"' + "]}" * data.n
    elif not isinstance(data, str):
        data = json.dumps(real(data))  # NaN and Infinity as JSON's extensions
    instance = machines.create("counter", context={"n": 0, "moves": 0})
    if command == "create":
        argv = ["create", "counter", "--context", data, *args]
    elif command == "send":
        argv = ["send", instance.id, *(args[:1] or ["INC"]), "--data", data]
    else:
        argv = [command, *(args[:1] or [instance.id]), *(["1"] if command == "state-at" else [])]
    before = dump_tables(machines)
    app = str(Path(__file__).resolve().parent / "fuzz_app.py")
    result = CliRunner().invoke(cli_group, ["--database", url, "--app", app, *argv])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code != 0:
        text = (result.stdout + (result.stderr or "")).strip()
        assert "Traceback" not in text
        # click's usage error quotes the offending argument, which may hold newlines
        # itself: the error line is there, not necessarily last
        lines = [line for line in text.split("\n") if line.strip()]  # not NEL, U+2028...
        assert any(line.startswith("Error") for line in lines), text
        if command != "create":
            assert dump_tables(machines) == before
