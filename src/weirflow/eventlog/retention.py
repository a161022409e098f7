"""Retention: trimming each partition's oldest records by age and by size.

Age is measured from a record's append time (the log's clock when the
append or commit wrote it), not from its event timestamp, so that old
event times replayed into a new topic are not deleted at once. Size counts
key + value + encoded headers. A partition always loses a prefix, so its
offsets stay dense and its start offset rises; deletion runs in chunks of
short write transactions so that other writers wait little, and readers
(WAL snapshots) never wait.
"""

from __future__ import annotations

import sqlite3

from weirflow.eventlog.db import Database

_CHUNK = 20_000


def _cut_offset(
    conn: sqlite3.Connection,
    topic_id: int,
    part: int,
    now_ms: int,
    retention_ms: int | None,
    retention_bytes: int | None,
) -> tuple[int, int]:
    """Return ``(start_offset, cut)``: records in ``start_offset .. cut - 1`` are to go."""
    start, end, start_pos, end_pos = conn.execute(
        "SELECT start_offset, next_offset, start_pos, end_pos FROM partitions "
        "WHERE topic_id = ? AND part = ?",
        (topic_id, part),
    ).fetchone()
    cut = start
    if retention_ms is not None:
        row = conn.execute(
            "SELECT off FROM records WHERE topic_id = ? AND part = ? AND off >= ? "
            "AND append_ms >= ? ORDER BY off LIMIT 1",
            (topic_id, part, start, now_ms - retention_ms),
        ).fetchone()
        cut = max(cut, end if row is None else row[0])
    if retention_bytes is not None and end_pos - start_pos > retention_bytes:
        # Keep record i while the bytes from its start to the end fit, i.e.
        # while pos_end(i - 1) >= end_pos - retention_bytes.
        row = conn.execute(
            "SELECT off FROM records WHERE topic_id = ? AND part = ? AND off >= ? "
            "AND pos_end >= ? ORDER BY off LIMIT 1",
            (topic_id, part, start, end_pos - retention_bytes),
        ).fetchone()
        cut = max(cut, end if row is None else min(row[0] + 1, end))
    return start, cut


def _delete_chunk(db: Database, topic_id: int, part: int, upto: int) -> int:
    """Delete the partition's records below ``upto`` (at most one chunk); return the count."""
    with db.write() as conn:
        (start,) = conn.execute(
            "SELECT start_offset FROM partitions WHERE topic_id = ? AND part = ?",
            (topic_id, part),
        ).fetchone()
        stop = min(upto, start + _CHUNK)
        if stop <= start:
            return 0
        (new_start_pos,) = conn.execute(
            "SELECT pos_end FROM records WHERE topic_id = ? AND part = ? AND off = ?",
            (topic_id, part, stop - 1),
        ).fetchone()
        conn.execute(
            "DELETE FROM records WHERE topic_id = ? AND part = ? AND off >= ? AND off < ?",
            (topic_id, part, start, stop),
        )
        conn.execute(
            "UPDATE partitions SET start_offset = ?, start_pos = ? WHERE topic_id = ? AND part = ?",
            (stop, new_start_pos, topic_id, part),
        )
        return stop - start


def apply_retention(db: Database, now_ms: int) -> int:
    """Apply every topic's retention limits at time ``now_ms``; see ``EventLog.apply_retention``.

    Steps: 1. find the topics with a limit; 2. per partition, compute the
    first offset to keep from both limits; 3. delete below it chunk by chunk.

    Returns:
        The number of records deleted.
    """
    with db.read() as conn:
        topics = conn.execute(
            "SELECT topic_id, partitions, retention_ms, retention_bytes FROM topics "
            "WHERE retention_ms IS NOT NULL OR retention_bytes IS NOT NULL"
        ).fetchall()
        cuts = [
            (topic_id, part, *_cut_offset(conn, topic_id, part, now_ms, r_ms, r_bytes))
            for topic_id, n, r_ms, r_bytes in topics
            for part in range(n)
        ]
    deleted = 0
    for topic_id, part, start, cut in cuts:
        while start < cut:
            n = _delete_chunk(db, topic_id, part, cut)
            if n == 0:
                break
            deleted += n
            start += n
    return deleted
