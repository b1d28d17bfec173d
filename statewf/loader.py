"""Machines from YAML or JSON data files, with hooks and models named in a Registry.

The document shape (validated with pydantic, unknown keys rejected)::

    name: order-lifecycle
    version: "1"
    initial: pending
    context: Order                   # a model registered with registry.model
    states:
      pending:
        on:
          PAYMENT_RECEIVED:
            target: processing
            guard: covers_total      # one name or a list
            action: mark_paid
            payload: Payment
          CANCEL: cancelled          # shorthand: just the target
      completed: {final: true}

Delayed transitions use ``after`` (a mapping of delay to target or transition) and
``timeout`` / ``on_timeout``, with delays written as strings (``"7 days"``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from statewf.chart.model import History
from statewf.errors import SpecError
from statewf.hooks import Registry
from statewf.scxml import machine_from_scxml
from statewf.spec import Machine, State, Transition, transition

_Names = str | list[str] | None


class _TransitionDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str | list[str] | None = None
    event: str | None = None
    type: str = "external"
    guard: _Names = None
    unless: _Names = None
    action: _Names = None
    payload: str | None = None
    internal: bool = False
    description: str = ""


class _StateDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on: dict[str, str | _TransitionDoc | list[_TransitionDoc]] = Field(default_factory=dict)
    after: dict[str, str | _TransitionDoc] = Field(default_factory=dict)
    timeout: str | None = None
    on_timeout: str | _TransitionDoc | None = None
    on_enter: _Names = None
    on_exit: _Names = None
    final: bool = False
    description: str = ""
    id: str | None = None
    states: dict[str, _StateDoc] = Field(default_factory=dict)
    initial: str | list[str] | None = None
    parallel: bool = False
    on_done: str | _TransitionDoc | list[_TransitionDoc] | None = None
    always: str | _TransitionDoc | list[_TransitionDoc] | None = None
    transitions: list[_TransitionDoc] = Field(default_factory=list)
    history: str | None = Field(default=None, pattern="^(shallow|deep)$")
    default: str | list[str] | _TransitionDoc | None = None


class _MachineDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str | int = "1"
    initial: str | list[str]
    description: str = ""
    context: str | None = None
    states: dict[str, _StateDoc]
    ignore_unmatched: bool = False


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys instead of keeping the last."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise SpecError(
                f"duplicate key {key!r} at line {key_node.start_mark.line + 1}; "
                "each state and event may be declared once"
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)

# YAML 1.1 reads on/off/yes/no as booleans, which turns every state's ``on:`` key into
# True. Machine files follow YAML 1.2 here: only true/false are booleans.
_BOOL_TAG = "tag:yaml.org,2002:bool"
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise SpecError(f"duplicate key {key!r}; each state and event may be declared once")
        result[key] = value
    return result


def parse_document(text: str, *, fmt: str) -> Any:
    """Parse YAML or JSON text, rejecting duplicate keys; a :class:`SpecError` if malformed."""
    try:
        if fmt == "json":
            return json.loads(text, object_pairs_hook=_json_pairs)
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise SpecError(f"machine file is not valid {fmt.upper()}: {exc}") from exc
    except RecursionError:
        raise SpecError(_TOO_DEEP) from None


_TOO_DEEP = "machine document is nested too deep to read; a machine spec nests states, not data"


def _model(registry: Registry, name: str | None, where: str) -> type[BaseModel] | None:
    if name is None:
        return None
    model = registry.get_model(name)
    if model is None:
        known = ", ".join(registry.model_names()) or "none"
        raise SpecError(
            f"{where}: no model named {name!r} in the registry (models: {known}); "
            "register it with registry.model"
        )
    return model


def _transition(doc: str | _TransitionDoc, registry: Registry, where: str) -> Transition:
    if isinstance(doc, str):
        return transition(doc)
    return transition(
        doc.target,
        event=doc.event,
        type=doc.type,
        guard=doc.guard,
        unless=doc.unless,
        action=doc.action,
        payload=_model(registry, doc.payload, where),
        internal=doc.internal,
        description=doc.description,
    )


def _options(doc: Any, registry: Registry, where: str) -> Any:
    if doc is None:
        return None
    if isinstance(doc, list):
        return [_transition(t, registry, where) for t in doc]
    return _transition(doc, registry, where)


def _states(docs: dict[str, _StateDoc], registry: Registry) -> dict[str, State | History]:
    """The State (and History) tree a document's ``states`` mapping describes."""
    states: dict[str, State | History] = {}
    for name, sdoc in docs.items():
        if sdoc.history is not None:
            default = sdoc.default
            states[name] = History(
                deep=sdoc.history == "deep",
                default=(
                    _transition(default, registry, f"history {name!r}")
                    if isinstance(default, _TransitionDoc)
                    else default
                ),
                description=sdoc.description,
                id=sdoc.id,
            )
            continue
        on: dict[str, Any] = {}
        for event, tdoc in sdoc.on.items():
            on[event] = _options(tdoc, registry, f"state {name!r} event {event!r}")
        after = {
            delay: _transition(tdoc, registry, f"state {name!r} after {delay!r}")
            for delay, tdoc in sdoc.after.items()
        }
        on_timeout = (
            _transition(sdoc.on_timeout, registry, f"state {name!r} on_timeout")
            if sdoc.on_timeout is not None
            else None
        )
        states[name] = State(
            on=on,
            on_enter=sdoc.on_enter,
            on_exit=sdoc.on_exit,
            final=sdoc.final,
            description=sdoc.description,
            after=after,
            timeout=sdoc.timeout,
            on_timeout=on_timeout,
            states=_states(sdoc.states, registry),
            initial=sdoc.initial,
            parallel=sdoc.parallel,
            on_done=_options(sdoc.on_done, registry, f"state {name!r} on_done"),
            always=_options(sdoc.always, registry, f"state {name!r} always"),
            transitions=[
                _transition(t, registry, f"state {name!r} transitions") for t in sdoc.transitions
            ],
            id=sdoc.id,
        )
    return states


