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

from weirflow.checkpoint import (
    CheckpointCorruptError,
    CheckpointStorage,
    Manifest,
    compare_operators,
    without_operators,
)
from weirflow.errors import CheckpointError, ConfigError
from weirflow.graph import LogicalGraph, operator_signatures

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


def fit_to_job(manifest: Manifest, graph: LogicalGraph, allow_non_restored_state: bool) -> Manifest:
    """Check that ``manifest`` restores into ``graph`` (see ``weirflow.checkpoint.upgrade``).

    Returns:
        ``manifest``, without the state of operators the job no longer has
        when ``allow_non_restored_state``.

    Raises:
        ConfigError: a changed key type, window assigner or state type, an
            unnamed stateful operator restored from a savepoint, or state of
            operators the job lacks (unless allowed); the message names each.
    """
    report = compare_operators(
        manifest, [op.state_id for op in graph.operators], operator_signatures(graph)
    )
    problems = report.problems(allow_non_restored_state)
    if problems:
        raise ConfigError(
            f"checkpoint {manifest.checkpoint_id} does not restore into job {graph.name!r}: "
            + "; ".join(problems)
        )
    if report.dropped:
        log.warning("leaving the state of operator(s) %s behind", report.dropped)
        return without_operators(manifest, report.dropped)
    return manifest
