"""Shared files of incremental checkpoints: deleted exactly when no retained checkpoint
references them, also after crashes between upload and manifest and during deletion."""

from __future__ import annotations

from pathlib import Path

from weirflow.checkpoint import (
    CheckpointStorage,
    Manifest,
    StateHandle,
    TaskSnapshot,
    collect_shared_files,
    referenced_shared_files,
)


def _commit(storage: CheckpointStorage, checkpoint_id: int, shared: dict[str, StateHandle]) -> None:
    """Complete ``checkpoint_id`` with one private file and references to ``shared`` files."""
    private = storage.write_state(checkpoint_id, "op.MANIFEST", b"meta %d" % checkpoint_id)
    handles = {"op#MANIFEST": private} | {f"op#{name}": h for name, h in shared.items()}
    task = TaskSnapshot("op[0/1]", handles, {"subtask": 0})
    manifest = Manifest(storage.job, checkpoint_id, 1, 2, "exactly_once", 1, 128, {"op[0/1]": task})
    storage.commit_manifest(manifest)


def _shared_on_disk(root: Path) -> set[str]:
    folder = root / "job" / "shared"
    return {str(p.relative_to(root / "job")) for p in folder.rglob("*") if p.is_file()}


def test_a_file_retained_checkpoints_reference_survives_retention(tmp_path: Path) -> None:
    """Scenario: chk-1 uploads a.sst, chk-2 and chk-3 reuse it; retention drops chk-1."""
    storage = CheckpointStorage(str(tmp_path), "job")
    a = storage.write_shared_state("db1/a.sst", b"a")
    b = storage.write_shared_state("db1/b.sst", b"b")
    _commit(storage, 1, {"a.sst": a, "b.sst": b})
    _commit(storage, 2, {"a.sst": a})
    c = storage.write_shared_state("db1/c.sst", b"c")
    _commit(storage, 3, {"a.sst": a, "c.sst": c})
    assert storage.apply_retention(2) == [1]
    assert collect_shared_files(storage) == ["shared/db1/b.sst"]
    assert _shared_on_disk(tmp_path) == {"shared/db1/a.sst", "shared/db1/c.sst"}
    loaded = storage.load_manifest(2)
    assert storage.read_state(loaded.tasks["op[0/1]"].handles["op#a.sst"]) == b"a"


def test_files_uploaded_before_a_crash_before_the_manifest_are_removed_at_the_next_start(
    tmp_path: Path,
) -> None:
    """Scenario: SIGKILL after uploading chk-2's new files, before its manifest."""
    storage = CheckpointStorage(str(tmp_path), "job")
    a = storage.write_shared_state("db1/a.sst", b"a")
    _commit(storage, 1, {"a.sst": a})
    storage.write_shared_state("db1/d.sst", b"d")  # chk-2's upload; no manifest follows
    storage.write_state(2, "op.MANIFEST", b"meta 2")
    restarted = CheckpointStorage(str(tmp_path), "job")
    assert collect_shared_files(restarted) == ["shared/db1/d.sst"]
    assert referenced_shared_files(restarted) == {"shared/db1/a.sst"}
    assert _shared_on_disk(tmp_path) == {"shared/db1/a.sst"}


def test_a_crash_during_deletion_deletes_nothing_a_retained_checkpoint_needs(
    tmp_path: Path,
) -> None:
    """Scenario: SIGKILL while retention deletes chk-1: its manifest is gone, its folder and
    shared files still there; the next start removes what only chk-1 used."""
    storage = CheckpointStorage(str(tmp_path), "job")
    a = storage.write_shared_state("db1/a.sst", b"a")
    old = storage.write_shared_state("db1/old.sst", b"old")
    _commit(storage, 1, {"a.sst": a, "old.sst": old})
    _commit(storage, 2, {"a.sst": a})
    (tmp_path / "job" / "chk-1" / "_manifest").unlink()  # retention's first step, then the kill
    restarted = CheckpointStorage(str(tmp_path), "job")
    assert collect_shared_files(restarted) == ["shared/db1/old.sst"]
    assert _shared_on_disk(tmp_path) == {"shared/db1/a.sst"}
    assert restarted.read_state(restarted.load_manifest(2).tasks["op[0/1]"].handles["op#a.sst"])
