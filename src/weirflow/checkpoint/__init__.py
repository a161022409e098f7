"""weirflow.checkpoint: checkpoint configuration, storage, manifests, the
coordinator state machine, retention and savepoints (``docs/architecture.md``, Checkpoints).

This layer knows tasks only by their string ids; the runtime drives it.
"""

from weirflow.checkpoint.config import CHECKPOINT_MODES, CheckpointConfig, CheckpointMode, to_ms
from weirflow.checkpoint.coordinator import CheckpointCoordinator
from weirflow.checkpoint.errors import (
    CheckpointConflictError,
    CheckpointCorruptError,
    CheckpointFailuresExceededError,
    CheckpointStorageError,
    CheckpointTransitionError,
    NoCheckpointError,
)
from weirflow.checkpoint.fileformat import checksum_of, checksum_of_file
from weirflow.checkpoint.handles import StateHandle, TaskSnapshot, is_safe_name, state_file_name
from weirflow.checkpoint.jobkey import default_key_file, open_job_storage, resolve_job_key
from weirflow.checkpoint.keys import (
    KEY_ENV,
    KEY_FILE_ENV,
    JobKey,
    create_key_file,
    load_checkpoint_key,
    read_key_file,
)
from weirflow.checkpoint.lifecycle import CheckpointStats, CoordinatorState
from weirflow.checkpoint.manifest import MANIFEST_FORMAT_VERSION, Manifest
from weirflow.checkpoint.pending import CheckpointStatus, CompletedCheckpoint, PendingCheckpoint
from weirflow.checkpoint.shared import (
    collect_shared_files,
    collect_shared_files_or_warn,
    referenced_shared_files,
)
from weirflow.checkpoint.storage import FRESH, MANIFEST_NAME, CheckpointStorage
from weirflow.checkpoint.upgrade import (
    Incompatibility,
    UpgradeReport,
    compare_operators,
    without_operators,
)

__all__ = [
    "CHECKPOINT_MODES",
    "FRESH",
    "KEY_ENV",
    "KEY_FILE_ENV",
    "MANIFEST_FORMAT_VERSION",
    "MANIFEST_NAME",
    "CheckpointConfig",
    "CheckpointConflictError",
    "CheckpointCoordinator",
    "CheckpointCorruptError",
    "CheckpointFailuresExceededError",
    "CheckpointMode",
    "CheckpointStats",
    "CheckpointStatus",
    "CheckpointStorage",
    "CheckpointStorageError",
    "CheckpointTransitionError",
    "CompletedCheckpoint",
    "CoordinatorState",
    "Incompatibility",
    "JobKey",
    "Manifest",
    "NoCheckpointError",
    "PendingCheckpoint",
    "StateHandle",
    "TaskSnapshot",
    "UpgradeReport",
    "checksum_of",
    "checksum_of_file",
    "collect_shared_files",
    "collect_shared_files_or_warn",
    "compare_operators",
    "create_key_file",
    "default_key_file",
    "is_safe_name",
    "load_checkpoint_key",
    "open_job_storage",
    "read_key_file",
    "referenced_shared_files",
    "resolve_job_key",
    "state_file_name",
    "to_ms",
    "without_operators",
]
