"""The timer service: event-time and processing-time timers as keyed state.

A timer is ``(timestamp_ms, key_group, key, namespace)``; the namespace is
what the operator scopes it by (a window, or ``None``). Timers are stored in
buckets by timestamp, because many keys share one timestamp (a window end):
registering is a dict insert, plus a heap push only for a timestamp not
already queued. Firing pops whole buckets in timestamp order.

Order is deterministic: by timestamp, then by registration order. Each timer
carries a registration sequence number that snapshots keep, so a restore at
the same parallelism fires in exactly the same order as the original run.

Timers are snapshotted per key group like other keyed state (Flink keeps
timers in the keyed state backend for the same reason: rescaling moves them
with their key group).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from weirflow.errors import StateError
from weirflow.state.blob import TIMERS_MAGIC, pack_blob, unpack_blob
from weirflow.state.errors import CorruptStateError
from weirflow.state.keygroups import KeyGroupRange
from weirflow.state.snapshots import PerKeyGroupSnapshot

Timer = tuple[int, int, Any, Any]
"""A fired timer: ``(timestamp_ms, key_group, key, namespace)``."""

_TimerId = tuple[int, Any, Any]
_Buckets = dict[int, dict[_TimerId, int]]


class _TimerQueue:
    """Timers of one time domain: timestamp -> {(key_group, key, namespace): sequence}."""

    __slots__ = ("_buckets", "_heap", "_queued")

    def __init__(self) -> None:
        self._buckets: _Buckets = {}
        self._heap: list[int] = []
        self._queued: set[int] = set()

    def register(self, timer_id: _TimerId, timestamp_ms: int, seq: int) -> bool:
        bucket = self._buckets.get(timestamp_ms)
        if bucket is None:
            bucket = self._buckets[timestamp_ms] = {}
            if timestamp_ms not in self._queued:
                self._queued.add(timestamp_ms)
                heapq.heappush(self._heap, timestamp_ms)
        elif timer_id in bucket:
            return False
        bucket[timer_id] = seq
        return True

    def delete(self, timer_id: _TimerId, timestamp_ms: int) -> None:
        bucket = self._buckets.get(timestamp_ms)
        if bucket is not None and bucket.pop(timer_id, None) is not None and not bucket:
            # The heap entry stays; it is dropped when it reaches the top.
            del self._buckets[timestamp_ms]

    def fire_until(self, time_ms: int) -> list[Timer]:
        fired: list[Timer] = []
        heap = self._heap
        while heap and heap[0] <= time_ms:
            ts = heapq.heappop(heap)
            self._queued.discard(ts)
            bucket = self._buckets.pop(ts, None)
            if bucket:
                fired.extend([(ts, kg, key, ns) for kg, key, ns in bucket])
        return fired

    def peek(self) -> int | None:
        heap = self._heap
        while heap and heap[0] not in self._buckets:
            self._queued.discard(heapq.heappop(heap))
        return heap[0] if heap else None

    def copy(self) -> _Buckets:
        return {ts: bucket.copy() for ts, bucket in self._buckets.items()}

    def key_groups(self) -> set[int]:
        return {kg for bucket in self._buckets.values() for kg, _, _ in bucket}

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())


def _group_by_key_group(buckets: _Buckets) -> dict[int, list[list[Any]]]:
    out: dict[int, list[list[Any]]] = {}
    for ts in sorted(buckets):
        for (kg, key, ns), seq in buckets[ts].items():
            out.setdefault(kg, []).append([ts, seq, key, ns])
    return out


SavedTimer = tuple[int, int, int, Any, Any]
"""A restored timer: ``(timestamp_ms, saved sequence, key_group, key, namespace)``."""


def pack_timers(key_group: int, event: list[list[Any]], processing: list[list[Any]]) -> bytes:
    """Encode one key group's timers in the canonical form every timer service writes.

    Args:
        key_group: the key group.
        event: ``[ts_ms, seq, key, namespace]`` lists, sorted by timestamp then sequence.
        processing: likewise for processing-time timers.

    Returns:
        A :data:`TIMERS_MAGIC` blob (see :mod:`weirflow.state.blob`).

    Raises:
        SerdeError: a key or namespace can be neither msgpack-encoded nor pickled.
    """
    return pack_blob(TIMERS_MAGIC, key_group, {"event": event, "processing": processing})


def decode_timer_blobs(
    blobs: Iterable[tuple[int, bytes]],
    key_group_range: KeyGroupRange,
    holds: Callable[[int], bool],
) -> tuple[list[SavedTimer], list[SavedTimer]]:
    """Check and decode timer blobs of the key groups in ``key_group_range``.

    Args:
        blobs: ``(key_group, blob)`` pairs; other key groups are skipped undecoded.
        key_group_range: the restoring subtask's key groups.
        holds: whether a key group already holds timers (restoring it is refused).

    Returns:
        Event-time and processing-time timers, each sorted by (timestamp,
        saved sequence, blob order), the order they must fire in.

    Raises:
        UnsupportedStateVersionError: a blob has an unknown format version.
        CorruptStateError: a blob is corrupt or malformed.
        StateError: a key group appears twice or already holds timers.
    """
    seen: set[int] = set()
    event: list[SavedTimer] = []
    processing: list[SavedTimer] = []
    for kg, blob in blobs:
        if kg not in key_group_range:
            continue
        if kg in seen or holds(kg):
            raise StateError(f"key group {kg}: timers restored twice")
        seen.add(kg)
        content = unpack_blob(TIMERS_MAGIC, kg, blob)
        try:
            event.extend((ts, seq, kg, key, ns) for ts, seq, key, ns in content["event"])
            processing.extend((ts, seq, kg, key, ns) for ts, seq, key, ns in content["processing"])
        except (TypeError, KeyError, ValueError) as e:
            raise CorruptStateError(f"key group {kg}: malformed timer blob content") from e
    event.sort(key=lambda t: (t[0], t[1]))
    processing.sort(key=lambda t: (t[0], t[1]))
    return event, processing


class TimerSnapshot:
    """The synchronous part of a timer-service checkpoint (copied buckets).

    Args:
        event: event-time buckets, already copied.
        processing: processing-time buckets, already copied.
    """

    __slots__ = ("_event", "_processing")

    def __init__(self, event: _Buckets, processing: _Buckets) -> None:
        self._event = event
        self._processing = processing

    def to_bytes_per_key_group(self) -> dict[int, bytes]:
        """Encode one blob per key group that holds a timer.

        Returns:
            key group -> blob (see :mod:`weirflow.state.blob`, magic ``WFTM``)
            whose content is ``{"event": [[ts_ms, seq, key, namespace], ...],
            "processing": [...]}``, each list sorted by timestamp then sequence.

        Raises:
            SerdeError: a key or namespace can be neither msgpack-encoded nor pickled.
        """
        event = _group_by_key_group(self._event)
        processing = _group_by_key_group(self._processing)
        return {
            kg: pack_timers(kg, event.get(kg, []), processing.get(kg, []))
            for kg in sorted(event.keys() | processing.keys())
        }


@runtime_checkable
class InternalTimerService(Protocol):
    """The timer service operators use; the state backend decides where timers live.

    Implemented by :class:`TimerService` (heap) and the RocksDB timer service.
    """

    def register_event_time_timer(
        self, key_group: int, key: Any, namespace: Any, timestamp_ms: int
    ) -> None:
        """Register an event-time timer; again for the same timer does nothing."""
        ...

    def delete_event_time_timer(
        self, key_group: int, key: Any, namespace: Any, timestamp_ms: int
    ) -> None:
        """Delete an event-time timer; an absent timer is ignored."""
        ...

    def register_processing_time_timer(
        self, key_group: int, key: Any, namespace: Any, timestamp_ms: int
    ) -> None:
        """Register a processing-time timer."""
        ...

    def delete_processing_time_timer(
        self, key_group: int, key: Any, namespace: Any, timestamp_ms: int
    ) -> None:
        """Delete a processing-time timer; an absent timer is ignored."""
        ...

    def advance_watermark(self, watermark_ms: int) -> list[Timer]:
        """Fire and return event-time timers with ``ts <= watermark_ms``, in firing order."""
        ...

    def advance_processing_time(self, now_ms: int) -> list[Timer]:
        """Fire and return processing-time timers with ``ts <= now_ms``, in firing order."""
        ...

    def next_event_time_timer(self) -> int | None:
        """Return the earliest pending event-time timestamp, or ``None``."""
        ...

    def next_processing_time_timer(self) -> int | None:
        """Return the earliest pending processing-time timestamp, or ``None``."""
        ...

    def is_empty(self) -> bool:
        """Return whether no timer is pending."""
        ...

    def snapshot(self, checkpoint_id: int | None = None) -> PerKeyGroupSnapshot | None:
        """Take the synchronous part of a checkpoint; ``None``: the keyed snapshot holds them."""
        ...

    def restore(self, blobs: Iterable[tuple[int, bytes]]) -> None:
        """Load canonical per-key-group timer blobs."""
        ...


class TimerService:
    """Event-time and processing-time timers of one subtask.

    Args:
        key_group_range: key groups whose timers this service holds.
    """

    def __init__(self, key_group_range: KeyGroupRange) -> None:
        self._range = key_group_range
        self._event = _TimerQueue()
        self._processing = _TimerQueue()
        self._seq = 0

    @property
    def key_group_range(self) -> KeyGroupRange:
        """The key groups this service holds timers for."""
        return self._range

    def _check(self, key_group: int) -> None:
        if not self._range.start <= key_group < self._range.end:
            raise StateError(
                f"timer for key group {key_group}, outside this subtask's range {self._range}"
            )

    def register_event_time_timer(
        self, key_group: int, key: Any, namespace: Any, timestamp_ms: int
    ) -> None:
        """Register an event-time timer; registering the same timer again does nothing.

        Args:
            key_group: the key's group.
            key: the key (hashable).
            namespace: the scope, e.g. a window (hashable), or ``None``.
            timestamp_ms: fires once the watermark reaches it (``ts <= watermark``).

        Raises:
            StateError: the key group is outside this service's range.
        """
        self._check(key_group)
        if self._event.register((key_group, key, namespace), timestamp_ms, self._seq):
            self._seq += 1

    def delete_event_time_timer(
        self, key_group: int, key: Any, namespace: Any, timestamp_ms: int
    ) -> None:
        """Delete an event-time timer; an absent timer is ignored."""
        self._event.delete((key_group, key, namespace), timestamp_ms)

    def register_processing_time_timer(
        self, key_group: int, key: Any, namespace: Any, timestamp_ms: int
    ) -> None:
        """Register a processing-time timer (same contract as the event-time one).

        Raises:
            StateError: the key group is outside this service's range.
        """
        self._check(key_group)
        if self._processing.register((key_group, key, namespace), timestamp_ms, self._seq):
            self._seq += 1

    def delete_processing_time_timer(
        self, key_group: int, key: Any, namespace: Any, timestamp_ms: int
    ) -> None:
        """Delete a processing-time timer; an absent timer is ignored."""
        self._processing.delete((key_group, key, namespace), timestamp_ms)

    def advance_watermark(self, watermark_ms: int) -> list[Timer]:
        """Fire (remove and return) every event-time timer with ``ts <= watermark_ms``.

        Timers registered while the caller handles the returned ones are not in
        this list, even when due; the caller calls again until it gets ``[]``
        if its timer handlers register due timers.

        Args:
            watermark_ms: the new watermark (a lower one than before fires nothing).

        Returns:
            ``(timestamp_ms, key_group, key, namespace)`` tuples ordered by
            timestamp, then registration order.
        """
        return self._event.fire_until(watermark_ms)

    def advance_processing_time(self, now_ms: int) -> list[Timer]:
        """Fire every processing-time timer with ``ts <= now_ms``; see :meth:`advance_watermark`."""
        return self._processing.fire_until(now_ms)

    def next_event_time_timer(self) -> int | None:
        """Return the earliest pending event-time timestamp, or ``None``."""
        return self._event.peek()

    def next_processing_time_timer(self) -> int | None:
        """Return the earliest pending processing-time timestamp, or ``None``."""
        return self._processing.peek()

    def __len__(self) -> int:
        return len(self._event) + len(self._processing)

    def is_empty(self) -> bool:
        """Return whether no timer is pending in either time domain."""
        return len(self) == 0

    def snapshot(self, checkpoint_id: int | None = None) -> TimerSnapshot:
        """Take the synchronous part of a checkpoint (copies the buckets; the id is not needed).

        Returns:
            A :class:`TimerSnapshot` unaffected by later registrations and firings.
        """
        return TimerSnapshot(self._event.copy(), self._processing.copy())

    def restore(self, blobs: Iterable[tuple[int, bytes]]) -> None:
        """Load timers from blobs of one or many old subtasks.

        Steps:

        1. Skip blobs of key groups outside this service's range.
        2. Check and decode every remaining blob before changing anything.
        3. Register the timers ordered by (timestamp, saved sequence, blob
           order), so firing order survives the restore.

        Args:
            blobs: ``(key_group, blob)`` pairs from ``to_bytes_per_key_group``.

        Raises:
            UnsupportedStateVersionError: a blob has an unknown format version.
            CorruptStateError: a blob is corrupt or malformed.
            StateError: a key group appears twice or already holds timers.
        """
        held = self._event.key_groups() | self._processing.key_groups()
        event, processing = decode_timer_blobs(blobs, self._range, held.__contains__)
        for queue, timers in ((self._event, event), (self._processing, processing)):
            for ts, _, kg, key, ns in timers:
                queue.register((kg, key, ns), ts, self._seq)
                self._seq += 1
