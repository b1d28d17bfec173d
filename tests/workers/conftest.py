"""Fixtures for the worker tests: a fresh PostgreSQL schema, worker subprocesses, a ledger.

* ``pg``: a :class:`PgTarget` (``url``, ``schema``) whose statewf tables exist and
  which has a side-effect ledger table ``<schema>.ledger``; dropped after the test.
* ``workers``: a :class:`WorkerPool`; ``workers.spawn(...)`` starts
  ``tests/workers/worker_proc.py`` as a real ``durable.Worker`` process and returns a
  :class:`WorkerProc` once its row is in the workers table. Every process still alive
  when the test ends is killed (SIGCONT first, then SIGKILL).

The workflows the worker processes implement are in ``worker_proc.py`` (its refs can be
imported by tests for starting runs through ``durable.Client``). Worker tests run on
PostgreSQL only: they skip when no server answers, and fail under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import sqlalchemy as sa

import durable
import statewf
from statewf.errors import StoreError
from tests.conftest import PG_URL, require_postgres

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORKER_PROC = HERE / "worker_proc.py"

T = TypeVar("T")


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://``) as psycopg takes it (``postgresql://``)."""
    return (
        sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class PgTarget:
    """Where a worker test's tables are: a database URL and a schema of its own.

    Its readers share one connection (the server's slots are shared with other test
    runs: one held connection beats competing for a new one on every poll).
    """

    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.schema = schema
        self._conn: psycopg.Connection[Any] | None = None

    def __repr__(self) -> str:
        return f"PgTarget(url={self.url!r}, schema={self.schema!r})"

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit psycopg connection (close it, or use it as a context manager).

        When the shared server is momentarily full ("too many clients"), it tries again
        for up to 30 s rather than fail the test.
        """
        deadline = time.monotonic() + 30
        while True:
            try:
                return psycopg.connect(libpq_url(self.url), autocommit=True, connect_timeout=5)
            except psycopg.OperationalError as exc:
                if "too many clients" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.25)

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Rows of one query; ``{s}`` in ``sql`` is replaced with the quoted schema."""
        sql = sql.replace("{s}", f'"{self.schema}"')
        for attempt in range(2):
            if self._conn is None or self._conn.closed:
                self._conn = self.connect()
            try:
                cur = self._conn.execute(sql, params)
                return list(cur.fetchall()) if cur.description is not None else []
            except psycopg.OperationalError:
                self._conn.close()  # the server restarted: one new connection, one more try
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def backends(self, app_name: str) -> int:
        """How many server backends still serve connections named ``app_name``."""
        rows = self.query(
            "select count(*) from pg_stat_activity where application_name = %s", (app_name,)
        )
        return int(rows[0][0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------ readers

    def ledger(self) -> list[tuple[str, str, int, str]]:
        """The side-effect ledger in insertion order: (run_id, step, pid, kind)."""
        return [
            (str(r), str(s), int(p), str(k))
            for r, s, p, k in self.query(
                "select run_id, step, pid, kind from {s}.ledger order by id"
            )
        ]

    def log(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Log rows (of one run, or all) in order: instance_id, seq, kind, key, meta, payload."""
        sql = (
            "select instance_id, seq, kind, key, meta, payload, created_at "
            "from {s}.statewf_transitions"
        )
        params: tuple[Any, ...] = ()
        if run_id is not None:
            sql += " where instance_id = %s"
            params = (run_id,)
        rows = self.query(sql + " order by instance_id, seq", params)
        names = ("instance_id", "seq", "kind", "key", "meta", "payload", "created_at")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def runs(self) -> dict[str, dict[str, Any]]:
        """Every instance by id: status, lease_owner, lease_expires_at, lease_epoch, context."""
        rows = self.query(
            "select id, status, lease_owner, lease_expires_at, lease_epoch, context "
            "from {s}.statewf_instances"
        )
        names = ("status", "lease_owner", "lease_expires_at", "lease_epoch", "context")
        return {row[0]: dict(zip(names, row[1:], strict=True)) for row in rows}

    def worker_rows(self) -> dict[str, dict[str, Any]]:
        """Rows of the workers table by worker id."""
        rows = self.query("select id, pid, heartbeat_at, stopped_at, held from {s}.statewf_workers")
        names = ("pid", "heartbeat_at", "stopped_at", "held")
        return {row[0]: dict(zip(names, row[1:], strict=True)) for row in rows}


def run_client(target: PgTarget, fn: Callable[[durable.Client], Awaitable[T]]) -> T:
    """``await fn(client)`` with a ``durable.Client`` on ``target`` (closed after); sync.

    When the shared server is full ("too many clients"), the whole call is tried again
    (for up to 30 s): make ``fn`` safe to repeat (idempotency keys, reads).
    """

    async def once() -> T:
        async with durable.Client(target.url, schema=target.schema) as client:
            return await fn(client)

    deadline = time.monotonic() + 30
    while True:
        try:
            return asyncio.run(once())
        except StoreError as exc:
            if "too many clients" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.25)


@pytest.fixture
def pg() -> Iterator[PgTarget]:
    """A fresh PostgreSQL schema with statewf's tables and a ``ledger`` table; dropped after."""
    require_postgres()
    target = PgTarget(PG_URL, f"w_{uuid.uuid4().hex[:12]}")
    statewf.Engine(target.url, schema=target.schema).close()  # creates the tables
    target.query(
        "create table {s}.ledger (id bigserial primary key, run_id text not null, "
        "step text not null, pid integer not null, kind text not null, "
        "at timestamptz not null default clock_timestamp())"
    )
    yield target
    target.query(f'drop schema if exists "{target.schema}" cascade')
    target.close()


@dataclass
class WorkerProc:
    """One worker subprocess: its Popen, its worker id, its log file."""

    name: str
    worker_id: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    args: list[str] = field(default_factory=list)
    #: the ``application_name`` of every connection it opens (libpq's ``PGAPPNAME``)
    app_name: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL it and reap it."""
        if self.alive():
            self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def output(self) -> str:
        """What the process logged so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class WorkerPool:
    """Starts worker subprocesses on one :class:`PgTarget`; kills leftovers at the end."""

    def __init__(self, target: PgTarget, tmp_path: Path) -> None:
        self.target = target
        self.tmp_path = tmp_path
        self.procs: list[WorkerProc] = []

    def spawn(
        self,
        name: str,
        *,
        queues: str = "default",
        concurrency: int = 4,
        lease: float = 1.5,
        poll: float = 0.3,
        crash_limit: int = 3,
        shutdown_timeout: float = 5.0,
        wait_ready: bool = True,
        extra: list[str] | None = None,
        worker_id: str | None = None,
        skew: float = 0.0,
    ) -> WorkerProc:
        """Start ``worker_proc.py`` as worker ``name``; by default wait until it registered.

        Its worker id is ``worker_id`` or ``"<name>:<pid>"``; its output goes to
        ``<tmp_path>/<name>.log``. ``skew``: seconds its wall clock runs ahead
        (``skewed/sitecustomize.py``).
        """
        log_path = self.tmp_path / f"{name}.log"
        args = [
            sys.executable,
            str(WORKER_PROC),
            "--url",
            self.target.url,
            "--schema",
            self.target.schema,
            "--name",
            name,
            "--queues",
            queues,
            "--concurrency",
            str(concurrency),
            "--lease",
            str(lease),
            "--poll",
            str(poll),
            "--crash-limit",
            str(crash_limit),
            "--shutdown-timeout",
            str(shutdown_timeout),
            *(extra or []),
            *(["--worker-id", worker_id] if worker_id else []),
        ]
        paths = [str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]
        app_name = f"statewf-test-{name}-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PGAPPNAME": app_name}
        if skew:
            paths.insert(0, str(HERE / "skewed"))
            env["WORKER_PROC_SKEW"] = str(skew)
        env["PYTHONPATH"] = os.pathsep.join(paths)
        with log_path.open("ab") as out:
            proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        worker = WorkerProc(name, worker_id or f"{name}:{proc.pid}", proc, log_path, args, app_name)
        self.procs.append(worker)
        if wait_ready:
            self.wait_ready(worker)
        return worker

    def wait_ready(self, worker: WorkerProc, timeout: float = 30.0) -> None:
        """Wait until ``worker`` has its row in the workers table (it then claims)."""

        def ready() -> bool:
            if not worker.alive():
                pytest.fail(f"worker {worker.name} exited early:\n{worker.output()[-3000:]}")
            return worker.worker_id in self.target.worker_rows()

        wait_until(ready, timeout=timeout, what=f"worker {worker.name} to register")

    def close(self) -> None:
        for worker in self.procs:
            if worker.alive():
                with contextlib.suppress(ProcessLookupError):
                    worker.signal(signal.SIGCONT)
                    worker.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(10)


@pytest.fixture
def workers(pg: PgTarget, tmp_path: Path) -> Iterator[WorkerPool]:
    """Starts worker subprocesses on ``pg``; those still alive at the end are killed."""
    pool = WorkerPool(pg, tmp_path)
    yield pool
    pool.close()
