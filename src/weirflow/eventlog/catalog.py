"""Topic lookup and record routing (which partition a record goes to).

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
    UnknownTopicError,
)
from weirflow.eventlog.records import Record
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
    """Resolves topic names and routes records to partitions.

    Args:
        db: the open database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._topics: dict[str, TopicInfo] = {}
        self._round_robin: dict[str, int] = {}

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
