"""Tasks: one subtask of an operator chain, driven by ``step()``.

A task owns the logic objects of its chain, its input channels and the
record writers of every network output of the chain. ``step()`` does a
bounded amount of work and returns whether it made progress:

1. flush pending output buffers; if some target has no credit, stop
   (backpressure: the task takes no new input while output waits);
2. take the next item from an input (a source task: read one batch);
3. hand it to the chain: records to ``process_batch``, watermarks through
   the watermark valve to ``on_watermark``, barriers to alignment and
   snapshot, end-of-partition to end-of-input;
4. flush again.

Barrier alignment (exactly-once): after barrier ``n`` arrives on an input,
that input is not read until ``n`` arrived on every input still open; then
the chain snapshots, the barrier goes downstream, and the inputs reopen. In
at-least-once mode no input is held back; the snapshot is taken when the
last barrier arrives.

Unaligned checkpoints (barriers that overtake, see
:mod:`weirflow.runtime.inflight`): before stepping, a task looks for such a
barrier queued in its input channels (also when the task is
backpressured). The first one found starts the checkpoint at once: the chain
snapshots, the barrier goes out ahead of the writers' pending buffers, and
the task captures its in-flight data until every open input delivered the
barrier; the snapshot is reported at the start, and its writing waits for the
capture (:meth:`Task.capture_of`). An aligned barrier with an alignment
timeout switches to this mode once the timeout passed. Restored in-flight
data is replayed first: output is re-queued ahead of new output, input is
processed before any channel is read.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Any

from weirflow.errors import JobFailedError, WeirflowError
from weirflow.runtime.channel import Channel
from weirflow.runtime.events import (
    END_OF_PARTITION,
    Batch,
    CheckpointBarrier,
    EndOfPartition,
    Watermark,
)
from weirflow.runtime.inflight import InFlightCapture, InFlightData
from weirflow.runtime.operators import OperatorLogic, SourceLogic, deliver
from weirflow.runtime.partitioners import RecordWriter
from weirflow.time import MAX_WATERMARK, MIN_WATERMARK, WatermarkValve

SnapshotCallback = Callable[["Task", int, dict[str, Any]], None]


class TaskState(enum.Enum):
    """Lifecycle of a task."""

    RUNNING = "running"
    ENDING = "ending"  # end of input handled; flushing the last buffers
    FINISHED = "finished"  # everything sent; logic objects stay open for the final checkpoint
    FAILED = "failed"
    CLOSED = "closed"


_TRANSITIONS = {
    TaskState.RUNNING: {TaskState.ENDING, TaskState.FAILED, TaskState.CLOSED},
    TaskState.ENDING: {TaskState.FINISHED, TaskState.FAILED, TaskState.CLOSED},
    TaskState.FINISHED: {TaskState.CLOSED, TaskState.FAILED},
    TaskState.FAILED: {TaskState.CLOSED},
    TaskState.CLOSED: set(),
}


class Task:
    """One subtask of a chain.

    Args:
        name: ``"<head operator>[<subtask>/<parallelism>]"``.
        subtask: the subtask index.
        chain: the chain's logic objects, head first.
        inputs: input channels (empty for a source task).
        writers: every network writer of the chain.
        on_snapshot: called with ``(task, checkpoint_id, states)`` after the
            chain snapshotted (``states`` maps operator name → state); for an
            unaligned checkpoint, :meth:`capture_of` then gives its in-flight data.
        source_batch_size: records a source task reads per step.
        max_items_per_step: input items a non-source task takes per step.
    """

    def __init__(
        self,
        name: str,
        subtask: int,
        chain: list[OperatorLogic],
        inputs: list[Channel],
        writers: list[RecordWriter],
        on_snapshot: SnapshotCallback,
        source_batch_size: int = 1024,
        max_items_per_step: int = 4,
    ) -> None:
        self.name = name
        self.subtask = subtask
        self.chain = chain
        self.head = chain[0]
        self.inputs = inputs
        self.writers = writers
        self.on_snapshot = on_snapshot
        self.source_batch_size = source_batch_size
        self.max_items_per_step = max_items_per_step
        self.state = TaskState.RUNNING
        self.is_source = isinstance(self.head, SourceLogic)
        self.valve = WatermarkValve(max(1, len(inputs)))
        self._ended = [False] * len(inputs)
        self._rr = 0
        self._aligning: int | None = None
        self._aligned_mode = True
        self._barrier_seen: set[int] = set()
        self._capture: InFlightCapture | None = None
        self._replay: deque[tuple[int, object]] = deque()
        self._idle_sent = False
        self.paused = False
        self.backpressured_steps = 0
        self.steps = 0

    # -- lifecycle -----------------------------------------------------------

    def _transition(self, new: TaskState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise WeirflowError(f"task {self.name}: invalid transition {self.state} -> {new}")
        self.state = new

    def open(self, restored: dict[str, Any]) -> None:
        """Open every operator of the chain with its restored state (by operator name)."""
        for op in self.chain:
            op.open(restored.get(op.spec.state_id))

    def close(self) -> None:
        """Close every operator; safe to call more than once and after a failure."""
        if self.state is TaskState.CLOSED:
            return
        self._transition(TaskState.CLOSED)
        for op in self.chain:
            op.close()

    def fail(self) -> None:
        """Mark the task failed (the job's attempt is over)."""
        if self.state not in (TaskState.FAILED, TaskState.CLOSED):
            self._transition(TaskState.FAILED)

    @property
    def done(self) -> bool:
        """Whether the task has sent everything (or stopped)."""
        return self.state in (TaskState.FINISHED, TaskState.FAILED, TaskState.CLOSED)

    # -- stepping ------------------------------------------------------------

    def _flush(self) -> bool:
        ok = True
        for w in self.writers:
            if not w.flush():
                ok = False
        return ok

    def step(self) -> bool:
        """Do a bounded amount of work; return whether anything moved."""
        if self._capture is not None and self._capture.output_barrier is not None:
            self._resolve_output_barrier(self._capture, force=False)
        if self.state is TaskState.ENDING:
            if self._flush():
                self._transition(TaskState.FINISHED)
                return True
            self.backpressured_steps += 1
            return False
        if self.state is not TaskState.RUNNING:
            return False
        self.steps += 1
        self.take_overtaking_barriers()
        if not self._flush():
            self.backpressured_steps += 1
            return False
        try:
            moved = self._step_source() if self.is_source else self._step_inputs()
        except WeirflowError:
            raise
        except Exception as e:
            raise JobFailedError(f"task {self.name} failed: {type(e).__name__}: {e}") from e
        self._flush()
        return moved

    def _step_source(self) -> bool:
        if self.paused:
            return False
        head = self.head
        assert isinstance(head, SourceLogic)
        if head.finished():
            self._end_of_input()
            return True
        n = head.poll(self.source_batch_size)
        if n == 0 and head.finished():
            self._end_of_input()
            return True
        if n > 0:
            self._idle_sent = False
        elif head.all_idle() and not self._idle_sent:
            self._idle_sent = True
            for w in self.writers:
                w.broadcast_event(Watermark(MIN_WATERMARK, idle=True))
        return n > 0

    def _step_inputs(self) -> bool:
        moved = False
        n = len(self.inputs)
        for _ in range(self.max_items_per_step):
            if self._replay:
                i, replayed = self._replay.popleft()
                self._handle(i, replayed)
                moved = True
                continue
            item = None
            for _ in range(n):
                i = self._rr
                self._rr = (i + 1) % n
                if self._ended[i] or (i in self._barrier_seen and self._aligned_mode):
                    continue
                item = self.inputs[i].poll()
                if item is not None:
                    self._handle(i, item)
                    moved = True
                    break
            if item is None or self.state is not TaskState.RUNNING:
                break
            if not self._flush():
                break
        return moved

    def _handle(self, i: int, item: object) -> None:
        t = type(item)
        if self._capture is not None and (t is Batch or t is Watermark):
            self._capture.record(i, item)
        if t is Batch:
            if self.valve.is_idle(i):
                self.valve.on_active(i)
            if item.headers is None:  # type: ignore[attr-defined]
                self.head.process_batch(item.values, item.timestamps, item.keys)  # type: ignore[attr-defined]
            else:
                deliver(  # type: ignore[attr-defined]
                    self.head, item.values, item.timestamps, item.keys, item.headers, chained=False
                )
        elif t is Watermark:
            self._on_watermark(i, item)  # type: ignore[arg-type]
        elif t is CheckpointBarrier:
            self._on_barrier(i, item)  # type: ignore[arg-type]
        elif t is EndOfPartition:
            self._ended[i] = True
            self._check_alignment()
            if self._capture is not None:
                self._capture.channel_ended(i)
                self._drop_complete_capture()
            if all(self._ended):
                self._end_of_input()
        else:
            raise JobFailedError(f"task {self.name}: unknown item {t.__name__} in channel {i}")

    def _on_watermark(self, i: int, wm: Watermark) -> None:
        if wm.idle:
            new = self.valve.on_idle(i)
            if self.valve.all_idle():
                for w in self.writers:
                    w.broadcast_event(Watermark(MIN_WATERMARK, idle=True))
        else:
            if self.valve.is_idle(i):
                self.valve.on_active(i)
            new = self.valve.on_watermark(i, wm.timestamp_ms)
        if new is not None:
            forwarded = self.head.on_watermark(new)
            if forwarded is not None:
                self.head.output.emit_watermark(forwarded)

    # -- checkpoints ---------------------------------------------------------

    def _on_barrier(self, i: int, barrier: CheckpointBarrier) -> None:
        if (self._capture is not None and self._capture.awaiting) or barrier.overtakes(
            self.head.ctx.clock()
        ):
            self._on_overtaking_barrier(i, barrier, [])
            return
        if self._aligning is None:
            self._aligning = barrier.checkpoint_id
            self._aligned_mode = barrier.aligned
            self._barrier_seen = set()
            self._barrier = barrier
        elif barrier.checkpoint_id > self._aligning and not barrier.aligned:
            # At-least-once inputs are not held back, so a newer barrier can overtake an
            # alignment that will never finish (its checkpoint timed out or was declined):
            # give that one up and align on the newer, as Flink does.
            self._aligning = barrier.checkpoint_id
            self._barrier_seen = set()
            self._barrier = barrier
        elif barrier.checkpoint_id != self._aligning:
            raise JobFailedError(
                f"task {self.name}: barrier {barrier.checkpoint_id} arrived while aligning "
                f"{self._aligning}; at most one checkpoint is in flight per task"
            )
        self._barrier_seen.add(i)
        self._check_alignment()

    def _check_alignment(self) -> None:
        if self._aligning is None:
            return
        open_inputs = {i for i, ended in enumerate(self._ended) if not ended}
        if open_inputs <= self._barrier_seen:
            barrier = self._barrier
            self._aligning = None
            self._barrier_seen = set()
            self.snapshot_and_forward(barrier)

    def snapshot_and_forward(self, barrier: CheckpointBarrier) -> None:
        """Snapshot the chain, send the barrier on every output, report the snapshot.

        A barrier that overtakes at once (``unaligned_after_ms=0``) goes out
        ahead of the pending buffers, which become the snapshot's in-flight output.
        """
        if barrier.unaligned_after_ms == 0:
            self._start_unaligned(barrier, set())
            return
        cid = barrier.checkpoint_id
        states = {op.spec.state_id: op.snapshot_state(cid) for op in self.chain}
        for w in self.writers:
            w.broadcast_event(barrier)
        if barrier.unaligned_after_ms is not None and not self._flush():
            # Queued behind records for now: it overtakes them once the alignment timeout
            # passed, and they then become in-flight output (see _resolve_output_barrier).
            self._replace_capture(
                InFlightCapture(
                    cid,
                    [[[] for _ in w.channels] for w in self.writers],
                    set(),
                    output_barrier=barrier,
                )
            )
        self.on_snapshot(self, cid, states)
        self._drop_complete_capture()

    # -- unaligned checkpoints -------------------------------------------------

    def capture_of(self, checkpoint_id: int) -> InFlightCapture | None:
        """The in-flight data capture of unaligned checkpoint ``checkpoint_id``, else ``None``.

        Valid during the ``on_snapshot`` call of that checkpoint; the snapshot
        is complete once the capture is (:meth:`InFlightCapture.on_complete`).
        """
        c = self._capture
        return c if c is not None and c.checkpoint_id == checkpoint_id else None

    def take_overtaking_barriers(self) -> None:
        """Handle barriers that may overtake now, before any other work (cheap when none).

        Called at the start of every step, and by the scheduler for every task
        before it steps any, so that an unaligned barrier crosses every stage
        of a worker in one round however long the stages' steps take.
        """
        if self.state is not TaskState.RUNNING or self._replay:
            return
        if not (
            (self._aligning is not None and self._barrier.unaligned_after_ms is not None)
            or any(ch.overtaking_barriers for ch in self.inputs)
        ):
            return
        now = self.head.ctx.clock()
        if self._aligning is not None and self._barrier.overtakes(now):
            # the alignment timed out: what was aligned stays; the rest is captured
            self._start_unaligned(self._barrier, set(self._barrier_seen))
        for i, ch in enumerate(self.inputs):
            if ch.overtaking_barriers and not self._ended[i]:
                taken = ch.take_barrier(now)
                if taken is not None:
                    self._on_overtaking_barrier(i, *taken)

    def _on_overtaking_barrier(
        self, i: int, barrier: CheckpointBarrier, ahead: list[object]
    ) -> None:
        """Barrier ``barrier`` came out of input ``i`` ahead of the items ``ahead``."""
        current = self._capture.checkpoint_id if self._capture is not None else self._aligning
        if current is not None and barrier.checkpoint_id < current:
            return  # of a checkpoint given up for a newer one: it never completes
        if self._capture is None or barrier.checkpoint_id > self._capture.checkpoint_id:
            # A newer checkpoint ends an unfinished older capture or alignment (that
            # checkpoint then times out or is subsumed), as Flink does.
            aligned = self._barrier_seen if self._aligning == barrier.checkpoint_id else set()
            self._start_unaligned(barrier, set(aligned), (i, ahead))
            return
        self._capture.barrier_arrived(i, ahead)
        self._drop_complete_capture()

    def _start_unaligned(
        self,
        barrier: CheckpointBarrier,
        delivered: set[int],
        arrived: tuple[int, list[object]] | None = None,
    ) -> None:
        """Snapshot now, send the barrier ahead of the pending buffers, capture the rest.

        Args:
            barrier: the checkpoint's barrier.
            delivered: inputs whose records before the barrier were all processed.
            arrived: the input the barrier just came out of, and the items it overtook there.
        """
        cid = barrier.checkpoint_id
        states = {op.spec.state_id: op.snapshot_state(cid) for op in self.chain}
        forwarded = barrier._replace(unaligned_after_ms=0)
        output = [w.overtake(forwarded) for w in self.writers]
        awaiting = {i for i, ended in enumerate(self._ended) if not ended and i not in delivered}
        self._aligning = None
        self._barrier_seen = set()
        capture = InFlightCapture(cid, output, awaiting)
        if arrived is not None:
            capture.barrier_arrived(*arrived)
        self._replace_capture(capture)
        self.on_snapshot(self, cid, states)
        self._drop_complete_capture()

    def _replace_capture(self, capture: InFlightCapture) -> None:
        old = self._capture
        if old is not None and old.output_barrier is not None:
            # its barrier goes out before the new one, so receivers see them in order
            self._resolve_output_barrier(old, force=True)
        self._capture = capture

    def _resolve_output_barrier(self, capture: InFlightCapture, *, force: bool) -> None:
        """Let a barrier queued in the writers overtake once its alignment timeout passed."""
        barrier = capture.output_barrier
        assert barrier is not None
        if force or barrier.overtakes(self.head.ctx.clock()):
            capture.output_resolved([w.overtake_pending(barrier) for w in self.writers])
        elif not any(w.holds(barrier) for w in self.writers):
            capture.output_resolved(None)
        self._drop_complete_capture()

    def _drop_complete_capture(self) -> None:
        if self._capture is not None and self._capture.complete:
            self._capture = None

    def replay(self, data: InFlightData) -> None:
        """Replay restored in-flight data: output ahead of new output, input before new input.

        Args:
            data: this task's in-flight data from the restored checkpoint.

        Raises:
            ValueError: the data does not fit this task's writers or inputs
                (the job's graph changed).
        """
        if len(data.output) != len(self.writers) or any(
            not 0 <= i < len(self.inputs) for i in data.inputs
        ):
            raise ValueError(
                f"task {self.name}: in-flight data for {len(data.output)} outputs and inputs "
                f"{sorted(data.inputs)} does not fit {len(self.writers)} outputs and "
                f"{len(self.inputs)} inputs"
            )
        for w, per_target in zip(self.writers, data.output, strict=True):
            w.requeue(per_target)
        for i, items in sorted(data.inputs.items()):
            self._replay.extend((i, x) for x in items)

    def snapshot_finished(self, checkpoint_id: int) -> None:
        """Snapshot a finished chain (no barrier: nothing flows any more)."""
        states = {op.spec.state_id: op.snapshot_state(checkpoint_id) for op in self.chain}
        self.on_snapshot(self, checkpoint_id, states)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Tell every operator of the chain that ``checkpoint_id`` completed."""
        for op in self.chain:
            op.notify_checkpoint_complete(checkpoint_id)

    def advance_processing_time(self, now_ms: int) -> None:
        """Give processing time to every operator (processing-time timers)."""
        if self.state is TaskState.RUNNING:
            for op in self.chain:
                op.on_processing_time(now_ms)

    # -- end of input ----------------------------------------------------------

    def _end_of_input(self) -> None:
        if self.is_source:
            self.head.output.emit_watermark(MAX_WATERMARK)
        for op in self.chain:
            op.end_of_input()
        for w in self.writers:
            w.broadcast_event(END_OF_PARTITION)
        self._transition(TaskState.ENDING)

    @property
    def buffered_records(self) -> int:
        """Records waiting in this task's writers (not yet in channels)."""
        return sum(w.pending_records for w in self.writers)
