"""Incremental checkpoints and local recovery of RocksDB state, on the rescale test's job
(tumbling, sliding and session windows, and a keyed process function)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_checkpoint_rescale import _expect_same_output, _input, _run

from weirflow.checkpoint import CheckpointStorage, StateHandle, referenced_shared_files
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
    straight = tmp_path / "straight"
    _input(straight)
    _run(straight, tmp_path / "chk-straight", 1, None, None)
    log, chk, state = tmp_path / "log", tmp_path / "chk", rocksdb_root / "local"
    _input(log)
    _run(log, chk, 2, None, 20, RocksDBStateBackend(state, cache_size_bytes=CACHE))

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
