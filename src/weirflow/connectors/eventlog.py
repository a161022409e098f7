"""Event-log source and sink: the zero-infrastructure stand-ins for Kafka.

``EventLogSource`` reads a topic's partitions (its splits); positions live in
weirflow's checkpoints, and are copied to a consumer group only after a
checkpoint completes, for lag monitoring.

``EventLogSink`` in ``exactly_once`` mode is a two-phase-commit sink on the
event log's transactions (one transactional id per sink subtask):

1. records of checkpoint interval ``n`` go into an open transaction;
2. on barrier ``n`` the transaction is *prepared* (durable, invisible) and
   its handle becomes the subtask's committable in checkpoint ``n``;
3. when ``n`` completes, every prepared transaction up to ``n`` is committed;
4. on restore, the committables of the restored checkpoint are committed
   again (a no-op if done) and every other prepared transaction of the
   subtask's transactional ids is aborted (it belongs to a checkpoint that
   never completed). Registering the producer fences any zombie instance.

Each prepared transaction is stored with its checkpoint id and record
count, so that a restore from an older checkpoint than the sink last
committed is noticed before anything is committed twice
(:meth:`EventLogSink.commits_after`).

In ``at_least_once`` mode records are appended as they come (durable on
return), so a replay after failover may append them again.

Every call of the sink to the log runs behind its
:class:`~weirflow.connectors.Resilience` (retries, circuit breaker): the
log's busy timeout is the resilience's ``call_timeout``, so a write lock
that another process holds past it fails the call with the retriable
:class:`~weirflow.eventlog.LogBusyError`, and the sink waits (backpressure)
instead of failing the job. Each call is safe to run again: a call that
failed wrote nothing (one SQLite transaction), and committing a prepared
transaction twice is a no-op.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

import msgspec

from weirflow.connectors.base import LaterCommits, SinkRestore, SourceBatch, decode_values
from weirflow.connectors.resilience import Resilience
from weirflow.connectors.two_phase import StoresHeaders, TwoPhaseCommitWriter
from weirflow.errors import ConfigError
from weirflow.eventlog import (
    EventLog,
    Record,
    TransactionHandle,
    TransactionStateError,
    UnknownTransactionError,
)
from weirflow.records import LogPosition

log = logging.getLogger("weirflow.connectors")

Guarantee = Literal["exactly_once", "at_least_once"]
_json = msgspec.json.Encoder()


def default_encode(value: Any) -> bytes:
    """Encode a record for the log: bytes as is, ``str`` as UTF-8, anything else as JSON."""
    if type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode()
    return _json.encode(value)


class EventLogSource:
    """Reads one topic of an event log; each partition is a split.

    Args:
        log_dir: the log directory.
        topic: the topic.
        decode: ``bytes -> record`` applied to each value (default: raw bytes).
            A record it raises on follows the ``on_error`` of ``flow.source``:
            a dead letter holding the raw bytes and its
            :class:`~weirflow.records.LogPosition`, or a job failure naming
            topic, partition and offset.
        bounded: stop at the end offsets seen when the reader starts
            (backfills, tests); unbounded sources wait for new records.
        group: consumer group to which positions are committed after each
            completed checkpoint (for ``weirflow log lag``); ``None`` for none.
        isolation: ``read_committed`` (default) or ``read_uncommitted``.

    Event time: the record's ``timestamp_ms`` unless ``flow.source`` is given
    a ``timestamp=`` extractor.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        topic: str,
        decode: Callable[[bytes], Any] | None = None,
        *,
        bounded: bool = True,
        group: str | None = None,
        isolation: Literal["read_committed", "read_uncommitted"] = "read_committed",
    ) -> None:
        self.log_dir = str(log_dir)
        self.topic = topic
        self.decode = decode
        self.bounded = bounded
        self.group = group
        self.isolation = isolation

    def list_splits(self) -> list[str]:
        """One split per partition, ``"<topic>/<partition>"``.

        Raises:
            UnknownTopicError: the topic does not exist (create it with ``weirflow log create``).
        """
        with EventLog(self.log_dir) as lg:
            n = lg.partition_count(self.topic)
        return [f"{self.topic}/{p}" for p in range(n)]

    def committed_positions(self, splits: Sequence[str]) -> dict[str, int]:
        """The consumer group's positions for ``splits`` (at-most-once restarts resume there).

        Raises:
            ConfigError: the source has no ``group``.
        """
        if not self.group:
            raise ConfigError("at_most_once needs EventLogSource(..., group=...) to keep positions")
        with EventLog(self.log_dir) as lg:
            out = {}
            for s in splits:
                p = int(s.rsplit("/", 1)[1])
                c = lg.committed_offset(self.group, self.topic, p)
                out[s] = c if c is not None else lg.start_offset(self.topic, p)
            return out

    def create_reader(
        self, splits: Sequence[str], positions: Mapping[str, Any]
    ) -> EventLogSourceReader:
        """Open a reader over ``splits`` at ``positions`` (default: each partition's start)."""
        return EventLogSourceReader(self, list(splits), positions)


