"""A chaos run: worker processes killed, stalled and restarted while runs execute.

Used by ``tests/chaos`` (short, bounded) and ``benchmarks/chaos.py`` (a longer soak).
Workers are real ``durable.Worker`` processes (``tests/workers/worker_proc.py``) with
fixed ids (``pod-0``..), restarted under their own name after each kill, as a
supervisor would. Every step writes to an application ledger outside statewf: plain
steps with their own connection (at least once), transactional steps in the step's
transaction (exactly once). :func:`check` then reads the log and the ledger and
counts what a payment team cares about: runs lost, steps recorded twice,
transactional effects duplicated, plain effects repeated outside a killed step.
"""

from __future__ import annotations

import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import worker_proc

import durable
import statewf
from tests.workers.conftest import PgTarget, WorkerPool, WorkerProc, run_client

FINAL = {"completed", "failed", "cancelled", "dead"}


@dataclass
class ChaosPlan:
    """What to run and what to break. Seconds are real time."""

    workers: int = 3
    runs: int = 40
    steps: int = 8
    pause: float = 0.02
    lease: float = 1.5
    concurrency: int = 4
    #: seconds between two SIGKILLs of a random worker (None: no kills)
    kill_every: float | None = 2.0
    #: seconds between two SIGSTOPs of a random worker, held ``stop_for`` (None: none)
    stop_every: float | None = None
    stop_for: float = 3.0
    #: seconds a killed worker stays down before it is started again
    restart_after: float = 0.5
    #: most seconds of chaos; then the fleet is left alone to finish
    duration: float = 20.0
    #: most seconds, after the chaos, for every run to finish
    settle: float = 60.0
    #: seconds ahead the clock of worker ``pod-0`` runs (0: true)
    skew: float = 0.0
    #: runs started over the chaos, spread in waves (1: all at the start)
    waves: int = 1
    seed: int = 20261201


