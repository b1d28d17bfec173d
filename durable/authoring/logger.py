"""``ctx.logger``: a logger for workflow code, bound to the run and to the step.

Lines go to the ``durable.workflow`` logger, so :func:`durable.configure_logging`
(or any handler on ``durable``) writes them, with ``run_id``, ``workflow`` and,
inside a step function, ``step`` and ``attempt`` as fields: one JSON object per
line with :class:`durable.JsonFormatter`.

Workflow code outside steps runs again on every replay, and so do its log calls:
lines logged while the code replays recorded steps carry ``replaying=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from durable.authoring.current import current_step

#: The logger that ``ctx.logger`` writes to.
WORKFLOW_LOGGER = "durable.workflow"


class RunLogger(logging.LoggerAdapter[logging.Logger]):
    """A :class:`logging.LoggerAdapter` adding the run's (and the step's) fields to each line.

    A field passed with ``extra=`` wins over the bound one.
    """

    def __init__(self, run_id: str, workflow: str, replaying: Callable[[], bool]) -> None:
        super().__init__(logging.getLogger(WORKFLOW_LOGGER), {"run_id": run_id})
        self.run_id = run_id
        self.workflow = workflow
        self._replaying = replaying

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Merge the run's fields under the call's ``extra=``."""
        fields: dict[str, Any] = {"run_id": self.run_id, "workflow": self.workflow}
        step = current_step()
        if step is not None and step.run_id == self.run_id:
            fields.update(step=step.key, position=step.position, attempt=step.attempt)
        elif self._replaying():
            fields["replaying"] = True
        kwargs["extra"] = {**fields, **(kwargs.get("extra") or {})}
        return msg, kwargs