def machine_from_mapping(data: Any, registry: Registry | None = None) -> Machine:
    """Build and validate a :class:`Machine` from parsed YAML/JSON data."""
    registry = registry or Registry()
    if not isinstance(data, Mapping):
        raise SpecError(f"a machine document must be a mapping, got {type(data).__name__}")
    try:
        doc = _MachineDoc.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in exc.errors()[:10]
        )
        raise SpecError(f"machine document is malformed: {problems}") from exc
    states = _states(doc.states, registry)
    return Machine(
        doc.name,
        initial=doc.initial,
        states=states,
        context=_model(registry, doc.context, "context"),
        version=str(doc.version),
        registry=registry,
        description=doc.description,
        ignore_unmatched=doc.ignore_unmatched,
    )


def load_machine(
    source: str | Path | Mapping[str, Any], registry: Registry | None = None
) -> Machine:
    """Load a machine from a ``.yaml``/``.yml``/``.json``/``.scxml`` file or a parsed mapping.

    SCXML documents without a datamodel are read by :mod:`statewf.scxml`.
    """
    try:
        return _load_machine(source, registry)
    except RecursionError:  # a hostile document: deep nesting is a bad spec, not a crash
        raise SpecError(_TOO_DEEP) from None


def _load_machine(source: str | Path | Mapping[str, Any], registry: Registry | None) -> Machine:
    if isinstance(source, Mapping):
        return machine_from_mapping(source, registry)
    path = Path(source)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read machine file {str(path)!r}: {exc.strerror}") from exc
    if path.suffix.lower() in (".scxml", ".xml"):
        # bytes: the XML parser honours the document's encoding declaration and BOM
        return machine_from_scxml(raw, registry, default_name=path.stem)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"machine file {str(path)!r} is not UTF-8: {exc}") from exc
    fmt = "json" if path.suffix.lower() == ".json" else "yaml"
    return machine_from_mapping(parse_document(text, fmt=fmt), registry)
