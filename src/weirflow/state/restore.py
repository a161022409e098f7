"""Restoring a keyed operator subtask from a :class:`~weirflow.state.KeyedRestore`.

A restore hands over canonical per-key-group blobs (from memory-backend or
full RocksDB checkpoints), RocksDB checkpoint folders (from incremental
checkpoints), or both. :func:`restore_keyed` picks the cheapest way:

1. one RocksDB checkpoint of exactly this subtask's key groups into an empty
   RocksDB backend (same parallelism): the backend opens its files, no key
   is replayed;
2. RocksDB checkpoints into a RocksDB backend at another parallelism: the
   checkpoint sharing most key groups may become the database (others'
   key groups deleted), the key groups this subtask owns of the others are
   written into new SST files and ingested
   (:meth:`RocksDBKeyedStateBackend.ingest`), timers included, no key is
   replayed;
3. otherwise (into the memory backend): each checkpoint is opened read-only
   and the key groups this subtask owns are read out in the canonical form;
4. the blobs are loaded like any others, key by key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

from weirflow.state.backend import KeyedStateBackend
from weirflow.state.keygroups import KeyGroupRange
from weirflow.state.rocksdb import RocksDBKeyedStateBackend
from weirflow.state.rocksdb_files import open_read_only
from weirflow.state.rocksdb_snapshot import RocksDBKeyedStateSnapshot, read_state_names, scan_state
from weirflow.state.rocksdb_timers import (
    RocksDBTimerService,
    RocksDBTimerSnapshot,
    scan_timer_index,
)
from weirflow.state.snapshots import KeyedRestore, RestoredFiles
from weirflow.state.timers import InternalTimerService

log = logging.getLogger("weirflow.state")


class RestoreMethod(Enum):
    """How :func:`restore_keyed` loaded RocksDB checkpoint folders (see the module docs)."""

    NONE = "none"
    """No checkpoint folder to load (blobs only, or nothing)."""
    OPENED = "opened"
    """The one checkpoint's files became the database."""
    INGESTED = "ingested"
    """The wanted key groups went in as ingested SST files."""
    REPLAYED = "replayed"
    """The wanted key groups were read out and written key by key."""


@dataclass(frozen=True, slots=True)
class KeyedRestoreStats:
    """What :func:`restore_keyed` did.

    Attributes:
        method: how checkpoint folders were loaded.
        base_opened: ``INGESTED`` only: one checkpoint's files became the
            database, the key groups outside the subtask's range deleted.
        sst_files: SST files ingested (``INGESTED`` only).
        entries: keyed-state entries those files held (``INGESTED`` only).
        timers: timers those files held (``INGESTED`` only).
        blobs: canonical blobs loaded key by key (state and timers).
    """

    method: RestoreMethod
    base_opened: bool = False
    sst_files: int = 0
    entries: int = 0
    timers: int = 0
    blobs: int = 0


def restore_keyed(
    keyed: KeyedStateBackend, timers: InternalTimerService | None, restored: KeyedRestore
) -> KeyedRestoreStats:
    """Load ``restored`` into a subtask's keyed backend and timer service (see the module docs).

    Args:
        keyed: the subtask's (empty) keyed backend.
        timers: its timer service, or ``None`` for an operator without timers.
        restored: what the restore planned for this subtask.

    Returns:
        How the state was loaded, with counts.

    Raises:
        StateError: a checkpoint folder cannot be read, or the state conflicts
            with what the backend declared (see ``KeyedStateBackend.restore``).
        UnsupportedStateVersionError: a blob, or a RocksDB checkpoint's key
            layout, of a version this build does not read.
        CorruptStateError: a bad blob.
    """
    state = list(restored.state)
    timer_blobs = list(restored.timers)
    files = restored.files
    own = (keyed.key_group_range.start, keyed.key_group_range.end)
    rocksdb = (
        keyed
        if isinstance(keyed, RocksDBKeyedStateBackend)
        and (timers is None or isinstance(timers, RocksDBTimerService))
        else None
    )
    stats = KeyedRestoreStats(RestoreMethod.NONE)
    if rocksdb is not None and files:
        if len(files) == 1 and files[0].key_group_range == own and not state and not timer_blobs:
            rocksdb.adopt(files[0])
            return KeyedRestoreStats(RestoreMethod.OPENED)
        stats = _ingest(rocksdb, files)
    elif files:
        stats = KeyedRestoreStats(RestoreMethod.REPLAYED)
        for restored_files in files:
            blobs, timer_part = export_key_groups(
                restored_files.directory, keyed.key_group_range, keyed.max_parallelism
            )
            state.extend(blobs.items())
            timer_blobs.extend(timer_part.items())
    keyed.restore(state)
    if timers is not None:
        timers.restore(timer_blobs)
    return replace(stats, blobs=len(state) + len(timer_blobs))


def _ingest(keyed: RocksDBKeyedStateBackend, files: list[RestoredFiles]) -> KeyedRestoreStats:
    ingested = keyed.ingest(files)
    stats = KeyedRestoreStats(
        RestoreMethod.INGESTED,
        ingested.base is not None,
        ingested.count(),
        ingested.entries,
        ingested.timer_count,
    )
    log.info(
        "%r: %s, ingested %d SST files (%d entries, %d timers) from %d checkpoints",
        keyed,
        "opened a base checkpoint" if stats.base_opened else "no base checkpoint",
        stats.sst_files,
        stats.entries,
        stats.timers,
        len(files),
    )
    return stats


def export_key_groups(
    directory: Path, key_group_range: KeyGroupRange, max_parallelism: int
) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """Read the key groups of ``key_group_range`` out of a RocksDB checkpoint folder.

    Args:
        directory: a folder holding every file of a RocksDB checkpoint.
        key_group_range: the key groups wanted (others in the folder are skipped).
        max_parallelism: the job's number of key groups.

    Returns:
        ``(state blobs, timer blobs)``, each key group -> canonical blob.

    Raises:
        StateError: the folder does not hold a readable database.
        UnsupportedStateVersionError: its key layout has another version.
    """
    db = open_read_only(directory)
    try:
        names = read_state_names(db, str(directory))
        state = RocksDBKeyedStateSnapshot(max_parallelism, names, scan_state(db, key_group_range))
        index = scan_timer_index(db.get_column_family("timer_index"), key_group_range)
        return state.to_bytes_per_key_group(), RocksDBTimerSnapshot(index).to_bytes_per_key_group()
    finally:
        db.close()
