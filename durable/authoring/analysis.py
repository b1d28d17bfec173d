"""Static analysis of a workflow function: which steps it calls, to estimate progress.

The engine stores the result with every run, so a process without the code (a CLI,
an API service) can still report ``completed / total``. It counts the call sites of
``<anything>.step.<method>(...)`` and ``step.<method>(...)`` in the function's source.
A call inside a loop, a branch or an ``except`` handler may run any number of times
(including zero), so then the count is marked approximate.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from typing import Any

from durable.log.plan import StepPlan

#: Step methods that record one step each.
STEP_METHODS = frozenset(
    {"run", "transaction", "sleep", "wait_for", "wait_until", "poll", "pause", "approval"}
)
_LOOPS = (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.GeneratorExp)
_BRANCHES = (ast.If, ast.IfExp, ast.ExceptHandler, ast.match_case, ast.BoolOp)


def analyze(fn: Callable[..., Any]) -> StepPlan:
    """The :class:`StepPlan` of a workflow function, from its source code."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return StepPlan(None, True)
    root = next(
        (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)),
        None,
    )
    if root is None:
        return StepPlan(None, True)
    finder = _StepFinder()
    for stmt in root.body:
        finder.visit(stmt)
    return StepPlan(len(finder.steps), finder.approximate, tuple(finder.steps))


class _StepFinder(ast.NodeVisitor):
    def __init__(self) -> None:
        self.steps: list[str] = []
        self.approximate = False
        self._depth = 0  # how many loops/branches enclose the current node

    def generic_visit(self, node: ast.AST) -> None:
        nested = isinstance(node, _LOOPS + _BRANCHES)
        if isinstance(node, ast.Try | ast.TryStar):
            # the try body runs normally; handlers are branches (visited as ExceptHandler)
            nested = False
        self._depth += nested
        super().generic_visit(node)
        self._depth -= nested

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr in STEP_METHODS
            and _is_step_namespace(func.value)
        ):
            self.steps.append(_key_text(node.args[0]) if node.args else "?")
            if self._depth:
                self.approximate = True
        self.generic_visit(node)


def _is_step_namespace(node: ast.expr) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "step"
    return isinstance(node, ast.Name) and node.id == "step"


def _key_text(node: ast.expr) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                parts.append("{" + ast.unparse(getattr(value, "value", value)) + "}")
        return "".join(parts)
    return "{" + ast.unparse(node) + "}"
