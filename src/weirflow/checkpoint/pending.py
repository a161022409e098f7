"""One checkpoint's life: a small state machine from trigger to completion or failure.

::

    PENDING ──all tasks acknowledged, manifest committed──> COMPLETED
       │ ├──────declined, timed out, aborted, manifest write failed──> FAILED
       │ └──────a newer checkpoint completed first──────────────────> SUBSUMED

Only ``PENDING`` has successors; every other state is final.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from weirflow.checkpoint.errors import CheckpointTransitionError
from weirflow.checkpoint.handles import TaskSnapshot
from weirflow.checkpoint.manifest import Manifest
from weirflow.errors import CheckpointError


class CheckpointStatus(enum.Enum):
    """State of one checkpoint."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    SUBSUMED = "subsumed"


_TRANSITIONS: Mapping[CheckpointStatus, frozenset[CheckpointStatus]] = {
    CheckpointStatus.PENDING: frozenset(
        {CheckpointStatus.COMPLETED, CheckpointStatus.FAILED, CheckpointStatus.SUBSUMED}
    ),
    CheckpointStatus.COMPLETED: frozenset(),
    CheckpointStatus.FAILED: frozenset(),
    CheckpointStatus.SUBSUMED: frozenset(),
}


class PendingCheckpoint:
    """A triggered checkpoint collecting task acknowledgements.

    Args:
        checkpoint_id: the checkpoint's id.
        trigger_timestamp_ms: clock time of the trigger, ms since the epoch.
        task_ids: every task that must acknowledge.
        is_savepoint: whether the checkpoint was triggered as a savepoint.

    Attributes:
        status: the current :class:`CheckpointStatus`.
        failure_reason: why it failed or was subsumed, ``None`` otherwise.
    """

    def __init__(
        self,
        checkpoint_id: int,
        trigger_timestamp_ms: int,
        task_ids: Collection[str],
        *,
        is_savepoint: bool = False,
    ) -> None:
        self.checkpoint_id = checkpoint_id
        self.trigger_timestamp_ms = trigger_timestamp_ms
        self.is_savepoint = is_savepoint
        self.status = CheckpointStatus.PENDING
        self.failure_reason: str | None = None
        self._expected = frozenset(task_ids)
        self._acks: dict[str, TaskSnapshot] = {}

    def transition(self, new: CheckpointStatus, reason: str | None = None) -> None:
        """Move to ``new``, the only way the status changes.

        Args:
            new: the next status.
            reason: why, for ``FAILED`` and ``SUBSUMED``.

        Raises:
            CheckpointTransitionError: ``new`` is not a successor of the
                current status (e.g. anything after ``COMPLETED``).
        """
        if new not in _TRANSITIONS[self.status]:
            raise CheckpointTransitionError(
                f"checkpoint {self.checkpoint_id} cannot go from {self.status.name} to {new.name}"
            )
        self.status = new
        self.failure_reason = reason

    def acknowledge(self, snapshot: TaskSnapshot) -> bool:
        """Record one task's acknowledgement.

        Args:
            snapshot: what the task acknowledged.

        Returns:
            ``True`` when every expected task has now acknowledged.

        Raises:
            CheckpointTransitionError: the checkpoint is not pending.
            CheckpointError: the task is not one of the expected tasks, or it
                already acknowledged this checkpoint.
        """
        if self.status is not CheckpointStatus.PENDING:
            raise CheckpointTransitionError(
                f"checkpoint {self.checkpoint_id} is {self.status.name}, not PENDING"
            )
        if snapshot.task_id not in self._expected:
            raise CheckpointError(
                f"task {snapshot.task_id!r} acknowledged checkpoint {self.checkpoint_id} but is "
                "not one of the job's tasks"
            )
        if snapshot.task_id in self._acks:
            raise CheckpointError(
                f"task {snapshot.task_id!r} acknowledged checkpoint {self.checkpoint_id} twice"
            )
        self._acks[snapshot.task_id] = snapshot
        return self.fully_acknowledged

    @property
    def fully_acknowledged(self) -> bool:
        """Whether every expected task has acknowledged."""
        return len(self._acks) == len(self._expected)

    @property
    def acknowledged(self) -> Mapping[str, TaskSnapshot]:
        """Task id -> snapshot for the tasks that acknowledged so far."""
        return dict(self._acks)

    @property
    def missing(self) -> frozenset[str]:
        """Ids of the tasks that have not acknowledged yet."""
        return self._expected - self._acks.keys()


@dataclass(frozen=True)
class CompletedCheckpoint:
    """A checkpoint whose manifest was committed.

    Attributes:
        checkpoint_id: the checkpoint's id; pass it to ``notify_checkpoint_complete``.
        manifest: the committed manifest.
        savepoint_url: where the savepoint was written, for a savepoint; else ``None``.
        savepoint_error: why writing the savepoint failed, if it did; the
            checkpoint itself is completed regardless.
    """

    checkpoint_id: int
    manifest: Manifest
    savepoint_url: str | None = None
    savepoint_error: str | None = None
