"""Bad files and failing SQLite: clear error types whose messages name the file."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from weirflow.errors import EventLogError, UnsupportedFormatVersionError
from weirflow.eventlog import (
    DB_FILE,
    CorruptLogError,
    EventLog,
    InvalidArgumentError,
    LogBusyError,
    LogClosedError,
    NotAnEventLogError,
    Record,
)


def test_a_plain_file_is_not_a_log(tmp_path: Path) -> None:
    path = tmp_path / "file.txt"
    path.write_text("hello")
    with pytest.raises(NotAnEventLogError, match=r"file\.txt.*is a file"):
        EventLog(path)


def test_a_non_sqlite_database_file_is_named(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"this is not sqlite at all, just text" * 10)
    with pytest.raises(NotAnEventLogError, match=f"{DB_FILE}.*not an SQLite file"):
        EventLog(tmp_path)


def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILE)
    conn.execute("CREATE TABLE customers(id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(NotAnEventLogError, match=f"{DB_FILE}.*not a weirflow event log"):
        EventLog(tmp_path)


def test_a_newer_format_version_is_refused(tmp_path: Path) -> None:
    EventLog(tmp_path, "process").close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    conn.execute("UPDATE meta SET value = 99 WHERE key = 'format_version'")
    conn.commit()
    conn.close()
    with pytest.raises(UnsupportedFormatVersionError, match=f"{DB_FILE}.*version 99"):
        EventLog(tmp_path)


def test_a_corrupt_database_is_named_not_a_bare_sqlite_error(tmp_path: Path) -> None:
    with EventLog(tmp_path, "process") as log:
        log.create_topic("t", 1)
        log.append("t", [Record(b"x" * 100)] * 5_000)
    db = tmp_path / DB_FILE
    data = bytearray(db.read_bytes())
    page = 4096
    for start in range(page, len(data), page):
        data[start : start + page] = b"\xa5" * page
    db.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match=DB_FILE), EventLog(tmp_path, "process") as log:
        log.read("t", 0, 0)


def test_a_held_write_lock_gives_a_retriable_busy_error(tmp_path: Path) -> None:
    with EventLog(tmp_path, "process", busy_timeout=timedelta(milliseconds=50)) as log:
        log.create_topic("t", 1)
        blocker = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(LogBusyError, match=DB_FILE) as info:
                log.append("t", [Record(b"x")])
            assert info.value.retriable
            assert [r.value for r in log.read("t", 0, 0)] == []
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert log.append("t", [Record(b"x")]) == [(0, 0)]


def test_a_closed_log_refuses_calls(tmp_path: Path) -> None:
    log = EventLog(tmp_path, "process")
    log.create_topic("t", 1)
    log.close()
    log.close()
    with pytest.raises(LogClosedError, match="closed"):
        log.append("t", [Record(b"x")])
    with pytest.raises(LogClosedError):
        log.list_topics()


def test_bad_durability_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="durability"):
        EventLog(tmp_path, "sometimes")  # type: ignore[arg-type]


def test_empty_database_file_becomes_a_log(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"")
    with EventLog(tmp_path, "process") as log:
        log.create_topic("t", 1)
        assert log.list_topics() == ["t"]


def test_a_directory_under_a_file_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(EventLogError, match="cannot create the log directory"):
        EventLog(tmp_path / "plain" / "log")
