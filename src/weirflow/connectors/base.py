"""The source and sink interfaces every connector implements.

A **source** has splits (event-log or Kafka partitions, file chunks); each
source subtask reads the splits assigned to it through one
:class:`SourceReader`, whose positions (plain data per split) go into every
checkpoint. A **sink** creates one :class:`SinkWriter` per sink subtask; a
writer that gives exactly-once output pre-commits on the barrier (its
committable goes into the checkpoint) and commits when the checkpoint
completes (two-phase commit, see ``docs/architecture.md``, "Exactly-once output").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from weirflow.errors import DuplicateOutputError
from weirflow.records import LogPosition, RecordHeaders

log = logging.getLogger("weirflow.connectors")

ALLOW_DUPLICATES_HINT = (
    "--allow-duplicates-after-fallback (Dataflow.run: "
    "CheckpointConfig(allow_duplicates_after_fallback=True))"
)


class DecodeFailure(NamedTuple):
    """A record a source read but its ``decode=`` function refused.

    The source operator applies its ``on_error`` policy to it: a dead letter
    (``value`` = the raw bytes, with ``position``) or a failure naming the position.

    Attributes:
        raw: the record's value as stored (``None`` for a record without one).
        position: where it was read.
        timestamp_ms: the record's timestamp in the log, ms since the epoch.
        error: what ``decode`` raised.
        headers: the record's headers when the source was asked for them, else ``()``.
    """

    raw: bytes | None
    position: LogPosition
    timestamp_ms: int | None
    error: Exception
    headers: RecordHeaders = ()


class SourceBatch(NamedTuple):
    """Records read from one split.

    Attributes:
        split: the split id.
        values: decoded records.
        timestamps: event time of each record in ms when the connector knows
            it (an event-log record's ``timestamp_ms``), else ``None``.
        failures: records of the same read that ``decode`` refused; they are
            not in ``values``, and the split's position is past them.
        headers: each record's headers (parallel to ``values``) from a
            connector whose records have headers (event log, Kafka), else ``None``.
    """

    split: str
    values: list[Any]
    timestamps: list[int] | None
    failures: Sequence[DecodeFailure] = ()
    headers: list[RecordHeaders] | None = None


def decode_values(
    decode: Callable[[bytes], Any],
    raws: list[Any],
    timestamps: list[int],
    position: Callable[[int], LogPosition],
    headers: list[RecordHeaders] | None = None,
) -> tuple[list[Any], list[int], list[DecodeFailure], list[RecordHeaders] | None]:
    """Decode a batch of raw values; calls ``decode`` exactly once per value.

    Args:
        decode: the source's ``bytes -> record`` function.
        raws: the raw values read, in order.
        timestamps: their timestamps in ms (parallel to ``raws``).
        position: index into ``raws`` → the record's :class:`LogPosition`
            (asked only for records that fail).
        headers: their headers (parallel to ``raws``), or ``None``.

    Returns:
        ``(values, timestamps, failures, headers)``: the decoded records with
        their timestamps and headers (``None`` when none were given), and the
        records whose decoding raised.
    """
    values: list[Any] = []
    append = values.append
    try:
        for raw in raws:
            append(decode(raw))
        return values, timestamps, [], headers
    except Exception as e:
        failed, error = len(values), e
    kept = timestamps[:failed]
    kept_headers = headers[:failed] if headers is not None else None
    failures = []
    while True:
        h = headers[failed] if headers is not None else ()
        failures.append(DecodeFailure(raws[failed], position(failed), timestamps[failed], error, h))
        try:
            for j in range(failed + 1, len(raws)):
                failed = j
                append(decode(raws[j]))
                kept.append(timestamps[j])
                if kept_headers is not None:
                    kept_headers.append(headers[j])  # type: ignore[index]
            return values, kept, failures, kept_headers
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
class ReadsHeaders(Protocol):
    """A source reader that can hand out its records' headers (optional ability).

    Tracing turns it on; until then the reader leaves ``SourceBatch.headers``
    ``None`` and spends nothing on headers.
    """

    def include_headers(self) -> None:
        """Put each record's headers into the batches read from now on."""
        ...


@runtime_checkable
class ReportsFinishedSplits(Protocol):
    """A source reader of bounded splits that says which ones it exhausted (optional ability).

    The source operator releases a finished split's watermark (it will send
    nothing more, so it must not hold event time back) and clears the list.

    Attributes:
        newly_finished: split ids exhausted since the operator last looked.
    """

    newly_finished: list[str]


@runtime_checkable
class CommitsReadPositions(Protocol):
    """A source reader that can commit its read positions to its system (optional ability).

    Used for ``at_most_once``: positions are committed as records are read,
    not when a checkpoint completes.
    """

    def commit_read_positions(self) -> None:
        """Commit the positions of every record handed out so far."""
        ...


@runtime_checkable
class ReportsLag(Protocol):
    """A source reader that knows how far behind its splits' ends it reads (optional ability).

    Called on the thread that polls the reader, every few hundred ms at most
    (it may ask its system for the ends).
    """

    def lag(self) -> dict[str, int]:
        """Split id → records not yet read (end offset − position); unknown splits left out."""
        ...


@runtime_checkable
class KeepsCommittedPositions(Protocol):
    """A source whose system keeps committed read positions (a consumer group; optional ability)."""

    def committed_positions(self, splits: Sequence[str]) -> dict[str, int]:
        """Split id -> the position committed for it (where ``at_most_once`` resumes)."""
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


@runtime_checkable
class HeaderWriter(Protocol):
    """A sink writer that stores record headers (optional ability: event log, Kafka).

    With tracing on, the sink operator hands it each record's headers, their
    ``traceparent`` pointing at the sink's span; other writers get the records only.
    """

    def write_with_headers(
        self, values: list[Any], timestamps: list[int] | None, headers: list[RecordHeaders]
    ) -> None:
        """Write (or stage) a batch of records with their headers (parallel to ``values``)."""
        ...


class RejectedRecord(NamedTuple):
    """A record an external system refused for its content; the sink operator dead-letters it.

    Attributes:
        value: the record as the sink wrote it (after the sink's ``encode``).
        timestamp_ms: its event time, when known.
        error: why it was refused (its message names the external system's
            error code, e.g. a PostgreSQL SQLSTATE).
    """

    value: Any
    timestamp_ms: int | None
    error: Exception


@runtime_checkable
class RejectingWriter(Protocol):
    """A sink writer that sets records aside instead of failing on them (optional ability).

    Its refused records become the sink's dead letters, which must leave the sink
    before its end of input does: the operators after it end with their input, so a
    record refused later (at the final checkpoint's pre-commit or commit) could not
    reach them. Such a writer finds every refusal it can in :meth:`end_of_input`.
    """

    def take_rejected(self) -> list[RejectedRecord]:
        """Return and forget the records refused since the last call, in order."""
        ...

    def end_of_input(self) -> None:
        """The input ended: send what is buffered to the external system, without making
        it visible, so that every record it refuses is set aside now."""
        ...


@dataclass(frozen=True)
class LaterCommits:
    """Output one sink subtask committed for checkpoints after the one a job restores.

    Attributes:
        newest_checkpoint_id: the newest checkpoint whose output it committed.
        records: how many records it committed for those checkpoints, or
            ``None`` when the sink cannot count them.
        target: where the output went, for messages (``topic 'out' in /logs``).
    """

    newest_checkpoint_id: int
    records: int | None
    target: str


@dataclass(frozen=True)
class SinkRestore:
    """One sink subtask about to be restored, as :class:`CommitTrackingSink` is asked about it.

    Attributes:
        job, operator, subtask, parallelism: as for ``Sink.create_writer``.
        restored: as for ``create_writer`` (old subtask → committable), or ``None``.
        checkpoint_id: the checkpoint being restored.
    """

    job: str
    operator: str
    subtask: int
    parallelism: int
    restored: Any | None
    checkpoint_id: int


@runtime_checkable
class CommitTrackingSink(Protocol):
    """A two-phase-commit sink that knows which checkpoints its commits belonged to."""

    def commits_after(self, at: SinkRestore) -> LaterCommits | None:
        """Say what one sink subtask committed for checkpoints after ``at.checkpoint_id``.

        Called before ``create_writer`` on a restore, so before the writer
        commits the restored committables again.

        Args:
            at: the subtask and the checkpoint it restores.

        Returns:
            What was committed after it, or ``None`` when nothing was.
        """
        ...


def refuse_commits_after(
    job: str,
    operator: str,
    sink: CommitTrackingSink,
    restored: Mapping[int, Any],
    checkpoint_id: int,
    *,
    allow: bool = False,
) -> None:
    """Fail a restore that would commit a sink's output a second time.

    A two-phase-commit sink commits output only after its checkpoint
    completed, so a restore from checkpoint ``k`` finding commits for
    checkpoints after ``k`` means the newer checkpoints exist but are not
    restored (corrupt, or an older one was asked for); the records read
    since ``k`` would be processed and committed again.

    Args:
        job: the job name.
        operator: the sink operator's name.
        sink: the sink connector.
        restored: new subtask → its restored state, as ``create_writer`` gets it,
            for every subtask of the restoring attempt.
        checkpoint_id: the checkpoint being restored.
        allow: the run accepts the duplicates; they are logged as a warning instead.

    Raises:
        DuplicateOutputError: some subtask committed output after ``checkpoint_id``;
            the message names the checkpoints, the count when known, and how
            to proceed.
    """
    asked = [
        SinkRestore(job, operator, subtask, len(restored), state, checkpoint_id)
        for subtask, state in sorted(restored.items())
    ]
    later = [found for at in asked if (found := sink.commits_after(at))]
    if not later:
        return
    newest = max(c.newest_checkpoint_id for c in later)
    counts = [c.records for c in later if c.records is not None]
    what = f"the {sum(counts):,} records" if len(counts) == len(later) else "the records"
    span = (
        f"checkpoint {newest}, which is"
        if newest == checkpoint_id + 1
        else f"checkpoints {checkpoint_id + 1}..{newest}, which are"
    )
    targets = ", ".join(sorted({c.target for c in later}))
    problem = (
        f"restoring checkpoint {checkpoint_id} of job {job!r} commits again {what} that sink "
        f"{operator!r} already committed to {targets} for {span} newer than the checkpoint "
        "restored (unusable, or not asked for)"
    )
    if allow:
        log.warning("%s; the run allows duplicates after a fallback", problem)
        return
    raise DuplicateOutputError(
        f"{problem}. To accept these duplicates pass {ALLOW_DUPLICATES_HINT}; to avoid them "
        f"repair and restore checkpoint {newest}, or start afresh (--restore none) into an "
        "empty sink target"
    )
