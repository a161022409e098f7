"""The coordinator's lifecycle states and its statistics snapshot."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class CoordinatorState(enum.Enum):
    """Lifecycle of the coordinator.

    ``RUNNING``: periodic triggers on. ``SUSPENDED``: periodic triggers off
    (during failover or shutdown), explicit triggers still allowed.
    ``SHUT_DOWN``: final; nothing is triggered, pending checkpoints failed.
    """

    RUNNING = "running"
    SUSPENDED = "suspended"
    SHUT_DOWN = "shut_down"


STATE_TRANSITIONS: Mapping[CoordinatorState, frozenset[CoordinatorState]] = {
    CoordinatorState.RUNNING: frozenset({CoordinatorState.SUSPENDED, CoordinatorState.SHUT_DOWN}),
    CoordinatorState.SUSPENDED: frozenset({CoordinatorState.RUNNING, CoordinatorState.SHUT_DOWN}),
    CoordinatorState.SHUT_DOWN: frozenset(),
}


@dataclass(frozen=True)
class CheckpointStats:
    """Counters and recent figures for metrics.

    Attributes:
        triggered: checkpoints triggered.
        completed: checkpoints completed.
        failed: checkpoints failed (declined, timed out, aborted, commit failed).
        subsumed: pending checkpoints dropped because a newer one completed.
        latest_completed_id: id of the newest completed checkpoint, or ``None``.
        latest_size_bytes: state bytes of the newest completed checkpoint.
        recent_durations_ms: trigger-to-completion times of recent completions, oldest first.
    """

    triggered: int = 0
    completed: int = 0
    failed: int = 0
    subsumed: int = 0
    latest_completed_id: int | None = None
    latest_size_bytes: int = 0
    recent_durations_ms: tuple[int, ...] = ()
