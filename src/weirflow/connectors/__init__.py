"""Sources and sinks."""

from weirflow.connectors.base import Sink, SinkWriter, Source, SourceBatch, SourceReader
from weirflow.connectors.iterable import CollectSink, IterableSource

__all__ = [
    "CollectSink",
    "IterableSource",
    "Sink",
    "SinkWriter",
    "Source",
    "SourceBatch",
    "SourceReader",
]
