"""Worker processes that die, stall or stop: runs are finished elsewhere, nothing is lost.

Real ``durable.Worker`` subprocesses (``worker_proc.py``) on PostgreSQL, short leases:

* SIGKILL mid-run: another worker takes the dead one's runs over; each step is logged
  once; a side effect ran twice only for the step the dead worker was in, never for a
  transactional step.
* SIGSTOP past the lease, then SIGCONT: the stalled worker cannot write any more.
* SIGTERM: a graceful stop releases every lease and exits 0.
* A step that kills its worker every time: the run goes to the dead letters.
"""

from __future__ import annotations

import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import pytest
import worker_proc

import durable
from tests.workers.conftest import PgTarget, WorkerPool, run_client, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(90)]

LEASE = 1.5
POLL = 0.3


def start_runs(
    pg: PgTarget, ref: durable.WorkflowRef[Any], inputs: list[dict[str, Any] | None]
) -> list[str]:
    """Start one run per input through a ``durable.Client``; their ids (safe to repeat)."""
    keys = [uuid.uuid4().hex for _ in inputs]

    async def start(client: durable.Client) -> list[str]:
        runs = [
            await client.start_workflow(ref, data, idempotency_key=key)
            for data, key in zip(inputs, keys, strict=True)
        ]
        return [run.id for run in runs]

    return run_client(pg, start)


def wait_finished(pg: PgTarget, run_ids: list[str], *, timeout: float) -> dict[str, dict[str, Any]]:
    """Wait until every run is in a final status; the instances by id."""
    final = {"completed", "failed", "cancelled", "dead"}

    def done() -> dict[str, dict[str, Any]] | None:
        runs = pg.runs()
        return runs if all(runs[r]["status"] in final for r in run_ids) else None

    return wait_until(done, timeout=timeout, what=f"{len(run_ids)} runs to finish", interval=0.1)


def step_rows(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in log if r["kind"] == "step"]


def result_pid(row: dict[str, Any]) -> int:
    return int(row["payload"]["result"])


def steps_keys(n: int) -> list[str]:
    return [f"s{i}" for i in range(n)]


def is_tx(key: str, tx_every: int = 3) -> bool:
    return int(key[1:]) % tx_every == tx_every - 1


# ---------------------------------------------------------------- SIGKILL


