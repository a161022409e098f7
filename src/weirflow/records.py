"""Record types that the runtime produces and users receive.

They live at the top level because both the builder (``api``) and the
runtime create or expose them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

#: a record's headers: ``(name, value)`` pairs, names ``str``, values ``bytes``
#: (what event-log and Kafka records carry; a ``traceparent`` among them is
#: the W3C trace context that tracing continues)
RecordHeaders = tuple[tuple[str, bytes], ...]


class WindowResult(NamedTuple):
    """The result of one firing of one window.

    Attributes:
        key: the key of the keyed stream.
        start_ms: window start, inclusive, ms since the epoch (event time).
        end_ms: window end, exclusive, ms since the epoch.
        value: the window function's result (the reduced value, the
            aggregate's ``get_result``, the count, or the window function's
            return value).
        firing: 0 for the firing when the watermark passes the window's end;
            1, 2 … for re-firings caused by late records within the allowed
            lateness. The last firing holds the window's final value.
    """

    key: Any
    start_ms: int
    end_ms: int
    value: Any
    firing: int = 0


class LogPosition(NamedTuple):
    """Where a record sits in a partitioned log (an event-log or Kafka topic).

    Attributes:
        topic: the topic name.
        partition: the partition index (0-based).
        offset: the record's offset in the partition.
    """

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"topic {self.topic!r} partition {self.partition} offset {self.offset}"


class DeadLetter(NamedTuple):
    """A record an operator could not process, routed aside instead of failing the job.

    Attributes:
        value: the input record, as the operator received it.
        operator: the operator's name.
        subtask: the subtask index (0-based).
        error_type: the exception's qualified class name.
        message: ``str(exception)``.
        traceback: the formatted traceback.
        attempts: how many times the function was called on this record
            (1 without retries).
        timestamp_ms: the record's event time, or ``None`` without event time.
        position: where the source read the record: a :class:`LogPosition`
            for a record that an event-log or Kafka source could not decode
            (``value`` is then its raw bytes), else ``None``.
        headers: the record's headers when the job runs with tracing (its
            ``traceparent`` names the trace the record belongs to), else ``()``.
    """

    value: Any
    operator: str
    subtask: int
    error_type: str
    message: str
    traceback: str
    attempts: int
    timestamp_ms: int | None
    position: Any = None
    headers: RecordHeaders = ()


class LateRecord(NamedTuple):
    """A record too late for a window it belongs to (past the allowed lateness).

    Attributes:
        value: the record.
        timestamp_ms: its event time.
        watermark_ms: the operator's watermark when the record arrived.
        operator: the window operator's name.
        window_start_ms: start of the window it missed (``None`` for session windows).
        window_end_ms: end of that window (``None`` for session windows).
    """

    value: Any
    timestamp_ms: int
    watermark_ms: int
    operator: str
    window_start_ms: int | None = None
    window_end_ms: int | None = None


class OperatorCounts(NamedTuple):
    """Record counts of one operator, summed over its subtasks.

    Balance: ``records_in = records_out + filtered + dead_lettered + late``
    for one-to-one operators (map, filter); window and flat-map operators
    change the number of records, so only their inputs balance:
    ``records_in = accepted + dead_lettered + late``. For sliding windows
    ``late`` counts (record, window) pairs, since a record can be late for
    some of its windows only.
    """

    records_in: int
    records_out: int
    filtered: int
    late: int
    dead_lettered: int


class JobResult(NamedTuple):
    """What ``Dataflow.run`` returns when a job ends.

    Attributes:
        job: the job name.
        parallelism: subtasks per operator.
        operators: operator name → :class:`OperatorCounts`.
        checkpoints_completed: checkpoints completed in the final attempt.
        restarts: attempts restarted by the restart strategy.
        duration_ms: processing time from start to end.
    """

    job: str
    parallelism: int
    operators: dict[str, OperatorCounts]
    checkpoints_completed: int = 0
    restarts: int = 0
    duration_ms: int = 0