class EventLogSourceReader:
    """Reads the partitions of one source subtask, round robin, one batch per poll.

    Attributes:
        newly_finished: bounded splits that reached their end since the
            source operator last looked (it releases their watermark).
        with_headers: batches carry each record's headers (see :meth:`include_headers`).
    """

    def __init__(
        self, source: EventLogSource, splits: list[str], positions: Mapping[str, Any]
    ) -> None:
        self.source = source
        self.log = EventLog(source.log_dir)
        self.splits = splits
        self.partition = {s: int(s.rsplit("/", 1)[1]) for s in splits}
        # A bounded reader's end offsets are part of its position, so that a restore
        # stops where the original run would have, even if the topic grew since.
        restored = {s: positions[s] for s in splits if s in positions}
        self.position = {
            s: int(restored[s][0] if isinstance(restored[s], list) else restored[s])
            if s in restored
            else self.log.start_offset(source.topic, self.partition[s])
            for s in splits
        }
        self.end = (
            {
                s: int(restored[s][1])
                if isinstance(restored.get(s), list)
                else self.log.end_offset(source.topic, self.partition[s])
                for s in splits
            }
            if source.bounded
            else {}
        )
        self._next = 0
        self._snapshot: dict[str, int] = {}
        self._done: set[str] = set()
        self.newly_finished: list[str] = []
        self.with_headers = False

    def include_headers(self) -> None:
        """Hand out each record's headers in the batches from now on (tracing)."""
        self.with_headers = True

    def poll(self, max_records: int, order: Sequence[str] | None = None) -> SourceBatch | None:
        """Return the next batch of one partition that has records, or ``None``.

        Args:
            max_records: batch size limit.
            order: splits to try first, in this order (the source operator
                passes them by ascending watermark to keep splits aligned in
                event time); round robin when ``None``.
        """
        src = self.source
        n = len(self.splits)
        candidates = (
            order if order is not None else [self.splits[(self._next + k) % n] for k in range(n)]
        )
        for k, split in enumerate(candidates):
            pos = self.position[split]
            limit = max_records
            if src.bounded:
                limit = min(limit, self.end[split] - pos)
                if limit <= 0:
                    if split not in self._done:
                        self._done.add(split)
                        self.newly_finished.append(split)
                    continue
            records = self.log.read(
                src.topic, self.partition[split], pos, max_records=limit, isolation=src.isolation
            )
            if not records:
                continue
            self._next = (self._next + k + 1) % n
            self.position[split] = records[-1].offset + 1
            return self._batch(split, records)
        return None

    def _batch(self, split: str, records: list[Record]) -> SourceBatch:
        """Decode ``records`` of ``split``; records ``decode`` refuses become failures."""
        values = [r.value for r in records]
        timestamps = [r.timestamp_ms for r in records]
        headers = [r.headers for r in records] if self.with_headers else None
        decode = self.source.decode
        if decode is None:
            return SourceBatch(split, values, timestamps, (), headers)
        topic, partition = self.source.topic, self.partition[split]
        values, timestamps, failures, headers = decode_values(
            decode,
            values,
            timestamps,
            lambda i: LogPosition(topic, partition, records[i].offset),
            headers,
        )
        return SourceBatch(split, values, timestamps, failures, headers)

    def finished(self) -> bool:
        """Bounded: every partition reached its end offset at start."""
        return self.source.bounded and all(self.position[s] >= self.end[s] for s in self.splits)

    def positions(self) -> dict[str, Any]:
        """Next offset per split; ``[offset, end offset]`` for a bounded source."""
        self._snapshot = dict(self.position)
        if self.source.bounded:
            return {s: [o, self.end[s]] for s, o in self.position.items()}
        return dict(self.position)

    def lag(self) -> dict[str, int]:
        """Records not yet read per split: end offset − position (one SQLite read per split)."""
        return {
            s: max(
                0,
                self.log.end_offset(self.source.topic, self.partition[s], self.source.isolation)
                - self.position[s],
            )
            for s in self.splits
        }

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Copy the checkpointed positions to the consumer group (lag monitoring only)."""
        if self.source.group and self._snapshot:
            self.log.commit_offsets(
                self.source.group,
                {(self.source.topic, self.partition[s]): o for s, o in self._snapshot.items()},
            )

    def commit_read_positions(self) -> None:
        """At-most-once: commit what was read so far to the consumer group, before processing."""
        self.log.commit_offsets(
            self.source.group,  # type: ignore[arg-type]
            {(self.source.topic, self.partition[s]): o for s, o in self.position.items()},
        )

    def close(self) -> None:
        """Close the log."""
        self.log.close()


class EventLogSink:
    """Writes records to one topic of an event log.

    Args:
        log_dir: the log directory.
        topic: the topic (must exist).
        encode: ``record -> bytes`` (default: :func:`default_encode`).
        key: ``record -> key`` (``bytes``/``str``) choosing the partition by
            stable hash; ``None`` spreads records round robin.
        guarantee: ``exactly_once`` (two-phase commit on checkpoints) or
            ``at_least_once``.
        resilience: retries and circuit breaker of the log calls; its
            ``call_timeout`` bounds the wait for another process's write lock
            (default: :class:`Resilience` with a 30 s call timeout, the log's
            own busy timeout).

    Raises:
        ConfigError: an unknown guarantee.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        topic: str,
        encode: Callable[[Any], bytes] | None = None,
        *,
        key: Callable[[Any], bytes | str | None] | None = None,
        guarantee: Guarantee = "exactly_once",
        resilience: Resilience | None = None,
    ) -> None:
        if guarantee not in ("exactly_once", "at_least_once"):
            raise ConfigError(f"guarantee must be exactly_once or at_least_once, got {guarantee!r}")
        self.log_dir = str(log_dir)
        self.topic = topic
        self.encode = encode or default_encode
        self.key = key
        self.guarantee = guarantee
        self.resilience = resilience or Resilience(call_timeout=timedelta(seconds=30))

    def commits_after(self, at: SinkRestore) -> LaterCommits | None:
        """Sum up what this subtask's transactional ids committed for checkpoints after
        ``at.checkpoint_id`` (the ids of the restored old subtasks included).

        Returns:
            ``None`` in ``at_least_once`` mode, or when nothing was committed after it.
        """
        if self.guarantee != "exactly_once":
            return None
        tids = _transactional_ids(f"{at.job}.{at.operator}", at.subtask, at.restored or {})
        with EventLog(self.log_dir) as lg:
            found = [c for tid in tids if (c := lg.commits_after(tid, at.checkpoint_id))]
        if not found:
            return None
        return LaterCommits(
            max(c.newest_checkpoint_id for c in found),
            sum(c.records for c in found),
            f"topic {self.topic!r} in {self.log_dir}",
        )

    def create_writer(
        self, job: str, operator: str, subtask: int, parallelism: int, restored: Any | None
    ) -> EventLogSinkWriter:
        """Create one sink subtask's writer; it resolves the restored checkpoint's transactions."""
        return EventLogSinkWriter(
            self, f"{job}.{operator}", subtask, parallelism, restored, operator
        )


