"""A RocksDB job resumed onto a bad state directory, or from a checkpoint of a newer state
format: each fails with an error naming the problem and the fix, and the committed
checkpoints are byte for byte what they were."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_checkpoint_rescale import _input, _run

import weirflow.state.rocksdb as rocksdb_module
from state_backends import start_holder
from weirflow.errors import StateError
from weirflow.state import (
    BackendScope,
    FilesSnapshot,
    KeyedRestore,
    KeyGroupRange,
    RestoredFiles,
    RocksDBStateBackend,
    UnsupportedStateVersionError,
    key_group_for_key,
    restore_keyed,
)

CACHE = 1 << 16
ROOT = os.geteuid() == 0


def _tree(chk: Path) -> dict[str, str]:
    """Every file under ``chk``: relative path -> SHA-256 of its bytes."""
    return {
        str(p.relative_to(chk)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(chk.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def committed(tmp_path: Path, rocksdb_root: Path) -> tuple[Path, Path, dict[str, str]]:
    """The event log and checkpoints of a RocksDB run stopped after 20 rounds, and their hashes."""
    log, chk = tmp_path / "log", tmp_path / "chk"
    _input(log)
    _run(log, chk, 2, None, 20, RocksDBStateBackend(rocksdb_root / "ok", cache_size_bytes=CACHE))
    tree = _tree(chk)
    assert any(name.endswith("_manifest") for name in tree)
    return log, chk, tree


@contextmanager
def _tmpfs(mount_point: Path, options: str) -> Iterator[Path]:
    mount_point.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def _resume_fails(
    log: Path, chk: Path, state_dir: Path, error: type[Exception], match: str
) -> None:
    backend = RocksDBStateBackend(state_dir, cache_size_bytes=CACHE)
    with pytest.raises(error, match=match) as caught:
        _run(log, chk, 2, "latest", None, backend)
    assert "--state-dir" in str(caught.value) or "upgrade weirflow" in str(caught.value)


@pytest.mark.skipif(not ROOT, reason="mounting a small tmpfs needs root")
def test_a_state_dir_on_a_full_disk(
    tmp_path: Path, committed: tuple[Path, Path, dict[str, str]]
) -> None:
    """Scenario: --state-dir is on a 2 MB file system that another file filled up."""
    log, chk, before = committed
    with _tmpfs(tmp_path / "full", "size=2m") as disk:
        try:
            with open(disk / "filler", "wb") as f:
                while True:
                    f.write(bytes(1 << 16))
                    f.flush()
        except OSError:
            pass
        _resume_fails(log, chk, disk / "state", StateError, "full disk.*free space")
    assert _tree(chk) == before


def test_a_state_dir_that_is_not_writable(
    tmp_path: Path, committed: tuple[Path, Path, dict[str, str]]
) -> None:
    """Scenario: --state-dir is on a read-only file system (as root), or a folder without
    write permission (as another user)."""
    log, chk, before = committed
    if ROOT:
        with _tmpfs(tmp_path / "ro", "ro,size=1m") as disk:
            _resume_fails(log, chk, disk / "state", StateError, "Read-only file system")
    else:
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        try:
            _resume_fails(log, chk, locked / "state", StateError, "Permission denied")
        finally:
            locked.chmod(0o700)
    assert _tree(chk) == before


def test_a_rocksdb_dir_locked_by_another_live_process(
    tmp_path: Path, committed: tuple[Path, Path, dict[str, str]]
) -> None:
    """Scenario: another live process holds the RocksDB directory of one subtask."""
    log, chk, before = committed
    state = tmp_path / "state"
    holder = start_holder(
        f"""
        import sys
        from weirflow.state import BackendScope, KeyGroupRange, RocksDBStateBackend
        scope = BackendScope("rescale", "tumbling", 0, KeyGroupRange(0, 64), 128)
        keyed = RocksDBStateBackend({str(state)!r}).create_keyed_backend(scope)
        print("ready", flush=True)
        sys.stdin.read()
        """
    )
    try:
        _resume_fails(log, chk, state, StateError, "locked by another live process")
        assert holder.poll() is None
    finally:
        holder.communicate(b"")
    assert holder.returncode == 0
    assert _tree(chk) == before


def test_a_checkpoint_of_an_unknown_state_format_version(
    tmp_path: Path, rocksdb_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scenario: the checkpoints were written by a newer weirflow (RocksDB key layout 2)."""
    log, chk = tmp_path / "log", tmp_path / "chk"
    _input(log)
    with monkeypatch.context() as newer:
        newer.setattr(rocksdb_module, "LAYOUT_VERSION", 2)
        writer = RocksDBStateBackend(rocksdb_root / "new", cache_size_bytes=CACHE)
        _run(log, chk, 2, None, 20, writer)
    before = _tree(chk)
    _resume_fails(
        log, chk, rocksdb_root / "old", UnsupportedStateVersionError, "version 2.*upgrade weirflow"
    )
    assert _tree(chk) == before


@pytest.mark.skipif(not ROOT, reason="mounting a small tmpfs needs root")
def test_a_rescaling_restore_onto_a_full_disk(tmp_path: Path) -> None:
    """Scenario: a RocksDB checkpoint restores at another parallelism into a --state-dir
    whose disk fills up while the SST files to ingest are written."""
    old = RocksDBStateBackend(tmp_path / "old").create_keyed_backend(
        BackendScope("job", "op", 0, KeyGroupRange(0, 128), 128)
    )
    table = old.table("values")
    for key in range(3000):
        table.put(key_group_for_key(key, 128), key, os.urandom(1000))
    files = old.snapshot(1)
    assert isinstance(files, FilesSnapshot)
    old.close()
    before = _tree(files.directory)
    with _tmpfs(tmp_path / "full", "size=3m") as disk:
        # a third of the checkpoint's key groups: too few to open it as the base, so the
        # restore writes them into SST files to ingest
        scope = BackendScope("job", "op", 0, KeyGroupRange(0, 40), 128)
        keyed = RocksDBStateBackend(disk / "state").create_keyed_backend(scope)
        try:
            with open(disk / "filler", "wb") as f:
                # leave less room than the ingested files need (a third of 3 MB)
                f.write(bytes(max(0, shutil.disk_usage(disk).free - 256 * 1024)))
            restored = RestoredFiles(files.directory, files.key_group_range, {})
            with pytest.raises(StateError, match=r"full disk.*free space") as caught:
                restore_keyed(keyed, None, KeyedRestore([], [], None, [restored]))
            assert str(keyed.directory) in str(caught.value)
            assert "--state-dir" in str(caught.value)
            assert not keyed.directory.with_name(keyed.directory.name + ".ingest").exists()
            # with room made, the same restore goes through: the failed one left nothing behind
            (disk / "filler").unlink()
            stats = restore_keyed(keyed, None, KeyedRestore([], [], None, [restored]))
            assert not stats.base_opened
            assert stats.entries == sum(key_group_for_key(k, 128) < 40 for k in range(3000))
        finally:
            keyed.close()
    assert _tree(files.directory) == before
