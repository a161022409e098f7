"""Rescaling restore of the RocksDB backend: old key groups go in as whole SST files.

At another parallelism a subtask's key groups come from one or more old
subtasks' RocksDB checkpoints, each holding other key groups too. No entry
goes through a write batch or the memtable, and no state value is decoded:

1. **Base.** The checkpoint sharing the most key groups with the subtask,
   when at least :data:`MIN_BASE_SHARE` of its own key groups are wanted,
   becomes the database as it is (its SST files hard-linked, as a restore at
   the same parallelism does), and the key groups outside the subtask's
   range are deleted from it with range deletions (:func:`keep_only`). Its
   files stay the ones checkpoint storage already holds, so the next
   incremental checkpoint references them instead of uploading them again.
2. **Others.** For each other checkpoint (opened read-only)
   :func:`write_ingest_files` writes the entries of the wanted key groups,
   as raw bytes, into new SST files with RocksDB's ``SstFileWriter``, and
   the database ingests them (``ingest_external_file``): RocksDB adds the
   files to its tree as they are.

The old files themselves are not ingested: rocksdict ingests only files an
``SstFileWriter`` wrote, and the old files hold foreign key groups and their
database's own numbering. Two things change on the way (see
:mod:`weirflow.state.rocksdb` and :mod:`weirflow.state.rocksdb_timers` for
the layouts):

* **State ids.** Each old database numbered its state names itself; the key
  prefix gets the restoring database's id of the same name. One SST file per
  state id keeps each file's keys sorted, whatever the numbering.
* **Timer sequences.** Sequences of different old databases collide, so the
  sequence of source ``position`` (of ``sources``) becomes
  ``old * sources + position``: unique, and timers of one timestamp fire in
  (old sequence, source) order, the order the memory timer service restores.
  The base's timers are renumbered too: its timer column families are
  emptied by range deletions and every checkpoint's timers ingested.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from weirflow.errors import StateError
from weirflow.serde import decode
from weirflow.state.descriptors import StateKind
from weirflow.state.keygroups import KeyGroupRange
from weirflow.state.rocksdb_files import (
    disk_errors,
    open_read_only,
    range_items,
    rocksdict_module,
)
from weirflow.state.rocksdb_snapshot import (
    KG,
    TIMER_QUEUE_KEY,
    TIMER_SEQUENCE,
    read_state_names,
)
from weirflow.state.rocksdb_table import KG_SID
from weirflow.state.snapshots import RestoredFiles

_MAX_SEQ: Final = (1 << 64) - 1
_META: Final = b"\xff\xff"
"""Where the metadata keys of the default column family start (after every key group)."""
_ALL: Final = (b"", b"\xff\xff\xff")
"""A range holding every key of the timer column families (they start with a domain or a
key group, both below 0xFFFF)."""

MIN_BASE_SHARE: Final = 0.5
"""Share of a checkpoint's key groups a subtask must take for it to be opened as the base:
below, the copy would mostly hold key groups the subtask deletes (disk space, and reads
that skip range deletions until compaction)."""


@dataclass(slots=True)
class IngestFiles:
    """SST files written for one restore, per column family, and what they hold.

    Attributes:
        base: the index in ``sources`` of the checkpoint opened as the base, or ``None``.
        state: files for the ``default`` column family (keyed state).
        timer_index: files for the ``timer_index`` column family.
        timers: files for the ``timers`` column family (the timer queue).
        entries: keyed-state entries written.
        timer_count: timers written.
    """

    base: int | None = None
    state: list[Path] = field(default_factory=list)
    timer_index: list[Path] = field(default_factory=list)
    timers: list[Path] = field(default_factory=list)
    entries: int = 0
    timer_count: int = 0

    def count(self) -> int:
        """Return the number of SST files written."""
        return len(self.state) + len(self.timer_index) + len(self.timers)


class _Writers:
    """SST writers opened on first use (RocksDB refuses to finish an empty file)."""

    def __init__(self, folder: Path, stem: str) -> None:
        self._folder = folder
        self._stem = stem
        self._open: dict[Any, Any] = {}
        self.paths: list[Path] = []

    def put(self, slot: Any, key: bytes, value: bytes) -> None:
        writer = self._open.get(slot)
        if writer is None:
            rd = rocksdict_module()
            writer = self._open[slot] = rd.SstFileWriter(rd.Options(raw_mode=True))
            path = self._folder / f"{self._stem}-{len(self.paths)}.sst"
            writer.open(str(path))
            self.paths.append(path)
        writer[key] = value

    def finish(self) -> list[Path]:
        for writer in self._open.values():
            writer.finish()
        self._open.clear()
        return self.paths


def check_free(db: Any, sources: Sequence[RestoredFiles], key_group_range: KeyGroupRange) -> None:
    """Refuse to restore a key group twice.

    Args:
        db: the restoring database (flushed).
        sources: the checkpoints to restore.
        key_group_range: the restoring subtask's key groups.

    Raises:
        StateError: a wanted key group holds state or timers in ``db``, or
            two of ``sources`` hold it; the message names the key group.
    """
    index = db.get_column_family("timer_index")
    try:
        seen: set[int] = set()
        for source in sources:
            start, end = source.key_group_range
            for kg in range(max(start, key_group_range.start), min(end, key_group_range.end)):
                bounds = KG.pack(kg), KG.pack(kg + 1)
                held = any(next(range_items(d, *bounds), None) is not None for d in (db, index))
                if kg in seen or held:
                    raise StateError(
                        f"key group {kg}: restored twice (two checkpoints, or state present)"
                    )
                seen.add(kg)
    finally:
        # a column family view left in the traceback would keep the database locked after close
        del index


def choose_base(sources: Sequence[RestoredFiles], key_group_range: KeyGroupRange) -> int | None:
    """Return the index of the checkpoint to open as the base (see the module docs), or ``None``.

    The one sharing the most key groups with ``key_group_range`` (the first
    of equals), if at least :data:`MIN_BASE_SHARE` of its key groups are shared.
    """
    best, best_shared = None, 0
    for index, source in enumerate(sources):
        start, end = source.key_group_range
        shared = min(end, key_group_range.end) - max(start, key_group_range.start)
        if shared > best_shared and shared >= MIN_BASE_SHARE * (end - start):
            best, best_shared = index, shared
    return best


def keep_only(db: Any, key_group_range: KeyGroupRange) -> None:
    """Delete every key group outside ``key_group_range`` and every timer from ``db``.

    Range deletions: constant cost, whatever they cover; the entries go at
    the next compaction. The metadata (keys from ``0xFFFF``) stays. Timers
    go in again renumbered (:func:`ingest_checkpoints`).

    Raises:
        Exception: RocksDB's, on a full or read-only disk (see ``disk_errors``).
    """
    start, end = KG.pack(key_group_range.start), KG.pack(key_group_range.end)
    for begin, stop in ((b"", start), (end, _META)):
        if begin < stop:
            db.delete_range(begin, stop)
    for family in ("timer_index", "timers"):
        db.get_column_family(family).delete_range(*_ALL)


def ingest_checkpoints(
    db: Any,
    directory: Path,
    sources: Sequence[RestoredFiles],
    key_group_range: KeyGroupRange,
    state_id: Callable[[str, StateKind], int],
    base: int | None = None,
) -> IngestFiles:
    """Write the wanted key groups of ``sources`` as SST files and ingest them into ``db``.

    The files are staged in ``<directory>.ingest`` (the database's file
    system, so ingesting moves them), removed afterwards whatever happens.

    Args:
        db: the restoring database (open, with the timer column families).
        directory: its folder.
        sources: old subtasks' checkpoints whose key groups overlap ``key_group_range``.
        key_group_range: the restoring subtask's key groups.
        state_id: see :func:`write_ingest_files`.
        base: the index of the source ``db`` is a copy of (after
            :func:`keep_only`): only its timers are written, or ``None``.

    Returns:
        The files ingested and the number of entries and timers they held.

    Raises:
        StateError: a checkpoint cannot be read, a state kind conflicts, or
            the disk is full or read-only (the message names ``directory``).
        UnsupportedStateVersionError: a checkpoint has another key layout version.
    """
    staging = directory.with_name(directory.name + ".ingest")
    shutil.rmtree(staging, ignore_errors=True)
    out = IngestFiles(base=base)
    try:
        with disk_errors(directory):
            staging.mkdir(parents=True)
            for position, source in enumerate(sources):
                write_ingest_files(
                    source.directory,
                    key_group_range,
                    (position, len(sources)),
                    state_id if position != base else None,
                    staging,
                    out,
                )
            _ingest(db, None, out.state)
            _ingest(db, "timer_index", out.timer_index)
            _ingest(db, "timers", out.timers)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _ingest(db: Any, family: str | None, paths: list[Path]) -> None:
    """Ingest ``paths`` into column family ``family`` of ``db`` (``None``: the default one)."""
    if not paths:
        return
    options = rocksdict_module().IngestExternalFileOptions()
    options.set_move_files(True)
    target = db if family is None else db.get_column_family(family)
    try:
        target.ingest_external_file([str(p) for p in paths], options)
    finally:
        # a column family view left in the traceback would keep the database locked after close
        del target


def write_ingest_files(
    source: Path,
    key_group_range: KeyGroupRange,
    position: tuple[int, int],
    state_id: Callable[[str, StateKind], int] | None,
    folder: Path,
    out: IngestFiles,
) -> None:
    """Write the entries of ``key_group_range`` in the checkpoint at ``source`` as SST files.

    Args:
        source: a folder holding every file of an old subtask's RocksDB checkpoint.
        key_group_range: the restoring subtask's key groups (others are skipped).
        position: ``(this source's index, number of sources)`` of the restore,
            which makes timer sequences unique (see the module docs).
        state_id: declares a state name in the restoring database and returns
            its id there (raises StateError for a kind conflict); ``None``
            writes the timers only (the source is the base).
        folder: where the files go (on the database's file system, so that
            ingesting them moves instead of copying).
        out: collects the file paths and counts.

    Raises:
        StateError: the folder does not hold a readable database, a state
            kind conflicts, or a timer sequence would overflow.
        UnsupportedStateVersionError: its key layout has another version.
    """
    db = open_read_only(source)
    try:
        names = read_state_names(db, str(source))
        stem = f"source-{position[0]}"
        start, end = KG.pack(key_group_range.start), KG.pack(key_group_range.end)
        if state_id is not None:
            new_ids = {sid: state_id(name, kind) for sid, (name, kind) in names.items()}
            state = _Writers(folder, f"{stem}-state")
            for key, value in range_items(db, start, end):
                kg, sid = KG_SID.unpack_from(key)
                new_sid = new_ids[sid]
                state.put(new_sid, KG_SID.pack(kg, new_sid) + key[KG_SID.size :], value)
                out.entries += 1
            out.state.extend(state.finish())

        index = _Writers(folder, f"{stem}-index")
        for key, value in range_items(db.get_column_family("timer_index"), start, end):
            (seq,) = TIMER_SEQUENCE.unpack(value)
            index.put(0, key, TIMER_SEQUENCE.pack(_new_sequence(seq, position)))
        out.timer_index.extend(index.finish())

        queue = _Writers(folder, f"{stem}-timers")
        for key, value in range_items(db.get_column_family("timers"), b"", b"\xff\xff"):
            if decode(value, allow_pickle=True)[0] not in key_group_range:
                continue
            domain, biased_ts, seq = TIMER_QUEUE_KEY.unpack(key)
            queue.put(
                0, TIMER_QUEUE_KEY.pack(domain, biased_ts, _new_sequence(seq, position)), value
            )
            out.timer_count += 1
        out.timers.extend(queue.finish())
    finally:
        db.close()


def _new_sequence(seq: int, position: tuple[int, int]) -> int:
    index, sources = position
    new = seq * sources + index
    if new > _MAX_SEQ:
        raise StateError(f"timer sequence {seq} overflows when merging {sources} checkpoints")
    return new
