"""Running a job with checkpoints, failover and restarts.

One *run* consists of *attempts*. Each attempt builds the job, restores it
from a checkpoint (or starts fresh), and steps it on the local scheduler
while a :class:`~weirflow.checkpoint.CheckpointCoordinator` triggers
checkpoints. A failed attempt is closed, the restart strategy decides on a
restart, and the next attempt restores from the latest completed checkpoint.

Per checkpoint ``n`` (asynchronous barrier snapshots, Carbone et al. 2015):

1. the coordinator says ``n`` is due; every running source task snapshots
   its split positions and sends ``CheckpointBarrier(n)`` downstream;
2. every other task snapshots when the barrier arrived on all its inputs
   (aligned in exactly-once mode), sends the barrier on, and hands its
   encoded state to the writer thread (the synchronous part ends here);
3. the writer thread writes the state files and acknowledges to the
   coordinator, which writes the manifest after the last acknowledgement;
4. on the scheduler thread, every task is notified that ``n`` completed;
   two-phase-commit sinks commit.

Tasks whose input already ended snapshot their final state without a
barrier. A bounded job ends with one final checkpoint, so that sinks commit
everything; a stop request (SIGTERM) does the same before returning.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from weirflow.checkpoint import (
    CheckpointConfig,
    CheckpointCoordinator,
    CheckpointStatus,
    CheckpointStorage,
    CompletedCheckpoint,
    Manifest,
    collect_shared_files_or_warn,
    open_job_storage,
)
from weirflow.errors import (
    CheckpointError,
    ConfigError,
    JobFailedError,
    WeirflowError,
    is_retriable,
)
from weirflow.faults import fault_point
from weirflow.graph import LogicalGraph, compile_plan, operator_signatures
from weirflow.records import JobResult
from weirflow.runtime.build import BuiltJob, RuntimeOptions, build_job
from weirflow.runtime.events import CheckpointBarrier
from weirflow.runtime.inflight import submit_when_captured
from weirflow.runtime.inflight_restore import plan_in_flight
from weirflow.runtime.job import counts
from weirflow.runtime.local import LocalScheduler
from weirflow.runtime.operators.source import refuse_duplicate_sink_output
from weirflow.runtime.restart import RestartStrategy
from weirflow.runtime.restore_points import RestorePoints, fit_to_job
from weirflow.runtime.savepoint_requests import SavepointRequests, SavepointWaiters
from weirflow.runtime.snapshot_files import local_copies_of, local_verifier
from weirflow.runtime.snapshots import encode_task_snapshot, write_task_snapshot
from weirflow.runtime.state_restore import discard_downloads, plan_restore
from weirflow.runtime.task import Task, TaskState

log = logging.getLogger("weirflow.runtime")

_WAITING_FOR_END = (TaskState.ENDING, TaskState.FINISHED)
_STOP_ATTEMPTS = 3


class RunListener:
    """Callbacks for progress displays and metrics; every method is optional to override."""

    def attempt_started(self, attempt: int, restored_from: int | None) -> None:
        """An attempt starts (``restored_from``: the checkpoint id, or ``None`` when fresh)."""

    def checkpoint_completed(self, completed: CompletedCheckpoint) -> None:
        """A checkpoint completed and tasks were notified."""

    def attempt_failed(self, attempt: int, error: BaseException, wait_ms: int | None) -> None:
        """An attempt failed; ``wait_ms`` is ``None`` when no restart follows."""

    def attempt_running(
        self, scheduler: LocalScheduler, coordinator: CheckpointCoordinator | None
    ) -> None:
        """The attempt's tasks are built and restored and about to run.

        Metrics read the tasks and the coordinator (read-only; ``None`` in a
        run without checkpoints) and may add ``scheduler.hooks.before_round``
        hooks here.
        """


class _Attempt:
    """One attempt: the built job, its coordinator, and the checkpoint writer thread."""

    def __init__(
        self,
        run: CheckpointedRun,
        storage: CheckpointStorage,
        manifest: Manifest | None,
    ) -> None:
        self.run = run
        self.storage = storage
        self.manifest = manifest
        self.completed: queue.SimpleQueue[CompletedCheckpoint] = queue.SimpleQueue()
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="weirflow-checkpoint-writer")
        self.acked: dict[int, set[str]] = {}
        self.checkpoints_completed = 0
        self.stop_checkpoint: int | None = None
        self.stop_attempts = 0
        self.stop_done = False
        self.savepoints = SavepointWaiters()
        self.built: BuiltJob | None = None
        self.coordinator: CheckpointCoordinator | None = None

    def build(self) -> BuiltJob:
        r = self.run
        plan = compile_plan(r.graph, r.parallelism, r.max_parallelism)
        restored = (
            plan_restore(
                self.manifest,
                self.storage,
                r.graph,
                r.parallelism,
                r.max_parallelism,
                local_copies_of(r.options.state_backend, r.graph.name),
            )
            if self.manifest is not None
            else None
        )
        if restored is not None:
            assert self.manifest is not None
            refuse_duplicate_sink_output(
                r.graph,
                r.parallelism,
                restored,
                self.manifest.checkpoint_id,
                allow=r.config.allow_duplicates_after_fallback,
            )
        # nothing is in flight before the first checkpoint: orphans of a crash go now
        collect_shared_files_or_warn(self.storage)
        try:
            self.built = build_job(
                r.graph,
                plan,
                r.options,
                r.clock,
                r.sleep,
                self._on_snapshot,
                restored,
                r.config.mode,
            )
        finally:
            discard_downloads(restored)
        if self.manifest is not None:
            in_flight = plan_in_flight(
                self.manifest,
                self.storage,
                r.parallelism,
                [t.name for t in self.built.tasks],
                r.graph,
            )
            for task in self.built.tasks:
                if task.name in in_flight:
                    task.replay(in_flight[task.name])
        last = max(
            [
                *self.storage.completed_checkpoints(),
                self.manifest.checkpoint_id if self.manifest else 0,
            ]
        )
        self.coordinator = CheckpointCoordinator(
            r.config,
            self.storage,
            [t.name for t in self.built.tasks],
            r.clock,
            parallelism=r.parallelism,
            max_parallelism=r.max_parallelism,
            first_checkpoint_id=last + 1,
            operators=operator_signatures(r.graph),
        )
        return self.built

    # -- snapshots (scheduler thread, then writer thread) -------------------------

    def _on_snapshot(self, task: Task, checkpoint_id: int, states: dict[str, Any]) -> None:
        snap = encode_task_snapshot(task.name, task.subtask, task.head.ctx.key_group_range, states)
        self.acked.setdefault(checkpoint_id, set()).add(task.name)
        submit_when_captured(
            task.capture_of(checkpoint_id),
            snap,
            lambda s: self.writer.submit(self._write_and_acknowledge, checkpoint_id, s),
        )

    def _write_and_acknowledge(self, checkpoint_id: int, snap: Any) -> None:
        coordinator = self.coordinator
        assert coordinator is not None
        try:
            fault_point("state_write")
            completed = coordinator.acknowledge(
                checkpoint_id, write_task_snapshot(self.storage, checkpoint_id, snap)
            )
        except Exception as e:
            log.warning("checkpoint %d failed in %s: %s", checkpoint_id, snap.task_id, e)
            coordinator.decline(checkpoint_id, snap.task_id, f"{type(e).__name__}: {e}")
            return
        if completed is not None:
            self.completed.put(completed)

    # -- the per-round hook (scheduler thread) ------------------------------------

    def on_round(self, now_ms: int) -> bool:
        """Notify completed checkpoints, snapshot ended tasks, trigger due checkpoints.

        Returns:
            ``True`` to stop the scheduler (a requested stop has its checkpoint).
        """
        coordinator = self.coordinator
        assert coordinator is not None and self.built is not None
        self._notify_completed()
        coordinator.check_timeouts(now_ms)
        coordinator.check_failure_tolerance()
        self._snapshot_ended_tasks(coordinator.pending())
        if self.stop_done:
            return True
        self.savepoints.failed(
            {cid: coordinator.status(cid) for cid in self.savepoints.ids()}, self.stop_checkpoint
        )
        if self.stop_checkpoint is not None and self._stop_checkpoint_failed(coordinator):
            self.stop_attempts += 1
            if self.stop_attempts > _STOP_ATTEMPTS:
                raise JobFailedError(
                    f"the stop checkpoint of job {self.run.graph.name!r} failed "
                    f"{_STOP_ATTEMPTS} times; see the log for the cause"
                )
            failed = self.stop_checkpoint
            savepoint = failed in self.savepoints.ids()
            self.stop_checkpoint = coordinator.trigger_now(
                savepoint=savepoint, target=self.savepoints.target_of(failed)
            )
            self.savepoints.move(failed, self.stop_checkpoint)
            self._inject(self.stop_checkpoint, now_ms, savepoint=savepoint)
            return False
        for request in self.run.savepoint_requests.take():
            if self.stop_checkpoint is not None:
                request.done.set_exception(
                    CheckpointError(f"job {self.run.graph.name!r} is stopping already")
                )
                continue
            checkpoint_id = coordinator.trigger_now(savepoint=True, target=request.target)
            self.savepoints.add(checkpoint_id, request)
            self._inject(checkpoint_id, now_ms, savepoint=True)
            if request.stop:
                self._stop_at(checkpoint_id)
        if self.run.stop_requested() and self.stop_checkpoint is None:
            self.stop_checkpoint = coordinator.trigger_now()
            self._inject(self.stop_checkpoint, now_ms)
            self._stop_at(self.stop_checkpoint)
            return False
        if self.stop_checkpoint is None:
            checkpoint_id = coordinator.maybe_trigger(now_ms)
            if checkpoint_id is not None:
                self._inject(checkpoint_id, now_ms)
        return False

    def _stop_at(self, checkpoint_id: int) -> None:
        assert self.built is not None
        self.stop_checkpoint = checkpoint_id
        # Sources emit nothing after the stop barrier (as Flink's stop-with-savepoint),
        # so the last checkpoint holds everything read and nothing is read twice.
        for task in self.built.tasks:
            if task.is_source:
                task.paused = True

    def _stop_checkpoint_failed(self, coordinator: CheckpointCoordinator) -> bool:
        status = coordinator.status(self.stop_checkpoint)  # type: ignore[arg-type]
        return status is not None and status not in (
            CheckpointStatus.PENDING,
            CheckpointStatus.COMPLETED,
        )

    def _inject(self, checkpoint_id: int, now_ms: int, savepoint: bool = False) -> None:
        assert self.built is not None
        config = self.run.config
        # a savepoint is aligned whatever the mode, so it holds no in-flight buffers
        barrier = CheckpointBarrier(
            checkpoint_id,
            now_ms,
            aligned=savepoint or config.mode == "exactly_once",
            unaligned_after_ms=None if savepoint else config.unaligned_after_ms,
        )
        for task in self.built.tasks:
            if task.is_source and task.state is TaskState.RUNNING:
                task.snapshot_and_forward(barrier)
        self._snapshot_ended_tasks([checkpoint_id])

    def _snapshot_ended_tasks(self, pending: list[int]) -> None:
        assert self.built is not None
        for checkpoint_id in pending:
            acked = self.acked.get(checkpoint_id, set())
            for task in self.built.tasks:
                if task.state in _WAITING_FOR_END and task.name not in acked:
                    task.snapshot_finished(checkpoint_id)

    def _notify_completed(self) -> None:
        assert self.built is not None
        while not self.completed.empty():
            c = self.completed.get()
            fault_point("after_manifest")
            for task in self.built.tasks:
                task.notify_checkpoint_complete(c.checkpoint_id)
            self.checkpoints_completed += 1
            self.savepoints.completed(c)
            # a completed checkpoint subsumes every older one: their acknowledgements are done
            for old in [cid for cid in self.acked if cid <= c.checkpoint_id]:
                del self.acked[old]
            self.run.listener.checkpoint_completed(c)
            if self.stop_checkpoint is not None and c.checkpoint_id >= self.stop_checkpoint:
                self.stop_done = True

    # -- the end ---------------------------------------------------------------

    def final_checkpoint(self) -> None:
        """All tasks finished: snapshot them once more and commit (bounded jobs).

        Raises:
            JobFailedError: the final checkpoint did not complete.
        """
        coordinator = self.coordinator
        assert coordinator is not None and self.built is not None
        checkpoint_id = coordinator.trigger_now()
        self._snapshot_ended_tasks(coordinator.pending())
        self.writer.shutdown(wait=True)
        before = self.checkpoints_completed
        self._notify_completed()
        if coordinator.latest_completed_id != checkpoint_id or self.checkpoints_completed == before:
            raise JobFailedError(
                f"the final checkpoint {checkpoint_id} of job {self.run.graph.name!r} did not "
                "complete, so sinks could not commit their last records; see the log for the cause"
            )

    def close(self) -> None:
        """Stop the writer thread, close every task, fail savepoints still under way."""
        self.writer.shutdown(wait=True)
        self.savepoints.fail_all("the attempt ended first")
        if self.built is not None:
            for task in self.built.tasks:
                task.close()
        if self.coordinator is not None:
            self.coordinator.shutdown()


class CheckpointedRun:
    """A job run with checkpoints and a restart strategy, in this process.

    Args:
        graph: the logical graph.
        parallelism: subtasks per operator.
        max_parallelism: number of key groups.
        config: checkpoint configuration.
        restore: ``None`` (fresh; refused over completed checkpoints of the job),
            ``"none"`` (fresh on purpose), ``"latest"``, ``"latest-or-fresh"`` or a
            checkpoint/savepoint path.
        restart: the restart strategy for failed attempts (default: none).
        options: runtime sizes.
        clock: processing time in ms.
        sleep: blocking wait in seconds.
        stop: when set, the run takes a final checkpoint and returns.
        listener: progress callbacks.
        storage_options: fsspec options for the checkpoint storage (S3 endpoint, keys).
        savepoints: savepoint requests from other threads (the control endpoint).
    """

    def __init__(
        self,
        graph: LogicalGraph,
        parallelism: int,
        max_parallelism: int,
        config: CheckpointConfig,
        *,
        restore: str | None = None,
        restart: RestartStrategy | None = None,
        options: RuntimeOptions | None = None,
        clock: Callable[[], int],
        sleep: Callable[[float], None],
        stop: threading.Event | None = None,
        listener: RunListener | None = None,
        storage_options: dict[str, Any] | None = None,
        savepoints: SavepointRequests | None = None,
    ) -> None:
        if config.mode == "at_most_once":
            raise ConfigError(
                "mode='at_most_once' takes no checkpoints; run without checkpoint= instead "
                "(sources then resume from their committed consumer-group positions)"
            )
        self.graph = graph
        self.parallelism = parallelism
        self.max_parallelism = max_parallelism
        self.config = config
        self.restore = restore
        self.restart = restart or RestartStrategy.none()
        self.options = options or RuntimeOptions()
        self.clock = clock
        self.sleep = sleep
        self._stop = stop
        self.listener = listener or RunListener()
        self.storage = open_job_storage(config, graph.name, storage_options)
        self.scheduler_hook: Callable[[LocalScheduler], None] | None = None
        self.savepoint_requests = savepoints or SavepointRequests()

    def stop_requested(self) -> bool:
        """Whether a stop was requested."""
        asked = self._stop is not None and self._stop.is_set()
        return asked or self.savepoint_requests.stop_taken

    def run(self) -> JobResult:
        """Run attempts until the job ends, is stopped, or the restart strategy gives up.

        Returns:
            The last attempt's :class:`~weirflow.records.JobResult`.

        Raises:
            JobFailedError: an attempt failed and no restart follows (the
                last failure is the cause).
            WeirflowError: an attempt failed with an error that is not
                retriable (:func:`weirflow.errors.is_retriable`): at once,
                whatever the restart strategy.
            ConfigError: the job or the restored checkpoint does not fit, or
                the checkpoint storage cannot be written
                (:class:`~weirflow.checkpoint.CheckpointStorageError`).
        """
        tracker = self.restart.tracker()
        self.storage.check_writable()
        local = local_copies_of(self.options.state_backend, self.graph.name)
        self.storage.set_local_verifier(local_verifier(local))
        points = RestorePoints(self.storage, self.restore)
        manifest = points.first
        if manifest is not None:
            manifest = fit_to_job(manifest, self.graph, self.config.allow_non_restored_state)
        attempt_no = 0
        start = self.clock()
        while True:
            attempt = _Attempt(self, self.storage, manifest)
            started = self.clock()
            self.listener.attempt_started(
                attempt_no, manifest.checkpoint_id if manifest is not None else None
            )
            try:
                result = self._run_attempt(attempt)
                return result._replace(restarts=attempt_no, duration_ms=self.clock() - start)
            except ConfigError:
                raise
            except Exception as e:
                wait_ms = tracker.on_failure(self.clock(), started) if is_retriable(e) else None
                self.listener.attempt_failed(attempt_no, e, wait_ms)
                if wait_ms is None:
                    if isinstance(e, WeirflowError):
                        raise
                    raise JobFailedError(f"job {self.graph.name!r} failed: {e}") from e
                log.warning(
                    "job %s attempt %d failed (%s: %s); restarting in %d ms",
                    self.graph.name,
                    attempt_no,
                    type(e).__name__,
                    e,
                    wait_ms,
                )
                self.sleep(wait_ms / 1000)
                attempt_no += 1
                manifest = points.latest_of_this_run() or manifest

    def _run_attempt(self, attempt: _Attempt) -> JobResult:
        try:
            built = attempt.build()
            scheduler = LocalScheduler(built.tasks, built.channels, self.clock, self.sleep)
            scheduler.hooks.before_round.append(attempt.on_round)
            if self.scheduler_hook is not None:
                self.scheduler_hook(scheduler)
            assert attempt.coordinator is not None
            self.listener.attempt_running(scheduler, attempt.coordinator)
            if scheduler.run():
                attempt.final_checkpoint()
            return JobResult(
                job=self.graph.name,
                parallelism=self.parallelism,
                operators=counts(self.graph, built),
                checkpoints_completed=attempt.checkpoints_completed,
            )
        except BaseException:
            if attempt.built is not None:
                for task in attempt.built.tasks:
                    task.fail()
            raise
        finally:
            attempt.close()
