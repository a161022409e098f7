"""Read-side helpers: a partition's committed bounds and the read_uncommitted tail.

The read_uncommitted tail is the records staged by open and prepared
transactions of one partition, in staging order, numbered on from the
committed end. Those offsets are provisional (see ``EventLog.read``).
"""

from __future__ import annotations

import sqlite3

from weirflow.eventlog.catalog import TopicInfo
from weirflow.eventlog.records import ConsumedRecord, decode_headers

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
