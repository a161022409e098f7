"""Checkpoint metrics, checkpoint history and the end-to-end latency markers.

Latency markers ride on the checkpoint barriers. A barrier is injected at
every source when a checkpoint is triggered and travels in-band, behind the
buffers already in the channels, so it reaches a sink task right after the
records the sources read before it were written by the sink. The time from
injection to the sink task's snapshot is therefore the ingestion-to-write
latency of the last record read before the barrier, queueing and alignment
included: one sample per sink subtask per checkpoint, no per-record work.
This is the idea of Flink's latency markers (which are separate events);
here the barrier is the marker, so latency is sampled only while
checkpoints run.

Thread rule: :meth:`CheckpointTracker.task_snapshot` and
:meth:`CheckpointTracker.poll` run on the scheduler thread;
:meth:`CheckpointTracker.completed` too (tasks are notified there). The
history is read from other threads through an immutable tuple.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from weirflow.metrics.model import CheckpointRecord
from weirflow.metrics.registry import JobRegistry

_HISTORY = 100
_TRIGGER_MEMORY = 64


class CoordinatorView(Protocol):
    """What the tracker reads from a checkpoint coordinator (duck-typed, read-only)."""

    @property
    def stats(self) -> object:
        """An object with int attributes ``triggered`` and ``failed``."""
        ...

    def pending(self) -> list[int]:
        """Ids of pending checkpoints."""
        ...

    def status(self, checkpoint_id: int) -> object | None:
        """The checkpoint's status (an Enum whose ``value`` is ``"failed"`` for a failed one)."""
        ...


class CheckpointTracker:
    """Checkpoint counters, durations, sizes, alignment and latency samples.

    Args:
        metrics: where to publish.
        clock: processing time in ms since the epoch (injected).
    """

    def __init__(self, metrics: JobRegistry, clock: Callable[[], int]) -> None:
        self.metrics = metrics
        self.clock = clock
        self._lock = threading.Lock()
        self._history: deque[CheckpointRecord] = deque(maxlen=_HISTORY)
        self._recorded: set[int] = set()
        self._trigger_ms: dict[int, int] = {}
        self._last_snapshot_ms: dict[int, int] = {}
        self._durations_ms: deque[int] = deque(maxlen=_HISTORY)
        self._shared_seen: set[str] = set()
        self._coordinator: CoordinatorView | None = None
        self._seen_triggered = 0
        self._seen_failed = 0
        self._watched: set[int] = set()
        self.last_completed_id: int | None = None
        self.last_completed_ms: int | None = None

    def attach(self, coordinator: CoordinatorView | None) -> None:
        """Follow a new attempt's coordinator (its counters start at zero)."""
        self._coordinator = coordinator
        self._seen_triggered = 0
        self._seen_failed = 0
        self._watched = set()

    def task_snapshot(self, checkpoint_id: int, barrier: bool, is_sink: bool) -> None:
        """A task took its synchronous snapshot for ``checkpoint_id``.

        Args:
            checkpoint_id: the checkpoint.
            barrier: ``True`` when the snapshot followed a barrier (the task
                still runs); ``False`` for a task whose input had ended.
            is_sink: whether the task's chain holds a sink (a latency marker arrived).
        """
        now = self.clock()
        # Sources snapshot at injection, before any other task: the first snapshot is the trigger.
        trigger = self._trigger_ms.setdefault(checkpoint_id, now)
        if len(self._trigger_ms) > _TRIGGER_MEMORY:
            del self._trigger_ms[min(self._trigger_ms)]
        if not barrier:
            return
        self._last_snapshot_ms[checkpoint_id] = now
        if len(self._last_snapshot_ms) > _TRIGGER_MEMORY:
            del self._last_snapshot_ms[min(self._last_snapshot_ms)]
        if is_sink:
            self.metrics.latency.observe((now - trigger) / 1000)

    def completed(
        self,
        checkpoint_id: int,
        trigger_ms: int,
        completed_ms: int,
        handles: Iterable[tuple[str, int]],
    ) -> None:
        """A checkpoint completed (its manifest is written and tasks were notified).

        Args:
            checkpoint_id: its id.
            trigger_ms: the manifest's trigger time (ms since the epoch).
            completed_ms: the manifest's completion time (ms since the epoch).
            handles: ``(path, size in bytes)`` of every state file it refers
                to; paths under ``shared/`` may be reused by later checkpoints.
        """
        full = 0
        incremental = 0
        shared_now: set[str] = set()
        for path, size in handles:
            full += size
            if path.startswith("shared/"):
                shared_now.add(path)
                if path in self._shared_seen:
                    continue
            incremental += size
        self._shared_seen = shared_now
        duration_ms = completed_ms - trigger_ms
        last = self._last_snapshot_ms.get(checkpoint_id)
        alignment_ms = last - trigger_ms if last is not None else None
        m = self.metrics
        m.completed.inc()
        m.duration.observe(duration_ms / 1000)
        if alignment_ms is not None:
            m.alignment.observe(alignment_ms / 1000)
        m.size_full.set(full)
        m.size_incremental.set(incremental)
        m.last_completed_id.set(checkpoint_id)
        self._durations_ms.append(duration_ms)
        m.duration_p50.set(_quantile(self._durations_ms, 0.5) / 1000)
        m.duration_p99.set(_quantile(self._durations_ms, 0.99) / 1000)
        self.last_completed_id = checkpoint_id
        self.last_completed_ms = completed_ms
        self._record(
            CheckpointRecord(
                checkpoint_id, "completed", trigger_ms, duration_ms, alignment_ms, full, incremental
            )
        )

    def poll(self, now_ms: int) -> None:
        """Publish coordinator counters and record checkpoints that failed since the last poll."""
        if self.last_completed_ms is not None:
            self.metrics.age.set(max(0, now_ms - self.last_completed_ms) / 1000)
        c = self._coordinator
        if c is None:
            return
        stats = c.stats
        triggered = int(stats.triggered)  # type: ignore[attr-defined]
        failed = int(stats.failed)  # type: ignore[attr-defined]
        if triggered > self._seen_triggered:
            self.metrics.triggered.inc(triggered - self._seen_triggered)
            self._seen_triggered = triggered
        if failed > self._seen_failed:
            self.metrics.failed.inc(failed - self._seen_failed)
            self._seen_failed = failed
        pending = set(c.pending())
        candidates = (self._watched | set(self._trigger_ms)) - pending - self._recorded
        for cid in sorted(candidates):
            status = c.status(cid)
            if status is not None and getattr(status, "value", None) == "failed":
                self._record(
                    CheckpointRecord(cid, "failed", self._trigger_ms.get(cid), None, None, 0, 0)
                )
        self._watched = pending

    def history(self) -> tuple[CheckpointRecord, ...]:
        """Finished checkpoints, oldest first (at most the last 100)."""
        with self._lock:
            return tuple(self._history)

    def _record(self, rec: CheckpointRecord) -> None:
        with self._lock:
            self._recorded.add(rec.checkpoint_id)
            self._history.append(rec)
            if len(self._recorded) > 4 * _HISTORY:
                keep = {r.checkpoint_id for r in self._history}
                self._recorded &= keep


def _quantile(values: Iterable[int], q: float) -> float:
    """Return the ``q`` quantile (0..1) of ``values`` by linear interpolation; 0 when empty."""
    data = sorted(values)
    if not data:
        return 0.0
    if len(data) == 1:
        return float(data[0])
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    index = round(q * 100) - 1
    if index < 0:
        return float(data[0])
    if index >= len(cuts):
        return float(data[-1])
    return float(cuts[index])
