"""The RocksDB keyed state backend: state larger than memory, on local disk.

Needs the ``rocksdb`` extra (``pip install 'weirflow[rocksdb]'``, which
installs rocksdict); it is imported only when a RocksDB backend is created.

Key layout (default column family; all integers big-endian)::

    key group   2 bytes   fixed width, so one key group is one contiguous range
    state id    2 bytes   the declared state name's number in this database
    key         n bytes   weirflow.serde.encode(key): equal keys give equal bytes
    -> value              weirflow.serde.encode(value)

    0xFFFF "names"        -> encode({name: [state id, kind]})   (after every key group)
    0xFFFF "layout"       -> encode(1), the version of this layout; a restore refuses others

Snapshots, restore and rescaling iterate key-group ranges. ``max_parallelism``
is at most 65535, so the metadata prefix ``0xFFFF`` never collides with a key
group. Keys are compared by their encoding: ``1``, ``1.0`` and ``True`` are
three keys here (one in the memory backend); keep key types consistent.

Hot path: a bounded write-back cache sits in front of RocksDB
(``cache_size_bytes`` at an estimated :data:`ENTRY_SIZE_ESTIMATE` bytes an
entry; :class:`weirflow.state.rocksdb_table.WriteBackCache`). A cached read
or write is a dict operation on the user key, nothing is encoded; a value
read from it that is mutable (a list, dict or user object, which the caller
may change in place) counts as written. Dirty entries reach RocksDB in one
write batch when the cache drops its old generation and at every snapshot
(the checkpoint's synchronous part), so a job whose hot keys fit in the
cache touches RocksDB about once per key per checkpoint.

Checkpoints: incremental (the default) takes a RocksDB checkpoint (hard
links of the immutable SST files, timers included) into
``<directory>.checkpoints/chk-<id>``, whose new files the runtime uploads
(:mod:`weirflow.runtime.snapshot_files`); a restore of the same key groups
opens those files (:meth:`RocksDBKeyedStateBackend.adopt`); a restore at
another parallelism opens the one it takes most of as its base, deletes the
other key groups from it, and ingests its key groups of the others as new
SST files (:meth:`RocksDBKeyedStateBackend.ingest`); the memory backend
reads them out key by key (:func:`weirflow.state.export_key_groups`).
``incremental=False`` writes the same canonical per-key-group blobs as the
memory backend (:func:`weirflow.state.blob.pack_keyed_state`). Either way a
checkpoint of either backend restores into the other, at any parallelism.

Values are decoded with pickle allowed: the database is this subtask's own,
and restored files were verified under the checkpoint key first.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

from weirflow.errors import ConfigError, StateError
from weirflow.serde import encode
from weirflow.state.blob import (
    KeyedGroupState,
    check_restored_kinds,
    unpack_keyed_state,
)
from weirflow.state.descriptors import StateKind
from weirflow.state.keyed_base import KeyedBackendBase
from weirflow.state.keygroups import KeyGroupRange
from weirflow.state.rocksdb_files import (
    COLUMN_FAMILIES,
    MARKER,
    disk_errors,
    link_or_copy,
    open_db,
    open_fresh_db,
    range_items,
    rocksdict_module,
)
from weirflow.state.rocksdb_ingest import (
    IngestFiles,
    check_free,
    choose_base,
    ingest_checkpoints,
    keep_only,
)
from weirflow.state.rocksdb_snapshot import (
    KG,
    LAYOUT_KEY,
    LAYOUT_VERSION,
    NAMES_KEY,
    RocksDBKeyedStateSnapshot,
    read_state_names,
    scan_state,
)
from weirflow.state.rocksdb_table import KG_SID, RocksDBTable, WriteBackCache
from weirflow.state.snapshots import FilesSnapshot, RestoredFiles

log = logging.getLogger("weirflow.state")

LOCAL_CHECKPOINTS_KEPT: Final = 3
"""Local RocksDB checkpoints kept per subtask (one uploading, one for local recovery, spare)."""

ENTRY_SIZE_ESTIMATE: Final = 256
"""Bytes one cached entry is assumed to take when sizing the cache (key, value, bookkeeping)."""

DEFAULT_CACHE_SIZE_BYTES: Final = 64 * 1024 * 1024
MAX_KEY_GROUPS: Final = 0xFFFF


class DatabaseUser(Protocol):
    """Something holding views of a keyed backend's database (the timer service)."""

    def flush(self) -> None:
        """Write what is buffered in memory to the database."""
        ...

    def release(self) -> None:
        """Drop every view of the database."""
        ...

    def reload(self) -> None:
        """Take new views of the (reopened) database and reread what is cached from it."""
        ...


