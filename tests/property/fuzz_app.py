"""App module for the CLI fuzz test: the counter machine, for ``statewf --app``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sample_machines

counter = sample_machines.counter_machine()
