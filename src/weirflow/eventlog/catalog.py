"""Topics: creating, describing and looking them up, and routing records to partitions.

Topics are never deleted and their partition count never changes, so a
topic, once found, is cached for the life of the ``EventLog``; a miss asks
the database again, because another process may have created it.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

from weirflow.eventlog.db import Database
from weirflow.eventlog.errors import (
    InvalidArgumentError,
    PartitionOutOfRangeError,
    TopicExistsError,
    UnknownTopicError,
)
from weirflow.eventlog.records import PartitionDescription, Record, TopicDescription
from weirflow.serde import stable_hash

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


class TopicInfo(NamedTuple):
    """A topic's identity: database id, name and partition count."""

    topic_id: int
    name: str
    partitions: int


def check_topic_name(name: object) -> str:
    """Validate a topic name: 1-249 characters of ``A-Z a-z 0-9 . _ -`` (Kafka's rule).

    Args:
        name: the candidate name.

    Returns:
        The name.

    Raises:
        InvalidArgumentError: the name is not a str or breaks the rule.
    """
    if type(name) is not str or not _TOPIC_NAME.fullmatch(name):
        raise InvalidArgumentError(
            f"invalid topic name {name!r}: use 1-249 characters from A-Z a-z 0-9 . _ -"
        )
    return name


class Catalog:
    """Creates, describes and resolves topics, and routes records to partitions.

    Args:
        db: the open database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._topics: dict[str, TopicInfo] = {}
        self._round_robin: dict[str, int] = {}

    def create(
        self,
        name: str,
        partitions: int,
        retention_ms: int | None,
        retention_bytes: int | None,
        exist_ok: bool,
    ) -> None:
        """Create a topic (arguments checked; see ``EventLog.create_topic``).

        Raises:
            TopicExistsError: the topic exists and ``exist_ok`` is false, or
                it exists with another partition count.
            LogBusyError: the write lock was not obtained within the busy timeout.
        """
        with self._db.write() as conn:
            existing = self.lookup(conn, name)
            if existing is not None:
                if exist_ok and existing.partitions == partitions:
                    return
                raise TopicExistsError(
                    f"topic {name!r} already exists with {existing.partitions} partition(s)"
                )
            (topic_id,) = conn.execute(
                "INSERT INTO topics(name, partitions, retention_ms, retention_bytes, created_ms) "
                "VALUES (?, ?, ?, ?, ?) RETURNING topic_id",
                (name, partitions, retention_ms, retention_bytes, self._db.clock()),
            ).fetchone()
            conn.executemany(
                "INSERT INTO partitions(topic_id, part, start_offset, next_offset, start_pos, "
                "end_pos) VALUES (?, ?, 0, 0, 0, 0)",
                [(topic_id, p) for p in range(partitions)],
            )

    def describe(self, name: str) -> TopicDescription:
        """Describe a topic: retention settings and, per partition, offsets, count and bytes.

        Raises:
            UnknownTopicError: there is no such topic.
        """
        info = self.get(name)
        with self._db.read() as conn:
            retention_ms, retention_bytes = conn.execute(
                "SELECT retention_ms, retention_bytes FROM topics WHERE topic_id = ?",
                (info.topic_id,),
            ).fetchone()
            rows = conn.execute(
                "SELECT part, start_offset, next_offset, end_pos - start_pos FROM partitions "
                "WHERE topic_id = ? ORDER BY part",
                (info.topic_id,),
            ).fetchall()
        parts = [PartitionDescription(p, s, e, e - s, b) for p, s, e, b in rows]
        return TopicDescription(info.name, parts, retention_ms, retention_bytes)

    def lookup(self, conn: sqlite3.Connection, name: str) -> TopicInfo | None:
        """Return the topic named ``name`` (cached or read with ``conn``), or ``None``."""
        info = self._topics.get(name)
        if info is None:
            row = conn.execute(
                "SELECT topic_id, name, partitions FROM topics WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                return None
            info = self._topics[name] = TopicInfo(*row)
        return info

    def get(self, name: str) -> TopicInfo:
        """Return the topic named ``name``.

        Raises:
            UnknownTopicError: there is no such topic.
        """
        info = self._topics.get(name)
        if info is not None:
            return info
        with self._db.read() as conn:
            info = self.lookup(conn, name)
        if info is None:
            raise UnknownTopicError(f"unknown topic {name!r} in {self._db.path.parent}")
        return info

    def partition(self, name: str, partition: int) -> TopicInfo:
        """Return the topic after checking that ``partition`` is one of its partitions.

        Raises:
            UnknownTopicError: there is no such topic.
            PartitionOutOfRangeError: ``partition`` is not in ``0 .. partitions - 1``.
        """
        info = self.get(name)
        if type(partition) is not int or not 0 <= partition < info.partitions:
            raise PartitionOutOfRangeError(
                f"partition {partition!r} out of range for topic {name!r} "
                f"(it has partitions 0..{info.partitions - 1})"
            )
        return info

    def route(self, info: TopicInfo, records: Sequence[Record]) -> list[int]:
        """Choose each record's partition: explicit, else by key hash, else round-robin.

        Args:
            info: the topic.
            records: the records, in order.

        Returns:
            One partition index per record, in the same order.

        Raises:
            PartitionOutOfRangeError: an explicit partition is out of range.
            InvalidArgumentError: an element is not a :class:`Record`, or a key
                is not bytes.
        """
        n = info.partitions
        rr = self._round_robin.get(info.name, 0)
        parts = []
        for r in records:
            if type(r) is not Record:
                raise InvalidArgumentError(f"append takes Record objects, got {r!r}")
            p = r.partition
            if p is None:
                k = r.key
                if k is None:
                    p = rr % n
                    rr += 1
                elif type(k) is bytes:
                    p = stable_hash(k) % n
                else:
                    raise InvalidArgumentError(f"a record key must be bytes or None, got {k!r}")
            elif type(p) is not int or not 0 <= p < n:
                raise PartitionOutOfRangeError(
                    f"partition {p!r} out of range for topic {info.name!r} "
                    f"(it has partitions 0..{n - 1})"
                )
            parts.append(p)
        self._round_robin[info.name] = rr % n
        return parts
