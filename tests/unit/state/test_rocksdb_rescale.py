"""Rescaling restore of the RocksDB backend: old key groups go in as ingested SST files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from weirflow.errors import StateError
from weirflow.state import (
    BackendScope,
    FilesSnapshot,
    KeyedRestore,
    KeyedStateBackend,
    KeyGroupRange,
    MemoryStateBackend,
    RestoredFiles,
    RestoreMethod,
    RocksDBStateBackend,
    StateBackend,
    key_group_for_key,
    key_group_range_for_subtask,
    restore_keyed,
)
from weirflow.state.blob import unpack_keyed_state
from weirflow.state.rocksdb_files import open_read_only, range_items
from weirflow.state.rocksdb_snapshot import KG

MAX_PARALLELISM = 128
KEYS = range(400)


def _scope(subtask: int, parallelism: int) -> BackendScope:
    kg_range = key_group_range_for_subtask(MAX_PARALLELISM, parallelism, subtask)
    return BackendScope("job", "op", subtask, kg_range, MAX_PARALLELISM)


def _old_checkpoints(root: Path) -> list[RestoredFiles]:
    """Two subtasks holding values, lists and timers; they number their state names differently."""
    backend = RocksDBStateBackend(root / "old", incremental=True)
    out = []
    for subtask in range(2):
        scope = _scope(subtask, 2)
        keyed = backend.create_keyed_backend(scope)
        timers = backend.create_timer_service(scope, keyed)
        names = ["count", "seen"] if subtask == 0 else ["seen", "count"]
        tables = {name: keyed.table(name) for name in names}
        for key in KEYS:
            kg = key_group_for_key(key, MAX_PARALLELISM)
            if kg not in scope.key_group_range:
                continue
            tables["count"].put(kg, key, key * 10)
            tables["seen"].put(kg, key, [key, str(key)])
            # equal timestamps across keys and subtasks: firing order must hold across sources
            timers.register_event_time_timer(kg, key, "w", 1000 + key % 7)
            timers.register_processing_time_timer(kg, key, None, 5000 + key % 3)
        files = keyed.snapshot(1)
        assert isinstance(files, FilesSnapshot)
        out.append(RestoredFiles(files.directory, files.key_group_range, {}))
        keyed.close()
    return out


def _restore(backend: StateBackend, subtask: int, sources: list[RestoredFiles]) -> Any:
    scope = _scope(subtask, 3)
    keyed = backend.create_keyed_backend(scope)
    timers = backend.create_timer_service(scope, keyed)
    own = scope.key_group_range
    overlapping = [
        s for s in sources if s.key_group_range[0] < own.end and own.start < s.key_group_range[1]
    ]
    stats = restore_keyed(keyed, timers, KeyedRestore([], [], None, overlapping))
    return keyed, timers, stats


def _contents(keyed: KeyedStateBackend) -> dict[int, Any]:
    snapshot = keyed.snapshot()
    blobs = snapshot.to_bytes_per_key_group()
    return {kg: unpack_keyed_state(kg, blob, MAX_PARALLELISM) for kg, blob in blobs.items()}


def _fire_all(timers: Any) -> tuple[list[Any], list[Any]]:
    return timers.advance_watermark(10**9), timers.advance_processing_time(10**9)


def _keys_in(start: int, end: int) -> int:
    return sum(start <= key_group_for_key(k, MAX_PARALLELISM) < end for k in KEYS)


def test_a_rescaled_restore_ingests_sst_files_and_equals_the_key_by_key_restore(
    tmp_path: Path,
) -> None:
    """Scenario: RocksDB checkpoints of 2 subtasks ([0, 64), [64, 128)) restore at 3
    ([0, 43), [43, 86), [86, 128)), into RocksDB and into memory: subtasks 0 and 2 open
    the checkpoint they take most of as their base, subtask 1 ingests from both."""
    sources = _old_checkpoints(tmp_path)
    rocksdb = RocksDBStateBackend(tmp_path / "new", incremental=True)
    for subtask in range(3):
        keyed, timers, stats = _restore(rocksdb, subtask, sources)
        reference, ref_timers, ref_stats = _restore(MemoryStateBackend(), subtask, sources)
        own = keyed.key_group_range
        assert ref_stats.method is RestoreMethod.REPLAYED
        assert (stats.method, stats.base_opened, stats.blobs) == (
            RestoreMethod.INGESTED,
            subtask != 1,
            0,
        )
        # the base's entries are its own files; the others' arrive in ingested files
        assert stats.entries == (2 * _keys_in(own.start, own.end) if subtask == 1 else 0)
        assert stats.timers == 2 * _keys_in(own.start, own.end)
        if subtask == 1:
            # a write batch would leave entries in the memtable; ingested files never pass it
            for family in ("timers", "timer_index"):
                view = keyed.column_family(family)
                assert view.property_int_value("rocksdb.num-entries-active-mem-table") == 0
                del view
        assert _contents(keyed) == _contents(reference)
        assert len(timers) == len(ref_timers) > 0
        assert _fire_all(timers) == _fire_all(ref_timers)
        # timers registered after the restore take sequences after every restored one
        kg = key_group_for_key(
            next(k for k in KEYS if key_group_for_key(k, 128) in keyed.key_group_range), 128
        )
        timers.register_event_time_timer(kg, "late", None, 1)
        assert timers.advance_watermark(1) == [(1, kg, "late", None)]
        keyed.close()
        # nothing of another subtask's key groups is left in the database
        db = open_read_only(keyed.directory)
        try:
            groups = {KG.unpack_from(k)[0] for k, _ in range_items(db, b"", b"\xff\xff")}
            index = db.get_column_family("timer_index")
            groups |= {KG.unpack_from(k)[0] for k, _ in range_items(index, b"", b"\xff\xff")}
            del index
        finally:
            db.close()
        assert groups and all(kg in own for kg in groups), sorted(groups)


def test_the_first_checkpoint_after_a_rescale_reuses_the_base_files(tmp_path: Path) -> None:
    """Scenario: a subtask restored at another parallelism opened a base checkpoint whose
    SST files are in checkpoint storage: its next incremental checkpoint references them."""
    sources = _old_checkpoints(tmp_path)
    uploaded = {
        p.name: f"handle of {p.name}" for p in sources[0].directory.iterdir() if p.suffix == ".sst"
    }
    assert uploaded
    base = RestoredFiles(sources[0].directory, sources[0].key_group_range, uploaded)
    keyed = RocksDBStateBackend(tmp_path / "new").create_keyed_backend(_scope(0, 3))
    try:
        stats = restore_keyed(keyed, None, KeyedRestore([], [], None, [base]))
        assert stats.base_opened
        files = keyed.snapshot(2)
        assert isinstance(files, FilesSnapshot)
        assert files.reused == uploaded
    finally:
        keyed.close()


def test_a_rescaled_restore_into_a_key_group_holding_state_is_refused(tmp_path: Path) -> None:
    """Scenario: the restoring subtask already holds state in a key group a checkpoint brings."""
    sources = _old_checkpoints(tmp_path)
    backend = RocksDBStateBackend(tmp_path / "new")
    keyed = backend.create_keyed_backend(_scope(0, 1))
    try:
        kg = sources[1].key_group_range[0]
        keyed.table("count").put(kg, "present", 1)
        with pytest.raises(StateError, match=f"key group {kg}: restored twice") as refused:
            restore_keyed(keyed, None, KeyedRestore([], [], None, sources))
        assert keyed.table("count").get(kg, "present") == 1
    finally:
        keyed.close()
    # the kept error holds nothing that keeps the database open: a restart can reopen it
    assert refused.value is not None
    backend.create_keyed_backend(_scope(0, 1)).close()


def test_scaling_down_to_one_subtask_opens_one_and_ingests_the_other(tmp_path: Path) -> None:
    """Scenario: RocksDB checkpoints of 2 subtasks restore at parallelism 1."""
    sources = _old_checkpoints(tmp_path)
    scope = BackendScope("job", "op", 0, KeyGroupRange(0, MAX_PARALLELISM), MAX_PARALLELISM)
    backend = RocksDBStateBackend(tmp_path / "new")
    keyed = backend.create_keyed_backend(scope)
    timers = backend.create_timer_service(scope, keyed)
    try:
        stats = restore_keyed(keyed, timers, KeyedRestore([], [], None, sources))
        assert (stats.method, stats.base_opened, stats.entries, stats.timers) == (
            RestoreMethod.INGESTED,
            True,
            2 * _keys_in(64, 128),
            2 * len(KEYS),
        )
        count, seen = keyed.table("count"), keyed.table("seen")
        for key in KEYS:
            kg = key_group_for_key(key, MAX_PARALLELISM)
            assert (count.get(kg, key), seen.get(kg, key)) == (key * 10, [key, str(key)])
        fired = timers.advance_watermark(10**9)
        assert [t[0] for t in fired] == sorted(1000 + k % 7 for k in KEYS)
    finally:
        keyed.close()