def _key_bytes(key: Callable[[Any], bytes | str | None] | None, value: Any) -> bytes | None:
    """The partitioning key of ``value`` as bytes (``None``: no key function, or no key)."""
    if key is None:
        return None
    k = key(value)
    return k.encode() if type(k) is str else k


def _transactional_ids(id_prefix: str, subtask: int, restored: Mapping[int, Any]) -> list[str]:
    """The subtask's own transactional id and those of the old subtasks whose state it restored."""
    return sorted({f"{id_prefix}.{subtask}"} | {f"{id_prefix}.{old}" for old in restored})


class EventLogSinkWriter(StoresHeaders, TwoPhaseCommitWriter[TransactionHandle]):
    """One sink subtask's writer (see :class:`EventLogSink`); a committable is the
    prepared transaction's :class:`~weirflow.eventlog.TransactionHandle`."""

    def __init__(
        self,
        sink: EventLogSink,
        id_prefix: str,
        subtask: int,
        parallelism: int,
        restored: Mapping[int, Any] | None,
        operator: str = "sink",
    ) -> None:
        super().__init__(
            exactly_once=sink.guarantee == "exactly_once",
            # the policy's verdict suffices: LogBusyError is retriable, other log errors not
            guard=sink.resilience.guard(f"{operator}[{subtask}/{parallelism}]", lambda e: False),
            ramp=sink.resilience.ramp() if restored is not None else None,
        )
        self.sink = sink
        self.log = EventLog(sink.log_dir, busy_timeout=sink.resilience.call_timeout)
        self.log.partition_count(sink.topic)
        self.id_prefix = id_prefix
        self.subtask = subtask
        self.transactional_id = f"{id_prefix}.{subtask}"
        self.producer = None
        if self.exactly_once:
            self.producer = self._call_guarded(
                lambda: self.log.transactional_producer(self.transactional_id)
            )
            self.restore(restored or {})

    def _restore(self, restored: Mapping[int, Any]) -> None:
        """Commit the restored committables, abort every other prepared transaction (behind
        the guard: committing and aborting again is harmless)."""
        self._call_guarded(lambda: self._resolve(restored))

    def _resolve(self, restored: Mapping[int, Any]) -> None:
        keep: set[tuple[str, int, int]] = set()
        for state in restored.values():
            for h in (state or {}).get("prepared", []):
                handle = TransactionHandle.from_dict(h)
                keep.add((handle.transactional_id, handle.epoch, handle.sequence))
                try:
                    self.log.commit_prepared(handle)
                except UnknownTransactionError:
                    log.warning("committable %s is gone (retention?); skipping", handle)
        for tid in _transactional_ids(self.id_prefix, self.subtask, restored):
            if tid != self.transactional_id:
                self.log.transactional_producer(tid)  # fences a zombie of an old subtask
            for handle in self.log.list_prepared(tid):
                if (handle.transactional_id, handle.epoch, handle.sequence) not in keep:
                    try:
                        self.log.abort_prepared(handle)
                    except TransactionStateError as e:
                        log.error("cannot abort %s: %s", handle, e)

    def _records(
        self, values: list[Any], timestamps: list[int] | None, headers: list[Any] | None = None
    ) -> list[Record]:
        enc = self.sink.encode
        key = self.sink.key
        ts = timestamps or [0] * len(values)
        if headers is not None:
            return [
                Record(enc(v), _key_bytes(key, v), t, h)
                for v, t, h in zip(values, ts, headers, strict=True)
            ]
        if key is None:
            return [Record(enc(v), timestamp_ms=t) for v, t in zip(values, ts, strict=True)]
        return [Record(enc(v), _key_bytes(key, v), t) for v, t in zip(values, ts, strict=True)]

    def _write_direct(
        self, values: list[Any], timestamps: list[int] | None, headers: list[Any] | None = None
    ) -> None:
        """At least once: append (durable on return)."""
        records = self._records(values, timestamps, headers)
        self._call_guarded(lambda: self.log.append(self.sink.topic, records))

    def _begin(self) -> None:
        producer = self.producer
        assert producer is not None
        self._call_guarded(producer.begin)

    def _write(
        self, values: list[Any], timestamps: list[int] | None, headers: list[Any] | None = None
    ) -> None:
        producer = self.producer
        assert producer is not None
        records = self._records(values, timestamps, headers)
        self._call_guarded(lambda: producer.append(self.sink.topic, records))

    def _prepare(self, checkpoint_id: int) -> TransactionHandle:
        producer = self.producer
        assert producer is not None
        return self._call_guarded(lambda: producer.prepare(checkpoint_id))

    def _commit(self, checkpoint_id: int, due: list[tuple[int, TransactionHandle]]) -> None:
        for _, handle in due:
            self._call_guarded(lambda h=handle: self.log.commit_prepared(h))

    def _state(self, checkpoint_id: int, committables: list[tuple[int, TransactionHandle]]) -> Any:
        """``{"prepared": [handle as dict, ...]}``: every prepared, uncommitted transaction."""
        return {"prepared": [h.to_dict() for _, h in committables]}

    def close(self) -> None:
        """Close the log; an open transaction is left for fencing to abort."""
        self.log.close()
