"""The closed set of in-band control events and the data buffer.

Everything that travels through a channel is a :class:`Batch` or one of the
three control events. Control events stay in order with the data around
them: a barrier splits the stream into pre- and post-checkpoint records, a
watermark asserts that no earlier event time follows on that channel.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Batch:
    """A buffer of records: parallel lists of values, event timestamps and (optionally)
    keys and headers.

    Attributes:
        values: the records.
        timestamps: event time of each record in ms, or ``None`` when the
            stream carries no event time.
        keys: the key of each record when a ``key_by`` partitioner already
            computed it, else ``None``.
        headers: the headers of each record (a tuple of ``(name, bytes)``
            pairs) when the job runs with tracing, else ``None``.
    """

    __slots__ = ("headers", "keys", "timestamps", "values")

    def __init__(
        self,
        values: list[Any],
        timestamps: list[int] | None,
        keys: list[Any] | None = None,
        headers: list[Any] | None = None,
    ) -> None:
        self.values = values
        self.timestamps = timestamps
        self.keys = keys
        self.headers = headers

    def __len__(self) -> int:
        return len(self.values)


class Watermark(NamedTuple):
    """No record with event time ≤ ``timestamp_ms`` follows on this channel.

    Attributes:
        timestamp_ms: the watermark; :data:`weirflow.time.MAX_WATERMARK` at end of input.
        idle: the sender has no data for now; receivers leave this input out
            of their minimum until it sends a record or watermark again.
    """

    timestamp_ms: int
    idle: bool = False


class CheckpointBarrier(NamedTuple):
    """Marks the cut of checkpoint ``checkpoint_id`` in this channel.

    Attributes:
        checkpoint_id: the checkpoint's id.
        timestamp_ms: when the coordinator triggered it (processing time).
        aligned: whether receivers with several inputs must align on it
            (``exactly_once``) or not (``at_least_once``).
        unaligned_after_ms: when the barrier may overtake the records ahead
            of it (an unaligned checkpoint, FLIP-76): ``None`` never; ``0`` at
            once (senders put it ahead of their output queue, receivers take
            it ahead of their input channels' buffers); ``t > 0`` once ``t`` ms
            passed since ``timestamp_ms`` (aligned until the alignment
            timeout, then unaligned). Only with ``aligned=True``.
    """

    checkpoint_id: int
    timestamp_ms: int
    aligned: bool = True
    unaligned_after_ms: int | None = None

    def overtakes(self, now_ms: int) -> bool:
        """Whether this barrier may overtake buffered records at processing time ``now_ms``."""
        after = self.unaligned_after_ms
        return after is not None and (after == 0 or now_ms - self.timestamp_ms >= after)


class EndOfPartition(NamedTuple):
    """The sender will send nothing more on this channel."""


END_OF_PARTITION = EndOfPartition()
