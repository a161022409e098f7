"""One Kafka sink subtask's writer: staging, transactions and their retries.

The protocol is described in :mod:`weirflow.connectors.kafka.sink`; this
module holds :class:`KafkaSinkWriter`, which carries it out, and the guarded
transaction (:meth:`KafkaSinkWriter._transaction`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from weirflow.connectors.kafka.client import (
    KafkaDeliveryError,
    KafkaError,
    ck,
    wrap_kafka_exception,
)
from weirflow.connectors.two_phase import StoresHeaders, TwoPhaseCommitWriter
from weirflow.errors import ConfigError
from weirflow.faults import fault_point

if TYPE_CHECKING:
    from weirflow.connectors.kafka.sink import KafkaSink

log = logging.getLogger("weirflow.connectors.kafka")

#: One Kafka record as kept in checkpoints: ``[key, value, timestamp_ms, headers]``.
KafkaRecord = list[Any]
#: Format version of the writer's checkpointed state.
STATE_VERSION = 1


def progress_group(transactional_id: str, run: str) -> str:
    """The sink-owned consumer group whose committed offset (on partition 0 of the sink's
    topic) is the last checkpoint id committed by ``transactional_id`` in run ``run``."""
    return f"weirflow-sink.{transactional_id}.{run}"


@dataclass(frozen=True)
class _Txn:
    """One transaction to write: what a failed attempt writes again in full."""

    producer: Any
    tid: str
    run: str
    checkpoint_id: int
    records: list[list[KafkaRecord]]
    what: str


class KafkaSinkWriter(StoresHeaders, TwoPhaseCommitWriter[list[KafkaRecord]]):
    """One sink subtask's writer (see :class:`KafkaSink` and :mod:`weirflow.connectors.kafka.sink`).

    A committable is the list of records staged for its checkpoint.

    Attributes:
        transactional_id: the stable id (exactly-once), else ``None``.
        resent: records written again during recovery (for tests and logs).
    """

    def __init__(
        self, sink: KafkaSink, prefix: str, subtask: int, restored: Mapping[int, Any]
    ) -> None:
        resilience = sink.options.resilience
        super().__init__(
            exactly_once=sink.guarantee == "exactly_once",
            guard=resilience.guard(f"{prefix}.{subtask}", _not_retriable),
            ramp=resilience.ramp() if restored else None,
        )
        # Progress offsets count checkpoints from 1 (0 reads as "nothing committed").
        self.last_checkpoint_id = 0
        self.sink = sink
        self.prefix = prefix
        self.subtask = subtask
        self.timeout_s = sink.options.timeout.total_seconds()
        self.transactional_id = f"{prefix}.{subtask}" if self.exactly_once else None
        # producers with a transaction begun and not yet committed or aborted
        self._open_txn: set[int] = set()
        self.current: list[KafkaRecord] = []
        self.resent = 0
        self._errors: list[str] = []
        self._fatal_delivery = False
        own = restored.get(subtask) or {}
        self.run = own.get("run") or os.urandom(8).hex()
        self.producer = ck.Producer(sink.producer_config(self.transactional_id))
        self._restored: dict[int, Mapping[str, Any]] = {}
        self._old_producers: dict[int, Any] = {}
        if self.exactly_once:
            self._init_transactions(self.producer, self.transactional_id)  # type: ignore[arg-type]
            self.restore(restored)

    def _restore(self, restored: Mapping[int, Any]) -> None:
        """Fence the restored old subtasks' transactional ids; their committables are
        written again at the first barrier or commit (:meth:`recover`)."""
        for old, state in sorted(restored.items()):
            if not state:
                continue
            if state.get("version") != STATE_VERSION:
                raise ConfigError(f"unknown Kafka sink state version {state.get('version')!r}")
            self._restored[old] = state
            if old != self.subtask:
                # Fence now, so the old instance's open transaction ends early.
                tid = f"{self.prefix}.{old}"
                producer = ck.Producer(self.sink.producer_config(tid))
                self._init_transactions(producer, tid)
                self._old_producers[old] = producer

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            return
        if err.fatal() or not err.retriable():
            self._fatal_delivery = True
        if len(self._errors) < 10:
            self._errors.append(f"{msg.topic()}/{msg.partition()}: {err.name()}: {err.str()}")

    def _check_delivery(self) -> None:
        if self._errors:
            errors, self._errors = self._errors, []
            retriable, self._fatal_delivery = not self._fatal_delivery, False
            raise KafkaDeliveryError(
                f"{self.sink.topic}: records not delivered: {errors}", retriable=retriable
            )

    def _init_transactions(self, producer: Any, tid: str) -> None:
        """Register ``tid``: fences older instances and ends their open transaction."""
        try:
            producer.init_transactions(self.timeout_s)
        except ck.KafkaException as e:
            raise wrap_kafka_exception(e, f"init transactions of {tid}") from e

    def _produce(self, producer: Any, records: list[KafkaRecord]) -> None:
        topic = self.sink.topic
        for k, v, t, h in records:
            kwargs: dict[str, Any] = {"key": k, "value": v, "on_delivery": self._on_delivery}
            if t is not None:
                kwargs["timestamp"] = t
            if h:
                kwargs["headers"] = [(n, b) for n, b in h]
            try:
                producer.produce(topic, **kwargs)
            except BufferError:
                # The local queue is full: wait for deliveries (bounded), then retry once.
                producer.flush(self.timeout_s)
                producer.produce(topic, **kwargs)
            except ck.KafkaException as e:
                raise wrap_kafka_exception(e, f"produce to {topic}") from e
        producer.poll(0)

    def _flush_producer(self, producer: Any) -> None:
        what = f"flush to {self.sink.topic}"
        try:
            left = producer.flush(self.timeout_s)
        except ck.KafkaException as e:
            raise wrap_kafka_exception(e, what) from e
        except SystemError as e:
            # confluent-kafka runs the delivery callback while a fatal error (a fenced
            # producer) is already raised, and reports that as SystemError caused by it.
            cause = e.__cause__ or e.__context__
            if isinstance(cause, ck.KafkaException):
                raise wrap_kafka_exception(cause, what) from e
            raise
        self._check_delivery()
        if left:
            raise KafkaDeliveryError(
                f"{self.sink.topic}: {left} record(s) not acknowledged within {self.timeout_s} s",
                retriable=True,
            )

    def _transaction(self, txn: _Txn) -> None:
        """Write ``txn.records`` and record ``txn.checkpoint_id`` in ``txn.tid``'s progress
        group in one transaction, behind the guard.

        Steps (each guarded call is safe to run again): 1. abort what a failed
        attempt left open, begin, produce, flush, send the progress offset; a
        failure there is retried from the start (after the abort); 2. commit; a
        retriable failure commits again, one that needs an abort aborts and
        goes back to step 1.

        Raises:
            KafkaFencedError: a newer instance took over ``tid`` (not retried).
            KafkaError: a fatal or non-retriable error, or the retries ran out.
            BreakerOpenError: the breaker stayed open through every attempt.
        """
        for _ in range(self.sink.options.resilience.retry.max_attempts):
            self._call_guarded(lambda: self._write_transaction(txn))
            if self._call_guarded(lambda: self._end_transaction(txn)):
                return
        raise KafkaError(f"{txn.what} of {txn.tid}: aborted on every attempt")

    def _write_transaction(self, txn: _Txn) -> None:
        producer, tid, what = txn.producer, txn.tid, txn.what
        self._abort_leftover(producer, tid)
        self._errors, self._fatal_delivery = [], False
        try:
            producer.begin_transaction()
        except ck.KafkaException as e:
            raise wrap_kafka_exception(e, f"begin {what} transaction of {tid}") from e
        self._open_txn.add(id(producer))
        for recs in txn.records:
            self._produce(producer, recs)
        # Delivered before the offsets, so that (a) a delivery error aborts nothing
        # half-recorded and (b) the second "sink_commit" fault site below (the
        # first is just before commit()) kills with records in an open transaction.
        self._flush_producer(producer)
        fault_point("sink_commit")
        meta = json.dumps({"run": txn.run, "checkpoint": txn.checkpoint_id})
        offsets = [ck.TopicPartition(self.sink.topic, 0, txn.checkpoint_id, metadata=meta)]
        group = ck.Consumer(
            {
                "bootstrap.servers": self.sink.bootstrap_servers,
                "group.id": progress_group(tid, txn.run),
            }
        )
        try:
            producer.send_offsets_to_transaction(
                offsets, group.consumer_group_metadata(), self.timeout_s
            )
        except ck.KafkaException as e:
            raise wrap_kafka_exception(e, f"{what} offsets of {tid}") from e
        finally:
            group.close()

    def _abort_leftover(self, producer: Any, tid: str) -> None:
        # A failed attempt's transaction is aborted before anything is produced again.
        if id(producer) not in self._open_txn:
            return
        try:
            producer.abort_transaction(self.timeout_s)
        except ck.KafkaException as e:
            raise wrap_kafka_exception(e, f"abort transaction of {tid}") from e
        self._open_txn.discard(id(producer))

    def _end_transaction(self, txn: _Txn) -> bool:
        """Commit the open transaction; ``False`` when it had to be aborted instead."""
        producer, tid, what = txn.producer, txn.tid, txn.what
        try:
            producer.commit_transaction(self.timeout_s)
        except ck.KafkaException as e:
            err: Any = e.args[0] if e.args else None
            if isinstance(err, ck.KafkaError) and err.txn_requires_abort():
                log.warning("%s: %s needs an abort (%s); writing it again", tid, what, err.str())
                self._abort_leftover(producer, tid)
                return False
            raise wrap_kafka_exception(e, f"{what} of {tid}") from e
        self._open_txn.discard(id(producer))
        self._check_delivery()
        return True

    def last_committed(self, tid: str, run: str) -> int:
        """:meth:`KafkaSink.last_committed`."""
        return self.sink.last_committed(tid, run)

    def recover(self) -> None:
        """Write again the restored committables newer than each old subtask's last commit.

        Runs once, at the first ``pre_commit``/``commit``/``finish`` after a
        restore rather than in the constructor: by then every sink subtask has
        initialised its transactional id, so no dead instance's transaction is
        still open, and none of this attempt is open yet (transactions live only
        inside ``commit``). Some brokers (Tansu 0.6.0) hold back offsets
        committed in a transaction while another transaction is open on the
        same partition, so reading progress earlier could see an old value.

        Steps per restored subtask: 1. read its last committed checkpoint from
        its progress group; 2. write the newer staged records and record the
        newest as committed, in one transaction.

        Raises:
            KafkaError: the broker refused the recovery transaction.
        """
        while self._restored:
            old = min(self._restored)
            self._recover_one(old, self._restored[old])
            del self._restored[old]
            producer = self._old_producers.pop(old, None)
            if producer is not None:
                producer.flush(self.timeout_s)

    def _recover_one(self, old: int, state: Mapping[str, Any]) -> None:
        tid = f"{self.prefix}.{old}"
        producer = self._old_producers.get(old, self.producer)
        run = state["run"]
        done = self.last_committed(tid, run)
        todo = [(int(c), recs) for c, recs in state["staged"] if int(c) > done]
        if not todo:
            return
        recs = [r for _, r in todo]
        self._transaction(_Txn(producer, tid, run, todo[-1][0], recs, "recovery commit"))
        self.resent += sum(map(len, recs))
        again = [c for c, _ in todo]
        log.info("%s: wrote checkpoints %s again (last committed: %d)", tid, again, done)

    def _settle(self) -> None:
        self.recover()

    def _write_direct(
        self, values: list[Any], timestamps: list[int] | None, headers: list[Any] | None = None
    ) -> None:
        """At least once: produce the records.

        Raises:
            KafkaDeliveryError: an earlier record was not delivered.
        """
        self._produce(self.producer, self.sink.to_records(values, timestamps, headers))
        self._check_delivery()

    def _flush(self) -> None:
        """At least once, on a barrier or at the end: wait for every delivery.

        Raises:
            KafkaDeliveryError: records were not acknowledged.
        """
        self._flush_producer(self.producer)

    def _write(
        self, values: list[Any], timestamps: list[int] | None, headers: list[Any] | None = None
    ) -> None:
        """Exactly once: stage the records in memory until their checkpoint completes."""
        self.current.extend(self.sink.to_records(values, timestamps, headers))

    def _prepare(self, checkpoint_id: int) -> list[KafkaRecord]:
        staged, self.current = self.current, []
        return staged

    def _state(self, checkpoint_id: int, committables: list[tuple[int, list[KafkaRecord]]]) -> Any:
        """``{"version", "run", "staged": [[checkpoint_id, records], ...]}``: every
        pre-committed checkpoint not committed yet, with its records."""
        return {
            "version": STATE_VERSION,
            "run": self.run,
            "staged": [[c, recs] for c, recs in committables if recs],
        }

    def _commit(self, checkpoint_id: int, due: list[tuple[int, list[KafkaRecord]]]) -> None:
        """Commit the staged records of ``due`` in one transaction.

        One transaction (:meth:`_transaction`) holds the staged records of every
        checkpoint due and the newest checkpoint id in the progress group.

        Raises:
            KafkaFencedError: a newer instance took over this transactional id.
            KafkaError: the commit failed (the task fails; recovery writes the
                records again unless the progress group shows them committed).
        """
        due = [(c, recs) for c, recs in due if recs]
        if not due:
            return
        start = time.perf_counter()
        records = [recs for _, recs in due]
        tid: str = self.transactional_id  # type: ignore[assignment]
        self._transaction(_Txn(self.producer, tid, self.run, checkpoint_id, records, "commit"))
        self.rows_written += sum(map(len, records))
        self.transactions += 1
        self.transaction_s += time.perf_counter() - start

    def close(self) -> None:
        """Flush what the producer holds; an open transaction is left for fencing to end."""
        self.producer.flush(min(self.timeout_s, 5.0))


def _not_retriable(error: BaseException) -> bool:
    # KafkaError carries the broker's own verdict as ``retriable``; the policy reads it.
    return False
