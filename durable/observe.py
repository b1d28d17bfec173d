"""Observability for durable runs: log fields bound to the running code, and spans.

Two halves, both optional for the engine to use and cheap when unused:

- **Log context.** :func:`bind` sets fields such as ``run_id`` and ``step`` in a
  context variable for the code inside it; :class:`RunContextFilter` copies them onto
  every :class:`logging.LogRecord`, and :class:`JsonFormatter` writes one JSON object
  per line with them. Context variables follow the code: an :mod:`asyncio` task and
  ``asyncio.to_thread`` copy them, so concurrent runs keep their own fields.
- **OpenTelemetry.** :func:`run_span` and :func:`step_span` start a span per run and
  per step attempt when ``opentelemetry-api`` is importable (the ``otel`` extra), and
  only bind the log fields when it is not. The engine's control-flow signals
  (:class:`~durable.authoring.signals.WorkflowSignal`, ``BaseException`` subclasses) end a span
  without an error status; an ``Exception`` marks it failed.

:func:`configure_logging` is what a worker process calls once at start.
"""

from __future__ import annotations

import importlib
import json as _json
import logging
import sys
from collections.abc import Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any, Final

__all__ = [
    "FIELDS",
    "JsonFormatter",
    "KeyValueFormatter",
    "RunContextFilter",
    "bind",
    "configure_logging",
    "current_fields",
    "record_outcome",
    "run_span",
    "step_span",
]

#: The fields the engine binds, in the order formatters write them.
FIELDS: Final = ("run_id", "workflow", "version", "step", "position", "attempt", "worker")

TRACER_NAME: Final = "statewf.durable"
LOGGERS: Final = ("durable", "statewf")

_EMPTY: Mapping[str, object] = {}
_BOUND: ContextVar[Mapping[str, object]] = ContextVar("statewf_log_fields", default=_EMPTY)

# attributes every LogRecord has: a bound field of one of these names would clobber it
_RECORD_ATTRS: Final = frozenset(
    logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None).__dict__
) | {"message", "asctime", "taskName"}
_MARK: Final = "statewf_fields"  # the filter's snapshot of the bound fields on a record
_NOT_EXTRA: Final = _RECORD_ATTRS | {_MARK} | set(FIELDS)


# ------------------------------------------------------------------ log context


def current_fields() -> dict[str, object]:
    """The log fields bound in the current context (a copy; empty when none)."""
    return dict(_BOUND.get())


class _Bind(AbstractContextManager[None]):
    """Sets the merged fields on enter and restores the previous ones on exit."""

    __slots__ = ("_fields", "_token")

    def __init__(self, fields: Mapping[str, object]) -> None:
        self._fields = fields
        self._token: Token[Mapping[str, object]] | None = None

    def __enter__(self) -> None:
        if self._token is not None:
            raise RuntimeError("a bind() scope cannot be entered twice at once; call bind() again")
        self._token = _BOUND.set(_merge(_BOUND.get(), self._fields))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _BOUND.reset(self._token)
            self._token = None


def _merge(current: Mapping[str, object], fields: Mapping[str, object]) -> Mapping[str, object]:
    merged = {**current, **fields}
    if None in fields.values():  # None unbinds a field for the inner scope
        merged = {k: v for k, v in merged.items() if v is not None}
    return merged


def _checked(fields: Mapping[str, object]) -> Mapping[str, object]:
    if not _RECORD_ATTRS.isdisjoint(fields):
        clash = sorted(_RECORD_ATTRS.intersection(fields))
        raise ValueError(
            f"cannot bind {clash}: LogRecord already has attributes of these names; "
            "choose other field names"
        )
    return fields


def bind(**fields: object) -> AbstractContextManager[None]:
    """Bind log fields for the code inside the ``with`` block.

    Nested scopes merge with the outer one (inner values win) and the outer fields
    come back on exit. A value of ``None`` unbinds that field inside the block.

    Raises:
        ValueError: a field name is an attribute every ``LogRecord`` already has.
    """
    return _Bind(_checked(fields))


