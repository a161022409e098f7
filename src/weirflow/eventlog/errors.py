"""Errors of the embedded event log.

Every class derives from :class:`weirflow.errors.EventLogError` and carries
``retriable`` as a class attribute. Messages name the log's database file
when the error comes from the file itself, so that a user can find it.
"""

from __future__ import annotations

from weirflow.errors import EventLogError


class UnknownTopicError(EventLogError):
    """The named topic does not exist in this log."""


class TopicExistsError(EventLogError):
    """``create_topic`` was asked for a name that exists (and ``exist_ok`` was false)."""


class PartitionOutOfRangeError(EventLogError):
    """A partition index is negative or not below the topic's partition count."""


class OffsetOutOfRangeError(EventLogError):
    """An offset is below the partition's start offset (removed by retention) or past its end."""


class InvalidArgumentError(EventLogError):
    """An argument has the wrong type or value (a str value, zero partitions, a negative limit)."""


class NotAnEventLogError(EventLogError):
    """The path is not a weirflow event log: a plain file, a non-SQLite file, or foreign SQLite."""


class LogNotFoundError(EventLogError):
    """A log was opened with ``create=False`` at a directory that holds no log."""


class CorruptLogError(EventLogError):
    """SQLite reports the log's database file as damaged."""


class LogBusyError(EventLogError):
    """Another process held the database's write lock for longer than the busy timeout."""

    retriable = True


class LogClosedError(EventLogError):
    """The :class:`~weirflow.eventlog.EventLog` was used after ``close()``."""


class ProducerFencedError(EventLogError):
    """A newer producer registered the same ``transactional_id``; this instance is a zombie."""


class TransactionStateError(EventLogError):
    """A transactional call is not valid in the transaction's current state.

    Examples: ``append`` before ``begin``, ``begin`` twice, committing a
    transaction that was aborted.
    """


class UnknownTransactionError(EventLogError):
    """A :class:`~weirflow.eventlog.TransactionHandle` names no transaction in this log."""
