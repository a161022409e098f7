"""Bounded channels with credit-based flow control.

A channel holds at most ``capacity`` data buffers. A sender may put a buffer
only while it holds credit (``credit() > 0``); control events are tiny and
bounded by the data between them, so they always fit. When a receiver stops
draining, its senders run out of credit, their tasks stop stepping, and the
pressure travels upstream to the sources (backpressure). Nothing is ever
dropped.
"""

from __future__ import annotations

from collections import deque

from weirflow.errors import ConfigError
from weirflow.runtime.events import Batch


class Channel:
    """One FIFO between an upstream subtask and a downstream subtask.

    Args:
        capacity: maximum data buffers held, ≥ 1.
        name: for logs and errors, e.g. ``"map_1[0/2] -> window_3[1/2]"``.

    Raises:
        ConfigError: ``capacity`` < 1.
    """

    __slots__ = ("_queue", "buffered_buffers", "buffered_records", "capacity", "name")

    def __init__(self, capacity: int, name: str = "") -> None:
        if capacity < 1:
            raise ConfigError(f"channel capacity must be ≥ 1 buffer, got {capacity}")
        self.capacity = capacity
        self.name = name
        self._queue: deque[object] = deque()
        self.buffered_buffers = 0
        self.buffered_records = 0

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
        self._queue.append(item)

    def poll(self) -> object | None:
        """Dequeue the oldest item, or return ``None`` when empty; frees one credit for a buffer."""
        if not self._queue:
            return None
        item = self._queue.popleft()
        if type(item) is Batch:
            self.buffered_buffers -= 1
            self.buffered_records -= len(item.values)
        return item

    def __len__(self) -> int:
        return len(self._queue)
