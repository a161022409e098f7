"""What only the RocksDB backend has: its directory (locks, markers, bad paths), the
write-back cache, and the time-ordered timer layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from state_backends import start_holder
from weirflow.errors import ConfigError, StateError
from weirflow.serde import encode
from weirflow.state import (
    BackendScope,
    FilesSnapshot,
    KeyGroupRange,
    ListStateDescriptor,
    MemoryKeyedStateBackend,
    RestoredFiles,
    RocksDBStateBackend,
    UnsupportedStateVersionError,
    export_key_groups,
)
from weirflow.state.rocksdb_files import COLUMN_FAMILIES
from weirflow.state.rocksdb_snapshot import LAYOUT_KEY

FULL = KeyGroupRange(0, 128)
SCOPE = BackendScope("job", "op", 0, FULL, 128)


def test_a_directory_held_by_another_live_process_is_refused_and_left_intact(
    tmp_path: Path,
) -> None:
    """Scenario: a second run points at the RocksDB directory a live process holds."""
    holder = start_holder(
        f"""
        import sys
        from weirflow.state import BackendScope, KeyGroupRange, RocksDBStateBackend
        from weirflow.state import ValueStateDescriptor
        scope = BackendScope("job", "op", 0, KeyGroupRange(0, 128), 128)
        keyed = RocksDBStateBackend({str(tmp_path)!r}).create_keyed_backend(scope)
        state = keyed.get_state(ValueStateDescriptor("v"))
        keyed.set_current_key("k")
        state.update(41)
        keyed.snapshot()
        print("ready", flush=True)
        sys.stdin.read()
        print("value", state.value(), flush=True)
        """
    )
    try:
        with pytest.raises(StateError, match="locked by another live process"):
            RocksDBStateBackend(tmp_path).create_keyed_backend(SCOPE)
        assert holder.poll() is None
    finally:
        out, _ = holder.communicate(b"")
    assert holder.returncode == 0
    assert out == b"value 41\n"


def test_a_directory_weirflow_did_not_make_is_refused(tmp_path: Path) -> None:
    """Scenario: --state-dir points where the subtask's folder already holds someone's files."""
    mine = tmp_path / "job" / "op-0"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(StateError, match="was not made by weirflow"):
        RocksDBStateBackend(tmp_path).create_keyed_backend(SCOPE)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_a_state_dir_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    """Scenario: --state-dir names a path below a regular file."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateError, match="cannot be created"):
        RocksDBStateBackend(blocker / "state").create_keyed_backend(SCOPE)


def test_a_directory_of_an_earlier_run_is_replaced(tmp_path: Path) -> None:
    """Scenario: a restarted worker finds the directory its killed predecessor left behind."""
    backend = RocksDBStateBackend(tmp_path)
    first = backend.create_keyed_backend(SCOPE)
    first.table("t").put(3, "k", 1)
    first.flush()
    first.close()
    second = backend.create_keyed_backend(SCOPE)
    assert second.is_empty()
    second.close()


def test_bad_cache_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="cache_size_bytes"):
        RocksDBStateBackend(cache_size_bytes=-1)


def test_values_changed_in_place_survive_eviction_and_snapshots() -> None:
    """Lists read from the cache and appended to in place reach RocksDB (16-entry cache)."""
    keyed = RocksDBStateBackend(cache_size_bytes=0).create_keyed_backend(SCOPE)
    reference = MemoryKeyedStateBackend(FULL)
    try:
        for backend in (keyed, reference):
            state = backend.get_state(ListStateDescriptor("l"))
            for i in range(500):
                backend.set_current_key(f"k{i % 97}")
                state.add(i)
        assert (
            keyed.snapshot().to_bytes_per_key_group()
            == reference.snapshot().to_bytes_per_key_group()
        )
    finally:
        keyed.close()


def test_a_temporary_directory_is_removed_on_close() -> None:
    keyed = RocksDBStateBackend().create_keyed_backend(SCOPE)
    directory = keyed.directory
    assert directory.is_dir()
    keyed.close()
    keyed.close()
    assert not directory.exists()


def test_a_checkpoint_with_an_unknown_key_layout_version_is_refused(tmp_path: Path) -> None:
    """Scenario: a RocksDB checkpoint written by a newer weirflow (key layout version 2)."""
    keyed = RocksDBStateBackend(tmp_path / "a").create_keyed_backend(SCOPE)
    keyed.table("t").put(3, "k", 1)
    files = keyed.snapshot(1)
    assert isinstance(files, FilesSnapshot)
    keyed.close()
    newer = tmp_path / "newer"
    shutil.copytree(files.directory, newer)
    db = Rdict(str(newer), _options(), column_families={n: _options() for n in COLUMN_FAMILIES})
    db.put(LAYOUT_KEY, encode(2))
    db.close()
    with pytest.raises(UnsupportedStateVersionError, match=r"format version 2.*newer weirflow"):
        export_key_groups(newer, FULL, 128)
    target = RocksDBStateBackend(tmp_path / "b").create_keyed_backend(SCOPE)
    try:
        with pytest.raises(UnsupportedStateVersionError, match="version 2"):
            target.adopt(RestoredFiles(newer, (0, 128), {}))
    finally:
        target.close()


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_missing_column_families(True)
    return options
