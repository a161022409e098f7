"""Restoring a keyed operator subtask from a :class:`~weirflow.state.KeyedRestore`.

A restore hands over canonical per-key-group blobs (from memory-backend or
full RocksDB checkpoints), RocksDB checkpoint folders (from incremental
checkpoints), or both. :func:`restore_keyed` picks the cheapest way:

1. one RocksDB checkpoint of exactly this subtask's key groups into an empty
   RocksDB backend (same parallelism): the backend opens its files, no key
   is replayed;
2. otherwise (rescaling, or into the memory backend): each checkpoint is
   opened read-only and the key groups this subtask owns are read out in the
   canonical form;
3. the blobs are loaded like any others.
"""

from __future__ import annotations

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
from weirflow.state.snapshots import KeyedRestore
from weirflow.state.timers import InternalTimerService


def restore_keyed(
    keyed: KeyedStateBackend, timers: InternalTimerService | None, restored: KeyedRestore
) -> None:
    """Load ``restored`` into a subtask's keyed backend and timer service (see the module docs).

    Args:
        keyed: the subtask's (empty) keyed backend.
        timers: its timer service, or ``None`` for an operator without timers.
        restored: what the restore planned for this subtask.

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
    if (
        len(files) == 1
        and files[0].key_group_range == own
        and not state
        and not timer_blobs
        and isinstance(keyed, RocksDBKeyedStateBackend)
        and (timers is None or isinstance(timers, RocksDBTimerService))
    ):
        keyed.adopt(files[0])
        return
    for restored_files in files:
        blobs, timer_part = export_key_groups(
            restored_files.directory, keyed.key_group_range, keyed.max_parallelism
        )
        state.extend(blobs.items())
        timer_blobs.extend(timer_part.items())
    keyed.restore(state)
    if timers is not None:
        timers.restore(timer_blobs)


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
