"""Reading records by offset: committed records, a partition's bounds, the read_uncommitted tail.

The read_uncommitted tail is the records staged by open and prepared
transactions of one partition, in staging order, numbered on from the
committed end. Those offsets are provisional (see ``EventLog.read``).
"""

from __future__ import annotations

import sqlite3
from typing import Literal

from weirflow.eventlog.catalog import TopicInfo
from weirflow.eventlog.db import Database
from weirflow.eventlog.errors import OffsetOutOfRangeError
from weirflow.eventlog.records import ConsumedRecord, decode_headers

Isolation = Literal["read_committed", "read_uncommitted"]

_READ_RECORDS = (
    "SELECT off, key, value, timestamp_ms, headers, pos_end FROM records "
    "WHERE topic_id = ? AND part = ? AND off >= ? AND off < ? ORDER BY off"
)
_READ_STAGED = (
    "SELECT key, value, timestamp_ms, headers, size FROM staged "
    "WHERE topic_id = ? AND part = ? ORDER BY seq LIMIT ? OFFSET ?"
)


def partition_bounds(conn: sqlite3.Connection, topic_id: int, partition: int) -> tuple[int, int]:
    """Return ``(start_offset, end_offset)`` of one partition, committed records only."""
    start, end = conn.execute(
        "SELECT start_offset, next_offset FROM partitions WHERE topic_id = ? AND part = ?",
        (topic_id, partition),
    ).fetchone()
    return start, end


def staged_count(conn: sqlite3.Connection, topic_id: int, partition: int) -> int:
    """Return how many records open and prepared transactions have staged for a partition."""
    return conn.execute(
        "SELECT COUNT(*) FROM staged WHERE topic_id = ? AND part = ?", (topic_id, partition)
    ).fetchone()[0]


def read_staged(
    conn: sqlite3.Connection,
    info: TopicInfo,
    partition: int,
    from_offset: int,
    out: list[ConsumedRecord],
    max_records: int,
    bytes_left: int,
) -> None:
    """Extend ``out`` (committed records read so far) with the partition's staged records.

    Nothing is added unless ``out`` reached the committed end (or is empty
    and ``from_offset`` is at or past it). Stops at ``max_records`` in
    ``out`` or before ``bytes_left`` would be exceeded, but always adds at
    least one record to an empty ``out``.
    """
    _, end = partition_bounds(conn, info.topic_id, partition)
    if out and out[-1].offset + 1 != end:
        return
    first = max(from_offset, end)
    rows = conn.execute(
        _READ_STAGED, (info.topic_id, partition, max_records - len(out), first - end)
    ).fetchall()
    for i, (k, v, ts, h, size) in enumerate(rows):
        if out and size > bytes_left:
            return
        bytes_left -= size
        out.append(ConsumedRecord(info.name, partition, first + i, k, v, ts, decode_headers(h)))


def read_records(
    db: Database,
    info: TopicInfo,
    partition: int,
    from_offset: int,
    max_records: int,
    max_bytes: int,
    uncommitted: bool,
) -> list[ConsumedRecord]:
    """Read records of one partition in offset order (see ``EventLog.read``; arguments checked).

    Args:
        db: the open database.
        info: the topic.
        partition: a partition index of the topic.
        from_offset: the first offset to return.
        max_records: at most this many records (>= 1).
        max_bytes: stop before the batch's bytes exceed this; the first record
            is always returned.
        uncommitted: add the records staged by open and prepared transactions
            after the committed end (``read_uncommitted``).

    Returns:
        Up to ``max_records`` records with consecutive offsets.

    Raises:
        OffsetOutOfRangeError: ``from_offset`` is below the start offset or
            above the end offset.
    """
    topic_id = info.topic_id
    with db.read() as conn:
        rows = conn.execute(
            _READ_RECORDS, (topic_id, partition, from_offset, from_offset + max_records)
        ).fetchall()
        if not rows or rows[0][0] != from_offset:
            start, end = partition_bounds(conn, topic_id, partition)
            limit = end + (staged_count(conn, topic_id, partition) if uncommitted else 0)
            if not start <= from_offset <= limit:
                raise OffsetOutOfRangeError(
                    f"offset {from_offset} out of range for {info.name!r} partition "
                    f"{partition}: valid offsets are {start}..{limit}"
                )
        out: list[ConsumedRecord] = []
        used = 0
        if rows:
            _, k, v, _, h, pe = rows[0]
            base = pe - len(k or b"") - len(v or b"") - len(h or b"")
            limit_pos = base + max_bytes
            for off, k, v, ts, h, pe in rows:
                if out and pe > limit_pos:
                    return out
                out.append(
                    ConsumedRecord(
                        info.name, partition, off, k, v, ts, decode_headers(h) if h else ()
                    )
                )
            used = pe - base
        if uncommitted and len(out) < max_records:
            read_staged(conn, info, partition, from_offset, out, max_records, max_bytes - used)
    return out
