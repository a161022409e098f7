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

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from weirflow.records import LogPosition


class DecodeFailure(NamedTuple):
    """A record a source read but its ``decode=`` function refused.

    The source operator applies its ``on_error`` policy to it: a dead letter
    (``value`` = the raw bytes, with ``position``) or a failure naming the position.

    Attributes:
        raw: the record's value as stored (``None`` for a record without one).
        position: where it was read.
        timestamp_ms: the record's timestamp in the log, ms since the epoch.
        error: what ``decode`` raised.
    """

    raw: bytes | None
    position: LogPosition
    timestamp_ms: int | None
    error: Exception


class SourceBatch(NamedTuple):
    """Records read from one split.

    Attributes:
        split: the split id.
        values: decoded records.
        timestamps: event time of each record in ms when the connector knows
            it (an event-log record's ``timestamp_ms``), else ``None``.
        failures: records of the same read that ``decode`` refused; they are
            not in ``values``, and the split's position is past them.
    """

    split: str
    values: list[Any]
    timestamps: list[int] | None
    failures: Sequence[DecodeFailure] = ()


def decode_values(
    decode: Callable[[bytes], Any],
    raws: list[Any],
    timestamps: list[int],
    position: Callable[[int], LogPosition],
) -> tuple[list[Any], list[int], list[DecodeFailure]]:
    """Decode a batch of raw values; calls ``decode`` exactly once per value.

    Args:
        decode: the source's ``bytes -> record`` function.
        raws: the raw values read, in order.
        timestamps: their timestamps in ms (parallel to ``raws``).
        position: index into ``raws`` → the record's :class:`LogPosition`
            (asked only for records that fail).

    Returns:
        ``(values, timestamps, failures)``: the decoded records with their
        timestamps, and the records whose decoding raised.
    """
    values: list[Any] = []
    append = values.append
    try:
        for raw in raws:
            append(decode(raw))
        return values, timestamps, []
    except Exception as e:
        failed, error = len(values), e
    kept = timestamps[:failed]
    failures = []
    while True:
        failures.append(DecodeFailure(raws[failed], position(failed), timestamps[failed], error))
        try:
            for j in range(failed + 1, len(raws)):
                failed = j
                append(decode(raws[j]))
                kept.append(timestamps[j])
            return values, kept, failures
        except Exception as e:
            error = e


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
