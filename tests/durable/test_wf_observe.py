"""durable.observe: log fields bound to the running code, JSON lines, and spans."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import durable
from durable.authoring.signals import Stop, Suspend
from durable.observe import (
    FIELDS,
    JsonFormatter,
    RunContextFilter,
    bind,
    configure_logging,
    current_fields,
    record_outcome,
    run_span,
    step_span,
)

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("durable.test_observe")


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """configure_logging() into a buffer; the loggers' handlers and levels come back after."""
    loggers = [logging.getLogger(name) for name in ("durable", "statewf")]
    saved = [(lg, list(lg.handlers), lg.level) for lg in loggers]
    buffer = io.StringIO()
    configure_logging(stream=buffer, level="debug")
    yield buffer
    for lg, handlers, level in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


# ------------------------------------------------------------------ log context


def test_json_lines_carry_the_bound_fields_inside_and_none_outside(out: io.StringIO) -> None:
    log.info("before")
    with run_span("run-1", "onboard", "2", worker="w-7"):
        log.info("in run")
        with step_span("run-1", "charge", 3, 2):
            log.info("in step %s", "charge")
        log.info("back in run")
    log.info("after")

    before, in_run, in_step, back, after = lines(out)
    assert set(before) == {"ts", "level", "logger", "message"}
    assert before["ts"].endswith("Z")
    assert before["level"] == "INFO"
    assert before["logger"] == "durable.test_observe"
    assert in_run["run_id"] == "run-1"
    assert in_run["worker"] == "w-7"
    assert "step" not in in_run
    assert in_step["message"] == "in step charge"
    assert {k: in_step[k] for k in FIELDS} == {
        "run_id": "run-1",
        "workflow": "onboard",
        "version": "2",
        "step": "charge",
        "position": 3,
        "attempt": 2,
        "worker": "w-7",
    }
    assert "step" not in back
    assert back["run_id"] == "run-1"
    assert set(after) == set(before)


def test_bind_nests_merges_and_restores() -> None:
    assert current_fields() == {}
    with bind(run_id="r1", workflow="wf"):
        with bind(step="a", workflow="other"):
            assert current_fields() == {"run_id": "r1", "workflow": "other", "step": "a"}
            with bind(step=None):  # None unbinds inside
                assert current_fields() == {"run_id": "r1", "workflow": "other"}
            assert current_fields()["step"] == "a"
        assert current_fields() == {"run_id": "r1", "workflow": "wf"}
        with pytest.raises(KeyError), bind(step="b"):
            raise KeyError("x")  # an exception restores too
        assert "step" not in current_fields()
    assert current_fields() == {}


def test_current_fields_is_a_copy() -> None:
    with bind(run_id="r1"):
        current_fields()["run_id"] = "changed"
        assert current_fields() == {"run_id": "r1"}


def test_binding_a_log_record_attribute_is_refused() -> None:
    with pytest.raises(ValueError, match="msg"):
        bind(msg="x")


def test_fields_stay_apart_across_asyncio_tasks(out: io.StringIO) -> None:
    async def run(run_id: str, steps: list[str]) -> None:
        with run_span(run_id, "wf", "1"):
            for key in steps:
                with step_span(run_id, key, 0, 1):
                    await asyncio.sleep(0)  # let the other task run inside our scope
                    log.info("step")
                    await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(run("A", ["a1", "a2", "a3"]), run("B", ["b1", "b2", "b3"]))
        log.info("done")

    asyncio.run(main())
    got = lines(out)
    assert [(d["run_id"], d["step"]) for d in got[:-1] if d["run_id"] == "A"] == [
        ("A", "a1"),
        ("A", "a2"),
        ("A", "a3"),
    ]
    assert all(d["step"].startswith(d["run_id"].lower()) for d in got[:-1])
    order = [d["run_id"] for d in got[:-1]]
    assert order != sorted(order)  # the two runs did interleave
    assert len(got) == 7
    assert "run_id" not in got[-1]


def test_fields_follow_a_sync_step_into_its_thread(out: io.StringIO) -> None:
    async def main() -> None:
        with step_span("r1", "sync-step", 0, 1):
            await asyncio.to_thread(log.info, "from a thread")

    asyncio.run(main())
    assert lines(out)[0]["step"] == "sync-step"


