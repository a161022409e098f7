"""Bounded channels with credit-based flow control.

A channel holds at most ``capacity`` data buffers. A sender may put a buffer
only while it holds credit (``credit() > 0``); control events are tiny and
bounded by the data between them, so they always fit. When a receiver stops
draining, its senders run out of credit, their tasks stop stepping, and the
pressure travels upstream to the sources (backpressure). Nothing is ever
dropped.

A barrier of an unaligned checkpoint may leave the channel ahead of the
buffers queued before it (:meth:`Channel.take_barrier`); those buffers stay
queued, and the receiver records them as the checkpoint's in-flight data.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

from weirflow.errors import ConfigError
from weirflow.runtime.events import Batch, CheckpointBarrier


class Channel:
    """One FIFO between an upstream subtask and a downstream subtask.

    Args:
        capacity: maximum data buffers held, ≥ 1.
        name: for logs and errors, e.g. ``"map_1[0/2] -> window_3[1/2]"``.

    Raises:
        ConfigError: ``capacity`` < 1.
    """

    __slots__ = (
        "_queue",
        "buffered_buffers",
        "buffered_records",
        "capacity",
        "name",
        "overtaking_barriers",
    )

    def __init__(self, capacity: int, name: str = "") -> None:
        if capacity < 1:
            raise ConfigError(f"channel capacity must be ≥ 1 buffer, got {capacity}")
        self.capacity = capacity
        self.name = name
        self._queue: deque[object] = deque()
        self.buffered_buffers = 0
        self.buffered_records = 0
        # barriers queued that may overtake buffers: the receiver looks for them only then
        self.overtaking_barriers = 0

    def credit(self) -> int:
        """Return how many more data buffers the receiver accepts now."""
        return self.capacity - self.buffered_buffers

    def put(self, item: object) -> None:
        """Enqueue a buffer (the caller must hold credit) or a control event.

        Raises:
            RuntimeError: a buffer was put without credit (a runtime bug:
                it would break the memory bound).
        """
        if type(item) is Batch:
            if self.buffered_buffers >= self.capacity:
                raise RuntimeError(f"channel {self.name} overrun: a buffer was sent without credit")
            self.buffered_buffers += 1
            self.buffered_records += len(item.values)
        elif type(item) is CheckpointBarrier and item.unaligned_after_ms is not None:
            self.overtaking_barriers += 1
        self._queue.append(item)

    def poll(self) -> object | None:
        """Dequeue the oldest item, or return ``None`` when empty; frees one credit for a buffer."""
        if not self._queue:
            return None
        item = self._queue.popleft()
        if type(item) is Batch:
            self.buffered_buffers -= 1
            self.buffered_records -= len(item.values)
        elif type(item) is CheckpointBarrier and item.unaligned_after_ms is not None:
            self.overtaking_barriers -= 1
        return item

    def take_barrier(self, now_ms: int) -> tuple[CheckpointBarrier, list[object]] | None:
        """Take the first queued barrier out ahead of the items before it, if it may overtake.

        Args:
            now_ms: processing time, for barriers that overtake after an alignment timeout.

        Returns:
            ``(barrier, items ahead of it)`` — the items stay queued, in order —
            or ``None`` when no barrier is queued or the first one may not
            overtake now (see :meth:`CheckpointBarrier.overtakes`).
        """
        if not self.overtaking_barriers:
            return None
        for k, item in enumerate(self._queue):
            if type(item) is CheckpointBarrier:
                if not item.overtakes(now_ms):
                    return None
                ahead = list(islice(self._queue, k))
                del self._queue[k]
                self.overtaking_barriers -= 1
                return item, ahead
        return None

    def __len__(self) -> int:
        return len(self._queue)
