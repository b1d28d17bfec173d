"""The source text of a lambda, so errors and diagrams can show what a guard says.

A lambda's ``__qualname__`` is ``<lambda>``, which tells a reader nothing about
``lambda ctx, ev: ev.amount >= ctx.total``. The text is found by parsing the file
the lambda was defined in and picking the lambda expression at its code object's
position; when the source is not available (a REPL, ``exec``) there is no text.
"""

from __future__ import annotations

import ast
import functools
import inspect
import linecache
from types import CodeType
from typing import Any

#: Longest text kept; longer lambdas are cut with an ellipsis.
MAX_LABEL = 120


def lambda_source(fn: Any) -> str | None:
    """``lambda ...: ...`` as written (whitespace collapsed), or None if not a lambda
    or its source cannot be read."""
    code: CodeType | None = getattr(fn, "__code__", None)
    if code is None or getattr(fn, "__name__", None) != "<lambda>":
        return None
    try:
        filename = inspect.getsourcefile(fn)
    except TypeError:
        return None
    if filename is None:
        return None
    source = "".join(linecache.getlines(filename))
    if not source:
        return None
    node = _pick(_lambdas_by_line(filename, source).get(code.co_firstlineno, ()), code)
    if node is None:
        return None
    segment = ast.get_source_segment(source, node)
    if segment is None:
        return None
    text = " ".join(segment.split())
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


@functools.lru_cache(maxsize=64)
def _lambdas_by_line(filename: str, source: str) -> dict[int, tuple[ast.Lambda, ...]]:
    try:
        tree = ast.parse(source, filename)
    except (SyntaxError, ValueError):
        return {}
    found: dict[int, list[ast.Lambda]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Lambda):
            found.setdefault(node.lineno, []).append(node)
    return {line: tuple(nodes) for line, nodes in found.items()}


def _pick(candidates: tuple[ast.Lambda, ...], code: CodeType) -> ast.Lambda | None:
    """The lambda among several on one line whose body holds the code's first position."""
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    arg_names = code.co_varnames[: code.co_argcount]
    same_args = [n for n in candidates if tuple(a.arg for a in n.args.args) == arg_names]
    if len(same_args) == 1:
        return same_args[0]
    pool = same_args or list(candidates)
    for line, _end_line, col, _end_col in code.co_positions():
        if col is None or line is None:
            continue
        for node in pool:
            body = node.body
            start = (body.lineno, body.col_offset)
            end = (body.end_lineno or body.lineno, body.end_col_offset or body.col_offset)
            if start <= (line, col) <= end:
                return node
    return None
