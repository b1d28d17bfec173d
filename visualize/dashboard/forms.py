"""Forms built from a JSON schema (an event's payload, a wait's answer) and read back.

Simple properties (string, integer, number, boolean, enum) get one input each;
anything else gets a JSON text area, and so does an event without a schema. The
values read back are only shaped here: the engine validates them against the
schema and rejects what does not fit, with its own message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from visualize.errors import VisualizeError

#: The name of the free-form JSON field, and the prefix of schema fields.
JSON_FIELD = "payload_json"
FIELD_PREFIX = "f_"


@dataclass(frozen=True)
class Field:
    """One input of a form."""

    name: str
    label: str
    kind: str  # text, integer, number, boolean, choice, json
    required: bool = False
    choices: tuple[str, ...] = ()
    description: str = ""

    @property
    def input_name(self) -> str:
        """The name of the HTML input."""
        return FIELD_PREFIX + self.name


def _kind(prop: Mapping[str, Any]) -> str:
    if "enum" in prop and all(isinstance(v, str) for v in prop["enum"]):
        return "choice"
    kind = prop.get("type")
    if kind is None and isinstance(prop.get("anyOf"), list):  # Optional[X] in pydantic
        kinds = [p.get("type") for p in prop["anyOf"] if p.get("type") != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    return {"string": "text", "integer": "integer", "number": "number", "boolean": "boolean"}.get(
        str(kind), "json"
    )


def fields_of(schema: Mapping[str, Any] | None) -> list[Field]:
    """The inputs for a JSON schema (an empty list: the form takes free JSON)."""
    if not schema or not isinstance(schema.get("properties"), Mapping):
        return []
    required = set(schema.get("required") or ())
    found = []
    for name, prop in schema["properties"].items():
        prop = prop if isinstance(prop, Mapping) else {}
        found.append(
            Field(
                name=str(name),
                label=str(prop.get("title") or name),
                kind=_kind(prop),
                required=name in required,
                choices=tuple(str(v) for v in prop.get("enum", ())),
                description=str(prop.get("description") or ""),
            )
        )
    return found


def _value(field: Field, raw: str) -> Any:
    if field.kind == "text" or field.kind == "choice":
        return raw
    if field.kind == "integer":
        try:
            return int(raw)
        except ValueError:
            raise VisualizeError(
                f"field {field.name!r} takes a whole number, got {raw!r}"
            ) from None
    if field.kind == "number":
        try:
            return float(raw)
        except ValueError:
            raise VisualizeError(f"field {field.name!r} takes a number, got {raw!r}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise VisualizeError(f"field {field.name!r} takes JSON, got {raw[:80]!r}") from None


def payload_from(form: Mapping[str, Any], fields: list[Field]) -> Any:
    """The payload a submitted form describes (None when it is empty)."""
    if not fields:
        raw = str(form.get(JSON_FIELD) or "").strip()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise VisualizeError(
                f"the payload is not valid JSON ({exc}); fix it and send again"
            ) from None
    payload: dict[str, Any] = {}
    for field in fields:
        if field.kind == "boolean":
            payload[field.name] = form.get(field.input_name) in ("on", "true", "1")
            continue
        raw = str(form.get(field.input_name) or "")
        if raw == "":
            continue  # left out: the schema's default applies, or the engine says it is missing
        payload[field.name] = _value(field, raw)
    return payload
