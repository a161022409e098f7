"""The log's SQLite database: opening, schema, format check, locking and error translation.

One database file (``eventlog.sqlite3``) per log directory, in WAL mode so
that readers never block the writer nor each other. Every write runs in
``BEGIN IMMEDIATE`` so that the write lock is taken up front and waiting
for it is bounded by SQLite's busy timeout, never by a loop of ours.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Literal

from weirflow.errors import EventLogError
from weirflow.eventlog.errors import (
    CorruptLogError,
    LogBusyError,
    LogClosedError,
    LogNotFoundError,
    NotAnEventLogError,
)
from weirflow.serde import check_format_version

Durability = Literal["fsync", "process"]
Clock = Callable[[], int]

DB_FILE = "eventlog.sqlite3"
FORMAT_NAME = "weirflow-eventlog"
FORMAT_VERSION = 1

# Column names avoid SQL keywords: "part" (PARTITION) and "off" (OFFSET).
# STRICT tables make SQLite itself reject a str value or a float timestamp,
# so the append path does not type-check each record in Python.
_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value ANY) STRICT;
CREATE TABLE topics(
    topic_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, partitions INTEGER NOT NULL,
    retention_ms INTEGER, retention_bytes INTEGER, created_ms INTEGER NOT NULL) STRICT;
CREATE TABLE partitions(
    topic_id INTEGER NOT NULL, part INTEGER NOT NULL,
    start_offset INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    start_pos INTEGER NOT NULL, end_pos INTEGER NOT NULL,
    PRIMARY KEY(topic_id, part)) STRICT, WITHOUT ROWID;
CREATE TABLE records(
    topic_id INTEGER NOT NULL, part INTEGER NOT NULL, off INTEGER NOT NULL,
    key BLOB, value BLOB, timestamp_ms INTEGER NOT NULL, headers BLOB,
    append_ms INTEGER NOT NULL, pos_end INTEGER NOT NULL,
    PRIMARY KEY(topic_id, part, off)) STRICT, WITHOUT ROWID;
CREATE TABLE producers(
    transactional_id TEXT PRIMARY KEY, epoch INTEGER NOT NULL,
    next_sequence INTEGER NOT NULL) STRICT, WITHOUT ROWID;
CREATE TABLE transactions(
    transactional_id TEXT NOT NULL, sequence INTEGER NOT NULL, epoch INTEGER NOT NULL,
    state TEXT NOT NULL, updated_ms INTEGER NOT NULL,
    PRIMARY KEY(transactional_id, sequence)) STRICT, WITHOUT ROWID;
CREATE TABLE staged(
    seq INTEGER PRIMARY KEY, transactional_id TEXT NOT NULL, sequence INTEGER NOT NULL,
    topic_id INTEGER NOT NULL, part INTEGER NOT NULL,
    key BLOB, value BLOB, timestamp_ms INTEGER NOT NULL, headers BLOB,
    size INTEGER NOT NULL) STRICT;
CREATE INDEX staged_by_txn ON staged(transactional_id, sequence);
CREATE INDEX staged_by_partition ON staged(topic_id, part, seq);
CREATE TABLE group_offsets(
    group_id TEXT NOT NULL, topic_id INTEGER NOT NULL, part INTEGER NOT NULL,
    off INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
    PRIMARY KEY(group_id, topic_id, part)) STRICT, WITHOUT ROWID;
"""
# Which checkpoint a sink's transaction belongs to (see TransactionalProducer.prepare).
# Added after format version 1 shipped: logs made before get the table when opened, and
# readers that predate it ignore it, so the format version stays 1.
_MARKS_TABLE = "transaction_marks"
_MARKS_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {_MARKS_TABLE}(
    transactional_id TEXT NOT NULL, sequence INTEGER NOT NULL,
    checkpoint_id INTEGER NOT NULL, records INTEGER NOT NULL,
    PRIMARY KEY(transactional_id, sequence)) STRICT, WITHOUT ROWID
