"""Consumer groups: stored positions per ``(group, topic, partition)`` and lag.

A position is the next offset the group will read (Kafka's committed
offset). It may fall below the partition's start offset when retention
outruns the group; it never exceeds the partition's end.
"""

from __future__ import annotations

from collections.abc import Mapping

from weirflow.eventlog.catalog import Catalog
from weirflow.eventlog.db import Database
from weirflow.eventlog.errors import InvalidArgumentError, OffsetOutOfRangeError


def commit_offsets(
    db: Database, catalog: Catalog, group: str, offsets: Mapping[tuple[str, int], int]
) -> None:
    """Store positions atomically; see ``EventLog.commit_offsets`` for arguments and errors."""
    if type(group) is not str or not group:
        raise InvalidArgumentError(f"group must be a non-empty str, got {group!r}")
    rows = []
    for (topic, partition), offset in offsets.items():
        info = catalog.partition(topic, partition)
        if type(offset) is not int or offset < 0:
            raise InvalidArgumentError(f"offset must be an int >= 0, got {offset!r}")
        rows.append((info.topic_id, partition, offset, topic))
    now = db.clock()
    with db.write() as conn:
        for topic_id, partition, offset, topic in rows:
            (end,) = conn.execute(
                "SELECT next_offset FROM partitions WHERE topic_id = ? AND part = ?",
                (topic_id, partition),
            ).fetchone()
            if offset > end:
                raise OffsetOutOfRangeError(
                    f"cannot commit offset {offset} for {topic!r} partition {partition}: "
                    f"its end offset is {end}"
                )
        conn.executemany(
            "INSERT INTO group_offsets(group_id, topic_id, part, off, updated_ms) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(group_id, topic_id, part) "
            "DO UPDATE SET off = excluded.off, updated_ms = excluded.updated_ms",
            [(group, t, p, o, now) for t, p, o, _ in rows],
        )


def committed_offset(
    db: Database, catalog: Catalog, group: str, topic: str, partition: int
) -> int | None:
    """Return the stored position or ``None``; see ``EventLog.committed_offset``."""
    info = catalog.partition(topic, partition)
    with db.read() as conn:
        row = conn.execute(
            "SELECT off FROM group_offsets WHERE group_id = ? AND topic_id = ? AND part = ?",
            (group, info.topic_id, partition),
        ).fetchone()
    return None if row is None else row[0]


def group_lag(db: Database, group: str) -> list[tuple[str, int, int | None, int, int]]:
    """Return ``(topic, partition, committed, end, lag)`` rows; see ``EventLog.lag``."""
    with db.read() as conn:
        rows = conn.execute(
            "SELECT t.name, p.part, g.off, p.start_offset, p.next_offset "
            "FROM topics AS t JOIN partitions AS p ON p.topic_id = t.topic_id "
            "LEFT JOIN group_offsets AS g ON g.group_id = ? AND g.topic_id = p.topic_id "
            "AND g.part = p.part "
            "WHERE t.topic_id IN (SELECT topic_id FROM group_offsets WHERE group_id = ?) "
            "ORDER BY t.name, p.part",
            (group, group),
        ).fetchall()
    return [
        (name, p, committed, end, end - (start if committed is None else committed))
        for name, p, committed, start, end in rows
    ]
