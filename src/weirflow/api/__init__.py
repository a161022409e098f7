"""The user-facing builder: ``Dataflow``, streams and user-function base classes."""

from weirflow.api.dataflow import Dataflow
from weirflow.api.functions import AggregateFunction, KeyedProcessFunction
from weirflow.api.job_file import load_dataflow, load_graph
from weirflow.api.stream import KeyedStream, Stream, WindowedStream

__all__ = [
    "AggregateFunction",
    "Dataflow",
    "KeyedProcessFunction",
    "KeyedStream",
    "Stream",
    "WindowedStream",
    "load_dataflow",
    "load_graph",
]