"""


def system_clock_ms() -> int:
    """Return the wall-clock time in integer milliseconds since the epoch (the default clock)."""
    return time.time_ns() // 1_000_000


def translate(e: sqlite3.Error, path: Path) -> EventLogError:
    """Map a ``sqlite3`` error to an event-log error whose message names the database file.

    Args:
        e: the error SQLite raised.
        path: the database file.

    Returns:
        :class:`LogBusyError` for lock timeouts, :class:`NotAnEventLogError`
        when the file is not a database, :class:`CorruptLogError` for
        damaged files, :class:`EventLogError` otherwise.
    """
    text = str(e)
    low = text.lower()
    if "locked" in low or "busy" in low:
        return LogBusyError(
            f"{path}: another process held the write lock past the busy timeout ({text})"
        )
    if "not a database" in low:
        return NotAnEventLogError(f"{path}: not a weirflow event log (not an SQLite file)")
    if "malformed" in low or "corrupt" in low:
        return CorruptLogError(f"{path}: the event log database is corrupt ({text})")
    return EventLogError(f"{path}: SQLite error: {text}")


class Database:
    """An open connection to one log database, shared by the objects of one ``EventLog``.

    A lock serialises use of the connection by threads of this process;
    other processes are serialised by SQLite's file locks.

    Args:
        directory: the log directory (created if missing).
        durability: ``"fsync"`` (``synchronous=FULL``) or ``"process"``
            (``synchronous=NORMAL``; in WAL mode this survives a process
            crash but not a power loss).
        busy_timeout: the longest wait for another process's write lock.
        clock: returns the current time in integer milliseconds.
        create: create the directory and the database when missing.

    Raises:
        LogNotFoundError: ``create`` is false and the directory holds no database.
        EventLogError: the directory cannot be created (a parent is a file,
            no permission).
        NotAnEventLogError: ``directory`` is a file, or the database file is
            not SQLite or is SQLite without weirflow's metadata.
        weirflow.errors.UnsupportedFormatVersionError: the database has a
            format version this build does not read.
        CorruptLogError: SQLite reports the file as damaged.
        LogBusyError: the write lock could not be taken to initialise it.
    """

    def __init__(
        self,
        directory: Path,
        durability: Durability,
        busy_timeout: timedelta,
        clock: Clock,
        *,
        create: bool = True,
    ) -> None:
        if directory.exists() and not directory.is_dir():
            raise NotAnEventLogError(
                f"{directory}: is a file, not an event log directory (a log is a directory "
                f"holding {DB_FILE})"
            )
        if not create and not (directory / DB_FILE).is_file():
            raise LogNotFoundError(
                f"{directory}: no event log here (no {DB_FILE}); check the path, or create a "
                "topic there first"
            )
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EventLogError(f"{directory}: cannot create the log directory ({e})") from e
        self.path = directory / DB_FILE
        self.clock = clock
        self.lock = threading.RLock()
        try:
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self.path,
                timeout=busy_timeout.total_seconds(),
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as e:
            raise translate(e, self.path) from e
        try:
            self._configure(durability)
            self._check_or_init()
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def _configure(self, durability: Durability) -> None:
        sync = "FULL" if durability == "fsync" else "NORMAL"
        try:
            conn = self.conn
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise EventLogError(f"{self.path}: cannot switch the database to WAL mode ({mode})")
            conn.execute(f"PRAGMA synchronous={sync}")
        except sqlite3.Error as e:
            raise translate(e, self.path) from e

    def _check_or_init(self) -> None:
        with self.write() as conn:
            names = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if not names:
                for stmt in [*_SCHEMA.split(";"), _MARKS_SCHEMA]:
                    if stmt.strip():
                        conn.execute(stmt)
                conn.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [("format", FORMAT_NAME), ("format_version", FORMAT_VERSION)],
                )
                return
            if "meta" not in names:
                raise NotAnEventLogError(
                    f"{self.path}: an SQLite database, but not a weirflow event log (no meta table)"
                )
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != FORMAT_NAME:
            raise NotAnEventLogError(
                f"{self.path}: an SQLite database, but not a weirflow event log "
                f"(format {meta.get('format')!r})"
            )
        check_format_version(meta.get("format_version"), FORMAT_VERSION, str(self.path))
        if _MARKS_TABLE not in names:
            with self.write() as conn:
                conn.execute(_MARKS_SCHEMA)

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection.

        Raises:
            LogClosedError: the log was closed.
        """
        if self._conn is None:
            raise LogClosedError(f"{self.path}: the event log is closed")
        return self._conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """Run the body in one ``BEGIN IMMEDIATE`` transaction; commit, or roll back on error.

        Yields:
            The connection.

        Raises:
            LogBusyError: the write lock was not obtained within the busy timeout.
            CorruptLogError, EventLogError: SQLite failed; the transaction was rolled back.
        """
        with self.lock:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise translate(e, self.path) from e
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as e:
                self._rollback(conn)
                if isinstance(e, sqlite3.Error):
                    raise translate(e, self.path) from e
                raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """Run the body in one read transaction: a consistent snapshot of the log.

        Yields:
            The connection.

        Raises:
            CorruptLogError, EventLogError: SQLite failed.
        """
        with self.lock:
            conn = self.conn
            try:
                conn.execute("BEGIN")
                yield conn
                conn.execute("COMMIT")
            except BaseException as e:
                self._rollback(conn)
                if isinstance(e, sqlite3.Error):
                    raise translate(e, self.path) from e
                raise

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # The original error is the one worth reporting; a failed rollback
        # leaves SQLite to roll back when the connection closes.
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection; later calls raise :class:`LogClosedError`. Idempotent."""
        with self.lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
