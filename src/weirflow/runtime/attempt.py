"""The coordinator's side of one running attempt: checkpoints, end of input, stop.

While attempt ``a`` runs, the coordinator:

1. starts the checkpoint coordinator once every worker reported ``Running``;
2. triggers checkpoints on its interval (the workers' sources inject the
   barriers), feeds acknowledgements to it, and after it wrote a manifest
   tells every worker the checkpoint completed, so that sinks commit;
3. when every worker's tasks finished, triggers one final checkpoint;
   on a stop request, a stop checkpoint (sources emit nothing after its
   barrier); after either completed, sends ``Finish``; a savepoint request
   triggers an aligned checkpoint written as a savepoint (a stop checkpoint
   when it asks to stop);
4. sums the counts the workers report with ``Finished``.

A message of another attempt is dropped; a ``Failed`` report, a lost
worker, or a last checkpoint that fails three times ends the attempt with
:class:`AttemptFailedError`.
"""

from __future__ import annotations

import logging
import pickle
import queue
from typing import TYPE_CHECKING, Any

from weirflow.checkpoint import CheckpointCoordinator, CheckpointStatus
from weirflow.checkpoint.errors import CheckpointConflictError, CheckpointError
from weirflow.errors import WeirflowError
from weirflow.graph import operator_signatures
from weirflow.records import OperatorCounts
from weirflow.runtime import control
from weirflow.runtime.lifecycle import AttemptLifecycle, AttemptState
from weirflow.runtime.membership import WorkerEntry, WorkerStatus
from weirflow.runtime.savepoint_requests import SavepointWaiters

if TYPE_CHECKING:
    from weirflow.runtime.coordinator import JobCoordinator

log = logging.getLogger("weirflow.coordinator")

_STOP_ATTEMPTS = 3
_TICK_S = 0.005


