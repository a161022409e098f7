"""Sources and sinks."""

from typing import Any

from weirflow.connectors.base import (
    CommitsReadPositions,
    CommitTrackingSink,
    DecodeFailure,
    HeaderWriter,
    KeepsCommittedPositions,
    LaterCommits,
    ReadsHeaders,
    RejectedRecord,
    RejectingWriter,
    ReportsFinishedSplits,
    ReportsLag,
    Sink,
    SinkRestore,
    SinkWriter,
    Source,
    SourceBatch,
    SourceReader,
    refuse_commits_after,
)
from weirflow.connectors.eventlog import EventLogSink, EventLogSource, default_encode
from weirflow.connectors.eventlog_dead_letters import DeadLetterEventLogSink
from weirflow.connectors.files import FileSink, FileSinkError, FileSinkIOError
from weirflow.connectors.iterable import CollectSink, IterableSource
from weirflow.connectors.nexmark import NexmarkSource
from weirflow.connectors.resilience import (
    BreakerOpenError,
    BreakerState,
    CircuitBreaker,
    Resilience,
)
from weirflow.connectors.two_phase import TransactionStateError, TwoPhaseCommitWriter, TxnState

__all__ = [
    "BreakerOpenError",
    "BreakerState",
    "CircuitBreaker",
    "CollectSink",
    "CommitTrackingSink",
    "CommitsReadPositions",
    "DeadLetterEventLogSink",
    "DecodeFailure",
    "EventLogSink",
    "EventLogSource",
    "FileSink",
    "FileSinkError",
    "FileSinkIOError",
    "HeaderWriter",
    "IterableSource",
    "KeepsCommittedPositions",
    "LaterCommits",
    "NexmarkSource",
    "ReadsHeaders",
    "RejectedRecord",
    "RejectingWriter",
    "ReportsFinishedSplits",
    "ReportsLag",
    "Resilience",
    "Sink",
    "SinkRestore",
    "SinkWriter",
    "Source",
    "SourceBatch",
    "SourceReader",
    "TransactionStateError",
    "TwoPhaseCommitWriter",
    "TxnState",
    "default_encode",
    "refuse_commits_after",
]

#: Names served from the Kafka and PostgreSQL connectors, imported on first use so
#: that the core needs neither ``confluent-kafka`` nor ``psycopg`` (their extras).
_KAFKA_NAMES = frozenset(
    {"DeadLetterKafkaSink", "KafkaSink", "KafkaSinkOptions", "KafkaSource", "KafkaSourceOptions"}
)
_POSTGRES_NAMES = frozenset(
    {"PostgresFencedError", "PostgresSink", "PostgresSinkError", "RowRejectedError"}
)


def __getattr__(name: str) -> Any:
    """Import the Kafka or PostgreSQL connector lazily (``weirflow.connectors.KafkaSource``,
    ``weirflow.connectors.PostgresSink`` and friends).

    Raises:
        AttributeError: an unknown name.
        ConfigError: a connector name was asked for and its library is missing.
    """
    if name in _KAFKA_NAMES:
        from weirflow.connectors import kafka

        return getattr(kafka, name)
    if name in _POSTGRES_NAMES:
        from weirflow.connectors import postgres

        return getattr(postgres, name)
    raise AttributeError(f"module 'weirflow.connectors' has no attribute {name!r}")
