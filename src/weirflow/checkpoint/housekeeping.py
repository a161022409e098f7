"""Storage work around finished checkpoints that never changes their outcome.

After a checkpoint completes: retention (and, with nothing in flight, the
collection of shared files no retained manifest names) and, for a
savepoint, the copy into its folder; after one fails or is subsumed:
deleting its files. Each step's failure is logged (or, for the savepoint
copy, reported) instead of raised, because the checkpoint's outcome is
already decided and the tasks must still be told; a later run retries
what was left behind.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from weirflow.checkpoint.manifest import Manifest
from weirflow.checkpoint.shared import collect_shared_files_or_warn
from weirflow.checkpoint.storage import CheckpointStorage
from weirflow.errors import CheckpointError

# the coordinator's logger: this is its work, and its log lines keep their origin
log = logging.getLogger("weirflow.checkpoint.coordinator")


def retain(storage: CheckpointStorage, retained: int, pending: Collection[int]) -> None:
    """Apply retention after a completion; collect shared files when nothing is pending.

    Args:
        storage: the job's checkpoint storage.
        retained: completed checkpoints to keep, >= 1.
        pending: ids of checkpoints still pending (their folders are kept).
    """
    try:
        deleted = storage.apply_retention(retained, keep=pending)
    except CheckpointError as e:
        # The checkpoint is complete; a failed cleanup is retried after the next one.
        log.warning("retention for job %s failed: %s", storage.job, e)
        return
    if deleted:
        log.debug("retention deleted checkpoints %s of job %s", deleted, storage.job)
    if not pending:
        # no checkpoint in flight: every live shared file is named by a retained manifest
        collect_shared_files_or_warn(storage)


def copy_savepoint(
    storage: CheckpointStorage, manifest: Manifest, target: str | None
) -> tuple[str | None, str | None]:
    """Copy a completed savepoint checkpoint into its folder.

    Args:
        storage: the job's checkpoint storage.
        manifest: the completed checkpoint's manifest.
        target: the savepoint folder URL, or ``None`` for the default one.

    Returns:
        ``(savepoint URL, None)``, or ``(None, error message)`` when the copy failed.
    """
    url = target or storage.default_savepoint_url(manifest.checkpoint_id)
    try:
        return storage.write_savepoint(manifest, url), None
    except CheckpointError as e:
        # The checkpoint itself completed and tasks must still be notified,
        # so the copy's failure is reported, not raised.
        log.warning("savepoint of checkpoint %d failed: %s", manifest.checkpoint_id, e)
        return None, str(e)


def delete_files(storage: CheckpointStorage, checkpoint_id: int) -> None:
    """Delete the files of a checkpoint that failed or was subsumed (it has no manifest)."""
    try:
        storage.abort_checkpoint(checkpoint_id)
    except CheckpointError as e:
        # Left-over folders without a manifest are removed by a later retention.
        log.warning("cannot delete files of checkpoint %d: %s", checkpoint_id, e)