@dataclass
class ChaosReport:
    """What happened and what the log and the ledger say about it."""

    runs_started: int = 0
    runs_completed: int = 0
    kills: int = 0
    stops: int = 0
    restarts: int = 0
    takeovers: int = 0
    #: seconds from a kill to the last of the victim's runs being claimed again
    recovery_seconds: list[float] = field(default_factory=list)
    lost: int = 0
    steps_recorded_twice: int = 0
    tx_effects_duplicated: int = 0
    plain_effects_repeated: int = 0
    #: plain effects repeated for a step that no killed or stalled worker was in
    plain_repeated_outside_a_kill: int = 0
    elapsed: float = 0.0
    problems: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        """The headline figures, for printing."""
        rec = sorted(self.recovery_seconds)
        return {
            "runs started": self.runs_started,
            "runs completed": self.runs_completed,
            "kills": self.kills,
            "stalls (SIGSTOP past the lease)": self.stops,
            "restarts": self.restarts,
            "takeovers": self.takeovers,
            "recovery after a kill, median s": round(rec[len(rec) // 2], 2) if rec else None,
            "recovery after a kill, max s": round(rec[-1], 2) if rec else None,
            "lost runs": self.lost,
            "steps recorded twice": self.steps_recorded_twice,
            "transactional effects duplicated": self.tx_effects_duplicated,
            "plain effects repeated (step in flight at a kill)": self.plain_effects_repeated,
            "plain effects repeated otherwise": self.plain_repeated_outside_a_kill,
            "elapsed s": round(self.elapsed, 1),
        }


def make_target(url: str) -> PgTarget:
    """A fresh schema with statewf's tables and a ledger (drop it with :func:`drop`)."""
    target = PgTarget(url, f"chaos_{uuid.uuid4().hex[:12]}")
    statewf.Engine(target.url, schema=target.schema).close()
    target.query(
        "create table {s}.ledger (id bigserial primary key, run_id text not null, "
        "step text not null, pid integer not null, kind text not null, "
        "at timestamptz not null default clock_timestamp())"
    )
    return target


def drop(target: PgTarget) -> None:
    """Drop a chaos schema."""
    target.query(f'drop schema if exists "{target.schema}" cascade')
    target.close()


def db_now(target: PgTarget) -> float:
    """The database's clock, as a POSIX timestamp."""
    return float(target.query("select extract(epoch from clock_timestamp())")[0][0])


class Chaos:
    """Drives one chaos run on ``target`` with worker processes from ``pool``."""

    def __init__(self, target: PgTarget, pool: WorkerPool, plan: ChaosPlan) -> None:
        self.target = target
        self.pool = pool
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.report = ChaosReport()
        self.fleet: dict[str, WorkerProc] = {}
        self.broken_pids: set[int] = set()
        self.run_ids: list[str] = []
        self._kills: list[tuple[float, set[str]]] = []
        self._spawned = 0

    def spawn(self, slot: str) -> WorkerProc:
        """Start (or start again) the worker named ``slot`` (its fixed id)."""
        self._spawned += 1
        proc = self.pool.spawn(
            f"{slot}-{self._spawned}",
            worker_id=slot,
            lease=self.plan.lease,
            concurrency=self.plan.concurrency,
            skew=self.plan.skew if slot == "pod-0" else 0.0,
        )
        self.fleet[slot] = proc
        return proc

    def start_runs(self, count: int) -> None:
        """Start ``count`` more runs through a client without the workflows' code."""
        data = {"steps": self.plan.steps, "pause": self.plan.pause}
        keys = [uuid.uuid4().hex for _ in range(count)]

        async def start(client: durable.Client) -> list[str]:
            runs = [
                await client.start_workflow(worker_proc.steps, data, idempotency_key=k)
                for k in keys
            ]
            return [r.id for r in runs]

        self.run_ids.extend(run_client(self.target, start))
        self.report.runs_started = len(self.run_ids)

    def kill_one(self) -> None:
        """SIGKILL a random live worker, one holding runs if any does (a kill of an idle
        worker tests nothing); start it again after ``restart_after``."""
        runs = self.target.runs()
        holders = sorted({r["lease_owner"] for r in runs.values()} & set(self.fleet))
        slot = self.rng.choice(holders or sorted(self.fleet))
        victim = self.fleet[slot]
        held = {rid for rid, r in runs.items() if r["lease_owner"] == slot}
        at = db_now(self.target)
        victim.signal(signal.SIGKILL)
        victim.proc.wait(10)
        self.broken_pids.add(victim.pid)
        self.report.kills += 1
        self._kills.append((at, held))
        time.sleep(self.plan.restart_after)
        self.spawn(slot)
        self.report.restarts += 1

    def stall_one(self) -> None:
        """SIGSTOP a random worker past its lease, then let it go on (SIGCONT)."""
        slot = self.rng.choice(sorted(self.fleet))
        victim = self.fleet[slot]
        victim.signal(signal.SIGSTOP)
        self.broken_pids.add(victim.pid)
        self.report.stops += 1
        time.sleep(self.plan.stop_for)
        victim.signal(signal.SIGCONT)

    def unfinished(self) -> list[str]:
        runs = self.target.runs()
        return [r for r in self.run_ids if runs[r]["status"] not in FINAL]

    def run(self) -> ChaosReport:
        """Start the fleet and the runs, break things for ``duration``, let it finish."""
        began = time.monotonic()
        plan = self.plan
        for i in range(plan.workers):
            self.spawn(f"pod-{i}")
        per_wave = max(1, plan.runs // plan.waves)
        self.start_runs(per_wave)
        waves_left = plan.waves - 1
        # kills a third of a wave apart from the waves' starts: at a wave's start its
        # runs are not claimed yet, and the kills would keep meeting idle workers
        offset = plan.duration / plan.waves / 3
        next_kill = time.monotonic() + (plan.kill_every or 0) + offset
        next_stop = time.monotonic() + (plan.stop_every or 0)
        next_wave = time.monotonic() + plan.duration / plan.waves
        chaos_ends = time.monotonic() + plan.duration
        while time.monotonic() < chaos_ends:
            if waves_left and time.monotonic() >= next_wave:
                self.start_runs(per_wave if waves_left > 1 else plan.runs - len(self.run_ids))
                waves_left -= 1
                next_wave += plan.duration / plan.waves
            if not waves_left and not self.unfinished():
                break
            now = time.monotonic()
            if plan.kill_every is not None and now >= next_kill:
                self.kill_one()
                next_kill = time.monotonic() + plan.kill_every
            elif plan.stop_every is not None and now >= next_stop:
                self.stall_one()
                next_stop = time.monotonic() + plan.stop_every
            time.sleep(0.05)
        if waves_left:
            self.start_runs(plan.runs - len(self.run_ids))
        settle_until = time.monotonic() + plan.settle
        while self.unfinished() and time.monotonic() < settle_until:
            time.sleep(0.1)
        self.report.elapsed = time.monotonic() - began
        check(self.target, self.run_ids, self.broken_pids, self._kills, self.report)
        return self.report


def check(
    target: PgTarget,
    run_ids: list[str],
    broken_pids: set[int],
    kills: list[tuple[float, set[str]]],
    report: ChaosReport,
) -> None:
    """Count, from the log and the ledger, what was lost or done twice."""
    runs = target.runs()
    log = target.log()
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in log:
        by_run[row["instance_id"]].append(row)
    report.runs_completed = sum(1 for r in run_ids if runs[r]["status"] == "completed")
    report.lost = len(run_ids) - report.runs_completed
    report.takeovers = sum(
        1
        for row in log
        if row["kind"] in ("claim", "recover") and row["meta"].get("reason") == "takeover"
    )
    effects: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for run_id, key, pid, kind in target.ledger():
        effects[(run_id, key)].append((pid, kind))
    for run_id in run_ids:
        steps = [r for r in by_run[run_id] if r["kind"] == "step"]
        counts = Counter(r["key"] for r in steps)
        report.steps_recorded_twice += sum(n - 1 for n in counts.values() if n > 1)
        for row in steps:
            done = effects.get((run_id, row["key"]), [])
            if row["meta"].get("transactional"):
                if len(done) != 1:
                    report.tx_effects_duplicated += max(0, len(done) - 1)
                    if not done:
                        report.problems.append(f"{run_id} {row['key']}: tx effect missing")
                continue
            if not done:
                report.problems.append(f"{run_id} {row['key']}: plain effect missing")
                continue
            if len(done) > 1:
                report.plain_effects_repeated += len(done) - 1
                # every attempt but the recorded one was by a killed or stalled worker
                pids = [pid for pid, _ in done]
                recorded = int(row["payload"]["result"])
                if recorded in pids:
                    pids.remove(recorded)
                if any(pid not in broken_pids for pid in pids):
                    report.plain_repeated_outside_a_kill += 1
    claimed_at: dict[str, list[float]] = defaultdict(list)
    for row in log:
        if row["kind"] in ("claim", "recover", "wake"):
            claimed_at[row["instance_id"]].append(row["created_at"].timestamp())
    for at, held in kills:
        waits = []
        for run_id in held:
            later = [t for t in claimed_at.get(run_id, []) if t > at]
            if later:
                waits.append(min(later) - at)
        if waits:
            report.recovery_seconds.append(max(waits))


def run_chaos(url: str, plan: ChaosPlan, tmp: Path) -> ChaosReport:
    """One chaos run on a fresh schema of ``url`` (dropped after); its report."""
    target = make_target(url)
    pool = WorkerPool(target, tmp)
    try:
        return Chaos(target, pool, plan).run()
    finally:
        pool.close()
        drop(target)
