"""Workers: processes that claim runs from queues and execute them, on many machines at once.

A :class:`Worker` has a :class:`~durable.WorkflowEngine` that serves queues: it claims
runnable runs of the workflows it implements (``FOR UPDATE SKIP LOCKED``), holds
each under a lease that it extends while working, and writes only while it holds
it. A worker that dies loses its runs when their leases run out; any other worker
takes them up in its ordinary claim pass. Idle workers sleep on LISTEN/NOTIFY
(PostgreSQL) and poll rarely. On SIGTERM a worker stops claiming, lets running
steps finish (up to ``shutdown_timeout``), hands its runs back and exits.

Workers also fire the due timers of the declarative machines registered on their
statewf engine, so a deployment needs no separate timer process::

    worker = durable.Worker(url, workflows=[onboard_impl], queues=["default"], concurrency=16)
    await worker.run()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from durable.control.claim import DEFAULT_CRASH_LIMIT, DEFAULT_LEASE, Limits
from durable.control.start import engine_of
from durable.engine import WorkflowEngine
from durable.execution.registry import WorkflowLike
from durable.execution.timing import WakeLoop
from durable.observe import bind
from statewf.clock import Clock
from statewf.engine import Engine
from statewf.errors import InvalidInput, StatewfError, StoreError
from statewf.spec import Machine
from statewf.store import DatabaseEngine, Tx
from statewf.store.leases import (
    beat,
    db_now,
    expire_all,
    held_by,
    list_workers,
    register_worker,
    stop_worker,
)

log = logging.getLogger("durable.worker")

#: Default seconds between two looks for work when no notification came.
DEFAULT_POLL = 5.0
#: Default seconds a stopping worker lets running steps finish.
DEFAULT_SHUTDOWN = 30.0


@dataclass(frozen=True)
class Queue:
    """A named queue and its limit: most runs executing at once across all workers.

    Declare the same limit on every worker that serves the queue; each enforces it
    when it claims (claims are serialized while a limit applies).
    """

    name: str
    concurrency: int | None = None


class Worker:
    """A process that executes runs from queues, alongside any number of others.

    It has a :class:`~durable.WorkflowEngine` (``workflow_engine``) that executes
    the runs it claims, and the leases that engine holds, whose heartbeat also
    writes this worker's row of the workers table.

    Args:
        engine: a :class:`statewf.Engine` or a database URL.
        workflows: the workflows (or ``ref.implement(...)`` results) it executes.
        machines: declarative machines whose due timers it fires (registered on the
            statewf engine; those already registered there are fired too).
        queues: queue names or :class:`Queue` objects it claims from.
        concurrency: most runs it executes at once.
        labels: what it offers (``{"gpu": "true"}``); runs that need labels go only
            to workers that offer them all.
        resource_concurrency: most runs of one ``resource_id`` executing at once
            across all workers, so one tenant cannot take every slot.
        lease: seconds a run stays held without a heartbeat (heartbeats every third).
        poll_interval: longest wait between two looks for work (notifications
            usually wake it sooner).
        crash_limit: crashed executions at one step before a run is dead-lettered.
        shutdown_timeout: seconds a stopping worker lets running steps finish.
        timers: fire machines' due timers (default: when any machine is registered).
        credentials: this worker's credentials or settings (any object, or a mapping,
            kept read-only): read inside workflow code and steps with
            :func:`durable.credentials` or ``ctx.credentials``; never written to the
            log or to log lines.
    """

    def __init__(
        self,
        engine: Engine | DatabaseEngine | str | None = None,
        *,
        workflows: Iterable[WorkflowLike] = (),
        machines: Iterable[Machine] = (),
        queues: Sequence[str | Queue] = ("default",),
        concurrency: int = 16,
        labels: Mapping[str, str] | None = None,
        resource_concurrency: int | None = None,
        lease: float = DEFAULT_LEASE,
        poll_interval: float = DEFAULT_POLL,
        crash_limit: int = DEFAULT_CRASH_LIMIT,
        shutdown_timeout: float = DEFAULT_SHUTDOWN,
        timers: bool | None = None,
        clock: Clock | None = None,
        schema: str | None = None,
        table_prefix: str = "statewf_",
        worker_id: str | None = None,
        db_threads: int | None = None,
        credentials: Any = None,
    ) -> None:
        names, limits = _queues(queues)
        if resource_concurrency is not None and resource_concurrency < 1:
            raise InvalidInput(
                f"resource_concurrency must be at least 1, got {resource_concurrency!r}"
            )
        self.engine, self._owns_engine = engine_of(engine, schema, table_prefix, clock)
        self.clock: Clock = clock or self.engine.clock
        #: executes the runs this worker claims
        self.workflow_engine = WorkflowEngine(
            self.engine,
            workflows=workflows,
            clock=clock,
            recover=True,
            scheduler=True,
            poll_interval=poll_interval,
            db_threads=db_threads or min(32, concurrency + 4),
            lease=lease,
            crash_limit=crash_limit,
            concurrency=concurrency,
            credentials=credentials,
            queues=names,
            labels=labels,
            worker_id=worker_id,
        )
        executor = self.workflow_engine.executor
        #: the leases this worker's engine holds (claims, heartbeats, releases)
        self.leases = executor.leases
        self.leases.limits = Limits(queues=limits, per_resource=resource_concurrency)
        self._executor = executor
        self.worker_id = self.leases.owner
        self.queues = names
        self.concurrency = concurrency
        self.labels = dict(labels or {})
        self.poll_interval = poll_interval
        self.shutdown_timeout = shutdown_timeout
        self.engine.register(*machines)
        self.fire_timers = timers
        self._stop = asyncio.Event()
        self._registered = False
        self._closed = False
        self._timers: WakeLoop | None = None

    # ------------------------------------------------------------ running

    async def run(self, *, install_signal_handlers: bool = True) -> None:
        """Work until :meth:`request_stop` (or SIGTERM/SIGINT), then stop gracefully."""
        with bind(worker=self.worker_id):
            if install_signal_handlers:
                self._install_signal_handlers()
            if not await self._start_when_the_database_answers():
                await self.shutdown()
                return
            if self._wants_timers():
                self._timers = WakeLoop(
                    f"timers of {self.worker_id}", self._fire_timers, self.clock, self.poll_interval
                )
                self._timers.start()
            log.info(
                "worker %s started: queues %s, concurrency %s, labels %s, workflows %s",
                self.worker_id,
                self.queues,
                self.concurrency,
                self.labels or "none",
                ", ".join(f"{wf.name}@{wf.version}" for wf in self.workflow_engine.workflows())
                or "none",
            )
            try:
                await self._stop.wait()
            finally:
                await self.shutdown()

    async def _start_when_the_database_answers(self) -> bool:
        """Start and register, retrying with back-off while the database refuses (it is
        restarting, or full); False if asked to stop meanwhile."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                await self._register()  # first: it ends a previous incarnation's leases
                await self.workflow_engine.start()
                return True
            except StoreError as exc:
                log.warning(
                    "worker %s cannot start yet (%s); trying again in %.1fs",
                    self.worker_id,
                    exc.message,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                delay = min(30.0, delay * 2)
        return False

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop gracefully (call it on the worker's event loop; from
        another thread use ``loop.call_soon_threadsafe(worker.request_stop)``)."""
        self._stop.set()

    async def shutdown(self) -> None:
        """Stop claiming, let running steps finish (up to ``shutdown_timeout``), release, close."""
        if self._closed:
            return
        executing = self._executor
        log.info("worker %s stopping: %s run(s) executing", self.worker_id, len(executing.tasks))
        await executing.stop_scheduler()  # no new claims from here on
        if self._timers is not None:
            await self._timers.stop()
        for executor in list(executing.running.values()):
            executor.drain()  # finish the step under way, start no other
        tasks = list(executing.tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.shutdown_timeout)
            if pending:
                log.warning(
                    "worker %s: %s run(s) still executing after %ss; stopping them (their "
                    "steps run again elsewhere)",
                    self.worker_id,
                    len(pending),
                    self.shutdown_timeout,
                )
        await self.close()  # cancels what is left, releases every lease, records the stop
        log.info("worker %s stopped", self.worker_id)

    async def close(self) -> None:
        """Stop at once (runs under way stay in progress, handed back), record the stop, free."""
        if self._closed:
            return
        self._closed = True
        if self._timers is not None:
            await self._timers.stop()
        await self.workflow_engine.close()
        await self._unregister()
        if self._owns_engine:
            self.engine.close()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)

    # ------------------------------------------------------------ the workers table

    async def _register(self) -> None:
        values: dict[str, Any] = {
            "id": self.worker_id,
            "host": socket.gethostname()[:255],
            "pid": os.getpid(),
            "queues": self.queues,
            "labels": self.labels,
            "concurrency": self.concurrency or 0,
            "held": 0,
            "stopped_at": None,
            # what it serves, so "no worker serves this version" can be answered
            "workflows": [list(pair) for pair in self._executor.registry.versions()],
        }

        def insert() -> int:
            # A fixed worker id started again (pod-0 after a kill) takes its row back
            # and ends its previous incarnation's leases: those runs are claimed at
            # once, under a new epoch, and the interruption counts as a crash.
            with self.engine.store.transaction() as tx:
                now = db_now(tx)
                register_worker(tx, {**values, "started_at": now, "heartbeat_at": now})
                return expire_all(tx, self.worker_id, now, keep=mine)

        mine = self._executor.executing()
        ended = await self._executor.host.db(insert)
        self._registered = True
        self.leases.beat_row = self._beat_row
        if ended:
            log.warning(
                "worker %s: ended the leases of %s run(s) its previous incarnation held; "
                "they are taken up again now",
                self.worker_id,
                ended,
            )
            self._executor.wake_soon()

    async def _unregister(self) -> None:
        if not self._registered:
            return

        def mark() -> None:
            with self.engine.store.transaction() as tx:
                stop_worker(tx, self.worker_id, db_now(tx))

        try:
            await asyncio.to_thread(mark)
        except StatewfError as exc:
            log.warning("worker %s could not record its stop: %s", self.worker_id, exc)

    def _beat_row(self, tx: Tx, executing: int, now: datetime) -> None:
        beat(tx, self.worker_id, now, executing)

    # ------------------------------------------------------------ machine timers

    def _wants_timers(self) -> bool:
        if self.fire_timers is not None:
            return self.fire_timers
        return bool(self.engine.machines())

    async def _fire_timers(self) -> datetime | None:
        """One pass of the timer loop: fire due timers; when the next one is due."""
        db = self._executor.host.db
        if await db(self.engine.fire_due_timers):
            return self.clock.now()  # a full batch may have left more: look again now
        return await db(self.engine.next_wake_at)


def _queues(queues: Sequence[str | Queue]) -> tuple[list[str], dict[str, int]]:
    if isinstance(queues, str | Queue):
        queues = [queues]
    if not queues:
        raise InvalidInput("a worker needs at least one queue to claim from")
    names: list[str] = []
    limits: dict[str, int] = {}
    for item in queues:
        queue = item if isinstance(item, Queue) else Queue(item)
        if not isinstance(queue.name, str) or not queue.name:
            raise InvalidInput(f"queue names are non-empty strings, got {queue.name!r}")
        if queue.concurrency is not None:
            if queue.concurrency < 1:
                raise InvalidInput(
                    f"queue {queue.name!r}: concurrency must be at least 1, got "
                    f"{queue.concurrency!r}"
                )
            limits[queue.name] = queue.concurrency
        names.append(queue.name)
    return names, limits


def live_workers(engine: Engine, *, within: float = 120.0) -> list[dict[str, Any]]:
    """Workers that heart-beat within the last ``within`` seconds, with the runs they hold."""
    with engine.store.transaction(readonly=True) as tx:
        now = db_now(tx)
        rows = list_workers(tx, since=now - timedelta(seconds=within))
        counts = held_by(tx, [r["id"] for r in rows], now)
    for row in rows:
        row["held"] = counts.get(row["id"], 0)
    return rows
