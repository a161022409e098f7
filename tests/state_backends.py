"""The state backends every state, operator and recovery test runs on, for parametrisation."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from weirflow.state import (
    DEFAULT_MAX_PARALLELISM,
    BackendScope,
    InternalTimerService,
    KeyedStateBackend,
    KeyGroupRange,
    MemoryStateBackend,
    RocksDBStateBackend,
    StateBackend,
)

STATE_BACKENDS = ("memory", "rocksdb")
"""The backend kinds every state test runs on."""

ROCKSDB_TEST_CACHE_BYTES = 0
"""The smallest write-back cache (16 entries), so that tests go through eviction and RocksDB."""


_unique = itertools.count()


def make_state_backend(
    kind: str, root: Path, cache_size_bytes: int = ROCKSDB_TEST_CACHE_BYTES
) -> StateBackend:
    """Return a fresh backend of ``kind``: ``"memory"``, or ``"rocksdb"`` under ``root``."""
    if kind == "memory":
        return MemoryStateBackend()
    return RocksDBStateBackend(root / f"run-{next(_unique)}", cache_size_bytes=cache_size_bytes)


class BackendFactory:
    """Creates keyed backends and timer services of one kind; closes them all at the end.

    Args:
        kind: ``"memory"`` or ``"rocksdb"``.
        root: where RocksDB databases go.
    """

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.backend = make_state_backend(kind, root)
        self._opened: list[KeyedStateBackend] = []

    def keyed(
        self,
        key_group_range: KeyGroupRange = KeyGroupRange(0, DEFAULT_MAX_PARALLELISM),  # noqa: B008
        max_parallelism: int = DEFAULT_MAX_PARALLELISM,
    ) -> KeyedStateBackend:
        """Return an empty keyed backend for ``key_group_range``."""
        scope = BackendScope("test", "op", len(self._opened), key_group_range, max_parallelism)
        keyed = self.backend.create_keyed_backend(scope)
        self._opened.append(keyed)
        return keyed

    def timers(
        self,
        key_group_range: KeyGroupRange = KeyGroupRange(0, DEFAULT_MAX_PARALLELISM),  # noqa: B008
    ) -> InternalTimerService:
        """Return an empty timer service for ``key_group_range`` (next to a keyed backend)."""
        keyed = self.keyed(key_group_range)
        scope = BackendScope("test", "op", len(self._opened) - 1, key_group_range, 128)
        return self.backend.create_timer_service(scope, keyed)

    def close(self) -> None:
        """Close every backend created so far."""
        for keyed in self._opened:
            keyed.close()
        self._opened.clear()


@contextmanager
def opened(kind: str, root: Path) -> Iterator[BackendFactory]:
    """A :class:`BackendFactory` of ``kind`` whose backends close on exit (hypothesis examples)."""
    factory = BackendFactory(kind, root)
    try:
        yield factory
    finally:
        factory.close()


def start_holder(code: str) -> subprocess.Popen[bytes]:
    """Start another Python process running ``code`` and wait until it holds what it opens.

    ``code`` prints ``ready`` once it holds its files, then reads stdin to the
    end; close the holder with ``communicate(b"")``.
    """
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"ready\n"
    return holder
