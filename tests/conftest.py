"""Fixtures for every test directory: the state backends (memory and RocksDB) each state,
operator and recovery test is parametrised over."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from state_backends import STATE_BACKENDS, BackendFactory, make_state_backend
from weirflow.state import StateBackend


@pytest.fixture(scope="session")
def rocksdb_root() -> Iterator[Path]:
    """A directory for test databases, on tmpfs when the machine has one (opening is cheaper)."""
    shm = Path("/dev/shm")
    root = Path(
        tempfile.mkdtemp(prefix="weirflow-test-rocksdb-", dir=shm if shm.is_dir() else None)
    )
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=STATE_BACKENDS)
def state_backend(request: pytest.FixtureRequest, rocksdb_root: Path) -> StateBackend:
    """Each backend kind in turn, for ``flow.run(..., state_backend=...)``."""
    return make_state_backend(request.param, rocksdb_root)


@pytest.fixture(params=STATE_BACKENDS)
def backends(request: pytest.FixtureRequest, rocksdb_root: Path) -> Iterator[BackendFactory]:
    """A :class:`BackendFactory` of each kind in turn."""
    factory = BackendFactory(request.param, rocksdb_root)
    yield factory
    factory.close()
