"""Storing step results and workflow outputs: JSON, or pydantic models round-tripped.

A value is stored as JSON. A top-level pydantic model is stored as its JSON dump
plus the model's import path, and rebuilt from both on replay. The first execution
returns the *decoded* value too, so a run sees exactly the same values whether a
step just ran or was replayed from the log.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import typing
from collections.abc import Callable
from typing import Any

import pydantic_core
from pydantic import BaseModel

from durable.errors import ResultNotSerializable
from statewf.values import stored_json


def model_path(cls: type[BaseModel]) -> str:
    """``module:QualName`` of a model class."""
    return f"{cls.__module__}:{cls.__qualname__}"


def encode(value: Any, *, what: str, max_bytes: int) -> tuple[Any, str | None]:
    """The JSON form of ``value`` and, for a pydantic model, its import path."""
    model = model_path(type(value)) if isinstance(value, BaseModel) else None
    try:
        # a model's JSON dump would turn NaN into null silently: check its values
        data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
        raise ResultNotSerializable(
            f"{what} of type {type(value).__name__} cannot be stored: {exc}. Return JSON "
            "data (dict, list, str, int, float, bool, None) or a pydantic model"
        ) from exc
    return stored_json(data, what=what, max_bytes=max_bytes, error=ResultNotSerializable), model


def decode(data: Any, model: str | None, result_type: type[BaseModel] | None = None) -> Any:
    """The value a step returns for stored ``data`` (rebuilding a model if there was one)."""
    cls = result_type
    if cls is None and model is not None:
        cls = import_model(model)
    if cls is None:
        return data
    return cls.model_validate(data)


@functools.lru_cache(maxsize=1024)
def import_model(path: str) -> type[BaseModel] | None:
    """The model class at ``module:QualName``, or None if it cannot be imported."""
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return obj if isinstance(obj, type) and issubclass(obj, BaseModel) else None


def return_model(fn: Callable[..., Any]) -> type[BaseModel] | None:
    """The pydantic model a function is annotated to return (through ``Awaitable``), if any."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations just mean: no declared model
        return None
    ret = hints.get("return")
    origin = typing.get_origin(ret)
    if (
        origin is not None
        and inspect.isclass(origin)
        and origin.__name__
        in {
            "Awaitable",
            "Coroutine",
        }
    ):
        args = typing.get_args(ret)
        ret = args[-1] if args else None
    if inspect.isclass(ret) and issubclass(ret, BaseModel):
        return ret
    return None