def test_extra_fields_and_exceptions_are_in_the_json_line(out: io.StringIO) -> None:
    with bind(run_id="r1", tenant="acme"):
        try:
            raise ValueError("bad card")
        except ValueError:
            log.exception("charge failed", extra={"amount": 12, "when": object()})
    (line,) = lines(out)
    assert line["run_id"] == "r1"
    assert line["tenant"] == "acme"
    assert line["amount"] == 12
    assert line["when"].startswith("<object")  # not JSON: written with str()
    assert "ValueError: bad card" in line["exc_info"]
    assert line["level"] == "ERROR"


def test_configure_logging_twice_does_not_duplicate_lines(out: io.StringIO) -> None:
    configure_logging(stream=out)
    configure_logging(stream=out)
    for name in ("durable", "statewf"):
        assert len(logging.getLogger(name).handlers) == 1
    logging.getLogger("statewf.engine").info("once")
    assert len(lines(out)) == 1


def test_key_value_format_for_people(out: io.StringIO) -> None:
    configure_logging(stream=out, json=False)
    with bind(run_id="r 1", step="charge"):
        log.warning("slow")
    line = out.getvalue().rstrip("\n")
    assert line.endswith(' WARNING durable.test_observe slow run_id="r 1" step=charge')


def test_filter_gives_plain_formatters_the_fields() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(RunContextFilter())
    handler.setFormatter(logging.Formatter("%(run_id)s %(step)s %(message)s"))
    logger = logging.getLogger("plain.observe")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("outside")
        with step_span("r9", "ship", 1, 1):
            logger.warning("inside")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert buffer.getvalue().splitlines() == ["None None outside", "r9 ship inside"]


def test_json_formatter_without_the_filter_reads_the_context() -> None:
    record = log.makeRecord(log.name, logging.INFO, __file__, 1, "m", (), None)
    with bind(run_id="r2"):
        assert json.loads(JsonFormatter().format(record))["run_id"] == "r2"


# ------------------------------------------------------------------ OpenTelemetry


@pytest.fixture(scope="module")
def exporter() -> Iterator[Any]:
    """An in-memory exporter on the global SDK tracer provider (set once per process)."""
    sdk_trace = pytest.importorskip(
        "opentelemetry.sdk.trace",
        reason="span tests need opentelemetry-sdk (pip install opentelemetry-sdk)",
    )
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, sdk_trace.TracerProvider):
        provider = sdk_trace.TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory
    memory.clear()


@pytest.fixture
def spans(exporter: Any) -> Iterator[Any]:
    exporter.clear()
    yield exporter
    exporter.clear()


def by_name(exporter: Any) -> dict[str, Any]:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_run_and_step_spans_have_names_attributes_and_parent(spans: Any) -> None:
    from opentelemetry.trace import StatusCode

    with run_span("run-1", "onboard", "2", worker="w-7"), step_span("run-1", "charge", 4, 1):
        pass
    got = by_name(spans)
    run, step = got["workflow onboard"], got["step charge"]
    assert dict(run.attributes) == {
        "statewf.run_id": "run-1",
        "statewf.workflow": "onboard",
        "statewf.workflow.version": "2",
        "statewf.worker": "w-7",
    }
    assert dict(step.attributes) == {
        "statewf.run_id": "run-1",
        "statewf.step.key": "charge",
        "statewf.step.position": 4,
        "statewf.step.attempt": 1,
    }
    assert run.parent is None
    assert step.parent.span_id == run.context.span_id
    assert step.context.trace_id == run.context.trace_id
    assert run.instrumentation_scope.name == "statewf.durable"
    assert run.status.status_code == step.status.status_code == StatusCode.UNSET


def test_an_exception_marks_the_span_failed(spans: Any) -> None:
    from opentelemetry.trace import StatusCode

    with pytest.raises(ValueError), run_span("r1", "wf", "1"), step_span("r1", "pay", 0, 1):
        raise ValueError("card declined")
    for span in spans.get_finished_spans():
        assert span.status.status_code == StatusCode.ERROR
        assert span.status.description == "ValueError: card declined"
        assert [event.name for event in span.events] == ["exception"]


@pytest.mark.parametrize("signal", [Suspend("waiting for approval"), Stop()])
def test_an_engine_signal_ends_the_span_without_error(spans: Any, signal: BaseException) -> None:
    from opentelemetry.trace import StatusCode

    with pytest.raises(type(signal)), run_span("r1", "wf", "1"), step_span("r1", "wait", 0, 1):
        raise signal
    for span in spans.get_finished_spans():
        assert span.status.status_code == StatusCode.UNSET
        assert span.events == ()
        assert span.attributes["statewf.signal"] == type(signal).__name__