class RunContextFilter(logging.Filter):
    """Adds the bound fields to each record as attributes (``None`` when unbound).

    Put it on a handler, so that records of child loggers get the fields too; then a
    plain format string can use ``%(run_id)s`` and ``%(step)s``. A value passed with
    ``extra=`` wins over the bound one. Never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _BOUND.get()
        attrs = record.__dict__
        attrs.setdefault(_MARK, bound)
        for name in FIELDS:
            attrs.setdefault(name, bound.get(name))
        for name, value in bound.items():  # fields bound beyond the engine's own
            attrs.setdefault(name, value)
        return True


def _fields_of(record: logging.LogRecord) -> dict[str, object]:
    """Bound fields (canonical ones first), then ``extra=`` fields, unset ones left out."""
    attrs = record.__dict__
    bound: Mapping[str, object] | None = attrs.get(_MARK)
    if bound is None:  # no filter on the way: the record is formatted where it was logged
        bound = _BOUND.get()
    out: dict[str, object] = {}
    for name in FIELDS:
        value = attrs.get(name)
        if value is None:
            value = bound.get(name)
        if value is not None:
            out[name] = value
    for name, value in bound.items():
        if name not in out and value is not None:
            out[name] = value
    for name, value in attrs.items():
        if name not in _NOT_EXTRA and name not in out:
            out[name] = value
    return out


def _timestamp(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, tz=UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, fields.

    ``ts`` is ISO 8601 in UTC; then the bound fields that are set, the ``extra=``
    fields, and ``exc_info`` / ``stack_info`` as formatted text when present. Values
    JSON cannot hold are written with ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in _fields_of(record).items():
            payload.setdefault(name, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exc_info"] = record.exc_text
        if record.stack_info:
            payload["stack_info"] = self.formatStack(record.stack_info)
        return _json.dumps(payload, default=str)


def _kv(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' ="\n'):
        return _json.dumps(text)
    return text


class KeyValueFormatter(logging.Formatter):
    """A line for people: ``ts level logger message key=value ...``, traceback below."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name, record.getMessage()]
        parts.extend(f"{name}={_kv(value)}" for name, value in _fields_of(record).items())
        line = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


class _ObserveHandler(logging.StreamHandler[IO[str]]):
    """The handler :func:`configure_logging` installs; its class marks it as ours."""


def configure_logging(
    *, json: bool = True, level: str | int = "INFO", stream: IO[str] | None = None
) -> None:
    """Log the ``durable`` and ``statewf`` loggers with the bound fields, one line each.

    Installs one handler (to ``stream``, standard error by default) with
    :class:`RunContextFilter` and :class:`JsonFormatter` (or :class:`KeyValueFormatter`
    when ``json`` is false) and sets the loggers' level. Calling it again replaces the
    handler it installed before, so it never duplicates lines. Records still propagate
    to the root logger: do not also give the root a handler for these loggers.
    """
    if isinstance(level, str):
        level = level.upper()
    handler = _ObserveHandler(sys.stderr if stream is None else stream)
    handler.addFilter(RunContextFilter())
    handler.setFormatter(JsonFormatter() if json else KeyValueFormatter())
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _ObserveHandler)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)


# ------------------------------------------------------------------ OpenTelemetry


class _Otel:
    """The parts of ``opentelemetry-api`` the spans use (typed ``Any``: it is optional)."""

    __slots__ = ("context", "current_span", "error", "set_in_context", "status", "tracer")

    def __init__(self, trace: Any, context: Any) -> None:
        self.context = context
        self.current_span = trace.get_current_span
        self.set_in_context = trace.set_span_in_context
        self.status = trace.Status
        self.error = trace.StatusCode.ERROR
        # a proxy until the application sets a provider, then it delegates to that one
        self.tracer = trace.get_tracer(TRACER_NAME)


_UNLOADED: Final = object()
_otel_state: object = _UNLOADED