class AttemptFailedError(WeirflowError):
    """The running attempt failed; the restart strategy decides what follows.

    Args:
        message: what failed.
        retriable: whether another attempt may succeed.
    """

    def __init__(self, message: str, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable


class AttemptRun:
    """The coordinator's side of one running attempt (see the module docs).

    Args:
        coordinator: the job coordinator.
        used: the workers the attempt was deployed on.
    """

    def __init__(self, coordinator: JobCoordinator, used: list[WorkerEntry]) -> None:
        self.c = coordinator
        self.used = {w.id: w for w in used}
        self.running: set[str] = set()
        self.tasks_finished: set[str] = set()
        self.finished: dict[str, dict[str, list[int]]] = {}
        self.final_checkpoint: int | None = None
        self.stop_checkpoint: int | None = None
        self.stop_tries = 0
        self.lifecycle = AttemptLifecycle(coordinator.attempt)
        self.checkpoints: CheckpointCoordinator | None = None
        self.savepoints = SavepointWaiters()

    def broadcast(self, message: control.Message) -> None:
        """Send ``message`` to every worker of the attempt."""
        for w in self.used.values():
            w.send(message)

    def run(self) -> dict[str, OperatorCounts]:
        """Follow the attempt to its end.

        Returns:
            operator name → counts summed over the workers.

        Raises:
            AttemptFailedError: the attempt failed.
        """
        c = self.c
        while True:
            try:
                wid, event = c.events.get(timeout=_TICK_S)
            except queue.Empty:
                wid, event = "", None
            if event is not None:
                entry = c._membership(wid, event)
                if entry is not None and entry.id in self.used:
                    self._on_message(entry, event)
            if len(self.finished) == len(self.used):
                self.lifecycle.move(AttemptState.FINISHED)
                return self._counts()
            self._tick(c.clock())

    def _start_checkpoints(self) -> None:
        c = self.c
        assert c.spec is not None
        if c.spec.checkpoint is None or c.storage is None:
            return
        last = max(c.storage.completed_checkpoints(), default=0)
        self.checkpoints = CheckpointCoordinator(
            c.spec.checkpoint,
            c.storage,
            c.task_ids,
            c.clock,
            parallelism=c.spec.parallelism,
            max_parallelism=c.spec.max_parallelism,
            first_checkpoint_id=last + 1,
            operators=operator_signatures(c.spec.graph),
        )

    def _on_message(self, entry: WorkerEntry, message: Any) -> None:
        c = self.c
        if control.of_other_attempt(message, c.attempt):
            return
        if isinstance(message, control.Failed):
            raise AttemptFailedError(
                f"worker {entry.id}: {message.message}", retriable=message.retriable
            )
        if isinstance(message, control.Running):
            self.running.add(entry.id)
            if self.running == set(self.used):
                self.lifecycle.move(AttemptState.RUNNING)
                self._start_checkpoints()
                if c.recovery_started is not None:
                    c.recovery_ms.append(c.clock() - c.recovery_started)
                    c.recovery_started = None
        elif isinstance(message, control.Acknowledge):
            self._acknowledge(message)
        elif isinstance(message, control.Decline) and self.checkpoints is not None:
            self.checkpoints.decline(message.checkpoint_id, message.task, message.reason)
        elif isinstance(message, control.TasksFinished):
            self.tasks_finished.add(entry.id)
            if (
                self.tasks_finished == set(self.used)
                and self.lifecycle.state is AttemptState.RUNNING
            ):
                if self.checkpoints is None:
                    self._finish()
                elif self.final_checkpoint is None and self.stop_checkpoint is None:
                    self.final_checkpoint = self._trigger_now(stop=False)
        elif isinstance(message, control.Finished):
            self.finished[entry.id] = message.counts

    def _acknowledge(self, message: control.Acknowledge) -> None:
        if self.checkpoints is None:
            return
        snapshot = pickle.loads(message.snapshot)
        try:
            completed = self.checkpoints.acknowledge(message.checkpoint_id, snapshot)
        except CheckpointConflictError:
            raise  # another coordinator owns the job's checkpoints: this run must end
        except CheckpointError as e:
            # The manifest could not be written: the checkpoint failed (as if a task
            # declined), not the job; a last checkpoint is retried, then the attempt fails.
            log.warning("checkpoint %d failed: %s", message.checkpoint_id, e)
            return
        if completed is None:
            return
        cid = completed.checkpoint_id
        self.broadcast(control.Complete(self.c.attempt, cid))
        self.c.checkpoints_completed += 1
        self.c.last_completed = cid
        self.c.last_completed_ms = self.c.clock()
        self.c.listener.checkpoint_completed(completed)
        self.savepoints.completed(completed)
        for target in (self.final_checkpoint, self.stop_checkpoint):
            if target is not None and cid >= target:
                self._finish()

    def _finish(self) -> None:
        if self.lifecycle.state is AttemptState.RUNNING:
            self.lifecycle.move(AttemptState.FINISHING)
            self.broadcast(control.Finish(self.c.attempt))

    def _trigger_now(self, stop: bool, savepoint: bool = False, target: str | None = None) -> int:
        assert self.checkpoints is not None
        cid = self.checkpoints.trigger_now(savepoint=savepoint, target=target)
        self.broadcast(
            control.Trigger(self.c.attempt, cid, self.c.clock(), stop=stop, savepoint=savepoint)
        )
        return cid

    def _take_savepoint_requests(self) -> None:
        assert self.checkpoints is not None
        for request in self.c.savepoint_requests.take():
            if self.stop_checkpoint is not None or self.final_checkpoint is not None:
                request.done.set_exception(
                    CheckpointError("the job is ending already; its last checkpoint is under way")
                )
                continue
            cid = self._trigger_now(stop=request.stop, savepoint=True, target=request.target)
            self.savepoints.add(cid, request)
            if request.stop:
                self.stop_checkpoint = cid

    def _tick(self, now_ms: int) -> None:
        c = self.c
        if self.lifecycle.state is not AttemptState.RUNNING:
            return
        if c.stop.is_set() and self.checkpoints is None:
            self._finish()
            return
        ckpt = self.checkpoints
        if ckpt is None:
            return
        ckpt.check_timeouts(now_ms)
        self.savepoints.failed(
            {cid: ckpt.status(cid) for cid in self.savepoints.ids()}, self.stop_checkpoint
        )
        target = self.stop_checkpoint or self.final_checkpoint
        if target is not None:
            status = ckpt.status(target)
            if status is not None and status not in (
                CheckpointStatus.PENDING,
                CheckpointStatus.COMPLETED,
            ):
                self.stop_tries += 1
                if self.stop_tries > _STOP_ATTEMPTS:
                    raise AttemptFailedError(
                        f"checkpoint {target} (the last one, so that sinks commit) failed "
                        f"{_STOP_ATTEMPTS} times; see the log for the cause"
                    )
                if self.stop_checkpoint is not None:
                    failed = self.stop_checkpoint
                    savepoint = failed in self.savepoints.ids()
                    self.stop_checkpoint = self._trigger_now(
                        stop=True, savepoint=savepoint, target=self.savepoints.target_of(failed)
                    )
                    self.savepoints.move(failed, self.stop_checkpoint)
                else:
                    self.final_checkpoint = self._trigger_now(stop=False)
            return
        self._take_savepoint_requests()
        if self.stop_checkpoint is not None:
            return
        if c.stop.is_set() or c.savepoint_requests.stop_taken:
            self.stop_checkpoint = self._trigger_now(stop=True)
            return
        cid = ckpt.maybe_trigger(now_ms)
        if cid is not None:
            self.broadcast(control.Trigger(c.attempt, cid, now_ms))

    def _counts(self) -> dict[str, OperatorCounts]:
        total: dict[str, list[int]] = {}
        for per_worker in self.finished.values():
            for name, values in per_worker.items():
                acc = total.setdefault(name, [0] * len(values))
                for k, v in enumerate(values):
                    acc[k] += v
        for w in self.used.values():
            w.move(WorkerStatus.IDLE)
        return {name: OperatorCounts(*values) for name, values in total.items()}
