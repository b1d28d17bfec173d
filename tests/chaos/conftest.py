"""The chaos suite: real worker processes, real PostgreSQL, things broken on purpose.

Every test here is marked ``slow`` and bounded (count of processes and seconds); the
whole suite stays under three minutes. Worker processes are those of
``tests/workers`` (``worker_proc.py``); every process a test starts is killed at its
end. PostgreSQL is restarted only under ``CI=true`` or ``STATEWF_PG_RESTART=1``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# the worker processes' module (its workflow refs) is imported by the harness
WORKERS = str(Path(__file__).resolve().parents[1] / "workers")
if WORKERS not in sys.path:
    sys.path.insert(0, WORKERS)

from tests.workers.conftest import pg, workers  # noqa: E402,F401  (the fixtures)
