"""A job's checkpoint key: found where configured, else in (or made as) a key file
next to a local checkpoint folder; and the job's storage opened with it.

Used by every process of a job (the ``Dataflow.run`` caller, ``weirflow run``'s
supervisor and workers, ``weirflow checkpoints``), so all of them find the
same key the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fsspec.core import strip_protocol

from weirflow.checkpoint.config import CheckpointConfig
from weirflow.checkpoint.fs import protocol_of
from weirflow.checkpoint.keys import JobKey, create_key_file, find_key, read_key_file
from weirflow.checkpoint.storage import CheckpointStorage
from weirflow.errors import ConfigError

log = logging.getLogger(__name__)

_KEYS_FOLDER = "checkpoint-keys"


def default_key_file(storage: str, job: str) -> Path | None:
    """Return where a generated key for ``job`` is kept.

    The key sits next to the checkpoint folder, outside it:
    ``<storage>/../checkpoint-keys/<job>.key`` (for the default storage
    ``weirflow-data/checkpoints``: ``weirflow-data/checkpoint-keys/<job>.key``),
    so that whoever is handed the checkpoint folder is not handed its key.

    Args:
        storage: the checkpoint storage root (folder or URL).
        job: the job's name.

    Returns:
        The path, or ``None`` for storage that is not a local folder (a key
        must then be given).
    """
    if protocol_of(storage) != "file":
        return None
    root = Path(strip_protocol(storage)).absolute()
    return root.parent / _KEYS_FOLDER / f"{job}.key"


def resolve_job_key(
    explicit: bytes | None,
    storage: str,
    job: str,
    *,
    key_file: str | None = None,
    create: bool,
) -> JobKey:
    """Find a job's checkpoint key, falling back to the default key file.

    Steps:
        1. a key given in code, on the command line or in the environment
           (:func:`load_checkpoint_key`);
        2. else the default key file of the job (:func:`default_key_file`), if it exists;
        3. else, when ``create`` is true and the storage is a local folder, a
           new key written to the default key file (mode 0600).

    Args:
        explicit: ``CheckpointConfig.key``.
        storage: the checkpoint storage root.
        job: the job's name.
        key_file: a key file given on the command line.
        create: whether to generate a key file when there is no key.

    Returns:
        The :class:`JobKey` (``key`` is ``None`` when none was found or made).

    Raises:
        ConfigError: a given key or key file is unusable, or the default key
            file cannot be read or created.
    """
    found = find_key(explicit, key_file, os.environ)
    if found.key is not None:
        return found
    path = default_key_file(storage, job)
    if path is None:
        return JobKey(None)
    if not path.exists() and create:
        try:
            return JobKey(create_key_file(path), path, created=True)
        except ConfigError:
            if not path.exists():
                raise
            # Another process of the job created it first: use theirs.
    if path.exists():
        return JobKey(read_key_file(path), path)
    return JobKey(None)


def open_job_storage(
    config: CheckpointConfig, job: str, storage_options: Mapping[str, Any] | None = None
) -> CheckpointStorage:
    """Open a job's checkpoint storage with the job's checkpoint key.

    The key is found by :func:`weirflow.checkpoint.resolve_job_key`
    (``config.key``, the environment, the default key file next to a local
    storage folder, generated there when missing); the same call finds it in
    every process of the job.

    Args:
        config: the job's checkpoint configuration.
        job: the job's name.
        storage_options: fsspec options of the storage.

    Returns:
        The storage; unsigned (``authenticated`` false) only for non-local
        storage without a configured key.

    Raises:
        CheckpointStorageError: the storage cannot be written (probed first).
        ConfigError: a configured key or key file is unusable.
        CheckpointError: the job name is not a safe folder name.
    """
    # Probe the storage first: a path through a file or a read-only folder is named as such,
    # not as a key file that cannot be created next to it.
    CheckpointStorage(config.storage, job, storage_options=storage_options).check_writable()
    found = resolve_job_key(config.key, config.storage, job, create=True)
    if found.created:
        log.warning(
            "generated checkpoint key %s for job %s (mode 0600); keep it: restoring this job's "
            "checkpoints needs it",
            found.path,
            job,
        )
    return CheckpointStorage(config.storage, job, storage_options=storage_options, key=found.key)
