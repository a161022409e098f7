"""Appending records: offsets and byte positions assigned in one write transaction.

Each record gets the next offset of its partition and its ``pos_end``, the
cumulative byte count (key + value + encoded headers) of the partition up
to and including it; a batch is stored in one SQLite transaction, so all of
it becomes visible and durable, or none of it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from weirflow.eventlog.catalog import TopicInfo
from weirflow.eventlog.db import Database
from weirflow.eventlog.errors import InvalidArgumentError
from weirflow.eventlog.records import Record, encode_headers

_INSERT_RECORD = (
    "INSERT INTO records(topic_id, part, off, key, value, timestamp_ms, headers, append_ms, "
    "pos_end) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def append_records(
    db: Database, info: TopicInfo, records: Sequence[Record], parts: Sequence[int]
) -> list[tuple[int, int]]:
    """Store a non-empty batch of routed records atomically (see ``EventLog.append``).

    Args:
        db: the open database.
        info: the topic.
        records: the records, in order.
        parts: each record's partition (from ``Catalog.route``), in the same order.

    Returns:
        ``(partition, offset)`` per record, in the order given.

    Raises:
        InvalidArgumentError: a record has a non-bytes key or value, a non-int
            timestamp, or bad headers; nothing was appended.
        LogBusyError: the write lock was not obtained within the busy timeout.
    """
    topic_id = info.topic_id
    out: list[tuple[int, int]] = []
    with db.write() as conn:
        nxt = [0] * info.partitions
        pos = [0] * info.partitions
        for p, next_offset, end_pos in conn.execute(
            "SELECT part, next_offset, end_pos FROM partitions WHERE topic_id = ?",
            (topic_id,),
        ):
            nxt[p] = next_offset
            pos[p] = end_pos
        now = db.clock()
        rows = []
        try:
            for r, p in zip(records, parts, strict=True):
                k = r.key
                v = r.value
                h = r.headers
                hb = encode_headers(h) if h else None
                size = len(v) if v is not None else 0
                if k is not None:
                    size += len(k)
                if hb is not None:
                    size += len(hb)
                off = nxt[p]
                nxt[p] = off + 1
                pe = pos[p] = pos[p] + size
                rows.append((topic_id, p, off, k, v, r.timestamp_ms, hb, now, pe))
                out.append((p, off))
            conn.executemany(_INSERT_RECORD, rows)
        except (TypeError, OverflowError, sqlite3.IntegrityError) as e:
            raise InvalidArgumentError(
                f"cannot append to {info.name!r}: {e} (a record needs bytes-or-None key and "
                "value and an int timestamp_ms); nothing was appended"
            ) from e
        conn.executemany(
            "UPDATE partitions SET next_offset = ?, end_pos = ? WHERE topic_id = ? AND part = ?",
            [(nxt[p], pos[p], topic_id, p) for p in set(parts)],
        )
    return out
