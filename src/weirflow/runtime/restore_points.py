"""Which checkpoint a run starts from, and which one each of its restarts restores.

One rule for every way of running a job (in one process, or under a job
coordinator): the first attempt restores what the ``restore`` option names;
a restart restores the newest usable checkpoint *this run* completed, never
an older one left in the same storage by an earlier run of the job (or one
older than the restored savepoint); without one, it restores what the first
attempt restored.
"""

from __future__ import annotations

import logging

from weirflow.checkpoint import CheckpointCorruptError, CheckpointStorage, Manifest
from weirflow.errors import CheckpointError, ConfigError

log = logging.getLogger("weirflow.runtime")


class RestorePoints:
    """The checkpoints a run restores.

    Args:
        storage: the job's checkpoint storage.
        restore: ``None``, ``"none"``, ``"latest"``, ``"latest-or-fresh"`` or a
            checkpoint or savepoint path (see ``CheckpointStorage.resolve_restore``).

    Raises:
        CheckpointCorruptError: the checkpoint at an explicit path fails verification.
        ConfigError: nothing to restore from, or a fresh start over this job's
            checkpoints (a problem of the option, which no restart can fix).
    """

    def __init__(self, storage: CheckpointStorage, restore: str | None) -> None:
        self.storage = storage
        try:
            self.first: Manifest | None = storage.resolve_restore(restore)
        except (CheckpointCorruptError, ConfigError):
            raise
        except CheckpointError as e:
            raise ConfigError(str(e)) from e
        self._baseline = max(
            [*storage.completed_checkpoints(), self.first.checkpoint_id if self.first else 0]
        )

    def latest_of_this_run(self) -> Manifest | None:
        """The newest usable checkpoint completed since the run started, or ``None``."""
        latest = self.storage.latest_valid(
            lambda path, err: log.warning("skipping unusable checkpoint %s: %s", path, err)
        )
        if latest is None or latest.checkpoint_id <= self._baseline:
            return None
        return latest
