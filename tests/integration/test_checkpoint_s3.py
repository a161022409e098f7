"""CheckpointStorage against an S3 API: a moto server on 127.0.0.1, in its own process."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e .[dev])")
pytest.importorskip("s3fs", reason="s3fs is not installed (pip install -e .[s3])")

from weirflow.checkpoint import (
    CheckpointConflictError,
    CheckpointCorruptError,
    CheckpointStorage,
    Manifest,
    TaskSnapshot,
)
from weirflow.checkpoint.fs import COPY_CHUNK_BYTES

_STARTUP_TIMEOUT_S = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"moto server did not listen on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def options(endpoint: str) -> dict:
    """s3fs options for the local server; explicit keys so no credential lookup leaves the host."""
    return {
        "key": "testing",
        "secret": "testing",
        "endpoint_url": endpoint,
        "skip_instance_cache": True,
    }


@pytest.fixture
def bucket_url(endpoint: str) -> str:
    storage = CheckpointStorage("s3://placeholder", "job", storage_options=options(endpoint))
    bucket = f"chk-{uuid.uuid4().hex[:12]}"
    storage.fs.mkdir(bucket)
    return f"s3://{bucket}/checkpoints"


def make_storage(bucket_url: str, endpoint: str) -> CheckpointStorage:
    return CheckpointStorage(bucket_url, "job", storage_options=options(endpoint))


def complete(storage: CheckpointStorage, checkpoint_id: int) -> Manifest:
    handle = storage.write_state(checkpoint_id, "t0.keyed", b"state-%d" % checkpoint_id)
    task = TaskSnapshot("t[0/1]", {"keyed": handle}, {"offset": checkpoint_id})
    manifest = Manifest("job", checkpoint_id, 0, 5, "exactly_once", 1, 128, {"t[0/1]": task})
    storage.commit_manifest(manifest)
    return manifest


def test_round_trip_corruption_and_fallback(bucket_url: str, endpoint: str) -> None:
    """Scenario: the newest checkpoint on S3 has a flipped byte; restore uses the previous."""
    storage = make_storage(bucket_url, endpoint)
    complete(storage, 1)
    newest = complete(storage, 2)
    loaded = storage.load_manifest(2)
    assert storage.read_state(loaded.tasks["t[0/1]"].handles["keyed"]) == b"state-2"
    path = f"{storage.root}/{newest.tasks['t[0/1]'].handles['keyed'].path}"
    data = bytearray(storage.fs.cat_file(path))
    data[-1] ^= 0x01
    storage.fs.pipe_file(path, bytes(data))
    with pytest.raises(CheckpointCorruptError, match=r"s3://.*chk-2/t0\.keyed"):
        storage.read_state(loaded.tasks["t[0/1]"].handles["keyed"])
    reports: list[str] = []
    restored = make_storage(bucket_url, endpoint).resolve_restore("latest")
    latest = storage.latest_valid(lambda p, e: reports.append(p))
    assert restored is not None and restored.checkpoint_id == 1
    assert latest == restored and len(reports) == 1


def test_retention_and_savepoint(bucket_url: str, endpoint: str) -> None:
    storage = make_storage(bucket_url, endpoint)
    for n in (1, 2, 3):
        complete(storage, n)
    storage.write_state(4, "t0.keyed", b"abandoned")
    complete(storage, 5)
    target = bucket_url.replace("/checkpoints", "/savepoints/sp-1")
    url = storage.write_savepoint(storage.load_manifest(3), target)
    assert storage.apply_retention(1) == [1, 2, 3, 4]
    assert storage.completed_checkpoints() == [5]
    savepoint = make_storage(bucket_url, endpoint).load_savepoint(url)
    assert savepoint.is_savepoint and savepoint.checkpoint_id == 3
    assert storage.read_state(savepoint.tasks["t[0/1]"].handles["keyed"]) == b"state-3"


def test_racing_commits_have_exactly_one_winner(bucket_url: str, endpoint: str) -> None:
    """Scenario: eight storage instances (own S3 clients) commit checkpoint 7 at once."""
    writers = [make_storage(bucket_url, endpoint) for _ in range(8)]
    barrier = threading.Barrier(len(writers))
    outcomes: list[str] = []

    def commit(i: int, writer: CheckpointStorage) -> None:
        manifest = Manifest("job", 7, 0, 100 + i, "exactly_once", 1, 128, {})
        barrier.wait(timeout=30)
        try:
            writer.commit_manifest(manifest)
            outcomes.append(f"won:{i}")
        except CheckpointConflictError:
            outcomes.append("lost")

    threads = [threading.Thread(target=commit, args=(i, w)) for i, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(outcomes) == 8 and len(winners) == 1
    winner = int(winners[0].split(":")[1])
    assert (
        make_storage(bucket_url, endpoint).load_manifest(7).completed_timestamp_ms == 100 + winner
    )


def test_a_file_larger_than_a_chunk_streams_to_s3_and_back(
    bucket_url: str, endpoint: str, tmp_path: Path
) -> None:
    """Scenario: an SST-sized local file goes to S3 and back in chunks, checksum recorded."""
    source = tmp_path / "000007.sst"
    source.write_bytes(os.urandom(2 * COPY_CHUNK_BYTES + 77))
    storage = make_storage(bucket_url, endpoint)
    handle = storage.write_shared_state_file("db/000007.sst", source)
    assert handle.checksum == "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    target = tmp_path / "restored.sst"
    make_storage(bucket_url, endpoint).read_state_into(handle, target)
    assert target.read_bytes() == source.read_bytes()
