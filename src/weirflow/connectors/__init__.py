"""Sources and sinks."""

from typing import Any

from weirflow.connectors.base import (
    CommitTrackingSink,
    DecodeFailure,
    LaterCommits,
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

__all__ = [
    "CollectSink",
    "CommitTrackingSink",
    "DeadLetterEventLogSink",
    "DecodeFailure",
    "EventLogSink",
    "EventLogSource",
    "FileSink",
    "FileSinkError",
    "FileSinkIOError",
    "IterableSource",
    "LaterCommits",
    "NexmarkSource",
    "Sink",
    "SinkRestore",
    "SinkWriter",
    "Source",
    "SourceBatch",
    "SourceReader",
    "default_encode",
    "refuse_commits_after",
]

#: Names served from the Kafka connector, imported on first use so that the
#: core needs no ``confluent-kafka`` (the ``kafka`` extra).
_KAFKA_NAMES = frozenset(
    {"DeadLetterKafkaSink", "KafkaSink", "KafkaSinkOptions", "KafkaSource", "KafkaSourceOptions"}
)


def __getattr__(name: str) -> Any:
    """Import the Kafka connector lazily (``weirflow.connectors.KafkaSource`` and friends).

    Raises:
        AttributeError: an unknown name.
        ConfigError: a Kafka name was asked for and ``confluent-kafka`` is missing.
    """
    if name in _KAFKA_NAMES:
        from weirflow.connectors import kafka

        return getattr(kafka, name)
    raise AttributeError(f"module 'weirflow.connectors' has no attribute {name!r}")
