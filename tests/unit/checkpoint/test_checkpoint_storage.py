"""CheckpointStorage on a local folder and on fsspec's memory file system."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from weirflow.checkpoint import (
    CheckpointConflictError,
    CheckpointCorruptError,
    CheckpointStorage,
    Manifest,
    StateHandle,
    TaskSnapshot,
)
from weirflow.errors import CheckpointError


@pytest.fixture(params=["local", "memory"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "local":
        yield str(tmp_path / "checkpoints")
        return
    url = f"memory://chk-tests-{uuid.uuid4().hex}"
    yield url
    memory = fsspec.filesystem("memory")
    if memory.exists(url):
        memory.rm(url, recursive=True)


@pytest.fixture
def storage(storage_url: str) -> CheckpointStorage:
    return CheckpointStorage(storage_url, "job")


def complete(storage: CheckpointStorage, checkpoint_id: int, tasks: int = 2) -> Manifest:
    """Write state for ``tasks`` tasks and commit the manifest of ``checkpoint_id``."""
    snapshots = {}
    for t in range(tasks):
        task_id = f"map[{t}/{tasks}]"
        handle = storage.write_state(
            checkpoint_id, f"map-{t}.keyed", f"{checkpoint_id}:{t}".encode()
        )
        snapshots[task_id] = TaskSnapshot(task_id, {"keyed": handle}, {"offset": checkpoint_id})
    manifest = Manifest(
        storage.job,
        checkpoint_id,
        10 * checkpoint_id,
        10 * checkpoint_id + 3,
        "exactly_once",
        tasks,
        128,
        snapshots,
    )
    storage.commit_manifest(manifest)
    return manifest


def flip_byte(storage: CheckpointStorage, handle: StateHandle, offset: int = -1) -> None:
    path = f"{storage.root}/{handle.path}"
    data = bytearray(storage.fs.cat_file(path))
    data[offset] ^= 0x40
    storage.fs.pipe_file(path, bytes(data))


def test_write_read_round_trip(storage: CheckpointStorage) -> None:
    handle = storage.write_state(1, "src.positions", b"\x00offsets")
    assert handle.path == "chk-1/src.positions"
    assert storage.read_state(handle) == b"\x00offsets"
    shared = storage.write_shared_state("sst/000042.sst", b"sst")
    assert shared.path == "shared/sst/000042.sst"
    assert storage.read_state(shared) == b"sst"


def test_flipped_byte_is_caught_and_named(storage: CheckpointStorage) -> None:
    handle = storage.write_state(1, "a", b"some state bytes")
    flip_byte(storage, handle)
    with pytest.raises(CheckpointCorruptError, match="checksum mismatch") as info:
        storage.read_state(handle)
    assert info.value.path.endswith("/job/chk-1/a")


def test_truncated_file_is_caught_and_named(storage: CheckpointStorage) -> None:
    handle = storage.write_state(1, "a", b"some state bytes")
    path = f"{storage.root}/{handle.path}"
    storage.fs.pipe_file(path, storage.fs.cat_file(path)[:-3])
    with pytest.raises(CheckpointCorruptError, match="chk-1/a") as info:
        storage.read_state(handle)
    assert "truncated" in info.value.reason


def test_missing_file_is_corrupt(storage: CheckpointStorage) -> None:
    handle = storage.write_state(1, "a", b"x")
    storage.fs.rm_file(f"{storage.root}/{handle.path}")
    with pytest.raises(CheckpointCorruptError, match="missing"):
        storage.read_state(handle)


def test_unsafe_state_name_is_refused(storage: CheckpointStorage) -> None:
    with pytest.raises(CheckpointError, match="not allowed"):
        storage.write_state(1, "../escape", b"x")


def test_commit_then_load_rebases_handles(storage: CheckpointStorage) -> None:
    manifest = complete(storage, 4)
    loaded = storage.load_manifest(4)
    assert loaded.checkpoint_id == 4 and loaded.tasks.keys() == manifest.tasks.keys()
    handle = loaded.tasks["map[0/2]"].handles["keyed"]
    assert handle.path == f"{storage.root_url}/chk-4/map-0.keyed"
    assert storage.read_state(handle) == b"4:0"
    assert storage.completed_checkpoints() == [4]


def test_folder_without_manifest_is_not_completed(storage: CheckpointStorage) -> None:
    complete(storage, 1)
    storage.write_state(2, "a", b"x")
    assert storage.completed_checkpoints() == [1]
    with pytest.raises(CheckpointError, match="no manifest"):
        storage.load_manifest(2)


def test_second_commit_of_the_same_id_conflicts(storage: CheckpointStorage) -> None:
    manifest = complete(storage, 1)
    other = CheckpointStorage(storage_url_of(storage), "job")
    with pytest.raises(CheckpointConflictError, match="already has a manifest"):
        other.commit_manifest(manifest)
    assert storage.load_manifest(1).completed_timestamp_ms == manifest.completed_timestamp_ms


def storage_url_of(storage: CheckpointStorage) -> str:
    return storage.root_url.rsplit("/", 1)[0]


def test_racing_commits_have_exactly_one_winner(storage: CheckpointStorage) -> None:
    """Scenario: eight storage instances commit checkpoint 1 at the same moment."""
    writers = [CheckpointStorage(storage_url_of(storage), "job") for _ in range(8)]
    barrier = threading.Barrier(len(writers))
    outcomes: list[str] = []

    def commit(i: int, writer: CheckpointStorage) -> None:
        manifest = Manifest("job", 1, 0, i, "exactly_once", 1, 128, {})
        barrier.wait(timeout=10)
        try:
            writer.commit_manifest(manifest)
            outcomes.append(f"won:{i}")
        except CheckpointConflictError:
            outcomes.append("lost")

    threads = [threading.Thread(target=commit, args=(i, w)) for i, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(outcomes) == 8 and len(winners) == 1
    assert storage.load_manifest(1).completed_timestamp_ms == int(winners[0].split(":")[1])


def test_local_commit_leaves_no_temporary_files(tmp_path: Path) -> None:
    storage = CheckpointStorage(str(tmp_path), "job")
    manifest = complete(storage, 1)
    with pytest.raises(CheckpointConflictError):
        storage.commit_manifest(manifest)
    assert sorted(os.listdir(tmp_path / "job" / "chk-1")) == [
        "_manifest",
        "map-0.keyed",
        "map-1.keyed",
    ]


def test_commit_refuses_another_jobs_manifest(storage: CheckpointStorage) -> None:
    with pytest.raises(CheckpointError, match="cannot be committed"):
        storage.commit_manifest(Manifest("other", 1, 0, 1, "exactly_once", 1, 128, {}))


def test_latest_valid_falls_back_past_a_corrupt_state_file(storage: CheckpointStorage) -> None:
    """Scenario: a state file of the newest checkpoint has a flipped byte; use the previous."""
    complete(storage, 1)
    complete(storage, 2)
    broken = complete(storage, 3)
    flip_byte(storage, broken.tasks["map[1/2]"].handles["keyed"])
    reports: list[tuple[str, Exception]] = []
    latest = storage.latest_valid(lambda path, e: reports.append((path, e)))
    assert latest is not None and latest.checkpoint_id == 2
    assert len(reports) == 1
    assert reports[0][0].endswith("chk-3/map-1.keyed")
    assert isinstance(reports[0][1], CheckpointCorruptError)


def test_latest_valid_falls_back_past_a_corrupt_manifest(storage: CheckpointStorage) -> None:
    """Scenario: the newest manifest was truncated on disk; restore uses the previous."""
    complete(storage, 1)
    complete(storage, 2)
    path = f"{storage.root}/chk-2/_manifest"
    storage.fs.pipe_file(path, storage.fs.cat_file(path)[:40])
    reports: list[str] = []
    latest = storage.latest_valid(lambda p, e: reports.append(p))
    assert latest is not None and latest.checkpoint_id == 1
    assert reports == [storage.fs.unstrip_protocol(path)]


def test_latest_valid_is_none_without_checkpoints(storage: CheckpointStorage) -> None:
    assert storage.latest_valid() is None
    assert storage.completed_checkpoints() == []


def test_retention_keeps_the_newest_and_removes_failed_folders(storage: CheckpointStorage) -> None:
    for n in (1, 2, 3):
        complete(storage, n)
    storage.write_state(4, "a", b"abandoned")
    complete(storage, 5)
    storage.write_state(6, "a", b"in progress")
    assert storage.apply_retention(2) == [1, 2, 4]
    assert storage.completed_checkpoints() == [3, 5]
    assert storage.fs.exists(f"{storage.root}/chk-6/a")
    assert storage.apply_retention(1) == [3]
    assert storage.completed_checkpoints() == [5]
    assert storage.apply_retention(1) == []


def test_retention_spares_kept_ids(storage: CheckpointStorage) -> None:
    storage.write_state(1, "a", b"pending savepoint")
    complete(storage, 2)
    assert storage.apply_retention(1, keep=[1]) == []
    assert storage.fs.exists(f"{storage.root}/chk-1/a")


def test_abort_deletes_only_uncompleted_checkpoints(storage: CheckpointStorage) -> None:
    complete(storage, 1)
    storage.write_state(2, "a", b"x")
    storage.abort_checkpoint(2)
    storage.abort_checkpoint(3)
    assert not storage.fs.exists(f"{storage.root}/chk-2")
    with pytest.raises(CheckpointError, match="completed"):
        storage.abort_checkpoint(1)
    assert storage.completed_checkpoints() == [1]
