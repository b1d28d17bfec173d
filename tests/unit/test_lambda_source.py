"""The source text of lambdas, for errors and diagrams that show what a guard says."""

from __future__ import annotations

from typing import Any

from statewf.lambdas import MAX_LABEL, lambda_source

paid = lambda ctx, ev: ev.amount >= ctx.total  # noqa: E731
inc, dbl = (lambda x: x + 1), (lambda x: x * 2)
spread = {
    "g": lambda ctx, ev: (
        ev.ok
        and ctx.ready
    )
}


def named(ctx: Any, ev: Any) -> bool:
    return True


def test_a_lambda_reads_as_written() -> None:
    assert lambda_source(paid) == "lambda ctx, ev: ev.amount >= ctx.total"


def test_two_lambdas_on_one_line_are_told_apart() -> None:
    assert lambda_source(inc) == "lambda x: x + 1"
    assert lambda_source(dbl) == "lambda x: x * 2"


def test_a_lambda_over_several_lines_is_one_line() -> None:
    assert lambda_source(spread["g"]) == "lambda ctx, ev: ( ev.ok and ctx.ready )"


def test_functions_and_sourceless_lambdas_have_no_text() -> None:
    assert lambda_source(named) is None
    assert lambda_source(eval("lambda q: q")) is None  # no file to read
    assert lambda_source(len) is None


def test_long_lambdas_are_cut() -> None:
    long = lambda ctx, ev: ctx.aaaaaaaaaaaaaaaaaaaa and ctx.bbbbbbbbbbbbbbbbbbbbbbbbb and ctx.cccccccccccccccccccccccccc and ctx.ddddddddddddd  # noqa: E501, E731
    text = lambda_source(long)
    assert text is not None
    assert len(text) == MAX_LABEL
    assert text.endswith("…")
