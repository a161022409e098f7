"""The job coordinator: runs one job on workers, through failures, to its end.

It owns the plan, the placement of subtasks on the workers' slots, the
checkpoint coordinator (and so the manifests), and the restart strategy.
Workers register over authenticated control connections (accepted,
heartbeated and given up by its base, :class:`~.worker_pool.WorkerPool`);
what to run comes as a :class:`~.jobspec.JobSpec`. The coordinator deploys
attempts on the workers:

1. wait until the registered workers offer enough free slots (the launcher,
   if any, replaces workers that exited);
2. place the subtasks and send every worker its :class:`~control.Deploy`
   of attempt ``a`` (with the checkpoint to restore);
3. while the attempt runs: trigger checkpoints at the sources, collect the
   acknowledgements, and after a manifest is written tell every worker the
   checkpoint completed (sinks commit then);
4. when every task finished: one final checkpoint, then ``Finish`` and the
   counts; on a stop request: a stop checkpoint, then ``Finish``;
5. on a failure — a worker reports one, its connection breaks, or its
   heartbeat stops — cancel attempt ``a`` everywhere, ask the restart
   strategy, and deploy attempt ``a + 1`` from the latest completed
   checkpoint (global rollback, as Flink does for pipelined exchanges).

Workers listeners (:meth:`JobCoordinator.add_workers_listener`, the
dashboard's) hear of every change of the workers, on the coordinator's thread.

Fencing: acknowledgements and reports of any attempt but the current one
are dropped, and a worker given up on is disconnected, so a partitioned or
paused worker can neither complete a checkpoint nor commit output.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from weirflow.checkpoint import (
    CheckpointCorruptError,
    CheckpointStorage,
    collect_shared_files_or_warn,
    open_job_storage,
)
from weirflow.errors import ConfigError, JobFailedError
from weirflow.graph import compile_plan
from weirflow.records import JobResult, OperatorCounts
from weirflow.runtime import control
from weirflow.runtime.attempt import AttemptFailedError, AttemptRun
from weirflow.runtime.checkpointed import RunListener
from weirflow.runtime.cluster_metrics import OperatorPlaces, latest_counts
from weirflow.runtime.jobspec import JobSpec
from weirflow.runtime.launcher import Launcher
from weirflow.runtime.membership import WorkerEntry, WorkerStatus
from weirflow.runtime.placement import place
from weirflow.runtime.restore_points import RestorePoints, fit_to_job
from weirflow.runtime.savepoint_requests import SavepointRequests
from weirflow.runtime.worker_pool import WorkerPool

log = logging.getLogger("weirflow.coordinator")

#: Called with the registered workers (lost ones left out) each time they change.
WorkersListener = Callable[[list[control.WorkerInfo]], None]


class _StoppedWhileRecovering(Exception):
    """A stop was requested during a restart's backoff or while waiting for free slots."""


