"""A job whose source writes, per poll, how many records the engine asked for: one line to
the file ``WF_POLLS`` names. It reads the integers ``0 .. n-1``, ``n`` read from the file
``WF_ROWS_FILE`` names when a reader starts, so that long-lived workers (a standalone
cluster) run it at another size without a restart."""

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from weirflow import Dataflow
from weirflow.connectors import CollectSink, IterableSource, SourceBatch, SourceReader
from weirflow.connectors.ramped import ReaderProxy


class Polls(ReaderProxy):
    """Appends each poll's ``max_records`` to ``WF_POLLS``."""

    def poll(self, max_records: int, order: Sequence[str] | None = None) -> SourceBatch | None:
        batch = self.reader.poll(max_records, order)
        with open(os.environ["WF_POLLS"], "a") as f:
            f.write(f"{max_records}\n")
        return batch


def rows() -> Iterator[int]:
    """``0 .. n-1`` for the ``n`` in ``WF_ROWS_FILE``."""
    return iter(range(int(Path(os.environ["WF_ROWS_FILE"]).read_text())))


class Source:
    """An :class:`IterableSource` of :func:`rows`, read through :class:`Polls`."""

    bounded = True

    def __init__(self) -> None:
        self.inner = IterableSource(rows)

    def list_splits(self) -> list[str]:
        return self.inner.list_splits()

    def create_reader(self, splits: Sequence[str], positions: Mapping[str, Any]) -> SourceReader:
        return Polls(self.inner.create_reader(splits, positions))


flow = Dataflow("ramped_polls")
flow.source(Source(), name="src").sink(CollectSink())
