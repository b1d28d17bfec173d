"""Concurrent senders to one instance: serialized, none lost, in one total order.

Eight threads and a separate process send to the same instance at once, on
Postgres (row locks and the conditional-write fast path) and on SQLite (BEGIN
IMMEDIATE serializes writers).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import sample_machines as sm

from statewf import DuplicateInstance, Engine
from statewf.adapter import CompiledMachine
from statewf.decide import decide, start
from statewf.fold import fold

HERE = Path(__file__).resolve().parent
THREADS = 8
PER_THREAD = 20
PER_PROCESS = 40


def sender_process(db: dict[str, Any], instance_id: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "concurrent_sender.py"),
            str(db["url"]),
            db["schema"] or "-",
            instance_id,
            str(PER_PROCESS),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", line + (proc.stderr.read() if proc.stderr else "")
    return proc


def sequential_replay(log: list[Any]) -> Any:
    """Re-decide every logged event, one after another, with the pure core."""
    compiled = CompiledMachine(sm.counter_machine())
    create = log[0]
    snapshot = start(
        compiled,
        instance_id=create.instance_id,
        context=create.context_set,
        now=create.created_at,
    ).snapshot
    for record in log[1:]:
        snapshot = decide(
            compiled, snapshot, record.event, record.payload, record.created_at
        ).snapshot
    return snapshot


def test_threads_and_a_process_sending_to_one_instance(db: dict[str, Any]) -> None:
    with Engine(**db, pool_size=THREADS) as engine:
        engine.register(sm.counter_machine())
        inst = engine.create("counter", context={"n": 0, "moves": 0})
        proc = sender_process(db, inst.id)
        accepted: list[tuple[int, dict[str, Any]]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        barrier = threading.Barrier(THREADS + 1)

        def send_many(name: str) -> None:
            try:
                barrier.wait(timeout=30)
                for i in range(PER_THREAD):
                    event = "FLIP" if i % 4 == 0 else "INC"
                    payload = {"sender": name, "i": i}
                    snapshot = engine.send(inst.id, event, payload)
                    with lock:
                        accepted.append((snapshot.version, payload))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=send_many, args=(f"t{n}",)) for n in range(THREADS)]
        for t in threads:
            t.start()
        barrier.wait(timeout=30)
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        for t in threads:
            t.join(timeout=90)
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        assert errors == []
        accepted += [(version, payload) for version, payload in json.loads(out)]

        log = engine.history(inst.id)
        total = THREADS * PER_THREAD + PER_PROCESS
        assert len(accepted) == total
        # one total order: 1..n with no gaps, every accepted event exactly once
        assert [r.seq for r in log] == list(range(1, total + 2))
        logged = [json.dumps(r.payload, sort_keys=True) for r in log[1:]]
        assert sorted(logged) == sorted(json.dumps(p, sort_keys=True) for _, p in accepted)
        assert len(set(logged)) == total
        # each sender saw the version its own event got in the log
        by_seq = {r.seq: r.payload for r in log}
        assert sorted(v for v, _ in accepted) == list(range(2, total + 2))
        for version, payload in accepted:
            assert by_seq[version] == payload
        # each sender's events are in its own order
        for name in [*(f"t{n}" for n in range(THREADS)), "process"]:
            mine = [r.payload["i"] for r in log[1:] if r.payload["sender"] == name]
            assert mine == sorted(mine)
        # the snapshot is the fold of the log and a sequential replay of it
        snapshot = engine.get(inst.id)
        assert fold(log) == snapshot
        replayed = sequential_replay(log)
        assert (replayed.state, replayed.context, replayed.version) == (
            snapshot.state,
            snapshot.context,
            snapshot.version,
        )
        flips = sum(1 for r in log[1:] if r.event == "FLIP")
        assert snapshot.context == {"n": total - flips, "moves": flips}
        assert snapshot.state == ("busy" if flips % 2 else "idle")


def test_concurrent_creates_with_one_idempotency_key_make_one_instance(
    db: dict[str, Any],
) -> None:
    with Engine(**db, pool_size=THREADS) as engine:
        engine.register(sm.counter_machine())
        results: list[str] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(THREADS)

        def create() -> None:
            try:
                barrier.wait(timeout=30)
                inst = engine.create(
                    "counter", context={"n": 0, "moves": 0}, idempotency_key="once"
                )
                results.append(inst.id)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=create) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert len(results) == THREADS
        assert len(set(results)) == 1
        assert len(engine.list().items) == 1
        assert len(engine.history(results[0])) == 1


def test_concurrent_creates_with_one_id_let_exactly_one_win(db: dict[str, Any]) -> None:
    with Engine(**db, pool_size=THREADS) as engine:
        engine.register(sm.counter_machine())
        wins: list[int] = []
        losses: list[BaseException] = []
        barrier = threading.Barrier(THREADS)

        def create(n: int) -> None:
            barrier.wait(timeout=30)
            try:
                engine.create("counter", id="contested", context={"n": n, "moves": 0})
                wins.append(n)
            except BaseException as exc:
                losses.append(exc)

        threads = [threading.Thread(target=create, args=(n,)) for n in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(wins) == 1
        assert len(losses) == THREADS - 1
        assert all(isinstance(e, DuplicateInstance) for e in losses), losses
        assert engine.get("contested").context["n"] == wins[0]
        assert len(engine.history("contested")) == 1


@pytest.mark.parametrize("events", [["INC"] * 3, ["FLIP", "INC", "FLIP"]])
def test_sequential_replay_helper_matches_the_engine(sqlite_url: str, events: list[str]) -> None:
    with Engine(sqlite_url) as engine:
        engine.register(sm.counter_machine())
        inst = engine.create("counter", context={"n": 0, "moves": 0})
        for event in events:
            engine.send(inst.id, event)
        replayed = sequential_replay(engine.history(inst.id))
        assert replayed == engine.get(inst.id)
