"""Plain-data views of a running job, shared by the exporter, the progress line and the dashboard.

Every object here is immutable once built, so a reader on another thread (the
web server, the progress refresher) can hold one while the scheduler thread
builds the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CheckpointState = Literal["completed", "failed"]


@dataclass(frozen=True)
class OperatorSample:
    """One operator subtask's counters at a sample.

    Attributes:
        operator: operator name.
        subtask: subtask index.
        task: the task (chain) name the subtask runs in, ``"<head>[<i>/<p>]"``.
        kind: operator kind (``source``, ``map``, ``sink``...).
        records_in, records_out, filtered, late, dead_lettered: counts since
            the attempt started (records).
        in_rate, out_rate: records/s over the last sample interval.
    """

    operator: str
    subtask: int
    task: str
    kind: str
    records_in: int
    records_out: int
    filtered: int
    late: int
    dead_lettered: int
    in_rate: float
    out_rate: float


#: Circuit breaker states, in the order of the ``weirflow_connector_breaker_state`` gauge.
BREAKER_STATES = ("closed", "half-open", "open")


@dataclass(frozen=True)
class ConnectorStats:
    """What a connector instance reports about its external system (counts since it opened).

    Attributes:
        breaker: ``closed``, ``half-open`` or ``open`` (one of :data:`BREAKER_STATES`).
        retries: error class name → calls retried after it.
        rows_written: rows committed to the external system.
        rejected: the system's error code (a SQLSTATE) → rows refused for their content.
        transactions: transactions ended in the external system.
        transaction_s: seconds spent ending them (retries included).
    """

    breaker: str = "closed"
    retries: dict[str, int] = field(default_factory=dict)
    rows_written: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    transactions: int = 0
    transaction_s: float = 0.0


@dataclass(frozen=True)
class ConnectorSample:
    """One connector subtask's :class:`ConnectorStats` at a sample.

    Attributes:
        operator: the operator name.
        subtask: subtask index.
        stats: what it reported.
    """

    operator: str
    subtask: int
    stats: ConnectorStats


@dataclass(frozen=True)
class TaskSample:
    """One task's flow-control and event-time figures at a sample.

    Attributes:
        task: task name, ``"<head>[<i>/<p>]"``.
        head: the head operator's name.
        subtask: subtask index.
        backpressured_ratio: share (0..1) of the task's steps in the last
            interval that found an output without credit.
        input_usage, output_usage: buffered / capacity (0..1) over the task's
            input channels and output channels.
        watermark_ms: the task's current watermark, or ``None`` before the first.
        watermark_lag_ms: processing time − watermark, or ``None``.
    """

    task: str
    head: str
    subtask: int
    backpressured_ratio: float
    input_usage: float
    output_usage: float
    watermark_ms: int | None
    watermark_lag_ms: int | None


@dataclass(frozen=True)
class CheckpointRecord:
    """One finished checkpoint in the history.

    Attributes:
        checkpoint_id: its id.
        status: ``completed`` or ``failed``.
        trigger_ms: when the barrier was injected (ms since the epoch), or ``None`` if unseen.
        duration_ms: trigger to completion (ms), ``None`` for a failed one.
        alignment_ms: trigger to the last task's synchronous snapshot (ms), or ``None``.
        full_bytes: bytes of every state file the checkpoint refers to.
        incremental_bytes: bytes written for this checkpoint (files not
            shared with the previous one).
    """

    checkpoint_id: int
    status: CheckpointState
    trigger_ms: int | None
    duration_ms: int | None
    alignment_ms: int | None
    full_bytes: int
    incremental_bytes: int


@dataclass(frozen=True)
class JobStatus:
    """Everything the surfaces show, at one sample.

    Attributes:
        job: job name.
        sampled_ms: processing time of the sample (ms since the epoch).
        operators: per operator subtask.
        tasks: per task.
        split_lag: ``"<operator>/<split>" -> records`` not yet read (end offset − position).
        checkpoints: finished checkpoints, oldest first (bounded history).
        restarts: restarts of the job so far (supervisor and in-process).
        recovery_ms: time spent recovering so far (ms).
        records_in_rate: records/s read by the sources.
        records_out_rate: records/s received by the sinks.
        dead_letters: dead-lettered records in this attempt.
        watermark_ms: the lowest task watermark, or ``None``.
        last_checkpoint_id: newest completed checkpoint, or ``None``.
        last_checkpoint_ms: when it completed (ms since the epoch), or ``None``.
        connectors: per connector subtask that reports :class:`ConnectorStats`.
    """

    job: str
    sampled_ms: int
    operators: tuple[OperatorSample, ...] = ()
    tasks: tuple[TaskSample, ...] = ()
    split_lag: dict[str, int] = field(default_factory=dict)
    checkpoints: tuple[CheckpointRecord, ...] = ()
    restarts: int = 0
    recovery_ms: int = 0
    records_in_rate: float = 0.0
    records_out_rate: float = 0.0
    dead_letters: int = 0
    watermark_ms: int | None = None
    last_checkpoint_id: int | None = None
    last_checkpoint_ms: int | None = None
    connectors: tuple[ConnectorSample, ...] = ()

    @property
    def total_split_lag(self) -> int:
        """Records not yet read over every split."""
        return sum(self.split_lag.values())
