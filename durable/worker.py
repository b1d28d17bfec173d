"""Workers: processes that claim runs from queues and execute them, on many machines at once.

A :class:`Worker` is a :class:`~durable.WorkflowEngine` that serves queues: it claims
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
from datetime import timedelta
from typing import Any

from durable.engine import WorkflowEngine, WorkflowLike
from durable.leases import DEFAULT_CRASH_LIMIT, DEFAULT_LEASE, Limits
from durable.observe import bind
from durable.scheduling import stop_task
from statewf.clock import Clock
from statewf.engine import Engine
from statewf.errors import InvalidInput, StatewfError, StoreError
from statewf.spec import Machine
from statewf.store import Tx
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


class Worker(WorkflowEngine):
    """A process that executes runs from queues, alongside any number of others.

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
    """

    def __init__(
        self,
        engine: Engine | str | None = None,
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
    ) -> None:
        names, limits = _queues(queues)
        if resource_concurrency is not None and resource_concurrency < 1:
            raise InvalidInput(
                f"resource_concurrency must be at least 1, got {resource_concurrency!r}"
            )
        super().__init__(
            engine,
            workflows=workflows,
            clock=clock,
            recover=True,
            scheduler=True,
            poll_interval=poll_interval,
            db_threads=db_threads or min(32, concurrency + 4),
            schema=schema,
            table_prefix=table_prefix,
            lease=lease,
            crash_limit=crash_limit,
            concurrency=concurrency,
            queues=names,
            labels=labels,
            worker_id=worker_id,
        )
        self.limits = Limits(queues=limits, per_resource=resource_concurrency)
        self.shutdown_timeout = shutdown_timeout
        self.engine.register(*machines)
        self.fire_timers = timers
        self._stop = asyncio.Event()
        self._registered = False
        self._timer_task: asyncio.Task[None] | None = None

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
                self._timer_task = asyncio.get_running_loop().create_task(
                    self._fire_timers(), name=f"statewf-timers-{self.worker_id}"
                )
            log.info(
                "worker %s started: queues %s, concurrency %s, labels %s, workflows %s",
                self.worker_id,
                self.queues,
                self.concurrency,
                self.labels or "none",
                ", ".join(f"{n}@{v}" for n, v in self._workflow_versions()) or "none",
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
                await self.start()
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
        log.info("worker %s stopping: %s run(s) executing", self.worker_id, len(self._tasks))
        await self._stop_scheduler()  # no new claims from here on
        if self._timer_task is not None:
            await stop_task(self._timer_task)
        for executor in list(self._executors.values()):
            executor.draining = True  # finish the step under way, start no other
        tasks = list(self._tasks.values())
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
        }

        def insert() -> int:
            # A fixed worker id started again (pod-0 after a kill) takes its row back
            # and ends its previous incarnation's leases: those runs are claimed at
            # once, under a new epoch, and the interruption counts as a crash.
            with self.engine.store.transaction() as tx:
                now = db_now(tx)
                register_worker(tx, {**values, "started_at": now, "heartbeat_at": now})
                return expire_all(tx, self.worker_id, now, keep=mine)

        mine = self._executing()
        ended = await self.host.db(insert)
        self._registered = True
        if ended:
            log.warning(
                "worker %s: ended the leases of %s run(s) its previous incarnation held; "
                "they are taken up again now",
                self.worker_id,
                ended,
            )
            self._wake_soon()

    async def _closing(self) -> None:
        await self._unregister()

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

    def _records_beats(self) -> bool:
        return self._registered

    def _record_beat(self, tx: Tx, held: int) -> None:
        if self._registered:
            beat(tx, self.worker_id, db_now(tx), held)

    # ------------------------------------------------------------ machine timers

    def _wants_timers(self) -> bool:
        if self.fire_timers is not None:
            return self.fire_timers
        return bool(self.engine.machines())

    async def _fire_timers(self) -> None:
        """Fire declarative machines' due timers until the worker stops."""
        while True:
            try:
                fired = await self.host.db(self.engine.fire_due_timers)
                if fired:
                    continue
                wake = await self.host.db(self.engine.next_wake_at)
            except StatewfError as exc:
                log.warning("worker %s: firing timers failed: %s", self.worker_id, exc)
                wake = None
            delay = self.poll_interval
            if wake is not None:
                delay = min(delay, (wake - self.clock.now()).total_seconds())
            await asyncio.sleep(max(0.05, delay))


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
