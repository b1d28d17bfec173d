"""Helper process for test_concurrency.py: sends events to one instance on command.

Usage: python concurrent_sender.py URL SCHEMA|- INSTANCE_ID COUNT
Prints ``ready``, waits for a line on stdin, sends COUNT events, then prints one JSON
line: the list of [version, payload] for every accepted send.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sample_machines as sm

import statewf


def main() -> None:
    url, schema, instance_id, count = sys.argv[1:5]
    engine = statewf.Engine(url, schema=None if schema == "-" else schema)
    engine.register(sm.counter_machine())
    print("ready", flush=True)
    sys.stdin.readline()
    accepted = []
    for i in range(int(count)):
        event = "FLIP" if i % 5 == 0 else "INC"
        payload = {"sender": "process", "i": i}
        snapshot = engine.send(instance_id, event, payload)
        accepted.append([snapshot.version, payload])
    engine.close()
    print(json.dumps(accepted), flush=True)


if __name__ == "__main__":
    main()
