"""Timers in RocksDB, ordered by time, so firing reads a range instead of the whole set.

Two column families of the keyed backend's database (integers big-endian;
timestamps biased by 2**63 so that negative ones sort first)::

    timers        domain 1 byte | timestamp 8 | sequence 8        -> encode((key_group, key, ns))
    timer_index   key group 2 | domain 1 | timestamp 8 | encode((key, ns)) -> sequence 8

``timers`` is the queue: firing up to ``t`` seeks to the domain's first
entry and reads forward while the timestamp is ``<= t``, in (timestamp,
registration sequence) order, the order the memory timer service fires in.
``timer_index`` finds a timer by its identity (registering it again does
nothing; deleting it needs its sequence) and keeps every key group one
contiguous range for snapshots. Domain 0 is event time, 1 processing time.

Registrations are buffered in memory first (at most :data:`PENDING_TIMERS`,
with a heap per domain for their order) and written in one batch when the
keyed backend flushes (every snapshot) or the buffer is full. Firing takes
due timers from both the buffer and the queue, merged in (timestamp,
sequence) order. A window that opens and closes between two checkpoints
therefore costs RocksDB one index lookup (registering must find an earlier
registration of the same timer), not four writes.

Snapshots are the same canonical per-key-group blobs the memory timer
service writes (:func:`weirflow.state.timers.pack_timers`).
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterable, Iterator
from typing import Any, Final

from weirflow.errors import StateError
from weirflow.serde import decode, encode
from weirflow.state.rocksdb import RocksDBKeyedStateBackend, range_items
from weirflow.state.rocksdb_snapshot import TIMER_QUEUE_KEY, TIMER_SEQUENCE
from weirflow.state.timers import Timer, decode_timer_blobs, pack_timers

EVENT: Final = 0
PROCESSING: Final = 1
_BIAS: Final = 1 << 63
_INDEX_HEAD = struct.Struct(">HBQ")
_UNKNOWN: Any = object()
PENDING_TIMERS: Final = 10_000
"""Registrations buffered before they are written to RocksDB in one batch."""


def scan_timer_index(
    index: Any, key_group_range: Any
) -> dict[int, list[tuple[int, int, int, bytes]]]:
    """Copy the timer index of ``key_group_range``: key group -> [(domain, ts, seq, key+ns)]."""
    groups: dict[int, list[tuple[int, int, int, bytes]]] = {}
    start = key_group_range.start.to_bytes(2, "big")
    for key, value in range_items(index, start, key_group_range.end.to_bytes(2, "big")):
        kg, domain, biased = _INDEX_HEAD.unpack_from(key)
        (seq,) = TIMER_SEQUENCE.unpack(value)
        groups.setdefault(kg, []).append((domain, biased - _BIAS, seq, key[_INDEX_HEAD.size :]))
    return groups


def _earliest(a: int | None, b: int | None) -> int | None:
    """Return the smaller of two optional timestamps (``None``: no timer)."""
    if a is None:
        return b
    return a if b is None else min(a, b)


class RocksDBTimerSnapshot:
    """Raw index entries copied at the synchronous part.

    Args:
        groups: key group -> [(domain, timestamp_ms, sequence, encoded (key, ns))].
    """

    __slots__ = ("_groups",)

    def __init__(self, groups: dict[int, list[tuple[int, int, int, bytes]]]) -> None:
        self._groups = groups

    def to_bytes_per_key_group(self) -> dict[int, bytes]:
        """Encode one canonical timer blob per key group that holds a timer."""
        out = {}
        for kg in sorted(self._groups):
            lists: tuple[list[list[Any]], list[list[Any]]] = ([], [])
            for domain, ts, seq, key_ns in self._groups[kg]:
                key, ns = decode(key_ns, allow_pickle=True)
                lists[domain].append([ts, seq, key, ns])
            for timers in lists:
                timers.sort(key=lambda t: (t[0], t[1]))
            out[kg] = pack_timers(kg, lists[0], lists[1])
        return out


class RocksDBTimerService:
    """Event-time and processing-time timers of one subtask, in its RocksDB database.

    Same contract as :class:`weirflow.state.TimerService`.

    Args:
        keyed: the subtask's RocksDB keyed backend (its database holds the timers).
    """

    def __init__(self, keyed: RocksDBKeyedStateBackend) -> None:
        self._keyed = keyed
        self._range = keyed.key_group_range
        self._seq = 0
        self._count = 0
        # index key -> (domain, ts, seq, key group, key, ns): registered, not yet in RocksDB
        self._pending: dict[bytes, tuple[int, int, int, int, Any, Any]] = {}
        # per domain, (ts, seq, index key) of buffered timers; deleted ones are skipped lazily
        self._heaps: tuple[list[tuple[int, int, bytes]], ...] = ([], [])
        self.reload()
        keyed.attach(self)

    def release(self) -> None:
        """Drop this service's handles on the database (before the keyed backend reopens it).

        Unwritten registrations go too: the database they belonged to is closed or replaced.
        """
        self._drop_pending()
        self._queue = self._index = self._queue_cf = self._index_cf = None

    def flush(self) -> None:
        """Write the buffered registrations to RocksDB in one batch."""
        if not self._pending:
            return
        batch = self._keyed.write_batch()
        queue_cf, index_cf = self._queue_cf, self._index_cf
        for index_key, (domain, ts, seq, kg, key, ns) in self._pending.items():
            batch.put(index_key, TIMER_SEQUENCE.pack(seq), index_cf)
            batch.put(
                TIMER_QUEUE_KEY.pack(domain, ts + _BIAS, seq), encode((kg, key, ns)), queue_cf
            )
        self._drop_pending()
        self._keyed.write(batch)

    def _drop_pending(self) -> None:
        self._pending.clear()
        for heap in self._heaps:
            heap.clear()

    def reload(self) -> None:
        """Bind to the keyed backend's (re)opened database and count the timers it holds."""
        keyed = self._keyed
        self._queue = keyed.column_family("timers")
        self._index = keyed.column_family("timer_index")
        self._queue_cf = keyed.column_family_handle("timers")
        self._index_cf = keyed.column_family_handle("timer_index")
        # per domain, no pending timer is earlier than this: seeks start here and skip the
        # tombstones of fired timers (fired ones are all earlier; a later registration lowers it)
        self._low: list[int] = [-_BIAS, -_BIAS]
        # per domain, the earliest pending timestamp (None: no timer) or _UNKNOWN: most
        # watermarks then fire nothing without touching RocksDB
        self._head: list[Any] = [_UNKNOWN, _UNKNOWN]
        self._count = sum(1 for _ in self._index_items(self._range.start, self._range.end))
        last = [TIMER_QUEUE_KEY.unpack(k)[2] for k, _ in range_items(self._queue, b"", b"\xff\xff")]
        self._seq = max([self._seq - 1, *last]) + 1

    @property
    def key_group_range(self) -> Any:
        """The key groups this service holds timers for."""
        return self._range

    def _index_key(self, domain: int, key_group: int, key: Any, namespace: Any, ts: int) -> bytes:
        return _INDEX_HEAD.pack(key_group, domain, ts + _BIAS) + encode((key, namespace))

    def _register(self, domain: int, key_group: int, key: Any, namespace: Any, ts: int) -> None:
        if key_group not in self._range:
            raise StateError(
                f"timer for key group {key_group}, outside this subtask's range {self._range}"
            )
        index_key = self._index_key(domain, key_group, key, namespace, ts)
        if index_key in self._pending or self._index.get(index_key) is not None:
            return
        self._put(domain, key_group, key, namespace, ts, index_key)

    def _put(
        self, domain: int, key_group: int, key: Any, namespace: Any, ts: int, index_key: bytes
    ) -> None:
        seq = self._seq
        self._seq += 1
        if ts < self._low[domain]:
            self._low[domain] = ts
        head = self._head[domain]
        if head is None or (head is not _UNKNOWN and ts < head):
            self._head[domain] = ts
        self._pending[index_key] = (domain, ts, seq, key_group, key, namespace)
        heapq.heappush(self._heaps[domain], (ts, seq, index_key))
        self._count += 1
        if len(self._pending) >= PENDING_TIMERS:
            self.flush()

    def _delete(self, domain: int, key_group: int, key: Any, namespace: Any, ts: int) -> None:
        index_key = self._index_key(domain, key_group, key, namespace, ts)
        if self._pending.pop(index_key, None) is not None:
            self._count -= 1
            if self._head[domain] == ts:
                self._head[domain] = _UNKNOWN
            return
        raw = self._index.get(index_key)
        if raw is None:
            return
        (seq,) = TIMER_SEQUENCE.unpack(raw)
        if self._head[domain] == ts:
            self._head[domain] = _UNKNOWN
        self._index.delete(index_key)
        self._queue.delete(TIMER_QUEUE_KEY.pack(domain, ts + _BIAS, seq))
        self._count -= 1

    def register_event_time_timer(
        self, key_group: int, key: Any, namespace: Any, timestamp_ms: int
    ) -> None:
        """Register an event-time timer; registering the same timer again does nothing.

        Raises:
            StateError: the key group is outside this service's range.
        """
        self._register(EVENT, key_group, key, namespace, timestamp_ms)

    def delete_event_time_timer(
        self, key_group: int, key: Any, namespace: Any, timestamp_ms: int
    ) -> None:
        """Delete an event-time timer; an absent timer is ignored."""
        self._delete(EVENT, key_group, key, namespace, timestamp_ms)

    def register_processing_time_timer(
        self, key_group: int, key: Any, namespace: Any, timestamp_ms: int
    ) -> None:
        """Register a processing-time timer (same contract as the event-time one).

        Raises:
            StateError: the key group is outside this service's range.
        """
        self._register(PROCESSING, key_group, key, namespace, timestamp_ms)

    def delete_processing_time_timer(
        self, key_group: int, key: Any, namespace: Any, timestamp_ms: int
    ) -> None:
        """Delete a processing-time timer; an absent timer is ignored."""
        self._delete(PROCESSING, key_group, key, namespace, timestamp_ms)

    def _queue_items(self, domain: int) -> Iterator[tuple[int, int, bytes]]:
        """Yield ``(timestamp_ms, sequence, value)`` of ``domain``'s written timers in order."""
        it = self._queue.iter()
        it.seek(TIMER_QUEUE_KEY.pack(domain, self._low[domain] + _BIAS, 0))
        while it.valid():
            key = it.key()
            if key[0] != domain:
                break
            _, ts, seq = TIMER_QUEUE_KEY.unpack(key)
            yield ts - _BIAS, seq, it.value()
            it.next()

    def _next_buffered(self, domain: int) -> int | None:
        """Return the earliest buffered timestamp of ``domain`` (dropping deleted heap entries)."""
        heap, pending = self._heaps[domain], self._pending
        while heap:
            ts, seq, index_key = heap[0]
            entry = pending.get(index_key)
            if entry is not None and entry[2] == seq:
                return ts
            heapq.heappop(heap)
        return None

    def _fire_buffered(self, domain: int, time_ms: int) -> list[tuple[int, int, int, Any, Any]]:
        """Remove and return buffered timers due at ``time_ms``: (ts, seq, key group, key, ns)."""
        heap, pending = self._heaps[domain], self._pending
        due = []
        while heap and heap[0][0] <= time_ms:
            ts, seq, index_key = heapq.heappop(heap)
            entry = pending.get(index_key)
            if entry is not None and entry[2] == seq:
                del pending[index_key]
                due.append((ts, seq, entry[3], entry[4], entry[5]))
        return due

    def _fire_until(self, domain: int, time_ms: int) -> list[Timer]:
        head = self._head[domain]
        if head is None or (head is not _UNKNOWN and head > time_ms):
            return []
        stored: list[tuple[int, int, int, Any, Any]] = []
        next_stored = None
        batch = self._keyed.write_batch()
        for ts, seq, value in self._queue_items(domain):
            if ts > time_ms:
                next_stored = ts
                break
            kg, key, ns = decode(value, allow_pickle=True)
            stored.append((ts, seq, kg, key, ns))
            batch.delete(TIMER_QUEUE_KEY.pack(domain, ts + _BIAS, seq), self._queue_cf)
            batch.delete(self._index_key(domain, kg, key, ns, ts), self._index_cf)
        if stored:
            self._keyed.write(batch)
        buffered = self._fire_buffered(domain, time_ms)
        self._count -= len(stored) + len(buffered)
        self._head[domain] = _earliest(next_stored, self._next_buffered(domain))
        if time_ms >= self._low[domain]:
            self._low[domain] = min(time_ms + 1, _BIAS - 1)
        # sequences are unique, so the merge never compares keys
        return [(ts, kg, key, ns) for ts, _, kg, key, ns in heapq.merge(stored, buffered)]

    def advance_watermark(self, watermark_ms: int) -> list[Timer]:
        """Fire (remove and return) every event-time timer with ``ts <= watermark_ms``.

        Returns:
            ``(timestamp_ms, key_group, key, namespace)`` tuples ordered by
            timestamp, then registration order.
        """
        return self._fire_until(EVENT, watermark_ms)

    def advance_processing_time(self, now_ms: int) -> list[Timer]:
        """Fire every processing-time timer with ``ts <= now_ms``; see :meth:`advance_watermark`."""
        return self._fire_until(PROCESSING, now_ms)

    def _peek(self, domain: int) -> int | None:
        if self._head[domain] is _UNKNOWN:
            first = next(self._queue_items(domain), None)
            stored = None if first is None else first[0]
            self._head[domain] = _earliest(stored, self._next_buffered(domain))
        return self._head[domain]

    def next_event_time_timer(self) -> int | None:
        """Return the earliest pending event-time timestamp, or ``None``."""
        return self._peek(EVENT)

    def next_processing_time_timer(self) -> int | None:
        """Return the earliest pending processing-time timestamp, or ``None``."""
        return self._peek(PROCESSING)

    def __len__(self) -> int:
        return self._count

    def is_empty(self) -> bool:
        """Return whether no timer is pending in either time domain."""
        return self._count == 0

    def _index_items(self, kg_start: int, kg_end: int) -> Iterator[tuple[bytes, bytes]]:
        return range_items(self._index, kg_start.to_bytes(2, "big"), kg_end.to_bytes(2, "big"))

    def snapshot(self, checkpoint_id: int | None = None) -> RocksDBTimerSnapshot | None:
        """Copy this subtask's timer index (one range scan): the synchronous part.

        Returns:
            ``None`` for a checkpoint of an incremental keyed backend: its
            RocksDB checkpoint holds the timers already.
        """
        self.flush()
        if self._keyed.incremental and checkpoint_id is not None:
            return None
        return RocksDBTimerSnapshot(scan_timer_index(self._index, self._range))

    def restore(self, blobs: Iterable[tuple[int, bytes]]) -> None:
        """Load canonical timer blobs (of either timer service) from one or many old subtasks.

        Raises:
            UnsupportedStateVersionError: a blob has an unknown format version.
            CorruptStateError: a blob is corrupt or malformed.
            StateError: a key group appears twice or already holds timers.
        """
        event, processing = decode_timer_blobs(blobs, self._range, self._holds)
        for domain, timers in ((EVENT, event), (PROCESSING, processing)):
            for ts, _, kg, key, ns in timers:
                self._put(domain, kg, key, ns, ts, self._index_key(domain, kg, key, ns, ts))

    def _holds(self, kg: int) -> bool:
        self.flush()
        return next(self._index_items(kg, kg + 1), None) is not None
