"""``weirflow run``'s options that need more than parsing: the checkpoint key, restore, the
state backend, messages."""

from __future__ import annotations

import logging
import os
from enum import StrEnum
from pathlib import Path

from weirflow.checkpoint import (
    FRESH,
    KEY_ENV,
    KEY_FILE_ENV,
    CheckpointStorage,
    NoCheckpointError,
    resolve_job_key,
)
from weirflow.errors import CheckpointError, ConfigError
from weirflow.state import MemoryStateBackend, RocksDBStateBackend, StateBackend

log = logging.getLogger("weirflow.cli")


def checkpoint_key_env(checkpoint_dir: str, job: str, key_file: str | None) -> dict[str, str]:
    """Find (or generate) the job's checkpoint key; return the workers' environment naming it.

    Workers get the key file's path (or inherit ``$WEIRFLOW_CHECKPOINT_KEY``), never the key
    on their command line.
    """
    found = resolve_job_key(None, checkpoint_dir, job, key_file=key_file, create=True)
    # log lines, so that --log-format json stays all JSON
    if found.created:
        log.info(
            "generated checkpoint key file %s (mode 0600): it signs job %s's checkpoints; "
            "keep it, restoring them needs it",
            found.path,
            job,
        )
    if found.key is None:
        log.warning(
            "no checkpoint key for %s: state that needs pickle cannot be checkpointed; "
            "give --checkpoint-key-file",
            checkpoint_dir,
        )
    # An explicit key file wins over an inherited $WEIRFLOW_CHECKPOINT_KEY, in workers too.
    return {KEY_FILE_ENV: str(found.path), KEY_ENV: ""} if found.path is not None else {}


def restore_option(restore: str | None, fresh: bool) -> str | None:
    """Fold ``--fresh`` into ``--restore``.

    Raises:
        ConfigError: ``--fresh`` with another ``--restore``.
    """
    if not fresh:
        return restore
    if restore not in (None, FRESH):
        raise ConfigError(f"--fresh contradicts --restore {restore}: pass one of them")
    return FRESH


def check_fresh_start(storage: CheckpointStorage) -> None:
    """No ``--restore``: refuse before any worker starts if the job has checkpoints.

    Raises:
        ConfigError: the job has completed checkpoints in ``storage``.
    """
    try:
        storage.check_fresh_start()
    except CheckpointError as e:
        raise ConfigError(str(e)) from e


def config_message(e: ConfigError) -> str:
    """The error's message, its advice worded for this command line where the library's differs."""
    if isinstance(e, NoCheckpointError):
        # unusable checkpoints left behind refuse a plain fresh start (no --restore)
        fresh = "with --restore none" if e.skipped else "without --restore"
        return (
            f"--restore latest but {e.what_is_missing()}. To start fresh run {fresh} (or with "
            "--restore latest-or-fresh to resume when possible); to restore a savepoint pass "
            "--restore PATH"
        )
    return str(e)


class StateBackendKind(StrEnum):
    """Where keyed state lives (``--state-backend``)."""

    memory = "memory"
    rocksdb = "rocksdb"


DEFAULT_STATE_DIR = "weirflow-data/state"


def state_backend_option(kind: StateBackendKind, state_dir: str | None) -> StateBackend:
    """Build the state backend of ``--state-backend`` and ``--state-dir``.

    Args:
        kind: memory or rocksdb.
        state_dir: RocksDB's local folder (default ``weirflow-data/state``); only with rocksdb.

    Returns:
        The :class:`~weirflow.state.StateBackend`.

    Raises:
        ConfigError: ``--state-dir`` without rocksdb, or a folder that cannot be
            created or written.
    """
    if kind is StateBackendKind.memory:
        if state_dir is not None:
            raise ConfigError("--state-dir needs --state-backend rocksdb")
        return MemoryStateBackend()
    path = Path(state_dir or DEFAULT_STATE_DIR)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"--state-dir {path} cannot be created ({e.strerror}); give a writable folder"
        ) from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"--state-dir {path} is not writable; give a writable folder")
    return RocksDBStateBackend(path)
