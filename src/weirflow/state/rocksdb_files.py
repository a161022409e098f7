"""Opening RocksDB databases for the RocksDB state backend, and reading key ranges.

Each operator subtask owns one database directory, which holds a
``WEIRFLOW-STATE`` marker from its creation on: a directory with the marker
is weirflow's to replace (once an open proves no live process holds it), one
without it is never touched.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from weirflow.errors import ConfigError, StateError

MARKER: Final = "WEIRFLOW-STATE"
COLUMN_FAMILIES: Final = ("timers", "timer_index")
"""Column families besides ``default``: the timer queue and its index."""


def rocksdict_module() -> Any:
    """Import rocksdict (the ``rocksdb`` extra).

    Raises:
        ConfigError: rocksdict is not installed.
    """
    try:
        import rocksdict
    except ImportError as e:
        raise ConfigError(
            "the RocksDB state backend needs rocksdict: pip install 'weirflow[rocksdb]'"
        ) from e
    return rocksdict


WRITE_BUFFER_BYTES: Final = 8 * 1024 * 1024
"""RocksDB memtable size per column family (RocksDB's default, 64 MiB, times two memtables
times three column families per subtask would dwarf the write-back cache)."""


BLOOM_BITS_PER_KEY: Final = 10
"""Bloom filter size in SST files (about 1% false positives): most cache misses are keys the
database does not hold (a new window, a new key), and without a filter reading one
searches every level."""


def _raw_options() -> Any:
    rd = rocksdict_module()
    options = rd.Options(raw_mode=True)
    options.create_missing_column_families(True)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(2)
    table = rd.BlockBasedOptions()
    table.set_bloom_filter(BLOOM_BITS_PER_KEY, False)
    options.set_block_based_table_factory(table)
    return options


def open_fresh_db(directory: Path, column_families: tuple[str, ...]) -> Any:
    """Open an empty RocksDB database at ``directory``, replacing an old one of this backend.

    Writes skip RocksDB's write-ahead log: after a crash state comes back
    from a checkpoint, never from the database's own log.

    Args:
        directory: the database directory (created, parents included).
        column_families: column families to create besides ``default``.

    Returns:
        The open ``rocksdict.Rdict``.

    Raises:
        StateError: the directory is not writable, holds something weirflow
            did not make (no ``WEIRFLOW-STATE`` marker), or is locked by
            another live process.
    """
    rd = rocksdict_module()
    if directory.is_dir() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise StateError(
                f"state directory {directory} exists and was not made by weirflow; "
                "point --state-dir at a directory of its own"
            )
        if (directory / "CURRENT").exists():
            # opening fails while another live process holds the database: never remove that
            _open(directory, tuple(rd.Rdict.list_cf(str(directory)))).close()
        shutil.rmtree(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MARKER).touch()
    except OSError as e:
        raise StateError(
            f"state directory {directory} cannot be created ({e.strerror}); {_FIX}"
        ) from e
    return open_db(directory, column_families)


def open_db(directory: Path, column_families: tuple[str, ...]) -> Any:
    """Open the database at ``directory`` (created when missing) for writing without the WAL.

    Raises:
        StateError: locked by another live process, not writable, or unreadable.
    """
    db = _open(directory, column_families)
    write_options = rocksdict_module().WriteOptions()
    write_options.disable_wal = True
    db.set_write_options(write_options)
    return db


def open_read_only(directory: Path) -> Any:
    """Open a RocksDB checkpoint folder read-only (its column families as they are).

    Raises:
        StateError: the folder does not hold a readable database.
    """
    rd = rocksdict_module()
    try:
        cfs = {n: _raw_options() for n in rd.Rdict.list_cf(str(directory)) if n != "default"}
        return rd.Rdict(
            str(directory),
            _raw_options(),
            column_families=cfs or None,
            access_type=rd.AccessType.read_only(),
        )
    except Exception as e:
        raise StateError(f"cannot read the RocksDB checkpoint in {directory}: {e}") from e


def link_or_copy(source: Path, target: Path, *, link: bool) -> None:
    """Hard-link ``source`` to ``target`` when ``link`` and the file system allows, else copy."""
    if link:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copyfile(source, target)


def _open(directory: Path, column_families: tuple[str, ...]) -> Any:
    cfs = {n: _raw_options() for n in column_families if n != "default"}
    try:
        return rocksdict_module().Rdict(str(directory), _raw_options(), column_families=cfs or None)
    except Exception as e:
        # rocksdict raises a bare Exception carrying RocksDB's status text.
        text = str(e)
        if "lock" in text.lower():
            raise StateError(
                f"RocksDB directory {directory} is locked by another live process (or another "
                "run in this one); give each running job its own --state-dir"
            ) from e
        problem = _disk_problem(text)
        if problem is not None:
            raise StateError(f"RocksDB directory {directory} {problem} ({text}); {_FIX}") from e
        raise StateError(f"cannot open RocksDB directory {directory}: {text}") from e


_FIX: Final = (
    "pass a writable directory with free space as --state-dir / RocksDBStateBackend(path=...) "
    "or make room there; committed checkpoints are not affected"
)
_DISK_PROBLEMS: Final = (
    ("No space", "is on a full disk"),
    ("Read-only", "is on a read-only file system"),
    ("Permission denied", "is not writable"),
)


def _disk_problem(text: str) -> str | None:
    """Name the disk problem RocksDB's status text (or an OS error's) reports, if any."""
    return next((problem for marker, problem in _DISK_PROBLEMS if marker in text), None)


@contextmanager
def disk_errors(directory: Path) -> Iterator[None]:
    """Turn a write failing on a full, read-only or unwritable disk into a clear StateError.

    Raises:
        StateError: RocksDB (a bare ``Exception`` carrying its status text) or
            the OS reported such a failure; other errors pass unchanged.
    """
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise StateError(f"RocksDB directory {directory}: {e.strerror}; {_FIX}") from e
    except StateError:
        raise
    except Exception as e:
        problem = _disk_problem(str(e))
        if problem is None:
            raise
        raise StateError(f"RocksDB directory {directory} {problem} ({e}); {_FIX}") from e


def range_items(db: Any, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield ``(key, value)`` of ``db`` (a database or column family) for ``start <= key < end``.

    Iterates explicitly: this rocksdict's iterators ignore a snapshot's read
    view, so callers read the live database and copy what they need.
    """
    it = db.iter()
    it.seek(start)
    while it.valid():
        key = it.key()
        if key >= end:
            break
        yield key, it.value()
        it.next()
