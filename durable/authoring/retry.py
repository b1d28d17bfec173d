"""Retry policies: how often a failing step is tried again, and after how long."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from durable.errors import NonRetryableError, WorkflowDefinitionError
from statewf.durations import DurationLike, to_seconds

#: The named ways a delay grows from one retry to the next.
Backoff = Literal["fixed", "linear", "exponential"]
BACKOFFS: tuple[str, ...] = ("fixed", "linear", "exponential")


@dataclass(frozen=True)
class RetryPolicy:
    """When and how a failed step attempt is retried.

    The delay before retry ``n`` (1 for the first retry) is, before the cap
    ``max_delay``:

    - ``backoff="fixed"``: ``delay`` every time;
    - ``backoff="linear"``: ``delay * n`` (``delay``, ``2*delay``, ``3*delay``, ...);
    - ``backoff="exponential"``: ``delay * factor ** (n - 1)``;
    - ``backoff=<number>``: exponential with that number as the factor (``1.0`` is fixed).

    It is then scaled by a random factor in ``[1 - jitter, 1]`` so that many runs
    failing together do not retry in lockstep. The delay actually used is recorded
    in the log with the failed attempt.

    Args:
        retries: retries after the first attempt (``retries=3`` means up to 4 attempts).
        delay: seconds (or a duration string) before the first retry.
        backoff: ``"fixed"``, ``"linear"``, ``"exponential"`` or an exponential factor.
        factor: growth factor of ``backoff="exponential"``.
        max_delay: cap on one delay.
        jitter: fraction of the delay that is randomized (0 disables jitter).
        retry_on: only these exception types are retried (default: any ``Exception``).
        no_retry_on: these exception types are never retried; :class:`NonRetryableError`
            is always among them.
    """

    retries: int = 0
    delay: DurationLike = 1.0
    backoff: Backoff | float = 2.0
    factor: float = 2.0
    max_delay: DurationLike = 300.0
    jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    no_retry_on: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise WorkflowDefinitionError(
                f"retries must be a non-negative int, got {self.retries!r}"
            )
        to_seconds(self.delay, what="retry delay")
        to_seconds(self.max_delay, what="max retry delay")
        if isinstance(self.backoff, str):
            if self.backoff not in BACKOFFS:
                raise WorkflowDefinitionError(
                    f"backoff must be one of {', '.join(BACKOFFS)} or a number >= 1.0, "
                    f"got {self.backoff!r}"
                )
        elif isinstance(self.backoff, bool) or not self.backoff >= 1.0:
            raise WorkflowDefinitionError(
                f"backoff must be one of {', '.join(BACKOFFS)} or a number >= 1.0, "
                f"got {self.backoff!r}"
            )
        if isinstance(self.factor, bool) or not self.factor >= 1.0:
            raise WorkflowDefinitionError(f"factor must be >= 1.0, got {self.factor!r}")
        if not 0.0 <= self.jitter <= 1.0:
            raise WorkflowDefinitionError(f"jitter must be between 0 and 1, got {self.jitter!r}")

    @property
    def max_attempts(self) -> int:
        """Attempts in total: the first one plus the retries."""
        return self.retries + 1

    def retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` may be retried at all (attempts left are checked separately)."""
        if isinstance(exc, (NonRetryableError, *self.no_retry_on)):
            return False
        return isinstance(exc, self.retry_on)

    def base_delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1-based), capped, before jitter."""
        n = max(1, retry)
        first = to_seconds(self.delay)
        if self.backoff == "fixed":
            base = first
        elif self.backoff == "linear":
            base = first * n
        else:
            growth = self.factor if self.backoff == "exponential" else float(self.backoff)
            base = first * growth ** (n - 1)
        return min(to_seconds(self.max_delay), base)

    def delay_before(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry`` (1-based), jitter applied."""
        return self.base_delay(retry) * (1.0 - self.jitter * rand())


def make_policy(
    policy: RetryPolicy | None,
    retries: int | None,
    retry_delay: DurationLike | None,
    default: RetryPolicy,
) -> RetryPolicy:
    """The policy for a step: ``policy`` or ``default``, with ``retries``/``retry_delay`` on top.

    ``retry_delay`` without a ``policy`` is a constant delay (``backoff="fixed"``);
    with a ``policy`` it replaces only the policy's first delay.
    """
    base = policy if policy is not None else default
    if retries is None and retry_delay is None:
        return base
    fixed = retry_delay is not None and policy is None
    return RetryPolicy(
        retries=base.retries if retries is None else retries,
        delay=base.delay if retry_delay is None else retry_delay,
        backoff="fixed" if fixed else base.backoff,
        factor=base.factor,
        max_delay=base.max_delay,
        jitter=base.jitter,
        retry_on=base.retry_on,
        no_retry_on=base.no_retry_on,
    )