def test_sigkill_mid_run_another_worker_finishes_its_runs(
    pg: PgTarget, workers: WorkerPool
) -> None:
    rng = random.Random(20261123)
    a = workers.spawn("a", concurrency=4, lease=LEASE, poll=POLL)
    b = workers.spawn("b", concurrency=4, lease=LEASE, poll=POLL)
    run_ids = start_runs(pg, worker_proc.steps, [{"steps": 10, "pause": 0.02}] * 50)
    total = 50 * 10

    # kill A at a random point, once it has effects of its own in the ledger
    kill_at = rng.randint(total // 5, total // 2)

    def ready_to_kill() -> bool:
        rows = pg.ledger()
        return len(rows) >= kill_at and any(pid == a.pid for _, _, pid, _ in rows)

    wait_until(ready_to_kill, timeout=30, what=f"{kill_at} ledger rows")
    a.signal(signal.SIGKILL)
    killed_at = time.time()
    assert a.proc.wait(10) == -signal.SIGKILL
    # a statement A sent just before it died still runs to its commit on the server:
    # read A's runs once its backends have gone (the server sees the closed socket)
    wait_until(lambda: pg.backends(a.app_name) == 0, timeout=LEASE / 4, what="A's backends")

    # What A held when it died, read before any lease can have run out (A heart-beat
    # every LEASE/3): those runs' logs are frozen until another worker takes them over.
    at_kill = pg.runs()
    owned = {rid for rid, r in at_kill.items() if r["lease_owner"] == a.worker_id}
    held = {rid for rid in owned if at_kill[rid]["status"] == "running"}
    # A may also have died between a run's final row and its release: a finished run
    # still naming A (nobody needs to take it over; the lease just runs out)
    finished_unreleased = owned - held
    assert all(at_kill[rid]["status"] == "completed" for rid in finished_unreleased)
    frozen = {rid: len(step_rows(pg.log(rid))) for rid in held}
    assert time.time() - killed_at < LEASE / 2, "too slow to read what the dead worker held"
    assert held, "the kill hit no run in progress"

    c = workers.spawn("c", concurrency=4, lease=LEASE, poll=POLL)  # a replacement
    runs = wait_finished(pg, run_ids, timeout=60)
    assert {runs[r]["status"] for r in run_ids} == {"completed"}
    # finished runs are released (just after their final row), except those A finished
    # but died before releasing
    wait_until(
        lambda: {r for r, v in pg.runs().items() if v["lease_owner"]} <= finished_unreleased,
        timeout=10,
        what="the finished runs to be released",
    )
    assert all(pg.runs()[r]["lease_owner"] == a.worker_id for r in finished_unreleased)
    assert b.alive()
    assert c.alive()

    logs = {rid: pg.log(rid) for rid in run_ids}
    ledger = pg.ledger()
    effects: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for run_id, key, pid, kind in ledger:
        effects[(run_id, key)].append((pid, kind))
    duplicated = set()
    for rid in run_ids:
        steps = step_rows(logs[rid])
        # every step recorded exactly once, in order, at its position
        assert [r["key"] for r in steps] == steps_keys(10), rid
        assert [r["meta"]["position"] for r in steps] == list(range(10)), rid
        for row in steps:
            key = row["key"]
            done = effects[(rid, key)]
            recorded_by = result_pid(row)
            assert (recorded_by, "tx" if is_tx(key) else "plain") in done, (rid, key, done)
            if is_tx(key):
                # committed with its log row: exactly once, even across the kill
                assert done == [(recorded_by, "tx")], (rid, key, done)
                assert row["meta"].get("transactional") is True
            elif len(done) > 1:
                duplicated.add((rid, key))
                # only the step the dead worker was executing: its effect happened, its
                # row never committed, and the worker that took over ran it again
                assert rid in held, (rid, key, done)
                assert key == f"s{frozen[rid]}", (rid, key, frozen[rid], done)
                assert len(done) == 2, (rid, key, done)
                assert done[0] == (a.pid, "plain"), (rid, key, done)
                assert recorded_by != a.pid
    # nothing else ran twice, and nothing ran that is not in the log
    assert set(effects) == {(rid, key) for rid in run_ids for key in steps_keys(10)}
    assert sum(len(v) for v in effects.values()) == total + len(duplicated)
    # the steps the dead worker was in when it died are the only candidates
    assert len(duplicated) <= len(held)

    # every run A held was taken over once, from A, within lease + poll (+ margin);
    # no other run was (B and C never lost a lease)
    takeovers: dict[str, list[dict[str, Any]]] = {}
    for rid in run_ids:
        rows = [
            r for r in logs[rid] if r["kind"] == "recover" and r["meta"].get("reason") == "takeover"
        ]
        if rows:
            takeovers[rid] = rows
    assert set(takeovers) == set(held)
    for rid, rows in takeovers.items():
        assert len(rows) == 1, (rid, rows)
        meta = rows[0]["meta"]
        assert meta["previous_worker"] == a.worker_id
        assert meta["worker"] in (b.worker_id, c.worker_id)
        delay = rows[0]["created_at"].timestamp() - killed_at
        assert 0 < delay < LEASE + POLL + 3.0, (rid, delay)
        # the taker recorded every step after the takeover
        after = [r for r in step_rows(logs[rid]) if r["seq"] > rows[0]["seq"]]
        assert [r["key"] for r in after] == steps_keys(10)[frozen[rid] :]
        assert all(result_pid(r) in (b.pid, c.pid) for r in after)
    for rid in finished_unreleased:  # finished by A itself: every step recorded by A
        assert {result_pid(r) for r in step_rows(logs[rid])} == {a.pid}
    # runs that A did not hold were never claimed by two workers
    for rid in set(run_ids) - set(held):
        claims = [r for r in logs[rid] if r["kind"] in ("claim", "recover")]
        assert len({r["meta"]["worker"] for r in claims}) == 1, (rid, claims)


# ---------------------------------------------------------------- SIGSTOP / SIGCONT


def test_a_stalled_worker_whose_lease_was_taken_over_cannot_write(
    pg: PgTarget, workers: WorkerPool
) -> None:
    a = workers.spawn("a", queues="slow", concurrency=2, lease=LEASE, poll=POLL)
    (rid,) = start_runs(pg, worker_proc.slow, [{"steps": 5, "slow_step": 1, "slow_seconds": 2.0}])
    # A is inside the slow step s1 (its effect is in the ledger): freeze it there
    wait_until(lambda: (rid, "s1", a.pid, "plain") in pg.ledger(), timeout=20, what="A to reach s1")
    a.signal(signal.SIGSTOP)
    stopped_at = time.time()
    epoch_a = pg.runs()[rid]["lease_epoch"]

    b = workers.spawn("b", queues="slow", concurrency=2, lease=LEASE, poll=POLL)
    runs = wait_finished(pg, [rid], timeout=30)
    assert runs[rid]["status"] == "completed"
    assert runs[rid]["lease_epoch"] == epoch_a + 1  # one takeover, no other claim
    log_before = pg.log(rid)
    ledger_before = pg.ledger()
    (takeover,) = [r for r in log_before if r["kind"] == "recover"]
    assert takeover["meta"]["reason"] == "takeover"
    assert takeover["meta"]["previous_worker"] == a.worker_id
    assert takeover["meta"]["worker"] == b.worker_id
    assert takeover["created_at"].timestamp() - stopped_at > LEASE - 0.5  # not before expiry

    # resume A: its step s1 returns, its write is fenced off, its execution stops
    a.signal(signal.SIGCONT)
    wait_until(
        lambda: "lost its lease" in a.output(), timeout=15, what="A to notice its lost lease"
    )
    time.sleep(LEASE)  # give a misbehaving A every chance to write (a heartbeat, a step)
    assert a.alive()
    log_after = pg.log(rid)
    assert log_after == log_before  # nothing written by A after the takeover
    assert pg.ledger() == ledger_before  # and A started no further step
    steps = step_rows(log_after)
    assert [r["key"] for r in steps] == steps_keys(5)
    assert [r["meta"]["position"] for r in steps] == list(range(5))
    # s0 was recorded by A before the stall, everything after the takeover by B
    assert result_pid(steps[0]) == a.pid
    assert steps[0]["seq"] < takeover["seq"]
    assert all(result_pid(r) == b.pid for r in steps[1:])
    assert all(r["seq"] > takeover["seq"] for r in steps[1:])
    assert log_after[-1]["kind"] == "completed"
    a_effects = [(key, kind) for r, key, pid, kind in ledger_before if pid == a.pid]
    assert a_effects == [("s0", "plain"), ("s1", "plain")]

    async def output(client: durable.Client) -> Any:
        return (await client.get_run(rid)).output

    assert run_client(pg, output) == [a.pid] + [b.pid] * 4  # the taker's result

    # A carries on healthy: with B gone, it executes a new run to the end
    b.signal(signal.SIGTERM)
    assert b.proc.wait(15) == 0
    (rid2,) = start_runs(pg, worker_proc.slow, [{"steps": 3}])
    assert wait_finished(pg, [rid2], timeout=20)[rid2]["status"] == "completed"
    (claim,) = [r for r in pg.log(rid2) if r["kind"] == "claim"]
    assert claim["meta"]["worker"] == a.worker_id
    assert a.alive()


# ---------------------------------------------------------------- SIGTERM


def test_sigterm_stops_gracefully_and_leaves_no_run_claimed(
    pg: PgTarget, workers: WorkerPool
) -> None:
    shutdown_timeout = 3.0
    n_steps = 12  # 12 x 0.3 s: every run is still in progress when A stops
    a = workers.spawn(
        "a", queues="slow", concurrency=4, lease=LEASE, poll=POLL, shutdown_timeout=shutdown_timeout
    )
    run_ids = start_runs(
        pg, worker_proc.slow, [{"steps": n_steps, "tx_every": 0, "pause": 0.3}] * 4
    )
    wait_until(
        lambda: (
            sum(r["lease_owner"] == a.worker_id for r in pg.runs().values()) == 4
            and len(pg.ledger()) >= 6
        ),
        timeout=20,
        what="A to execute all four runs",
    )
    # B starts now (and registers while A stops): A's runs go to B only once A let them go
    b = workers.spawn("b", queues="slow", concurrency=4, lease=LEASE, poll=POLL, wait_ready=False)
    a.signal(signal.SIGTERM)
    sent = time.monotonic()
    assert a.proc.wait(shutdown_timeout + 5) == 0, a.output()[-3000:]
    took = time.monotonic() - sent
    assert took < shutdown_timeout + 3, took
    # A released everything it held and marked itself stopped
    assert not any(r["lease_owner"] == a.worker_id for r in pg.runs().values())
    row = pg.worker_rows()[a.worker_id]
    assert row["stopped_at"] is not None
    assert row["held"] == 0
    a_steps = Counter(rid for rid, _, pid, _ in pg.ledger() if pid == a.pid)
    assert set(a_steps) == set(run_ids)

    runs = wait_finished(pg, run_ids, timeout=30)
    assert {runs[r]["status"] for r in run_ids} == {"completed"}
    for rid in run_ids:
        log = pg.log(rid)
        steps = step_rows(log)
        assert [r["key"] for r in steps] == steps_keys(n_steps)
        # A finished the step it was in; B resumed after it (a released run: no takeover)
        (resumed,) = [r for r in log if r["kind"] == "recover"]
        assert resumed["meta"]["reason"] == "resume"
        assert resumed["meta"]["worker"] == b.worker_id
        assert [result_pid(r) for r in steps] == [a.pid] * a_steps[rid] + [b.pid] * (
            n_steps - a_steps[rid]
        )
    # every step's effect happened exactly once: A let its running steps finish
    assert Counter((rid, key) for rid, key, _, _ in pg.ledger()) == Counter(
        {(rid, key): 1 for rid in run_ids for key in steps_keys(n_steps)}
    )
    assert b.alive()


# ---------------------------------------------------------------- crash loop


def test_a_run_that_keeps_killing_its_worker_is_dead_lettered(
    pg: PgTarget, workers: WorkerPool
) -> None:
    crash_limit = 2
    (rid,) = start_runs(pg, worker_proc.crasher, [None])
    spawned = []
    deadline = time.monotonic() + 45
    # keep one worker alive: respawn it whenever the run's step killed it
    while pg.runs()[rid]["status"] != "dead":
        assert time.monotonic() < deadline, "the run was never dead-lettered"
        if not spawned or not spawned[-1].alive():
            spawned.append(
                workers.spawn(
                    f"w{len(spawned)}",
                    queues="crash",
                    concurrency=2,
                    lease=LEASE,
                    poll=POLL,
                    crash_limit=crash_limit,
                    wait_ready=False,
                )
            )
        time.sleep(0.05)
    survivor = spawned[-1]
    # the first execution and crash_limit - 1 takeovers died; the next claim dead-lettered it
    # (a worker that could not even connect to a full shared server is not one of them)
    killed = [w for w in spawned[:-1] if w.proc.poll() == -signal.SIGKILL]
    assert len(killed) == crash_limit
    for w in spawned[:-1]:
        if w not in killed:
            assert "too many clients" in w.output(), w.output()[-3000:]
    log = pg.log(rid)
    kinds = [r["kind"] for r in log]
    assert kinds == ["create", "claim", "step"] + ["recover"] * (crash_limit - 1) + ["dead_letter"]
    dead = log[-1]
    assert "died 2 times" in dead["meta"]["reason"]
    assert dead["meta"]["crashes"] == crash_limit
    assert dead["meta"]["worker"] == killed[-1].worker_id
    assert [r["meta"]["previous_worker"] for r in log if r["kind"] == "recover"] == [
        w.worker_id for w in killed[:-1]
    ]
    assert [r["meta"]["worker"] for r in log if r["kind"] in ("claim", "recover")] == [
        w.worker_id for w in killed
    ]

    # nobody executes it again: the survivor stays up, the run stays dead and untouched
    time.sleep(2 * (LEASE + POLL))
    assert survivor.alive()
    runs = pg.runs()
    assert runs[rid]["status"] == "dead"
    assert runs[rid]["lease_owner"] is None
    assert pg.log(rid) == log
    assert Counter(key for _, key, _, _ in pg.ledger()) == {"before": 1, "boom": crash_limit}

    async def inspect(client: durable.Client) -> Any:
        return await client.get_run(rid)

    assert run_client(pg, inspect).status == "dead"
