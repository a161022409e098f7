"""Savepoints (portable, never retained away) and restore resolution."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from weirflow.checkpoint import (
    CheckpointConflictError,
    CheckpointCorruptError,
    CheckpointStorage,
    Manifest,
    TaskSnapshot,
)
from weirflow.errors import CheckpointError


def complete(storage: CheckpointStorage, checkpoint_id: int) -> Manifest:
    """Write one task's state and commit checkpoint ``checkpoint_id``."""
    keyed = storage.write_state(checkpoint_id, "t0.keyed", b"k%d" % checkpoint_id)
    source = storage.write_state(checkpoint_id, "t0.source", b"s%d" % checkpoint_id)
    task = TaskSnapshot("src[0/1]", {"keyed": keyed, "source": source}, {"offsets": {0: 9}})
    manifest = Manifest("job", checkpoint_id, 0, 7, "exactly_once", 1, 128, {"src[0/1]": task})
    storage.commit_manifest(manifest)
    return manifest


def read_all(storage: CheckpointStorage, manifest: Manifest) -> dict[str, bytes]:
    task = manifest.tasks["src[0/1]"]
    return {name: storage.read_state(h) for name, h in task.handles.items()}


def test_savepoint_round_trip_survives_a_move_and_retention(tmp_path: Path) -> None:
    storage = CheckpointStorage(str(tmp_path / "chk"), "job")
    complete(storage, 1)
    url = storage.write_savepoint(storage.load_manifest(1), str(tmp_path / "sp"))
    assert url == f"file://{tmp_path}/sp"
    complete(storage, 2)
    complete(storage, 3)
    assert storage.apply_retention(1) == [1, 2]
    shutil.move(tmp_path / "sp", tmp_path / "moved")
    elsewhere = CheckpointStorage(str(tmp_path / "other-root"), "other-job")
    loaded = elsewhere.load_savepoint(str(tmp_path / "moved"))
    assert loaded.is_savepoint and loaded.checkpoint_id == 1
    assert loaded.tasks["src[0/1]"].metadata == {"offsets": {0: 9}}
    assert read_all(elsewhere, loaded) == {"keyed": b"k1", "source": b"s1"}


def test_savepoint_from_memory_storage_to_a_local_folder(tmp_path: Path) -> None:
    storage = CheckpointStorage("memory://restore-tests-cross", "job")
    try:
        complete(storage, 5)
        url = storage.write_savepoint(storage.load_manifest(5), str(tmp_path / "sp"))
        storage.abort_checkpoint(6)
        storage.fs.rm(storage.root, recursive=True)
        loaded = storage.resolve_restore(url + "/_manifest")
        assert loaded is not None and read_all(storage, loaded)["keyed"] == b"k5"
    finally:
        if storage.fs.exists(storage.root):
            storage.fs.rm(storage.root, recursive=True)


def test_savepoint_folder_is_written_once(tmp_path: Path) -> None:
    storage = CheckpointStorage(str(tmp_path / "chk"), "job")
    manifest = storage.load_manifest(complete(storage, 1).checkpoint_id)
    storage.write_savepoint(manifest, str(tmp_path / "sp"))
    with pytest.raises(CheckpointConflictError, match="already holds a savepoint"):
        storage.write_savepoint(manifest, str(tmp_path / "sp"))


def test_savepoint_refuses_a_corrupt_source(tmp_path: Path) -> None:
    storage = CheckpointStorage(str(tmp_path / "chk"), "job")
    complete(storage, 1)
    (tmp_path / "chk" / "job" / "chk-1" / "t0.source").write_bytes(b"garbage")
    with pytest.raises(CheckpointCorruptError, match=r"t0\.source"):
        storage.write_savepoint(storage.load_manifest(1), str(tmp_path / "sp"))
    assert not (tmp_path / "sp" / "_manifest").exists()
    assert not (tmp_path / "sp" / "chk-1" / "t0.source").exists(), "a partial copy stayed"


def test_resolve_restore_none_and_fresh(tmp_path: Path) -> None:
    storage = CheckpointStorage(str(tmp_path), "job")
    assert storage.resolve_restore(None) is None
    assert storage.resolve_restore("latest-or-fresh") is None
    assert storage.resolve_restore("none") is None
    with pytest.raises(CheckpointError, match=r"no usable completed checkpoint.*restore='none'"):
        storage.resolve_restore("latest")


def test_resolve_restore_none_is_refused_over_completed_checkpoints(tmp_path: Path) -> None:
    """Scenario: the job has checkpoints; no restore option would reprocess and re-commit
    everything, so it is refused with both ways on; "none" starts fresh on purpose."""
    storage = CheckpointStorage(str(tmp_path), "job")
    complete(storage, 1)
    complete(storage, 2)
    with pytest.raises(CheckpointError, match=r"chk-2.*--restore latest.*--fresh.*restore='none'"):
        storage.resolve_restore(None)
    assert storage.resolve_restore("none") is None
    assert storage.completed_checkpoints() == [1, 2], "a fresh start keeps the old checkpoints"


def test_resolve_restore_latest_names_the_corrupt_checkpoint(tmp_path: Path) -> None:
    """Scenario: the only checkpoint is corrupt; "latest" names it, "latest-or-fresh" is fresh."""
    storage = CheckpointStorage(str(tmp_path), "job")
    complete(storage, 1)
    (tmp_path / "job" / "chk-1" / "t0.keyed").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"unusable: .*chk-1/t0.keyed"):
        storage.resolve_restore("latest")
    assert storage.resolve_restore("latest-or-fresh") is None


def test_resolve_restore_latest_and_explicit_paths(tmp_path: Path) -> None:
    storage = CheckpointStorage(str(tmp_path), "job")
    complete(storage, 1)
    complete(storage, 2)
    latest = storage.resolve_restore("latest")
    assert latest is not None and latest.checkpoint_id == 2
    by_folder = storage.resolve_restore(str(tmp_path / "job" / "chk-1"))
    by_file = storage.resolve_restore(f"file://{tmp_path}/job/chk-1/_manifest")
    assert by_folder == by_file
    assert by_folder is not None and read_all(storage, by_folder)["source"] == b"s1"


def test_resolve_restore_of_a_folder_without_manifest(tmp_path: Path) -> None:
    storage = CheckpointStorage(str(tmp_path), "job")
    storage.write_state(3, "x", b"x")
    with pytest.raises(CheckpointError, match=r"no manifest at .*chk-3/_manifest"):
        storage.resolve_restore(str(tmp_path / "job" / "chk-3"))
