"""State files streamed from and to local files: larger than a chunk, checksummed, verified."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from weirflow.checkpoint import (
    CheckpointCorruptError,
    CheckpointStorage,
    Manifest,
    TaskSnapshot,
)
from weirflow.checkpoint.fileformat import HEADER_SIZE
from weirflow.checkpoint.fs import COPY_CHUNK_BYTES
from weirflow.checkpoint.state_files import StateFiles

KEY = b"k" * 32
SIZE = 3 * COPY_CHUNK_BYTES + 12_345
"""Not a multiple of the chunk: the last chunk is partial."""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "000042.sst"
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.mark.parametrize("url", ["local", "memory://streamed"])
def test_a_file_larger_than_a_chunk_round_trips_with_its_checksum(
    tmp_path: Path, source: Path, url: str
) -> None:
    files = StateFiles(str(tmp_path / "chk") if url == "local" else url, "job", key=KEY)
    data = source.read_bytes()
    handle = files.write_shared_state_file("db/000042.sst", source)
    assert handle.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    assert handle.size == HEADER_SIZE + SIZE
    # the whole-file reader accepts what the streamed writer wrote, and the other way round
    assert files.read_state(handle) == data
    target = tmp_path / "restored.sst"
    files.read_state_into(handle, target)
    assert target.read_bytes() == data
    whole = files.write_state(1, "small", b"metadata")
    files.read_state_into(whole, tmp_path / "small")
    assert (tmp_path / "small").read_bytes() == b"metadata"


def test_upload_and_download_hold_about_one_chunk_in_memory(tmp_path: Path, source: Path) -> None:
    files = StateFiles(str(tmp_path / "chk"), "job", key=KEY)
    tracemalloc.start()
    try:
        handle = files.write_state_file(1, "op.000042.sst", source)
        files.read_state_into(handle, tmp_path / "restored.sst")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * COPY_CHUNK_BYTES + 256 * 1024 < SIZE, peak
    assert (
        hashlib.sha256((tmp_path / "restored.sst").read_bytes()).digest()
        == hashlib.sha256(source.read_bytes()).digest()
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw[: HEADER_SIZE + COPY_CHUNK_BYTES], "truncated"),
        (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), "checksum mismatch"),
        (lambda raw: raw + b"x", "truncated"),
    ],
)
def test_a_damaged_file_is_refused_and_leaves_no_partial_copy(
    tmp_path: Path, source: Path, damage: object, message: str
) -> None:
    files = StateFiles(str(tmp_path / "chk"), "job", key=KEY)
    handle = files.write_shared_state_file("db/000042.sst", source)
    stored = tmp_path / "chk" / "job" / handle.path
    stored.write_bytes(damage(stored.read_bytes()))  # type: ignore[operator]
    target = tmp_path / "restored.sst"
    with pytest.raises(CheckpointCorruptError, match=message) as info:
        files.read_state_into(handle, target)
    assert handle.path in info.value.path
    assert not target.exists()


def test_a_file_signed_with_another_key_is_refused_before_its_payload_is_copied(
    tmp_path: Path, source: Path
) -> None:
    handle = StateFiles(str(tmp_path / "chk"), "job", key=KEY).write_state_file(1, "x", source)
    other = StateFiles(str(tmp_path / "chk"), "job", key=b"o" * 32)
    target = tmp_path / "restored"
    with pytest.raises(CheckpointCorruptError, match="signature does not verify"):
        other.read_state_into(handle, target)
    assert not target.exists()


def test_a_missing_file_is_named(tmp_path: Path, source: Path) -> None:
    files = StateFiles(str(tmp_path / "chk"), "job", key=KEY)
    handle = files.write_state_file(1, "x", source)
    (tmp_path / "chk" / "job" / handle.path).unlink()
    with pytest.raises(CheckpointCorruptError, match="missing"):
        files.read_state_into(handle, tmp_path / "restored")


def test_a_savepoint_copies_a_large_file_verified_in_chunks(tmp_path: Path, source: Path) -> None:
    storage = CheckpointStorage(str(tmp_path / "chk"), "job", key=KEY)
    handle = storage.write_shared_state_file("db/000042.sst", source)
    task = TaskSnapshot("op[0/1]", {"op#000042.sst": handle}, {})
    manifest = Manifest("job", 1, 0, 7, "exactly_once", 1, 128, {"op[0/1]": task})
    storage.commit_manifest(manifest)
    tracemalloc.start()
    try:
        url = storage.write_savepoint(storage.load_manifest(1), str(tmp_path / "sp"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * COPY_CHUNK_BYTES + 256 * 1024 < SIZE, peak
    loaded = storage.load_savepoint(url)
    copied = loaded.tasks["op[0/1]"].handles["op#000042.sst"]
    storage.read_state_into(copied, tmp_path / "restored.sst")
    assert (tmp_path / "restored.sst").read_bytes() == source.read_bytes()
