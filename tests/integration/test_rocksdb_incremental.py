"""Incremental checkpoints and local recovery of RocksDB state, on the rescale test's job
(tumbling, sliding and session windows, and a keyed process function)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_checkpoint_rescale import _expect_same_output, _input, _run

from weirflow.checkpoint import CheckpointStorage, StateHandle, referenced_shared_files
from weirflow.runtime import snapshot_files
from weirflow.runtime.local_digests import DIGESTS_FILE
from weirflow.runtime.snapshot_files import FILE_SEPARATOR
from weirflow.state import RocksDBStateBackend

CACHE = 1 << 16


def _shared(storage: CheckpointStorage, checkpoint_id: int) -> set[str]:
    prefix = storage.root_url + "/"
    return {
        h.path.removeprefix(prefix)
        for task in storage.load_manifest(checkpoint_id).tasks.values()
        for h in task.handles.values()
        if h.path.removeprefix(prefix).startswith("shared/")
    }


def test_checkpoints_upload_only_files_no_earlier_checkpoint_uploaded(
    tmp_path: Path, rocksdb_root: Path
) -> None:
    """Scenario: a RocksDB job checkpoints every 50 ms; later checkpoints reuse SST files."""
    log, chk = tmp_path / "log", tmp_path / "chk"
    _input(log)
    _run(log, chk, 2, None, 40, RocksDBStateBackend(rocksdb_root / "inc", cache_size_bytes=CACHE))
    storage = CheckpointStorage(str(chk), "rescale")
    ids = storage.completed_checkpoints()
    assert len(ids) >= 2
    before, last = _shared(storage, ids[-2]), _shared(storage, ids[-1])
    assert before & last, "the newest checkpoint uploaded every file again"
    on_disk = {str(p.relative_to(chk / "rescale")) for p in (chk / "rescale" / "shared").rglob("*")}
    on_disk = {p for p in on_disk if (chk / "rescale" / p).is_file()}
    assert on_disk == referenced_shared_files(storage), "unreferenced files left, or live gone"


def _stopped_job(tmp_path: Path, state: Path) -> tuple[Path, Path, Path, Path]:
    """Run the job once without RocksDB into ``straight`` (the expected output), then at
    parallelism 2 on RocksDB in ``state`` until it stops after 20 rounds.

    Returns:
        ``(straight, log, chk, state)``: the two jobs' event-log folders, the stopped
        job's checkpoint folder, its state folder.
    """
    straight, log, chk = tmp_path / "straight", tmp_path / "log", tmp_path / "chk"
    _input(straight)
    _run(straight, tmp_path / "chk-straight", 1, None, None)
    _input(log)
    _run(log, chk, 2, None, 20, RocksDBStateBackend(state, cache_size_bytes=CACHE))
    return straight, log, chk, state


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths of every state file read from checkpoint storage from now on."""
    seen: list[str] = []
    original = CheckpointStorage.read_state

    def counting(self: CheckpointStorage, handle: StateHandle) -> bytes:
        seen.append(handle.path)
        return original(self, handle)

    monkeypatch.setattr(CheckpointStorage, "read_state", counting)
    return seen


def test_local_recovery_opens_the_local_copy_and_falls_back_when_it_differs(
    tmp_path: Path, rocksdb_root: Path, reads: list[str]
) -> None:
    """Scenario: stop, resume on the same host: the local copy of the checkpoint is opened,
    no state file read from storage; stop again, corrupt one SST of the local copy, resume:
    only that file comes from storage. Output exact."""
    straight, log, chk, state = _stopped_job(tmp_path, rocksdb_root / "local")

    reads.clear()
    _run(log, chk, 2, "latest", 20, RocksDBStateBackend(state, cache_size_bytes=CACHE))
    assert [p.rsplit("/", 1)[-1] for p in reads] == []

    latest = CheckpointStorage(str(chk), "rescale").completed_checkpoints()[-1]
    copy = state / "rescale" / "tumbling-0.checkpoints" / f"chk-{latest}"
    broken = sorted(copy.glob("*.sst"))[0]
    data = bytearray(broken.read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken.unlink()  # the copy's file only: the database's hard link keeps the original
    broken.write_bytes(bytes(data))
    reads.clear()
    _run(log, chk, 2, "latest", None, RocksDBStateBackend(state, cache_size_bytes=CACHE))
    # read when the checkpoint is verified, and again when it is downloaded
    assert {p.rsplit("/", 1)[-1] for p in reads} == {broken.name}
    _expect_same_output(straight, log)


@pytest.fixture
def hashing(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Path]]:
    """Local files hashed from now on, by algorithm: ``xxh3`` alone, or with ``sha256``.

    A fresh verdict cache: the restore is checked as a new process would check it."""
    seen: dict[str, list[Path]] = {"xxh3": [], "sha256": []}
    fast, both = snapshot_files.fast_digest, snapshot_files.both_digests

    def counting_fast(path: Path) -> str:
        seen["xxh3"].append(path)
        return fast(path)

    def counting_both(path: Path) -> tuple[str, str]:
        seen["sha256"].append(path)
        return both(path)

    monkeypatch.setattr(snapshot_files, "fast_digest", counting_fast)
    monkeypatch.setattr(snapshot_files, "both_digests", counting_both)
    monkeypatch.setattr(snapshot_files, "_verified", {})
    return seen