def _otel() -> _Otel | None:
    """``opentelemetry-api``, imported on the first span; ``None`` when not installed."""
    global _otel_state
    state = _otel_state
    if state is _UNLOADED:
        try:
            state = _Otel(
                importlib.import_module("opentelemetry.trace"),
                importlib.import_module("opentelemetry.context"),
            )
        except ImportError:
            state = None
        _otel_state = state
    return state if isinstance(state, _Otel) else None


class _SpanScope(AbstractContextManager[None]):
    """Binds the log fields and, with OpenTelemetry, runs the block in a current span."""

    __slots__ = ("_attributes", "_bind", "_name", "_otel", "_span", "_token")

    def __init__(
        self, name: str, attributes: dict[str, str | int], fields: Mapping[str, object]
    ) -> None:
        self._name = name
        self._attributes = attributes
        self._bind = _Bind(fields)
        self._otel: _Otel | None = None
        self._span: Any = None
        self._token: Any = None

    def __enter__(self) -> None:
        self._bind.__enter__()
        otel = _otel()
        if otel is not None:
            try:
                span = otel.tracer.start_span(self._name, attributes=self._attributes)
                if not span.is_recording() and span is otel.current_span():
                    # the no-op tracer (no SDK set up) hands back the current span:
                    # attaching and ending it would change nothing
                    return
                self._token = otel.context.attach(otel.set_in_context(span))
            except BaseException:
                self._bind.__exit__(None, None, None)
                raise
            self._otel, self._span = otel, span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            otel, span = self._otel, self._span
            if otel is not None:
                self._otel = self._span = None
                try:
                    if isinstance(exc, Exception):
                        span.record_exception(exc)
                        span.set_status(otel.status(otel.error, f"{type(exc).__name__}: {exc}"))
                    elif exc is not None:  # Suspend, Stop, cancellation: not a failure
                        span.set_attribute("statewf.signal", type(exc).__name__)
                finally:
                    otel.context.detach(self._token)
                    self._token = None
                    span.end()
        finally:
            self._bind.__exit__(exc_type, exc, tb)


def run_span(
    run_id: str, workflow: str, version: str, *, worker: str | None = None
) -> AbstractContextManager[None]:
    """Scope of one execution of a run: span ``workflow <name>`` and its log fields.

    Binds ``run_id``, ``workflow``, ``version`` and ``worker`` (when given). Usable
    around ``await`` in a coroutine; enter and exit it in the same task.
    """
    attributes: dict[str, str | int] = {
        "statewf.run_id": run_id,
        "statewf.workflow": workflow,
        "statewf.workflow.version": version,
    }
    fields: dict[str, object] = {"run_id": run_id, "workflow": workflow, "version": version}
    if worker is not None:
        attributes["statewf.worker"] = worker
        fields["worker"] = worker
    return _SpanScope(f"workflow {workflow}", attributes, fields)


def step_span(run_id: str, key: str, position: int, attempt: int) -> AbstractContextManager[None]:
    """Scope of one attempt of a step: span ``step <key>`` and its log fields.

    Binds ``run_id``, ``step`` (the key), ``position`` and ``attempt``; inside a
    :func:`run_span` the span is its child.
    """
    attributes: dict[str, str | int] = {
        "statewf.run_id": run_id,
        "statewf.step.key": key,
        "statewf.step.position": position,
        "statewf.step.attempt": attempt,
    }
    fields = {"run_id": run_id, "step": key, "position": position, "attempt": attempt}
    return _SpanScope(f"step {key}", attributes, fields)


def record_outcome(kind: str, error: str | None = None) -> None:
    """Note how a run ended on the current span: ``statewf.outcome``, error status.

    The engine turns a failed run into an outcome instead of an exception, so call
    this inside :func:`run_span` with the outcome's kind (``completed``, ``failed``,
    ``suspended``, ``stopped``) and, for a failure, a description such as
    ``"StepFailed: step 'pay' failed"``. Does nothing without OpenTelemetry.
    """
    otel = _otel()
    if otel is None:
        return
    span = otel.current_span()
    span.set_attribute("statewf.outcome", kind)
    if error is not None:
        span.set_status(otel.status(otel.error, error))
