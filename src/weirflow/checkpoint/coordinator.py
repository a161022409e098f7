"""The checkpoint coordinator: triggers checkpoints, collects acknowledgements,
completes checkpoints by committing their manifest.

The algorithm is asynchronous barrier snapshotting (Carbone et al.,
"Lightweight Asynchronous Snapshots for Distributed Dataflows", 2015) as
Apache Flink's checkpoint coordinator runs it: the runtime injects barrier
``n`` at the sources when :meth:`CheckpointCoordinator.maybe_trigger` returns
``n``; each task acknowledges with its state handles; the last
acknowledgement commits the manifest, which alone makes ``n`` completed.
Afterwards older pending checkpoints are subsumed and retention runs.

What it remembers of finished checkpoints (statuses, statistics, failures
in a row) is kept by :class:`~.history.CheckpointHistory`; retention,
savepoint copies and deleting the files of failed checkpoints are
:mod:`.housekeeping`'s.

Invariants: ids strictly increase (also across restarts, through
``first_checkpoint_id``); periodic triggers never leave more than
``max_concurrent`` checkpoints pending; a checkpoint is COMPLETED exactly when
its manifest was committed by this coordinator.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping

from weirflow.checkpoint.config import CheckpointConfig
from weirflow.checkpoint.errors import (
    CheckpointConflictError,
    CheckpointFailuresExceededError,
    CheckpointTransitionError,
)
from weirflow.checkpoint.handles import TaskSnapshot
from weirflow.checkpoint.history import CheckpointHistory
from weirflow.checkpoint.housekeeping import copy_savepoint, delete_files, retain
from weirflow.checkpoint.lifecycle import STATE_TRANSITIONS, CheckpointStats, CoordinatorState
from weirflow.checkpoint.manifest import Manifest, check_metadata
from weirflow.checkpoint.pending import CheckpointStatus, CompletedCheckpoint, PendingCheckpoint
from weirflow.checkpoint.storage import CheckpointStorage
from weirflow.errors import CheckpointError, ConfigError, SerdeError

log = logging.getLogger(__name__)


class CheckpointCoordinator:
    """Triggers checkpoints and completes them once every task acknowledged.

    Thread-safe: every public method holds one lock, because the runtime
    acknowledges from the threads that ran the asynchronous snapshot parts.

    Args:
        config: intervals, timeout, concurrency and retention.
        storage: where manifests go and failed checkpoints are deleted.
        task_ids: every task that must acknowledge each checkpoint.
        clock: returns the current time in ms since the epoch.
        parallelism: the job's parallelism, recorded in manifests.
        max_parallelism: the number of key groups, recorded in manifests.
        first_checkpoint_id: the first id to hand out; after a restore, the
            restored checkpoint's id + 1.
        operators: the stateful operators' signatures, recorded in every manifest.

    Raises:
        ConfigError: no task ids, parallelism < 1, max_parallelism <
            parallelism, or first_checkpoint_id < 1.
    """

    def __init__(
        self,
        config: CheckpointConfig,
        storage: CheckpointStorage,
        task_ids: Collection[str],
        clock: Callable[[], int],
        *,
        parallelism: int,
        max_parallelism: int,
        first_checkpoint_id: int = 1,
        operators: Mapping[str, Mapping[str, str | None]] | None = None,
    ) -> None:
        if not task_ids:
            raise ConfigError("a checkpoint coordinator needs at least one task id")
        if parallelism < 1 or max_parallelism < parallelism:
            raise ConfigError(
                f"need 1 <= parallelism <= max_parallelism, got {parallelism} and {max_parallelism}"
            )
        if first_checkpoint_id < 1:
            raise ConfigError(f"first_checkpoint_id must be >= 1, got {first_checkpoint_id}")
        self.config = config
        self.storage = storage
        self.task_ids = frozenset(task_ids)
        self._clock = clock
        self._parallelism = parallelism
        self._max_parallelism = max_parallelism
        self._lock = threading.RLock()
        self._state = CoordinatorState.RUNNING
        self._next_id = first_checkpoint_id
        self._operators = dict(operators or {})
        self._pending: dict[int, PendingCheckpoint] = {}
        self._history = CheckpointHistory()
        self._savepoint_targets: dict[int, str | None] = {}
        # The first interval counts from start, so a job is not checkpointed at t=0.
        self._last_trigger_ms = clock()

    # -- lifecycle -------------------------------------------------------------

    @property
    def state(self) -> CoordinatorState:
        """The coordinator's lifecycle state."""
        return self._state

    def _set_state(self, new: CoordinatorState) -> None:
        if new not in STATE_TRANSITIONS[self._state]:
            raise CheckpointTransitionError(
                f"checkpoint coordinator cannot go from {self._state.name} to {new.name}"
            )
        self._state = new

    def suspend(self) -> None:
        """Stop periodic triggers (explicit ones stay allowed).

        Raises:
            CheckpointTransitionError: not RUNNING.
        """
        with self._lock:
            self._set_state(CoordinatorState.SUSPENDED)

    def resume(self) -> None:
        """Restart periodic triggers after :meth:`suspend`.

        Raises:
            CheckpointTransitionError: not SUSPENDED.
        """
        with self._lock:
            self._set_state(CoordinatorState.RUNNING)

    def shutdown(self, reason: str = "coordinator shut down") -> list[int]:
        """Shut down for good, failing every pending checkpoint.

        Args:
            reason: recorded as the pending checkpoints' failure reason.

        Returns:
            The ids of the checkpoints failed.

        Raises:
            CheckpointTransitionError: already shut down.
        """
        with self._lock:
            self._set_state(CoordinatorState.SHUT_DOWN)
            return self._fail_all(reason)

    def abort_pending(self, reason: str) -> list[int]:
        """Fail every pending checkpoint, e.g. when a task failed and the job fails over.

        Args:
            reason: recorded as the failure reason.

        Returns:
            The ids of the checkpoints failed, ascending.
        """
        with self._lock:
            return self._fail_all(reason)

    # -- triggering -----------------------------------------------------------

    def maybe_trigger(self, now_ms: int | None = None) -> int | None:
        """Trigger a periodic checkpoint if it is due.

        Due means: the coordinator is RUNNING, fewer than ``max_concurrent``
        checkpoints are pending, ``interval`` passed since the last trigger
        (or since start), and ``min_pause`` passed since the last completion.

        Args:
            now_ms: the current time in ms; the clock is read when ``None``.

        Returns:
            The new checkpoint's id (inject barrier ``id`` at the sources), or
            ``None`` when no checkpoint is due.
        """
        with self._lock:
            now = self._clock() if now_ms is None else now_ms
            if not self._is_due(now):
                return None
            return self._trigger(now, savepoint=False, target=None)

    def _is_due(self, now: int) -> bool:
        if self._state is not CoordinatorState.RUNNING:
            return False
        if len(self._pending) >= self.config.max_concurrent:
            return False
        if now - self._last_trigger_ms < self.config.interval_ms:
            return False
        last = self._history.last_completion_ms
        return last is None or now - last >= self.config.min_pause_ms

    def trigger_now(self, savepoint: bool = False, target: str | None = None) -> int:
        """Trigger a checkpoint at once, ignoring interval, min pause and max concurrent.

        For a final checkpoint on shutdown, or a savepoint. A savepoint is not
        subsumed by newer checkpoints; on completion it is copied to
        ``target`` (default ``<job>/savepoints/savepoint-<id>``).

        Args:
            savepoint: whether to write a savepoint on completion.
            target: the savepoint folder URL; only with ``savepoint=True``.

        Returns:
            The new checkpoint's id.

        Raises:
            CheckpointTransitionError: the coordinator is shut down.
            ConfigError: ``target`` given without ``savepoint=True``.
        """
        if target is not None and not savepoint:
            raise ConfigError("trigger_now(target=...) needs savepoint=True")
        with self._lock:
            if self._state is CoordinatorState.SHUT_DOWN:
                raise CheckpointTransitionError("checkpoint coordinator is shut down")
            return self._trigger(self._clock(), savepoint=savepoint, target=target)

    def _trigger(self, now: int, *, savepoint: bool, target: str | None) -> int:
        checkpoint_id = self._next_id
        self._next_id += 1
        self._pending[checkpoint_id] = PendingCheckpoint(
            checkpoint_id, now, self.task_ids, is_savepoint=savepoint
        )
        if savepoint:
            self._savepoint_targets[checkpoint_id] = target
        self._last_trigger_ms = now
        self._history.triggered()
        return checkpoint_id

    # -- acknowledgements -------------------------------------------------------

    def acknowledge(self, checkpoint_id: int, snapshot: TaskSnapshot) -> CompletedCheckpoint | None:
        """Record a task's acknowledgement; complete the checkpoint on the last one.

        Steps on the last acknowledgement:
            1. build the manifest from all task snapshots;
            2. commit it (atomic, exclusive): the checkpoint is now completed;
            3. mark it COMPLETED and update the statistics;
            4. subsume older pending checkpoints (not savepoints), deleting their files;
            5. apply retention;
            6. for a savepoint, copy it to its target folder (a failed copy is
               reported in ``CompletedCheckpoint.savepoint_error``, not raised).

        An acknowledgement for a checkpoint that is no longer pending (failed,
        subsumed, timed out) or unknown is ignored; the files of a failed or
        subsumed one are deleted again, as the late task may just have written them.

        Args:
            checkpoint_id: the acknowledged checkpoint.
            snapshot: the task's state handles and metadata.

        Returns:
            The completed checkpoint when this was the last acknowledgement (the
            caller then notifies the tasks), else ``None``.

        Raises:
            CheckpointError: the task is unknown or acknowledged twice; or the
                manifest could not be written (the checkpoint is failed).
            CheckpointConflictError: another writer already completed this id.
        """
        with self._lock:
            pending = self._pending.get(checkpoint_id)
            if pending is None:
                self._ignore_late(checkpoint_id, snapshot.task_id)
                return None
            if not pending.acknowledge(snapshot):
                return None
            return self._complete(pending)

    def _ignore_late(self, checkpoint_id: int, task_id: str) -> None:
        finished = self._history.status(checkpoint_id)
        status = finished.name if finished else "unknown"
        log.info(
            "ignoring acknowledgement of %s checkpoint %d by %s", status, checkpoint_id, task_id
        )
        if finished in (
            CheckpointStatus.FAILED,
            CheckpointStatus.SUBSUMED,
        ):
            delete_files(self.storage, checkpoint_id)

    def _complete(self, pending: PendingCheckpoint) -> CompletedCheckpoint:
        manifest = self._build_manifest(pending)
        self._commit(pending, manifest)
        self._mark_completed(pending, manifest)
        self._subsume_older(pending.checkpoint_id)
        retain(self.storage, self.config.retained, self._pending.keys())
        savepoint_url, savepoint_error = (
            copy_savepoint(
                self.storage, manifest, self._savepoint_targets.pop(pending.checkpoint_id, None)
            )
            if pending.is_savepoint
            else (None, None)
        )
        return CompletedCheckpoint(pending.checkpoint_id, manifest, savepoint_url, savepoint_error)

    def _build_manifest(self, pending: PendingCheckpoint) -> Manifest:
        tasks = pending.acknowledged
        try:
            for t in tasks.values():
                check_metadata(t.metadata)
        except SerdeError as e:
            self._fail(pending, f"task metadata cannot be stored: {e}")
            raise CheckpointError(
                f"checkpoint {pending.checkpoint_id}: task metadata cannot be stored: {e}"
            ) from e
        return Manifest(
            job=self.storage.job,
            checkpoint_id=pending.checkpoint_id,
            trigger_timestamp_ms=pending.trigger_timestamp_ms,
            completed_timestamp_ms=self._clock(),
            mode=self.config.mode,
            parallelism=self._parallelism,
            max_parallelism=self._max_parallelism,
            tasks=tasks,
            operators=self._operators,
        )

    def _commit(self, pending: PendingCheckpoint, manifest: Manifest) -> None:
        try:
            self.storage.commit_manifest(manifest)
        except CheckpointConflictError:
            # The files belong to whoever committed the manifest: leave them.
            self._fail(pending, "another writer completed this checkpoint", delete=False)
            raise
        except CheckpointError as e:
            self._fail(pending, f"manifest commit failed: {e}")
            raise

    def _mark_completed(self, pending: PendingCheckpoint, manifest: Manifest) -> None:
        pending.transition(CheckpointStatus.COMPLETED)
        self._finish(pending)
        self._history.completed(pending.checkpoint_id, manifest)

    def _subsume_older(self, checkpoint_id: int) -> None:
        for older in [p for n, p in self._pending.items() if n < checkpoint_id]:
            if older.is_savepoint:
                continue
            older.transition(CheckpointStatus.SUBSUMED, f"checkpoint {checkpoint_id} completed")
            self._finish(older)
            self._history.subsumed()
            delete_files(self.storage, older.checkpoint_id)

    # -- failures ------------------------------------------------------------

    def decline(self, checkpoint_id: int, task_id: str, reason: str) -> None:
        """Fail a pending checkpoint because a task could not snapshot; delete its files.

        Ignored when the checkpoint is not pending.

        Args:
            checkpoint_id: the declined checkpoint.
            task_id: the declining task.
            reason: why, for logs and the failure reason.
        """
        with self._lock:
            pending = self._pending.get(checkpoint_id)
            if pending is None:
                log.info("ignoring decline of checkpoint %d by %s", checkpoint_id, task_id)
                return
            self._fail(pending, f"declined by {task_id}: {reason}")

    def check_timeouts(self, now_ms: int | None = None) -> list[int]:
        """Fail pending checkpoints triggered at least ``timeout`` ago; delete their files.

        Args:
            now_ms: the current time in ms; the clock is read when ``None``.

        Returns:
            The ids failed, ascending.
        """
        with self._lock:
            now = self._clock() if now_ms is None else now_ms
            expired = [
                p
                for p in self._pending.values()
                if now - p.trigger_timestamp_ms >= self.config.timeout_ms
            ]
            for pending in expired:
                self._fail(pending, f"timed out after {self.config.timeout}")
            return [p.checkpoint_id for p in expired]

    def check_failure_tolerance(self) -> None:
        """Fail the run when checkpoints keep failing.

        Counts checkpoints that were declined, timed out or whose manifest
        could not be written, in a row; a completed checkpoint resets the
        count, and checkpoints aborted by a failover or shutdown are not counted.

        Raises:
            CheckpointFailuresExceededError: more than ``config.tolerable_failures``
                checkpoints failed in a row; the message gives the last reason.
        """
        with self._lock:
            history = self._history
            if history.consecutive_failures > self.config.tolerable_failures:
                raise CheckpointFailuresExceededError(
                    self.storage.job, history.consecutive_failures, history.last_failure
                )

    def _fail_all(self, reason: str) -> list[int]:
        failed = sorted(self._pending)
        for checkpoint_id in failed:
            self._fail(self._pending[checkpoint_id], reason, counted=False)
        return failed

    def _fail(
        self, pending: PendingCheckpoint, reason: str, *, delete: bool = True, counted: bool = True
    ) -> None:
        pending.transition(CheckpointStatus.FAILED, reason)
        self._finish(pending)
        self._savepoint_targets.pop(pending.checkpoint_id, None)
        self._history.failed(pending.checkpoint_id, reason, counted=counted)
        log.warning(
            "checkpoint %d of job %s failed: %s", pending.checkpoint_id, self.storage.job, reason
        )
        if delete:
            delete_files(self.storage, pending.checkpoint_id)

    def _finish(self, pending: PendingCheckpoint) -> None:
        del self._pending[pending.checkpoint_id]
        self._history.finished(pending.checkpoint_id, pending.status)

    # -- views -----------------------------------------------------------------

    def pending(self) -> list[int]:
        """Return the ids of pending checkpoints, ascending."""
        with self._lock:
            return sorted(self._pending)

    def status(self, checkpoint_id: int) -> CheckpointStatus | None:
        """Return a checkpoint's status, or ``None`` if unknown (never triggered, or one of
        more than the last 1,000 finished checkpoints, of which only the status is kept)."""
        with self._lock:
            pending = self._pending.get(checkpoint_id)
            return pending.status if pending is not None else self._history.status(checkpoint_id)

    @property
    def latest_completed_id(self) -> int | None:
        """Id of the newest checkpoint this coordinator completed, or ``None``."""
        return self._history.latest_completed

    @property
    def stats(self) -> CheckpointStats:
        """A snapshot of the counters and recent durations."""
        with self._lock:
            return self._history.stats()
