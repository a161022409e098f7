"""The :class:`EventLog`: topics, atomic appends, reads by offset, consumer groups, retention.

The class checks arguments and delegates: topics to :mod:`.catalog`, appends
to :mod:`.appending`, reads to :mod:`.reading`, transactions to
:mod:`.transactions`, consumer groups to :mod:`.groups` and retention to
:mod:`.retention`.

Invariants (each partition):

* offsets are dense: every offset in ``start_offset .. end_offset - 1`` has
  exactly one stored record, and offsets are never reused;
* ``start_offset`` only grows (retention), ``end_offset`` only grows (appends
  and transaction commits);
* ``bytes == end_pos - start_pos``, where ``pos_end`` of a record is the
  cumulative byte count (key + value + encoded headers) of its partition up
  to and including it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from types import TracebackType

from weirflow.eventlog.appending import append_records
from weirflow.eventlog.catalog import Catalog, check_topic_name
from weirflow.eventlog.db import Clock, Database, Durability, system_clock_ms
from weirflow.eventlog.errors import InvalidArgumentError
from weirflow.eventlog.groups import commit_offsets, committed_offset, group_lag
from weirflow.eventlog.reading import Isolation, partition_bounds, read_records, staged_count
from weirflow.eventlog.records import (
    CommitsAfter,
    ConsumedRecord,
    Record,
    TopicDescription,
    TransactionHandle,
)
from weirflow.eventlog.retention import apply_retention
from weirflow.eventlog.transactions import (
    TransactionalProducer,
    TxnState,
    commits_after,
    list_prepared,
    resolve_prepared,
)


def _check_count(name: str, value: object, minimum: int) -> int:
    if type(value) is not int or value < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_isolation(isolation: object) -> None:
    if isolation not in ("read_committed", "read_uncommitted"):
        raise InvalidArgumentError(
            f"isolation must be 'read_committed' or 'read_uncommitted', got {isolation!r}"
        )


class EventLog:
    """An embedded, durable, partitioned event log in one directory (Kafka's model on SQLite).

    Several processes may open the same directory at once; each write is
    one SQLite transaction and waits at most ``busy_timeout`` for another
    process's write lock. Usable as a context manager (``close`` on exit).

    Args:
        path: the log directory; created (with parents) if missing.
        durability: when an ``append`` or a commit returns, its records
            survive a power loss (``"fsync"``, the default: the log backs
            exactly-once sinks, whose promise would not hold after a power
            cut otherwise) or only a crash of the writing process
            (``"process"``: faster, no fsync per write).
        busy_timeout: the longest wait for another process's write lock.
        clock: returns the current time in integer milliseconds since the
            epoch; it stamps append time (used by age retention). Defaults
            to the system clock.
        create: create the directory and the log when missing; ``False``
            opens an existing log only (readers, so that a mistyped path
            fails instead of leaving an empty log behind).

    Raises:
        LogNotFoundError: ``create`` is false and ``path`` holds no log.
        EventLogError: the directory cannot be created (a parent is a file,
            no permission).
        NotAnEventLogError: ``path`` is a file, or holds a database that is
            not a weirflow event log; the message names the file.
        weirflow.errors.UnsupportedFormatVersionError: the log was written
            by a newer weirflow.
        CorruptLogError: SQLite reports the database as damaged.
        LogBusyError: another process held the write lock past ``busy_timeout``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        durability: Durability = "fsync",
        *,
        busy_timeout: timedelta = timedelta(seconds=30),
        clock: Clock | None = None,
        create: bool = True,
    ) -> None:
        if durability not in ("fsync", "process"):
            raise InvalidArgumentError(
                f"durability must be 'fsync' or 'process', got {durability!r}"
            )
        self.path = Path(path)
        self.durability = durability
        self._db = Database(
            self.path, durability, busy_timeout, clock or system_clock_ms, create=create
        )
        self._catalog = Catalog(self._db)

    @property
    def db_path(self) -> Path:
        """The SQLite database file inside the log directory."""
        return self._db.path

    def close(self) -> None:
        """Close the log; later calls raise ``LogClosedError``. Idempotent."""
        self._db.close()

    def __enter__(self) -> EventLog:
        """Return the log itself; ``close`` runs on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the log; exceptions propagate."""
        self.close()

    # Topics

    def create_topic(
        self,
        name: str,
        partitions: int,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
        exist_ok: bool = False,
    ) -> None:
        """Create a topic with a fixed number of partitions.

        Args:
            name: 1-249 characters from ``A-Z a-z 0-9 . _ -``.
            partitions: the partition count, >= 1; never changes.
            retention_ms: keep records at most this many milliseconds after
                their append (applied by :meth:`apply_retention`); ``None``
                keeps them forever.
            retention_bytes: keep at most this many bytes per partition
                (key + value + encoded headers); ``None`` for no limit.
            exist_ok: do nothing if a topic of that name and partition count exists.

        Raises:
            InvalidArgumentError: a bad name, count or retention value.
            TopicExistsError: the topic exists and ``exist_ok`` is false, or
                it exists with another partition count.
            LogBusyError: the write lock was not obtained within the busy timeout.
        """
        check_topic_name(name)
        _check_count("partitions", partitions, 1)
        for what, value in (("retention_ms", retention_ms), ("retention_bytes", retention_bytes)):
            if value is not None:
                _check_count(what, value, 0)
        self._catalog.create(name, partitions, retention_ms, retention_bytes, exist_ok)

    def list_topics(self) -> list[str]:
        """Return the names of all topics, sorted."""
        with self._db.read() as conn:
            return [r[0] for r in conn.execute("SELECT name FROM topics ORDER BY name")]

    def partition_count(self, topic: str) -> int:
        """Return the topic's partition count.

        Raises:
            UnknownTopicError: there is no such topic.
        """
        return self._catalog.get(topic).partitions

    def describe(self, topic: str) -> TopicDescription:
        """Describe a topic: retention settings and, per partition, offsets, count and bytes.

        Raises:
            UnknownTopicError: there is no such topic.
        """
        return self._catalog.describe(topic)

    # Appends and reads

    def append(self, topic: str, records: Sequence[Record]) -> list[tuple[int, int]]:
        """Append a batch of records atomically: all become visible, durable, or none does.

        Args:
            topic: the topic name.
            records: the records; each goes to its explicit partition, else
                to ``stable_hash(key) % partitions``, else round-robin.

        Returns:
            ``(partition, offset)`` per record, in the order given.

        Raises:
            UnknownTopicError: there is no such topic.
            PartitionOutOfRangeError: an explicit partition is out of range.
            InvalidArgumentError: a record has a non-bytes key or value, a
                non-int timestamp, or bad headers; nothing was appended.
            LogBusyError: the write lock was not obtained within the busy timeout.
        """
        info = self._catalog.get(topic)
        parts = self._catalog.route(info, records)
        if not records:
            return []
        return append_records(self._db, info, records, parts)

    def read(
        self,
        topic: str,
        partition: int,
        from_offset: int,
        max_records: int = 1000,
        max_bytes: int = 1 << 20,
        isolation: Isolation = "read_committed",
    ) -> list[ConsumedRecord]:
        """Read records of one partition in offset order, starting at ``from_offset``.

        ``read_committed`` returns committed records only. ``read_uncommitted``
        returns them and then, after the committed end, the records staged by
        open and prepared transactions, in staging order, numbered on from the
        committed end. Those numbers are provisional: on commit a record may
        get another offset (other appends may come first), on abort it
        vanishes. Use them to peek, never to commit a position.

        Args:
            topic: the topic name.
            partition: the partition index.
            from_offset: the first offset to return; ``end_offset`` gives ``[]``.
            max_records: at most this many records (>= 1).
            max_bytes: stop before the batch's bytes (key + value + encoded
                headers) exceed this; the first record is always returned.
            isolation: ``"read_committed"`` or ``"read_uncommitted"``.

        Returns:
            Up to ``max_records`` records with consecutive offsets.

        Raises:
            UnknownTopicError, PartitionOutOfRangeError: bad topic or partition.
            OffsetOutOfRangeError: ``from_offset`` is below the start offset
                (removed by retention) or above the end offset.
            InvalidArgumentError: a bad limit or isolation value.
        """
        info = self._catalog.partition(topic, partition)
        _check_count("from_offset", from_offset, 0)
        _check_count("max_records", max_records, 1)
        _check_count("max_bytes", max_bytes, 0)
        _check_isolation(isolation)
        return read_records(
            self._db,
            info,
            partition,
            from_offset,
            max_records,
            max_bytes,
            isolation == "read_uncommitted",
        )

    def start_offset(self, topic: str, partition: int) -> int:
        """Return the lowest offset still stored in the partition (raised by retention).

        Raises:
            UnknownTopicError, PartitionOutOfRangeError: bad topic or partition.
        """
        info = self._catalog.partition(topic, partition)
        with self._db.read() as conn:
            return partition_bounds(conn, info.topic_id, partition)[0]

    def end_offset(
        self, topic: str, partition: int, isolation: Isolation = "read_committed"
    ) -> int:
        """Return the offset the next committed record of the partition will get.

        With ``read_uncommitted``, add the records staged by open and
        prepared transactions (see :meth:`read`).

        Raises:
            UnknownTopicError, PartitionOutOfRangeError: bad topic or partition.
            InvalidArgumentError: a bad isolation value.
        """
        info = self._catalog.partition(topic, partition)
        _check_isolation(isolation)
        with self._db.read() as conn:
            end = partition_bounds(conn, info.topic_id, partition)[1]
            if isolation == "read_uncommitted":
                end += staged_count(conn, info.topic_id, partition)
        return end

    # Transactions

    def transactional_producer(self, transactional_id: str) -> TransactionalProducer:
        """Register a transactional producer; fences older instances of the same id.

        Args:
            transactional_id: a non-empty id, stable across restarts.

        Returns:
            The producer, with a new ``epoch``. Older instances' open
            transactions are aborted; their prepared ones survive.

        Raises:
            InvalidArgumentError: a bad id.
            LogBusyError: the write lock was not obtained within the busy timeout.
        """
        return TransactionalProducer(self._db, self._catalog, transactional_id)

    def commit_prepared(self, handle: TransactionHandle) -> None:
        """Commit a prepared transaction from any process; a no-op if already committed.

        Raises:
            UnknownTransactionError: no transaction matches the handle.
            TransactionStateError: it was aborted, or never prepared.
            LogBusyError: the write lock was not obtained within the busy timeout.
        """
        resolve_prepared(self._db, handle, TxnState.COMMITTED)

    def abort_prepared(self, handle: TransactionHandle) -> None:
        """Abort a prepared transaction from any process; a no-op if already aborted.

        Raises:
            UnknownTransactionError: no transaction matches the handle.
            TransactionStateError: it was committed, or never prepared.
            LogBusyError: the write lock was not obtained within the busy timeout.
        """
        resolve_prepared(self._db, handle, TxnState.ABORTED)

    def list_prepared(self, transactional_id: str) -> list[TransactionHandle]:
        """Return the prepared, not yet resolved transactions of an id, by sequence."""
        return list_prepared(self._db, transactional_id)

    def commits_after(self, transactional_id: str, checkpoint_id: int) -> CommitsAfter | None:
        """Summarise what an id committed for checkpoints after ``checkpoint_id``.

        Counts committed transactions that were prepared with a checkpoint id
        above ``checkpoint_id`` (``TransactionalProducer.prepare(checkpoint_id)``)
        and committed after the id's last commit for a checkpoint up to it.

        Args:
            transactional_id: the producer's id.
            checkpoint_id: the checkpoint a job restores.

        Returns:
            The summary, or ``None`` when nothing such was committed.
        """
        return commits_after(self._db, transactional_id, checkpoint_id)

    # Consumer groups

    def commit_offsets(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        """Store a consumer group's positions (the next offset to read), atomically.

        Args:
            group: the group name (non-empty).
            offsets: ``{(topic, partition): offset}``; an offset may be below
                the start offset (the group fell behind retention) but not
                above the end offset.

        Raises:
            UnknownTopicError, PartitionOutOfRangeError: bad topic or partition.
            OffsetOutOfRangeError: an offset is above the partition's end.
            InvalidArgumentError: a bad group name or offset value.
            LogBusyError: the write lock was not obtained within the busy timeout.
        """
        commit_offsets(self._db, self._catalog, group, offsets)

    def committed_offset(self, group: str, topic: str, partition: int) -> int | None:
        """Return the group's stored position for a partition, or ``None`` if it has none.

        Raises:
            UnknownTopicError, PartitionOutOfRangeError: bad topic or partition.
        """
        return committed_offset(self._db, self._catalog, group, topic, partition)

    def lag(self, group: str) -> list[tuple[str, int, int | None, int, int]]:
        """Return the group's lag on every partition of every topic it committed in.

        Returns:
            ``(topic, partition, committed, end, lag)`` sorted by topic and
            partition; ``lag = end - committed``, or ``end - start_offset``
            (what is left to read) where the group has no position (``None``).
        """
        return group_lag(self._db, group)

    # Retention

    def apply_retention(self, now_ms: int | None = None) -> int:
        """Remove records past their topic's age or size limit, oldest first.

        Deletion runs in short write transactions, and readers never wait
        for it (WAL). Each partition loses a prefix; its start offset rises.

        Args:
            now_ms: the current time in integer milliseconds; the log's clock if ``None``.

        Returns:
            The number of records deleted.

        Raises:
            LogBusyError: the write lock was not obtained within the busy timeout.
        """
        return apply_retention(self._db, self._db.clock() if now_ms is None else now_ms)
