"""Sources and sinks."""

from weirflow.connectors.base import Sink, SinkWriter, Source, SourceBatch, SourceReader
from weirflow.connectors.eventlog import EventLogSink, EventLogSource, default_encode
from weirflow.connectors.files import FileSink, FileSinkError, FileSinkIOError
from weirflow.connectors.iterable import CollectSink, IterableSource

__all__ = [
    "CollectSink",
    "EventLogSink",
    "EventLogSource",
    "FileSink",
    "FileSinkError",
    "FileSinkIOError",
    "IterableSource",
    "Sink",
    "SinkWriter",
    "Source",
    "SourceBatch",
    "SourceReader",
    "default_encode",
]