def _local_copy(chk: Path, state: Path) -> Path:
    latest = CheckpointStorage(str(chk), "rescale").completed_checkpoints()[-1]
    return state / "rescale" / "tumbling-0.checkpoints" / f"chk-{latest}"


def test_local_recovery_checks_the_local_copy_with_xxh3_paired_to_the_manifest(
    tmp_path: Path, rocksdb_root: Path, reads: list[str], hashing: dict[str, list[Path]]
) -> None:
    """Scenario: a RocksDB job stops; each local checkpoint folder pairs every file's
    SHA-256 with its XXH3; the restore on the same host hashes the local copy with XXH3
    only and reads nothing from storage. Then a digests file whose entry names another
    SHA-256 than the manifest: that file is checked with SHA-256 (and still taken locally).
    Output exact."""
    straight, log, chk, state = _stopped_job(tmp_path, rocksdb_root / "digests")
    copy = _local_copy(chk, state)
    pairs = json.loads((copy / DIGESTS_FILE).read_text())["files"]
    handles = CheckpointStorage(str(chk), "rescale").load_manifest(int(copy.name[4:])).tasks
    recorded = {
        name.split(FILE_SEPARATOR, 1)[1]: h.checksum
        for t in handles.values()
        if t.metadata["subtask"] == 0
        for name, h in t.handles.items()
        if name.startswith("tumbling" + FILE_SEPARATOR)
    }
    assert {n: p[0] for n, p in pairs.items()} == recorded

    reads.clear()
    hashing["xxh3"].clear()
    _run(log, chk, 2, "latest", 20, RocksDBStateBackend(state, cache_size_bytes=CACHE))
    assert reads == []
    assert hashing["sha256"] == []
    assert copy / sorted(recorded)[0] in hashing["xxh3"]

    copy = _local_copy(chk, state)
    digests = json.loads((copy / DIGESTS_FILE).read_text())
    doubted = sorted(n for n in digests["files"] if n.endswith(".sst"))[0]
    digests["files"][doubted][0] = "sha256:" + "0" * 64
    (copy / DIGESTS_FILE).write_text(json.dumps(digests))
    reads.clear()
    hashing["sha256"].clear()
    _run(log, chk, 2, "latest", None, RocksDBStateBackend(state, cache_size_bytes=CACHE))
    assert reads == []
    assert hashing["sha256"] == [copy / doubted]
    _expect_same_output(straight, log)


def test_local_recovery_sees_a_file_rotted_in_place_under_its_old_identity(
    tmp_path: Path, rocksdb_root: Path, reads: list[str], hashing: dict[str, list[Path]]
) -> None:
    """Scenario: a byte of a local SST file flips in place, its inode, size and
    modification time unchanged (disk rot): the XXH3 check refuses it and that file
    comes from storage. Output exact."""
    straight, log, chk, state = _stopped_job(tmp_path, rocksdb_root / "rot")
    copy = _local_copy(chk, state)
    rotten = sorted(copy.glob("*.sst"))[0]
    # break the hard link first, so that only the local copy rots, not the stopped database
    data = rotten.read_bytes()
    rotten.unlink()
    rotten.write_bytes(data)
    before = rotten.stat()
    with rotten.open("r+b") as f:
        f.seek(len(data) // 2)
        f.write(bytes([data[len(data) // 2] ^ 0xFF]))
    os.utime(rotten, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = rotten.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    reads.clear()
    _run(log, chk, 2, "latest", None, RocksDBStateBackend(state, cache_size_bytes=CACHE))
    assert {p.rsplit("/", 1)[-1] for p in reads} == {rotten.name}
    assert hashing["sha256"] == []
    _expect_same_output(straight, log)
