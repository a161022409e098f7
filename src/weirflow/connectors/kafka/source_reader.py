"""The reader of :class:`~weirflow.connectors.kafka.KafkaSource`: one source subtask's partitions.

See :mod:`weirflow.connectors.kafka.source` for the invariants (positions,
offsets copied to the group after checkpoints, bounded mode, discovery).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from weirflow.connectors.base import SourceBatch, decode_values
from weirflow.connectors.kafka.client import (
    DEFAULT_TIMEOUT_S,
    KafkaError,
    ck,
    parse_split,
    split_id,
    wrap_kafka_exception,
)
from weirflow.records import LogPosition

if TYPE_CHECKING:
    from weirflow.connectors.kafka.source import KafkaSource

log = logging.getLogger("weirflow.connectors.kafka")

#: Records a reader holds fetched but not yet handed out, per poll batch size.
_BUFFER_BATCHES = 4


def _position(message: Any) -> LogPosition:
    """Where a ``confluent_kafka.Message`` was read."""
    return LogPosition(message.topic(), message.partition(), message.offset())


class KafkaSourceReader:
    """Reads the partitions of one source subtask through one ``confluent_kafka.Consumer``.

    Fetched records wait in a per-split buffer (at most
    ``_BUFFER_BATCHES × max_records`` in all) until ``poll`` hands them out,
    one split per batch.

    Attributes:
        newly_finished: bounded splits that reached their end since the
            source operator last looked (it releases their watermark).
        with_headers: batches carry each record's headers (see :meth:`include_headers`).
    """

    def __init__(
        self, source: KafkaSource, splits: list[str], positions: Mapping[str, Any]
    ) -> None:
        self.source = source
        self.splits = list(splits)
        self.consumer = ck.Consumer(source.consumer_config())
        self.position: dict[str, int] = {}
        self.end: dict[str, int] = {}
        self.buffers: dict[str, deque[Any]] = {}
        self.newly_finished: list[str] = []
        self.with_headers = False
        self._done: set[str] = set()
        self._snapshot: dict[str, int] = {}
        self._buffered = 0
        self._next = 0
        # Discovery: a new partition q of a topic that had n partitions at
        # start belongs to the reader holding "<topic>/<q % n>"; a new topic
        # (pattern subscriptions) to the reader holding the first split.
        listed = source.list_splits()
        self._initial_counts: dict[str, int] = {}
        for s in listed:
            t, _ = parse_split(s)
            self._initial_counts[t] = self._initial_counts.get(t, 0) + 1
        self._known = set(listed)
        self._owns_new_topics = bool(listed) and listed[0] in self.splits
        interval = source.options.discovery_interval
        self._discover_every_ms = (
            None if interval is None or source.bounded else interval // timedelta(milliseconds=1)
        )
        self._last_discovery_ms = source.options.clock()
        self._assign(self.splits, positions)

    def include_headers(self) -> None:
        """Hand out each record's headers in the batches from now on (tracing); a header
        without a value becomes empty bytes."""
        self.with_headers = True

    def _start_offsets(self, splits: list[str], positions: Mapping[str, Any]) -> dict[str, int]:
        """Offsets to start ``splits`` at: checkpointed positions, else ``options.start``."""
        out = {s: int(positions[s]) for s in splits if s in positions}
        rest = [s for s in splits if s not in out]
        if not rest:
            return out
        start = self.source.options.start
        tps = [ck.TopicPartition(*parse_split(s)) for s in rest]
        try:
            if isinstance(start, int):
                for tp in tps:
                    tp.offset = start
                found = self.consumer.offsets_for_times(tps, timeout=DEFAULT_TIMEOUT_S)
                for tp in found:
                    out[split_id(tp.topic, tp.partition)] = tp.offset
            elif start == "committed" and self.source.group_id:
                for tp in self.consumer.committed(tps, timeout=DEFAULT_TIMEOUT_S):
                    if tp.offset >= 0:
                        out[split_id(tp.topic, tp.partition)] = tp.offset
        except ck.KafkaException as e:
            raise wrap_kafka_exception(e, "look up start offsets") from e
        logical = ck.OFFSET_END if start == "latest" else ck.OFFSET_BEGINNING
        return {s: out.get(s, logical) for s in splits}

    def _assign(self, splits: list[str], positions: Mapping[str, Any]) -> None:
        """Add ``splits`` to the consumer's assignment at their start offsets."""
        if not splits:
            return
        starts = self._start_offsets(splits, positions)
        tps = [ck.TopicPartition(*parse_split(s), starts[s]) for s in splits]
        try:
            self.consumer.incremental_assign(tps)
        except ck.KafkaException as e:
            raise wrap_kafka_exception(e, f"assign {splits}") from e
        for s in splits:
            self.buffers[s] = deque()
            # A logical start (earliest/latest, negative) becomes a real offset
            # with the first fetched message of the split.
            self.position[s] = starts[s]

    def _fetch(self, max_records: int) -> None:
        """Move records the consumer has fetched into the split buffers (no waiting)."""
        room = _BUFFER_BATCHES * max_records - self._buffered
        if room <= 0:
            return
        try:
            messages = self.consumer.consume(room, 0)
        except ck.KafkaException as e:
            raise wrap_kafka_exception(e, "consume") from e
        for m in messages:
            err = m.error()
            if err is not None and err.code() != ck.KafkaError._PARTITION_EOF:
                raise KafkaError(
                    f"consume {m.topic()}/{m.partition()}: {err.name()}: {err.str()}",
                    retriable=err.retriable(),
                )
            s = split_id(m.topic(), m.partition())
            buf = self.buffers.get(s)
            if buf is None or s in self._done:
                continue
            if self.position[s] < 0:
                self.position[s] = m.offset()
            buf.append(m)
            if err is None:
                self._buffered += 1
            if self.source.bounded and s not in self.end:
                self._record_end(s)

    def _record_end(self, split: str) -> None:
        """Take the end offset of a bounded split from the first fetch response."""
        _, hi = self.consumer.get_watermark_offsets(
            ck.TopicPartition(*parse_split(split)), cached=True
        )
        if hi >= 0:
            self.end[split] = hi

    def poll(self, max_records: int, order: Sequence[str] | None = None) -> SourceBatch | None:
        """Return up to ``max_records`` records of one split, or ``None`` when none is ready now.

        Args:
            max_records: batch size limit.
            order: splits to try first (the source operator's split
                alignment); the other splits follow round robin.

        Raises:
            KafkaError: the consumer reported an error other than end of partition.
        """
        self._maybe_discover()
        self._fetch(max_records)
        n = len(self.splits)
        rr = [self.splits[(self._next + k) % n] for k in range(n)]
        preferred = set(order or ())
        candidates = [*(order or ()), *(s for s in rr if s not in preferred)]
        # A split is marked finished on the poll after its last batch, never with it:
        # the source operator releases a finished split's watermark before it emits
        # the batch, which would make that last batch late.
        for split in candidates:
            self._check_finished(split)
        for split in candidates:
            batch = self._take(split, max_records)
            if batch is not None:
                self._next = (self.splits.index(split) + 1) % n
                return batch
        return None

    def _take(self, split: str, max_records: int) -> SourceBatch | None:
        """Hand out buffered records of ``split``; an end-of-partition mark moves the
        position past trailing transaction markers."""
        buf = self.buffers.get(split)
        if not buf:
            return None
        limit = max_records
        if self.source.bounded:
            if split not in self.end:
                self._record_end(split)
            end = self.end.get(split)
            if end is None:
                return None
            limit = min(limit, end - self.position[split])
        end = self.end.get(split, -1) if self.source.bounded else -1
        messages: list[Any] = []
        while buf and len(messages) < limit:
            m = buf[0]
            if m.error() is not None:
                buf.popleft()
                off = m.offset() if end < 0 else min(m.offset(), end)
                self.position[split] = max(self.position[split], off)
                continue
            if end >= 0 and m.offset() >= end:
                break
            buf.popleft()
            self._buffered -= 1
            messages.append(m)
            self.position[split] = m.offset() + 1
        if not messages:
            return None
        values = [m.value() for m in messages]
        timestamps = [m.timestamp()[1] for m in messages]
        headers = (
            [tuple((n, v or b"") for n, v in m.headers() or ()) for m in messages]
            if self.with_headers
            else None
        )
        decode = self.source.decode
        if decode is None:
            return SourceBatch(split, values, timestamps, (), headers)
        values, timestamps, failures, headers = decode_values(
            decode, values, timestamps, lambda i: _position(messages[i]), headers
        )
        return SourceBatch(split, values, timestamps, failures, headers)

    def _check_finished(self, split: str) -> None:
        if not self.source.bounded or split in self._done:
            return
        end = self.end.get(split)
        if end is not None and self.position[split] >= end:
            self._done.add(split)
            self.newly_finished.append(split)
            buf = self.buffers[split]
            self._buffered -= sum(1 for m in buf if m.error() is None)
            buf.clear()
            self.consumer.pause([ck.TopicPartition(*parse_split(split))])

    def _maybe_discover(self) -> None:
        """Every ``discovery_interval``, assign new partitions this reader owns."""
        if self._discover_every_ms is None:
            return
        now = self.source.options.clock()
        if now - self._last_discovery_ms < self._discover_every_ms:
            return
        self._last_discovery_ms = now
        current = self.source.current_partitions(self.consumer)
        mine = []
        for s in current:
            if s in self._known:
                continue
            self._known.add(s)
            topic, part = parse_split(s)
            n0 = self._initial_counts.get(topic)
            owner = (
                self._owns_new_topics if n0 is None else split_id(topic, part % n0) in self.splits
            )
            if owner:
                mine.append(s)
        if mine:
            log.info("discovered new Kafka partitions %s", mine)
            self._assign(mine, {})
            self.splits.extend(mine)

    def finished(self) -> bool:
        """Bounded: every split reached the end offset seen at start."""
        return self.source.bounded and all(s in self._done for s in self.splits)

    def positions(self) -> dict[str, Any]:
        """Next offset to hand out, per split; a split not fetched yet from a logical
        start (earliest/latest) is left out, so a restore starts it the same way."""
        self._snapshot = {s: o for s, o in self.position.items() if o >= 0}
        return dict(self._snapshot)

    def lag(self) -> dict[str, int]:
        """Records behind, per split: end offset (from the last fetch response) − position.

        Returns:
            split → lag in records; splits not fetched yet are left out.
        """
        out = {}
        for s in self.splits:
            _, hi = self.consumer.get_watermark_offsets(
                ck.TopicPartition(*parse_split(s)), cached=True
            )
            pos = self.position[s]
            if hi >= 0 and pos >= 0:
                out[s] = max(0, hi - pos)
        return out

    def _commit(self, offsets: Mapping[str, int], checkpoint_id: int | None) -> None:
        if not self.source.group_id or not offsets:
            return
        meta = json.dumps({"checkpoint": checkpoint_id})
        tps = [ck.TopicPartition(*parse_split(s), o, metadata=meta) for s, o in offsets.items()]
        try:
            self.consumer.commit(offsets=tps, asynchronous=False)
        except ck.KafkaException as e:
            raise wrap_kafka_exception(e, f"commit offsets of {self.source.group_id}") from e

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Copy the checkpointed positions to the consumer group (lag monitoring only).

        A failed commit is logged, not raised: the checkpoint holds the
        positions, so a failing group commit only delays lag reporting.
        """
        try:
            self._commit(self._snapshot, checkpoint_id)
        except KafkaError as e:
            log.warning(
                "could not copy positions of checkpoint %d to the group: %s", checkpoint_id, e
            )

    def commit_read_positions(self) -> None:
        """At-most-once: commit what was handed out so far to the group, before processing.

        Raises:
            KafkaError: the commit failed (the task fails rather than risk duplicates).
        """
        self._commit({s: o for s, o in self.position.items() if o >= 0}, None)

    def close(self) -> None:
        """Close the consumer (it never joined the group, so this costs no rebalance)."""
        self.consumer.close()