class JobCoordinator(WorkerPool):
    """Runs jobs on registered workers (see the module docs for the steps).

    Call :meth:`start` once, then :meth:`run` for a job (or :meth:`serve`
    to run jobs that clients submit), then :meth:`close`.

    Args:
        secret, listen, launcher, heartbeat_interval_s, heartbeat_timeout_s:
            the worker pool's (see :class:`~weirflow.runtime.worker_pool.WorkerPool`).
        worker_wait_s: how long an attempt waits for enough free slots (s).
        clock: processing time in ms.

    Raises:
        OSError: ``listen`` cannot be bound.
    """

    def __init__(
        self,
        secret: bytes,
        listen: str = "127.0.0.1:0",
        *,
        launcher: Launcher | None = None,
        heartbeat_interval_s: float = 1.0,
        heartbeat_timeout_s: float = 10.0,
        worker_wait_s: float = 60.0,
        clock: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(secret, listen, launcher, heartbeat_interval_s, heartbeat_timeout_s)
        self.worker_wait_s = worker_wait_s
        self.stop = threading.Event()
        self.listener = RunListener()
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self.restarts = 0
        self.checkpoints_completed = 0
        self.recovery_ms: list[int] = []
        # direction → lag-driven rescales of the job so far; kept by whoever rescales it
        # (a rescale ends this coordinator's run), exported with its metrics
        self.rescales: dict[str, int] = {}
        self.recovery_started: int | None = None
        self.last_completed: int | None = None
        self.last_completed_ms: int | None = None
        self.spec: JobSpec | None = None
        self.task_ids: list[str] = []
        self.storage: CheckpointStorage | None = None
        self.savepoint_requests = SavepointRequests()
        self._workers_listeners: list[WorkersListener] = []
        self._workers_seen: list[control.WorkerInfo] = []

    # -- watching the workers ----------------------------------------------------

    def add_workers_listener(self, listener: WorkersListener) -> None:
        """Tell ``listener`` the registered workers now and after every change.

        A change is a worker joining or being lost, or one changing state or
        subtasks. Call before :meth:`start`; later calls come from the
        coordinator's thread, so ``listener`` must be quick and must not raise.

        Args:
            listener: called with the workers (lost ones left out), in joining order.
        """
        self._workers_listeners.append(listener)
        listener(self._worker_infos())

    def _worker_infos(self) -> list[control.WorkerInfo]:
        return [
            control.WorkerInfo(w.id, w.host, w.slots, w.status.value, list(w.subtasks), w.location)
            for w in list(self.workers.values())
            if w.status is not WorkerStatus.LOST
        ]

    def _publish_workers(self) -> None:
        if not self._workers_listeners:
            return
        infos = self._worker_infos()
        if infos == self._workers_seen:
            return
        self._workers_seen = infos
        for listener in self._workers_listeners:
            listener(infos)

    def _membership(self, wid: str, event: Any) -> WorkerEntry | None:
        try:
            return super()._membership(wid, event)
        finally:
            self._publish_workers()

    # -- the run -----------------------------------------------------------------

    def status(self) -> control.Status:
        """What ``weirflow status`` shows: workers, slots, subtasks, checkpoints, restarts,
        and the operator subtasks' counts of the workers' latest heartbeats."""
        workers = self._worker_infos()
        spec = self.spec
        operators = (
            OperatorPlaces(spec.graph, spec.parallelism, spec.max_parallelism).samples(
                latest_counts(self.workers.values())
            )
            if spec is not None
            else ()
        )
        return control.Status(
            job=spec.graph.name if spec is not None else None,
            parallelism=spec.parallelism if spec is not None else 0,
            attempt=self.attempt,
            restarts=self.restarts,
            last_completed_checkpoint=self.last_completed,
            workers=workers,
            operators=operators,
        )

    def run(
        self,
        spec: JobSpec,
        *,
        stop: threading.Event | None = None,
        listener: RunListener | None = None,
        savepoints: SavepointRequests | None = None,
    ) -> JobResult:
        """Run ``spec`` to its end (or stop), through restarts.

        Args:
            spec: what to run.
            stop: when set, the job takes a stop checkpoint and ends.
            listener: progress callbacks.
            savepoints: savepoint requests from other threads (the control endpoint).

        Returns:
            The :class:`~weirflow.records.JobResult`: counts summed over workers.

        Raises:
            JobFailedError: an attempt failed and no restart follows.
            ConfigError: the options or the checkpoint to restore do not fit.
        """
        if spec.guarantee == "at_most_once" and spec.checkpoint is not None:
            raise ConfigError("at_most_once takes no checkpoints")
        plan = compile_plan(spec.graph, spec.parallelism, spec.max_parallelism)
        p = spec.parallelism
        self.spec = spec
        self.task_ids = [
            f"{spec.graph.get(chain.head).name}[{i}/{p}]" for chain in plan.chains for i in range(p)
        ]
        self.storage = (
            open_job_storage(spec.checkpoint, spec.graph.name)
            if spec.checkpoint is not None
            else None
        )
        if self.storage is not None:
            self.storage.check_writable()
        self.stop = stop or threading.Event()
        self.listener = listener or RunListener()
        self.savepoint_requests = savepoints or SavepointRequests()
        self.restarts = 0
        self.checkpoints_completed = 0
        self.last_completed = None
        self.last_completed_ms = None
        return self._attempts(self.clock())

    def _attempts(self, start: int) -> JobResult:
        spec = self.spec
        assert spec is not None
        try:
            counts = self._attempts_until_done()
        except _StoppedWhileRecovering:
            # Nothing runs, so there is no stop checkpoint to take: the latest completed
            # checkpoint is where a later run resumes.
            log.info("job %s stopped while recovering", spec.graph.name)
            counts = {}
        return JobResult(
            job=spec.graph.name,
            parallelism=spec.parallelism,
            operators=counts,
            checkpoints_completed=self.checkpoints_completed,
            restarts=self.restarts,
            duration_ms=self.clock() - start,
        )

    def _attempts_until_done(self) -> dict[str, OperatorCounts]:
        spec = self.spec
        assert spec is not None
        tracker = spec.restart.tracker()
        points = self._restore_points()
        if self.storage is not None:
            # nothing is in flight before the first attempt: orphans of a crash go now
            collect_shared_files_or_warn(self.storage)
        restore_url = self._first_url(points)
        while True:
            self.attempt += 1
            started = self.clock()
            try:
                return self._run_attempt(restore_url)
            except AttemptFailedError as e:
                failed_at = self.clock()
                self._cancel(str(e))
                wait_ms = tracker.on_failure(failed_at, started) if e.retriable else None
                self.listener.attempt_failed(self.attempt, e, wait_ms)
                if wait_ms is None:
                    raise JobFailedError(f"job {spec.graph.name!r} failed: {e}") from e
                log.warning(
                    "attempt %d of job %s failed (%s); restarting in %d ms",
                    self.attempt,
                    spec.graph.name,
                    e,
                    wait_ms,
                )
            except BaseException:
                # The job ends here (a manifest conflict, a storage that broke, a stop while
                # waiting for slots): nothing of the attempt may run on, nor keep the slots.
                self._cancel("the job ended")
                raise
            self._sleep_handling_events(wait_ms / 1000)
            self.restarts += 1
            latest = points.latest_of_this_run() if points is not None else None
            if latest is not None:
                assert self.storage is not None
                restore_url = self.storage.checkpoint_url(latest.checkpoint_id)
            self.recovery_started = failed_at

    def _restore_points(self) -> RestorePoints | None:
        assert self.spec is not None
        if self.storage is None:
            if self.spec.restore is not None:
                raise ConfigError("restoring needs checkpoints: run with a checkpoint storage")
            return None
        try:
            points = RestorePoints(self.storage, self.spec.restore)
        except CheckpointCorruptError as e:
            raise ConfigError(str(e)) from e
        if points.first is not None and self.spec.checkpoint is not None:
            # refused here, before any worker loads it; workers leave dropped state behind
            fit_to_job(points.first, self.spec.graph, self.spec.checkpoint.allow_non_restored_state)
        return points

    def _first_url(self, points: RestorePoints | None) -> str | None:
        """Where workers load the first attempt's checkpoint from (``None``: fresh)."""
        if points is None or points.first is None:
            return None
        assert self.spec is not None and self.storage is not None
        if self.spec.restore in ("latest", "latest-or-fresh"):
            return self.storage.checkpoint_url(points.first.checkpoint_id)
        return self.spec.restore

    def _sleep_handling_events(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if self.stop.is_set() or self.savepoint_requests.stop_submitted:
                raise _StoppedWhileRecovering
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                wid, event = self.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                return
            self._membership(wid, event)

    # -- one attempt ---------------------------------------------------------------

    def _await_slots(self) -> list[WorkerEntry]:
        assert self.spec is not None
        need = self.spec.parallelism
        deadline = time.monotonic() + self.worker_wait_s
        while True:
            if self.stop.is_set() or self.savepoint_requests.stop_submitted:
                raise _StoppedWhileRecovering
            if self.launcher is not None:
                self.launcher.replace_exited()
                # the workers it reported lost must not be picked below
                self.drain_membership()
            free = self._free_workers()
            if sum(w.slots for w in free) >= need:
                return free
            left = deadline - time.monotonic()
            if left <= 0:
                have = sum(w.slots for w in free)
                raise AttemptFailedError(
                    f"waited {self.worker_wait_s:.0f} s for {need} free slots, the workers offer "
                    f"{have}: start more workers (weirflow worker --coordinator {self.address}) "
                    "or lower --parallelism",
                    retriable=False,
                )
            try:
                wid, event = self.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            with contextlib.suppress(AttemptFailedError):
                self._membership(wid, event)

    def _storage_probe(self, used: list[WorkerEntry]) -> str | None:
        """With workers on several hosts and a local checkpoint folder, write a probe that
        every worker must find there (a folder mounted on every host passes; one that is
        local to each host does not). Return the probe's token, or ``None`` for no check."""
        if self.storage is None or len({w.host for w in used}) < 2:
            return None
        if not self.storage.root_url.startswith("file://"):
            return None
        token = uuid.uuid4().hex
        self.storage.fs.makedirs(self.storage.root, exist_ok=True)
        self.storage.fs.pipe_file(f"{self.storage.root}/{control.SHARED_PROBE}", token.encode())
        return token

    def _run_attempt(self, restore_url: str | None) -> dict[str, OperatorCounts]:
        spec = self.spec
        assert spec is not None
        free = self._await_slots()
        owners = place(spec.parallelism, [(w.id, w.slots) for w in free])
        used = [w for w in free if w.id in set(owners.values())]
        probe = self._storage_probe(used)
        peers = {w.id: w.data_address for w in used}
        mode = spec.checkpoint.mode if spec.checkpoint is not None else spec.guarantee
        options = control.RuntimeSpec.of(spec.options)
        for w in used:
            w.move(WorkerStatus.DEPLOYED)
            w.subtasks = [i for i, o in owners.items() if o == w.id]
            w.send(
                control.Deploy(
                    attempt=self.attempt,
                    job=spec.job,
                    parallelism=spec.parallelism,
                    max_parallelism=spec.max_parallelism,
                    subtasks=w.subtasks,
                    owners=owners,
                    peers=peers,
                    checkpoint_dir=spec.checkpoint.storage if spec.checkpoint else None,
                    mode=mode,
                    restore=restore_url,
                    options=options,
                    storage_probe=probe,
                    unaligned_after_ms=(
                        spec.checkpoint.unaligned_after_ms if spec.checkpoint is not None else None
                    ),
                    allow_duplicates_after_fallback=(
                        spec.checkpoint is not None
                        and spec.checkpoint.allow_duplicates_after_fallback
                    ),
                    allow_non_restored_state=(
                        spec.checkpoint is not None and spec.checkpoint.allow_non_restored_state
                    ),
                )
            )
        self._publish_workers()
        restored_from = None
        if restore_url is not None and self.storage is not None:
            restored_from = (
                int(restore_url.rstrip("/").rsplit("chk-", 1)[-1])
                if "chk-" in (restore_url)
                else None
            )
        self.listener.attempt_started(self.attempt - 1, restored_from)
        run = AttemptRun(self, used)
        try:
            return run.run()
        finally:
            run.savepoints.fail_all("the attempt ended first")
            if run.checkpoints is not None:
                run.checkpoints.shutdown()
            self._publish_workers()

    def _cancel(self, reason: str) -> None:
        for w in self.workers.values():
            if w.status is WorkerStatus.DEPLOYED:
                w.send(control.Cancel(self.attempt))
                w.move(WorkerStatus.IDLE)
        self._publish_workers()
