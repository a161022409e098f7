"""The embedded durable event log: partitioned topics on SQLite, Kafka's semantics.

A log is a directory holding one SQLite database in WAL mode. Topics have a
fixed number of partitions; each partition is a sequence of records with
dense offsets from 0. Appends are atomic and durable on return;
transactional producers give exactly-once sinks atomic, fenced,
two-phase-committable writes; consumer groups store positions; retention
trims by age and size. Several processes may use one directory at once.
"""

from weirflow.errors import EventLogError
from weirflow.eventlog.db import DB_FILE, FORMAT_VERSION, Durability, system_clock_ms
from weirflow.eventlog.errors import (
    CorruptLogError,
    InvalidArgumentError,
    LogBusyError,
    LogClosedError,
    LogNotFoundError,
    NotAnEventLogError,
    OffsetOutOfRangeError,
    PartitionOutOfRangeError,
    ProducerFencedError,
    TopicExistsError,
    TransactionStateError,
    UnknownTopicError,
    UnknownTransactionError,
)
from weirflow.eventlog.log import EventLog
from weirflow.eventlog.reading import Isolation
from weirflow.eventlog.records import (
    CommitsAfter,
    ConsumedRecord,
    PartitionDescription,
    Record,
    TopicDescription,
    TransactionHandle,
)
from weirflow.eventlog.transactions import ProducerState, TransactionalProducer, TxnState

__all__ = [
    "DB_FILE",
    "FORMAT_VERSION",
    "CommitsAfter",
    "ConsumedRecord",
    "CorruptLogError",
    "Durability",
    "EventLog",
    "EventLogError",
    "InvalidArgumentError",
    "Isolation",
    "LogBusyError",
    "LogClosedError",
    "LogNotFoundError",
    "NotAnEventLogError",
    "OffsetOutOfRangeError",
    "PartitionDescription",
    "PartitionOutOfRangeError",
    "ProducerFencedError",
    "ProducerState",
    "Record",
    "TopicDescription",
    "TopicExistsError",
    "TransactionHandle",
    "TransactionStateError",
    "TransactionalProducer",
    "TxnState",
    "UnknownTopicError",
    "UnknownTransactionError",
    "system_clock_ms",
]
