"""weirflow.checkpoint: checkpoint configuration, storage, manifests, the
coordinator state machine, retention and savepoints (``docs/architecture.md``, Checkpoints).

This layer knows tasks only by their string ids; the runtime drives it.
"""

from weirflow.checkpoint.config import CHECKPOINT_MODES, CheckpointConfig, CheckpointMode, to_ms
from weirflow.checkpoint.coordinator import CheckpointCoordinator
from weirflow.checkpoint.errors import (
    CheckpointConflictError,
    CheckpointCorruptError,
    CheckpointTransitionError,
)
from weirflow.checkpoint.handles import StateHandle, TaskSnapshot, is_safe_name, state_file_name
from weirflow.checkpoint.lifecycle import CheckpointStats, CoordinatorState
from weirflow.checkpoint.manifest import MANIFEST_FORMAT_VERSION, Manifest
from weirflow.checkpoint.pending import CheckpointStatus, CompletedCheckpoint, PendingCheckpoint
from weirflow.checkpoint.storage import FRESH, MANIFEST_NAME, CheckpointStorage

__all__ = [
    "CHECKPOINT_MODES",
    "FRESH",
    "MANIFEST_FORMAT_VERSION",
    "MANIFEST_NAME",
    "CheckpointConfig",
    "CheckpointConflictError",
    "CheckpointCoordinator",
    "CheckpointCorruptError",
    "CheckpointMode",
    "CheckpointStats",
    "CheckpointStatus",
    "CheckpointStorage",
    "CheckpointTransitionError",
    "CompletedCheckpoint",
    "CoordinatorState",
    "Manifest",
    "PendingCheckpoint",
    "StateHandle",
    "TaskSnapshot",
    "is_safe_name",
    "state_file_name",
    "to_ms",
]
