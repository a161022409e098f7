"""The source and sink interfaces every connector implements.

A **source** has splits (event-log or Kafka partitions, file chunks); each
source subtask reads the splits assigned to it through one
:class:`SourceReader`, whose positions (plain data per split) go into every
checkpoint. A **sink** creates one :class:`SinkWriter` per sink subtask; a
writer that gives exactly-once output pre-commits on the barrier (its
committable goes into the checkpoint) and commits when the checkpoint
completes (two-phase commit, as in DESIGN.md "Guarantees").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable


class SourceBatch(NamedTuple):
    """Records read from one split.

    Attributes:
        split: the split id.
        values: decoded records.
        timestamps: event time of each record in ms when the connector knows
            it (an event-log record's ``timestamp_ms``), else ``None``.
    """

    split: str
    values: list[Any]
    timestamps: list[int] | None


@runtime_checkable
class SourceReader(Protocol):
    """Reads the splits of one source subtask."""

    def poll(self, max_records: int, order: Sequence[str] | None = None) -> SourceBatch | None:
        """Return up to ``max_records`` records of one split, or ``None`` when none is ready now.

        ``order``, when given, lists the splits to prefer, most wanted first
        (the source operator asks for the split furthest behind in event
        time, to keep splits aligned and window state small).
        """
        ...

    def finished(self) -> bool:
        """Whether every assigned split is exhausted (never true for an unbounded source)."""
        ...

    def positions(self) -> dict[str, Any]:
        """Split id → position (plain data) of the next record to read; goes into checkpoints."""
        ...

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """A checkpoint holding the positions returned earlier completed."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


@runtime_checkable
class Source(Protocol):
    """A connector that produces records.

    Attributes:
        bounded: whether the source ends (a job whose sources all end finishes).
    """

    bounded: bool

    def list_splits(self) -> list[str]:
        """Return the split ids, in a stable order (split ``i`` goes to subtask ``i % p``)."""
        ...

    def create_reader(self, splits: Sequence[str], positions: Mapping[str, Any]) -> SourceReader:
        """Create a reader for ``splits``, resuming at ``positions`` (empty: the start)."""
        ...


@runtime_checkable
class SinkWriter(Protocol):
    """Writes the records of one sink subtask."""

    def write(self, values: list[Any], timestamps: list[int] | None) -> None:
        """Write (or stage) a batch of records."""
        ...

    def pre_commit(self, checkpoint_id: int) -> Any:
        """On barrier ``checkpoint_id``: flush or prepare; return plain-data state for the
        checkpoint (the committable of two-phase-commit writers), or ``None``."""
        ...

    def commit(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` completed: make its pre-committed output visible."""
        ...

    def finish(self) -> None:
        """End of input in a run without checkpoints: make everything written visible."""
        ...

    def close(self) -> None:
        """Release resources; abort nothing that a checkpoint still refers to."""
        ...


@runtime_checkable
class Sink(Protocol):
    """A connector that consumes records."""

    def create_writer(
        self, job: str, operator: str, subtask: int, parallelism: int, restored: Any | None
    ) -> SinkWriter:
        """Create the writer of one sink subtask.

        Args:
            job: the job name.
            operator: the sink operator's name.
            subtask: the subtask index.
            parallelism: the number of sink subtasks.
            restored: what ``pre_commit`` returned at the restored checkpoint
                for this subtask (``None`` on a fresh start); a two-phase-commit
                writer commits the committables it holds and aborts anything newer.
        """
        ...