def test_record_outcome_sets_the_outcome_and_error_of_the_run_span(spans: Any) -> None:
    from opentelemetry.trace import StatusCode

    with run_span("r1", "ok", "1"):
        record_outcome("suspended")
    with run_span("r2", "bad", "1"):
        record_outcome("failed", "StepFailed: step 'pay' failed")
    got = by_name(spans)
    assert got["workflow ok"].attributes["statewf.outcome"] == "suspended"
    assert got["workflow ok"].status.status_code == StatusCode.UNSET
    assert got["workflow bad"].attributes["statewf.outcome"] == "failed"
    assert got["workflow bad"].status.status_code == StatusCode.ERROR
    assert got["workflow bad"].status.description == "StepFailed: step 'pay' failed"


def test_spans_around_await_and_in_child_tasks(spans: Any) -> None:
    from opentelemetry import trace

    async def step(key: str) -> None:
        with step_span("r1", key, 0, 1):
            await asyncio.sleep(0)

    async def run() -> None:
        with run_span("r1", "wf", "1"):
            await asyncio.sleep(0)
            await asyncio.gather(step("a"), step("b"))  # tasks copy the current context
        assert not trace.get_current_span().get_span_context().is_valid

    asyncio.run(run())
    got = by_name(spans)
    run_id = got["workflow wf"].context.span_id
    assert got["step a"].parent.span_id == run_id
    assert got["step b"].parent.span_id == run_id
    assert not trace.get_current_span().get_span_context().is_valid


def test_without_opentelemetry_spans_are_no_ops_and_logging_works() -> None:
    script = textwrap.dedent(
        """
        import io, json, logging, sys
        sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
        from durable.observe import configure_logging, record_outcome, run_span, step_span
        buffer = io.StringIO()
        configure_logging(stream=buffer)
        with run_span("r1", "wf", "1"), step_span("r1", "k", 0, 1):
            logging.getLogger("durable").info("inside")
            record_outcome("failed", "ValueError: x")
        try:
            with run_span("r1", "wf", "1"):
                raise ValueError("x")
        except ValueError:
            pass
        line = json.loads(buffer.getvalue())
        assert (line["run_id"], line["step"]) == ("r1", "k"), line
        assert not any(m.startswith("opentelemetry.") for m in sys.modules), "otel loaded"
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


# ------------------------------------------------------------------ wired into the engine


def test_an_executed_run_emits_a_run_span_with_its_step_spans_and_log_fields(
    spans: Any, make_engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.trace import StatusCode

    calls = {"flaky": 0}

    def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            logging.getLogger("durable.test").warning("first attempt fails")
            raise ConnectionError("try again")
        return "ok"

    @durable.workflow("observed", retries=2, retry_delay=0)
    async def observed(ctx: durable.Context[None]) -> str:
        await ctx.step.run("first", lambda: 1)
        return str(await ctx.step.run("flaky", flaky))

    async def main() -> tuple[str, str]:
        async with make_engine(workflows=[observed]) as engine:
            run = await engine.start_workflow(observed)
            return str(await engine.result(run.id, timeout=10)), run.id

    caplog.set_level(logging.INFO)
    handler_filter = RunContextFilter()
    caplog.handler.addFilter(handler_filter)
    try:
        output, run_id = asyncio.run(main())
    finally:
        caplog.handler.removeFilter(handler_filter)
    assert output == "ok"
    finished = spans.get_finished_spans()
    run_spans = [s for s in finished if s.name == "workflow observed"]
    assert len(run_spans) == 1
    run_span_ = run_spans[0]
    assert run_span_.attributes["statewf.run_id"] == run_id
    assert run_span_.attributes["statewf.outcome"] == "completed"
    steps = [s for s in finished if s.name.startswith("step ")]
    # one span per attempt that ran: first, flaky (failed, retried), flaky (ok)
    assert [(s.name, s.attributes["statewf.step.attempt"]) for s in steps] == [
        ("step first", 1),
        ("step flaky", 1),
        ("step flaky", 2),
    ]
    assert all(
        s.parent is not None and s.parent.span_id == run_span_.context.span_id for s in steps
    )
    assert steps[1].status.status_code == StatusCode.ERROR
    assert steps[2].status.status_code != StatusCode.ERROR
    # a log line written inside a step carries the run and the step
    inside = [r for r in caplog.records if r.getMessage() == "first attempt fails"]
    assert [(r.run_id, r.step) for r in inside] == [(run_id, "flaky")]  # type: ignore[attr-defined]
