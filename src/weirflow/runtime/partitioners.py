"""Record writers: split a task's output over the channels of a network edge.

``forward`` sends to the one channel of the same subtask index, ``key_by``
sends each record to the subtask owning its key group, ``rebalance`` deals
records round robin, ``broadcast`` sends every record to every channel.

Records are collected per target into buffers of at most ``buffer_size``
records. A buffer (or control event) waits in the writer's pending queue
until the target channel grants credit; :meth:`RecordWriter.flush` moves as
much as credit allows and reports whether anything is still waiting, which
is how a task knows it is backpressured.

A barrier of an unaligned checkpoint overtakes the pending queue
(:meth:`RecordWriter.overtake`); the buffers it overtook become the sending
task's in-flight output, re-queued first on restore (:meth:`RecordWriter.requeue`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import Any

from weirflow.errors import ConfigError
from weirflow.graph import Partitioning
from weirflow.runtime.channel import Channel
from weirflow.runtime.events import Batch, Watermark
from weirflow.runtime.keycache import KEY_CACHE_LIMIT
from weirflow.state import key_group_for_key, subtask_for_key_group


class RecordWriter:
    """Writes one task's output on one network edge.

    Args:
        channels: the target channels, index = downstream subtask
            (exactly one channel for ``forward``).
        partitioning: the edge's partitioning.
        key_fn: the key selector for ``key_by``.
        max_parallelism: number of key groups, for ``key_by``.
        buffer_size: records per buffer, ≥ 1.

    Raises:
        ConfigError: ``key_by`` without a key selector, or bad sizes.
    """

    def __init__(
        self,
        channels: list[Channel],
        partitioning: Partitioning,
        key_fn: Callable[[Any], Any] | None,
        max_parallelism: int,
        buffer_size: int,
    ) -> None:
        if partitioning == "key_by" and key_fn is None:
            raise ConfigError("a key_by edge needs a key selector")
        if buffer_size < 1:
            raise ConfigError(f"buffer_size must be ≥ 1 record, got {buffer_size}")
        self.channels = channels
        self.partitioning = partitioning
        self.key_fn = key_fn
        self.max_parallelism = max_parallelism
        self.buffer_size = buffer_size
        self._pending: list[deque[object]] = [deque() for _ in channels]
        self._pending_count = 0
        self._rr = 0
        self._target_of_key: dict[Any, int] = {}
        self.blocked_flushes = 0

    def write(
        self, values: list[Any], timestamps: list[int] | None, headers: list[Any] | None = None
    ) -> None:
        """Partition a batch of records (and their headers, if any) into pending buffers
        (no credit needed)."""
        if not values:
            return
        p = self.partitioning
        n = len(self.channels)
        if p == "forward" or (n == 1 and p != "key_by"):
            self._enqueue(0, values, timestamps, None, headers)
        elif p == "broadcast":
            for t in range(n):
                self._enqueue(t, values, timestamps, None, headers)
        elif p == "rebalance":
            start = self._rr
            for t in range(n):
                k = (start + t) % n
                self._enqueue(
                    k,
                    values[t::n],
                    timestamps[t::n] if timestamps else None,
                    None,
                    headers[t::n] if headers is not None else None,
                )
            self._rr = (start + len(values)) % n
        else:
            self._write_keyed(values, timestamps, headers)

    def _write_keyed(
        self, values: list[Any], timestamps: list[int] | None, headers: list[Any] | None
    ) -> None:
        key_fn = self.key_fn
        assert key_fn is not None
        keys = [key_fn(v) for v in values]
        n = len(self.channels)
        cache = self._target_of_key
        if len(cache) > KEY_CACHE_LIMIT:
            cache.clear()
        vals: list[list[Any]] = [[] for _ in range(n)]
        kss: list[list[Any]] = [[] for _ in range(n)]
        tss: list[list[int]] | None = [[] for _ in range(n)] if timestamps is not None else None
        hss: list[list[Any]] | None = [[] for _ in range(n)] if headers is not None else None
        maxp = self.max_parallelism
        for i, k in enumerate(keys):
            t = cache.get(k)
            if t is None:
                t = subtask_for_key_group(maxp, n, key_group_for_key(k, maxp))
                cache[k] = t
            vals[t].append(values[i])
            kss[t].append(k)
            if tss is not None:
                tss[t].append(timestamps[i])  # type: ignore[index]
            if hss is not None:
                hss[t].append(headers[i])  # type: ignore[index]
        for t in range(n):
            if vals[t]:
                self._enqueue(
                    t,
                    vals[t],
                    tss[t] if tss is not None else None,
                    kss[t],
                    hss[t] if hss is not None else None,
                )

    def _enqueue(
        self,
        target: int,
        values: list[Any],
        timestamps: list[int] | None,
        keys: list[Any] | None,
        headers: list[Any] | None,
    ) -> None:
        if not values:
            return
        size = self.buffer_size
        q = self._pending[target]
        if len(values) <= size:
            q.append(Batch(values, timestamps, keys, headers))
            self._pending_count += 1
            return
        for s in range(0, len(values), size):
            q.append(
                Batch(
                    values[s : s + size],
                    timestamps[s : s + size] if timestamps is not None else None,
                    keys[s : s + size] if keys is not None else None,
                    headers[s : s + size] if headers is not None else None,
                )
            )
            self._pending_count += 1

    def broadcast_event(self, event: object) -> None:
        """Queue a control event behind all pending buffers of every target."""
        for q in self._pending:
            q.append(event)
            self._pending_count += 1

    def overtake(self, event: object) -> list[list[object]]:
        """Put a control event into every target channel ahead of the pending buffers.

        Control events need no credit, so the event reaches each channel now.

        Args:
            event: the barrier of an unaligned checkpoint.

        Returns:
            Per target, the buffers and watermarks it overtook, in order
            (they stay pending and are sent after it).
        """
        overtaken: list[list[object]] = []
        for q, ch in zip(self._pending, self.channels, strict=True):
            ch.put(event)
            overtaken.append([x for x in q if type(x) is Batch or type(x) is Watermark])
        return overtaken

    def holds(self, event: object) -> bool:
        """Whether the control event ``event`` (this very object) still waits for credit."""
        return any(x is event for q in self._pending for x in q)

    def overtake_pending(self, event: object) -> list[list[object]]:
        """Move a control event still pending ahead of the items queued before it, into the
        channels of the targets where it waits (an alignment timeout passed).

        Args:
            event: the barrier, as queued by :meth:`broadcast_event`.

        Returns:
            Per target, the buffers and watermarks it overtook (empty where it
            was already sent).
        """
        overtaken: list[list[object]] = []
        for q, ch in zip(self._pending, self.channels, strict=True):
            k = next((k for k, x in enumerate(q) if x is event), None)
            if k is None:
                overtaken.append([])
                continue
            overtaken.append([x for x in islice(q, k) if type(x) is Batch or type(x) is Watermark])
            del q[k]
            self._pending_count -= 1
            ch.put(event)
        return overtaken

    def requeue(self, per_target: list[list[object]]) -> None:
        """Queue restored in-flight output ahead of everything pending (before any new output).

        Args:
            per_target: per target channel, buffers and watermarks in order.

        Raises:
            ValueError: not one list per target channel.
        """
        if len(per_target) != len(self._pending):
            raise ValueError(
                f"in-flight output for {len(per_target)} channels, the writer has "
                f"{len(self._pending)}"
            )
        for q, items in zip(self._pending, per_target, strict=True):
            q.extendleft(reversed(items))
            self._pending_count += len(items)

    def flush(self) -> bool:
        """Move pending items into channels while credit allows.

        Returns:
            ``True`` when nothing is pending any more, ``False`` when some
            target has no credit (the task is backpressured).
        """
        if not self._pending_count:
            return True
        for q, ch in zip(self._pending, self.channels, strict=True):
            while q:
                item = q[0]
                if type(item) is Batch and ch.buffered_buffers >= ch.capacity:
                    break
                ch.put(q.popleft())
                self._pending_count -= 1
        if self._pending_count:
            self.blocked_flushes += 1
            return False
        return True

    @property
    def pending_records(self) -> int:
        """Records waiting for credit in this writer."""
        return sum(len(b) for q in self._pending for b in q if type(b) is Batch)
