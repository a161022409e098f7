"""What a checkpoint coordinator remembers of finished checkpoints.

A finished checkpoint (completed, failed or subsumed) leaves only its
status here, for late acknowledgements and status queries, at most
:data:`FINISHED_HISTORY` of them; its task snapshots are in its manifest on
storage. Besides: the counters and recent durations behind
:class:`~weirflow.checkpoint.CheckpointStats`, the newest completed
checkpoint, and the failures in a row that the failure tolerance counts.
Not thread-safe: the coordinator calls it under its lock.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from weirflow.checkpoint.lifecycle import CheckpointStats
from weirflow.checkpoint.manifest import Manifest
from weirflow.checkpoint.pending import CheckpointStatus

FINISHED_HISTORY = 1000
"""Statuses of finished checkpoints kept, at most, while no checkpoint completes."""
_RECENT_DURATIONS = 32


class CheckpointHistory:
    """Statuses of finished checkpoints, statistics and the failures in a row.

    Attributes:
        latest_completed: id of the newest completed checkpoint, or ``None``.
        last_completion_ms: when the latest completion happened (ms since the
            epoch, the manifest's completion time), or ``None``.
        consecutive_failures: counted failures since the last completion.
        last_failure: ``"checkpoint <n>: <reason>"`` of the latest counted failure.
    """

    def __init__(self) -> None:
        self._finished: OrderedDict[int, CheckpointStatus] = OrderedDict()
        self._counts = {"triggered": 0, "completed": 0, "failed": 0, "subsumed": 0}
        self._latest_size = 0
        self._durations: deque[int] = deque(maxlen=_RECENT_DURATIONS)
        self.latest_completed: int | None = None
        self.last_completion_ms: int | None = None
        self.consecutive_failures = 0
        self.last_failure = ""

    def triggered(self) -> None:
        """Count a triggered checkpoint."""
        self._counts["triggered"] += 1

    def finished(self, checkpoint_id: int, status: CheckpointStatus) -> None:
        """Keep the final status of a checkpoint that is no longer pending."""
        self._finished[checkpoint_id] = status
        while len(self._finished) > FINISHED_HISTORY:
            self._finished.popitem(last=False)

    def status(self, checkpoint_id: int) -> CheckpointStatus | None:
        """Return a finished checkpoint's status, or ``None`` if not (or no longer) kept."""
        return self._finished.get(checkpoint_id)

    def completed(self, checkpoint_id: int, manifest: Manifest) -> None:
        """Count a completion: latest id and size, duration; the failures in a row end."""
        self._counts["completed"] += 1
        self.last_completion_ms = manifest.completed_timestamp_ms
        if self.latest_completed is None or checkpoint_id > self.latest_completed:
            self.latest_completed = checkpoint_id
            self._latest_size = manifest.size
        self._durations.append(manifest.duration_ms)
        self.consecutive_failures = 0

    def subsumed(self) -> None:
        """Count a pending checkpoint dropped because a newer one completed."""
        self._counts["subsumed"] += 1

    def failed(self, checkpoint_id: int, reason: str, *, counted: bool) -> None:
        """Count a failure; ``counted`` ones (not failover or shutdown) add to those in a row."""
        self._counts["failed"] += 1
        if counted:
            self.consecutive_failures += 1
            self.last_failure = f"checkpoint {checkpoint_id}: {reason}"

    def stats(self) -> CheckpointStats:
        """A snapshot of the counters and recent durations."""
        return CheckpointStats(
            **self._counts,
            latest_completed_id=self.latest_completed,
            latest_size_bytes=self._latest_size,
            recent_durations_ms=tuple(self._durations),
        )