class RocksDBKeyedStateBackend(KeyedBackendBase):
    """Keyed state of one subtask in a RocksDB database (implements ``KeyedStateBackend``).

    Args:
        directory: the database directory; an old database there is replaced.
        key_group_range: the key groups this subtask owns.
        max_parallelism: the job's number of key groups (at most 65535).
        cache_entries: bound of the write-back cache, in entries.
        remove_on_close: delete ``directory`` (and its local checkpoints) on :meth:`close`.
        incremental: snapshots with a checkpoint id are RocksDB checkpoints
            (:class:`FilesSnapshot`) instead of copied key ranges.

    Raises:
        ConfigError: max_parallelism above 65535, or rocksdict missing.
        StateError: the directory is not writable or is locked by a live process.
    """

    def __init__(
        self,
        directory: Path,
        key_group_range: KeyGroupRange,
        max_parallelism: int,
        *,
        cache_entries: int = DEFAULT_CACHE_SIZE_BYTES // ENTRY_SIZE_ESTIMATE,
        remove_on_close: bool = False,
        incremental: bool = False,
    ) -> None:
        super().__init__(key_group_range, max_parallelism)
        if max_parallelism > MAX_KEY_GROUPS:
            raise ConfigError(
                f"the RocksDB backend supports max_parallelism up to {MAX_KEY_GROUPS}, "
                f"got {max_parallelism}"
            )
        self.directory = directory
        self.local_checkpoints = directory.with_name(directory.name + ".checkpoints")
        self._remove_on_close = remove_on_close
        self._incremental = incremental
        self._instance = uuid.uuid4().hex[:12]
        self._uploaded: dict[str, Any] = {}
        self._pending_uploads: dict[int, dict[str, Any]] = {}
        self._users: list[DatabaseUser] = []
        self._db: Any = open_fresh_db(directory, COLUMN_FAMILIES)
        with disk_errors(directory):
            self._db.put(LAYOUT_KEY, encode(LAYOUT_VERSION))
        self._ids: dict[str, int] = {}
        self.cache = WriteBackCache(max(16, cache_entries), self._db_get, self._db_write)

    # -- raw access used by tables and timers ---------------------------------

    def attach(self, user: DatabaseUser) -> None:
        """Register ``user``: released before the database closes or reopens, then reloaded.

        A column family view keeps a rocksdict database open (and locked)
        even after ``close``, so every holder of one must drop it first.
        """
        self._users.append(user)

    def column_family(self, name: str) -> Any:
        """Return the ``rocksdict`` view of column family ``name`` (attached users only)."""
        return self._db.get_column_family(name)

    def column_family_handle(self, name: str) -> Any:
        """Return the handle of column family ``name``, for write batches."""
        return self._db.get_column_family_handle(name)

    def write_batch(self) -> Any:
        """Return an empty raw-mode write batch for :meth:`write`."""
        return rocksdict_module().WriteBatch(raw_mode=True)

    def write(self, batch: Any) -> None:
        """Apply a write batch atomically (StateError on a full or read-only disk)."""
        with disk_errors(self.directory):
            self._db.write(batch)

    def _new_table(self, name: str) -> RocksDBTable:
        sid = self._ids.get(name)
        if sid is None:
            sid = self._ids[name] = max(self._ids.values(), default=-1) + 1
            self._write_names()
        return RocksDBTable(name, sid, self)

    def _write_names(self) -> None:
        names = {n: [i, self._kinds[n]] for n, i in self._ids.items()}
        with disk_errors(self.directory):
            self._db.put(NAMES_KEY, encode(names))

    def _db_get(self, key: bytes) -> bytes | None:
        return self._db.get(key)

    def _db_write(self, entries: list[tuple[bytes, bytes | None]]) -> None:
        batch = self.write_batch()
        for key, value in entries:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self.write(batch)

    def flush(self) -> None:
        """Write every dirty cached entry (and buffered timers) to RocksDB (entries stay cached)."""
        self.cache.flush()
        for user in self._users:
            user.flush()

    def _range_items(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        return range_items(self._db, start, end)

    # -- snapshot and restore ---------------------------------------------------

    @property
    def incremental(self) -> bool:
        """Whether checkpoints are RocksDB checkpoints whose files are uploaded incrementally."""
        return self._incremental

    def snapshot(
        self, checkpoint_id: int | None = None
    ) -> RocksDBKeyedStateSnapshot | FilesSnapshot:
        """Take the synchronous part of a checkpoint.

        Flushes the cache. Full mode (or without a checkpoint id): copies the
        raw bytes of this subtask's key groups (one range scan). Incremental
        mode: takes a RocksDB checkpoint (hard links of the immutable SST
        files plus small metadata files, timers included) into
        ``<directory>.checkpoints/chk-<id>``. Either way later updates never
        reach the snapshot.

        Args:
            checkpoint_id: the checkpoint's id (names the local checkpoint folder).

        Returns:
            A :class:`RocksDBKeyedStateSnapshot`, or a :class:`FilesSnapshot`.
        """
        self.flush()
        if self._incremental and checkpoint_id is not None:
            return self._files_snapshot(checkpoint_id)
        names = {sid: (name, self._kinds[name]) for name, sid in self._ids.items()}
        groups = scan_state(self._db, self._range)
        return RocksDBKeyedStateSnapshot(self._max_parallelism, names, groups)

    def _files_snapshot(self, checkpoint_id: int) -> FilesSnapshot:
        target = self.local_checkpoints / f"chk-{checkpoint_id}"
        if target.exists():
            shutil.rmtree(target)
        self.local_checkpoints.mkdir(parents=True, exist_ok=True)
        with disk_errors(self.directory):
            rocksdict_module().Checkpoint(self._db).create_checkpoint(str(target))
        files = {p.name: p.stat().st_size for p in target.iterdir() if p.is_file()}
        shared = frozenset(n for n in files if n.endswith(".sst"))
        uploaded = self._uploaded
        self._prune_local_checkpoints()
        pending = self._pending_uploads.setdefault(checkpoint_id, {})
        return FilesSnapshot(
            directory=target,
            files=files,
            shared=shared,
            reused={n: uploaded[n] for n in shared if n in uploaded},
            instance=self._instance,
            key_group_range=(self._range.start, self._range.end),
            on_uploaded=pending.__setitem__,
        )

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Reuse the files checkpoint ``checkpoint_id`` uploaded in later checkpoints.

        Only files of completed checkpoints are reused: a file uploaded for a
        checkpoint that never completed is referenced by no manifest and may
        be deleted as an orphan at any time.
        """
        for n in [n for n in self._pending_uploads if n <= checkpoint_id]:
            done = self._pending_uploads.pop(n)
            if n == checkpoint_id:
                self._uploaded.update(done)

    def _prune_local_checkpoints(self) -> None:
        """Keep the newest few local checkpoints: one may still be uploading, one restored."""
        found = sorted(
            (int(p.name[4:]), p)
            for p in self.local_checkpoints.iterdir()
            if p.name.startswith("chk-") and p.name[4:].isdigit()
        )
        for _, path in found[:-LOCAL_CHECKPOINTS_KEPT]:
            shutil.rmtree(path, ignore_errors=True)

    def adopt(self, files: RestoredFiles) -> None:
        """Replace this (empty) database by a restored RocksDB checkpoint: no key is replayed.

        SST files are hard-linked when the file system allows it (RocksDB
        never changes them), the small metadata files copied. Names and kinds
        of states come from the database; tables declared before keep working.

        Args:
            files: a checkpoint of a subtask with exactly this key-group range.

        Raises:
            StateError: the range differs, this backend already holds state,
                or a restored name has another kind than declared here.
        """
        if files.key_group_range != (self._range.start, self._range.end):
            raise StateError(
                f"a RocksDB checkpoint of key groups {files.key_group_range} cannot be opened "
                f"as key groups {self._range}"
            )
        self._open_copy(files)
        for user in self._users:
            user.reload()

    def _open_copy(self, files: RestoredFiles) -> None:
        """Replace this empty database by a copy of ``files`` and take its state numbering.

        Attached users are released and must be reloaded by the caller.

        Raises:
            StateError: this backend holds state, or a restored name has
                another kind than declared here.
        """
        self.flush()
        if not self.is_empty():
            raise StateError("a RocksDB checkpoint can only be opened by an empty backend")
        self.cache.clear()
        for user in self._users:
            user.release()
        self._db.close()
        shutil.rmtree(self.directory)
        with disk_errors(self.directory):
            self.directory.mkdir(parents=True)
            (self.directory / MARKER).touch()
            for source in files.directory.iterdir():
                target = self.directory / source.name
                link_or_copy(source, target, link=source.name.endswith(".sst"))
        self._db = open_db(self.directory, COLUMN_FAMILIES)
        self._instance = uuid.uuid4().hex[:12]
        self._uploaded = dict(files.shared)
        restored = {
            name: (sid, kind)
            for sid, (name, kind) in read_state_names(self._db, str(files.directory)).items()
        }
        for name, (_, kind) in restored.items():
            known = self._kinds.get(name)
            if known is not None and known != kind:
                raise StateError(
                    f"state {name!r} was saved as {kind} state but is declared as {known} state"
                )
        declared = [n for n in self._ids if n not in restored]
        self._ids = {name: sid for name, (sid, _) in restored.items()}
        self._kinds.update({name: kind for name, (_, kind) in restored.items()})
        for name in declared:
            self._ids[name] = max(self._ids.values(), default=-1) + 1
        self._write_names()
        for name, table in self._tables.items():
            table.rebind(self._ids[name])

    def ingest(self, sources: Sequence[RestoredFiles]) -> IngestFiles:
        """Load this subtask's key groups out of old RocksDB checkpoints: the rescaling restore.

        See :mod:`weirflow.state.rocksdb_ingest`; timers in the checkpoints
        come along into this database's timer queue. No entry is replayed.

        Steps:

        1. Refuse if a wanted key group already holds state or timers.
        2. Open a copy of the base checkpoint, if one qualifies
           (:func:`~weirflow.state.rocksdb_ingest.choose_base`), and delete the
           key groups outside this subtask's range from it (range deletions).
        3. Write the wanted key groups of the other checkpoints, and every
           checkpoint's timers renumbered, into new SST files and ingest them.
        4. Let the timer service reread what it holds.

        Args:
            sources: old subtasks' checkpoints whose key groups overlap this backend's.

        Returns:
            The files ingested, the base opened, and the number of entries
            and timers the files held.

        Raises:
            StateError: a key group already holds state, a checkpoint cannot
                be read, a state kind conflicts, or the disk is full or read-only
                (then the backend holds part of the state: close it).
            UnsupportedStateVersionError: a checkpoint has another key layout version.
        """
        self.flush()
        check_free(self._db, sources, self._range)
        base = choose_base(sources, self._range) if self.is_empty() else None
        if base is not None:
            self._open_copy(sources[base])
            with disk_errors(self.directory):
                keep_only(self._db, self._range)
        self.cache.clear()
        out = ingest_checkpoints(
            self._db, self.directory, sources, self._range, self._state_id, base
        )
        for user in self._users:
            user.reload()
        return out

    def _state_id(self, name: str, kind: StateKind) -> int:
        self._declare(name, kind)
        return self._ids[name]

    def restore(self, blobs: Iterable[tuple[int, bytes]]) -> None:
        """Load canonical per-key-group blobs (of either backend) from one or many old subtasks.

        Steps:

        1. Skip blobs of key groups outside this backend's range.
        2. Check and decode every remaining blob before changing anything.
        3. Declare the restored names and write the entries in one batch.

        Raises:
            UnsupportedStateVersionError: a blob has an unknown format version.
            CorruptStateError: a blob is corrupt or malformed.
            StateError: a key group appears twice or already holds state, another
                max_parallelism, or a kind conflict. Messages name the key group.
        """
        self.flush()
        seen: set[int] = set()
        decoded: list[tuple[int, KeyedGroupState]] = []
        for kg, blob in blobs:
            if kg not in self._range:
                continue
            if kg in seen or self._holds(kg):
                raise StateError(f"key group {kg}: restored twice (two blobs, or state present)")
            seen.add(kg)
            states = unpack_keyed_state(kg, blob, self._max_parallelism)
            check_restored_kinds(kg, states, self._kinds)
            decoded.append((kg, states))
        self.cache.clear()
        batch = self.write_batch()
        for kg, states in decoded:
            for name, (kind, entries) in states.items():
                self._declare(name, kind)
                prefix = KG_SID.pack(kg, self._ids[name])
                for key, value in entries.items():
                    batch.put(prefix + encode(key), encode(value))
        self.write(batch)

    def _holds(self, kg: int) -> bool:
        return next(self._range_items(KG.pack(kg), KG.pack(kg + 1)), None) is not None

    def is_empty(self) -> bool:
        """Return whether no state name holds any entry."""
        self.flush()
        start, end = KG.pack(self._range.start), KG.pack(self._range.end)
        return next(self._range_items(start, end), None) is None

    def close(self) -> None:
        """Close the database (dirty cache entries are dropped: state lives in checkpoints)."""
        db, self._db = self._db, None
        if db is None:
            return
        self.cache.clear()
        for user in self._users:
            user.release()
        try:
            db.close()
        except Exception as e:
            # closing flushes the memtable; on a full disk that fails, and the error that
            # stopped the job (already raised) matters, not this one: the state is dropped
            log.warning("closing RocksDB directory %s: %s", self.directory, e)
        if self._remove_on_close:
            shutil.rmtree(self.directory, ignore_errors=True)
            shutil.rmtree(self.local_checkpoints, ignore_errors=True)

    def __repr__(self) -> str:
        return (
            f"RocksDBKeyedStateBackend({str(self.directory)!r}, range={self._range}, "
            f"states={sorted(self._kinds)})"
        )
