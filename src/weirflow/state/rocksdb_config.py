"""``RocksDBStateBackend``: a job's choice to keep keyed state and timers in RocksDB.

It creates one :class:`~weirflow.state.rocksdb.RocksDBKeyedStateBackend` (and
timer service) per operator subtask, and says where each keeps its local
checkpoints (local recovery).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from weirflow.errors import ConfigError
from weirflow.state.backend import BackendScope, KeyedStateBackend
from weirflow.state.rocksdb import (
    DEFAULT_CACHE_SIZE_BYTES,
    ENTRY_SIZE_ESTIMATE,
    RocksDBKeyedStateBackend,
)
from weirflow.state.rocksdb_timers import RocksDBTimerService


class RocksDBStateBackend:
    """Keep keyed state and timers in RocksDB on local disk (a ``StateBackend``).

    Args:
        path: the directory under which each operator subtask gets its
            database (``<path>/<job>/<operator>-<subtask>``); ``None``: a new
            temporary directory per subtask, removed when the subtask closes.
        incremental: checkpoints are RocksDB checkpoints, and each uploads
            only the SST files no earlier checkpoint of the database uploaded
            (into the job's ``shared/`` folder); ``False``: every checkpoint
            writes all state in the canonical per-key-group form.
        cache_size_bytes: size of the write-back cache of hot entries per
            subtask (estimated at :data:`ENTRY_SIZE_ESTIMATE` bytes an entry).

    Raises:
        ConfigError: ``cache_size_bytes`` is negative or not an int, or
            rocksdict is not installed (on first use).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        incremental: bool = True,
        cache_size_bytes: int = DEFAULT_CACHE_SIZE_BYTES,
    ) -> None:
        if type(cache_size_bytes) is not int or cache_size_bytes < 0:
            raise ConfigError(f"cache_size_bytes must be an int >= 0, got {cache_size_bytes!r}")
        self.path = Path(path) if path is not None else None
        self.incremental = incremental
        self.cache_size_bytes = cache_size_bytes

    @property
    def cache_entries(self) -> int:
        """The cache bound in entries (at least 16: one record's reads never evict each other)."""
        return max(16, self.cache_size_bytes // ENTRY_SIZE_ESTIMATE)

    def directory_for(self, scope: BackendScope) -> Path | None:
        """Return the database directory of ``scope``, or ``None`` for a temporary one."""
        if self.path is None:
            return None
        return self.path / _safe(scope.job) / f"{_safe(scope.operator)}-{scope.subtask}"

    def local_checkpoint(
        self, job: str, operator: str, subtask: int, checkpoint_id: int
    ) -> Path | None:
        """Return where the subtask kept checkpoint ``checkpoint_id``'s files on this host.

        ``None`` without a ``path`` (temporary folders do not outlive their subtask).
        """
        if self.path is None:
            return None
        directory = self.path / _safe(job) / f"{_safe(operator)}-{subtask}"
        return directory.with_name(directory.name + ".checkpoints") / f"chk-{checkpoint_id}"

    def create_keyed_backend(self, scope: BackendScope) -> RocksDBKeyedStateBackend:
        """Open an empty RocksDB keyed backend for ``scope``.

        Raises:
            StateError: the directory is not writable or is locked by another live process.
            ConfigError: rocksdict is missing, or max_parallelism exceeds 65535.
        """
        directory = self.directory_for(scope)
        temporary = directory is None
        if directory is None:
            prefix = f"weirflow-{_safe(scope.operator)}-{scope.subtask}-"
            directory = Path(tempfile.mkdtemp(prefix=prefix))
        return RocksDBKeyedStateBackend(
            directory,
            scope.key_group_range,
            scope.max_parallelism,
            cache_entries=self.cache_entries,
            remove_on_close=temporary,
            incremental=self.incremental,
        )

    def create_timer_service(
        self, scope: BackendScope, keyed: KeyedStateBackend
    ) -> RocksDBTimerService:
        """Return a timer service stored in ``keyed``'s database (time-ordered)."""
        if not isinstance(keyed, RocksDBKeyedStateBackend):
            raise TypeError("RocksDB timers need the RocksDB keyed backend of the same subtask")
        return RocksDBTimerService(keyed)

    def __repr__(self) -> str:
        return (
            f"RocksDBStateBackend(path={str(self.path) if self.path else None!r}, "
            f"incremental={self.incremental}, cache_size_bytes={self.cache_size_bytes})"
        )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
