"""Dead letters in a Kafka topic: reading them, and replaying them into a job's input topic.

:class:`KafkaDeadLetters` follows the steps of
:mod:`weirflow.connectors.dead_letter_replay` with Kafka's own pieces: the
producer of step 1 is a transactional producer (``init_transactions`` fences
an older replay of the same topic and ends its open transaction), the ledger
is a compacted topic keyed by letter id (compaction keeps the last record of
every key, so no letter id ever leaves it), and step 4 is one Kafka
transaction over the input topic and the ledger.

Topics are read with a ``read_committed`` consumer assigned to every
partition from the start, up to the end offset each partition's fetch
reports (not a ListOffsets request: some brokers, Tansu 0.6.0 among them,
answer those wrongly). The ledger is read by the same isolation as the job's
:class:`~weirflow.connectors.KafkaSource` reads the input topic, so a replay
counts as done exactly when the job can see its records. A broker that does
not hide aborted transactions from ``read_committed`` consumers (Tansu 0.6.0)
shows both the records and the ledger entries of a replay that failed
half-way: the job then reads those records, and they are not replayed again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from weirflow.connectors.dead_letter_replay import (
    ReplayReport,
    ledger_topic,
    ledger_value,
    replay_headers,
    replay_producer_id,
    select_letters,
    target_partition,
)
from weirflow.connectors.dead_letters import StoredDeadLetter
from weirflow.connectors.kafka.client import KafkaError, ck, ck_admin, wrap_kafka_exception
from weirflow.errors import ConfigError
from weirflow.eventlog import ConsumedRecord
from weirflow.faults import fault_point

#: Settings of the compacted ledger topic: no letter id is ever dropped.
LEDGER_CONFIG = {"cleanup.policy": "compact"}


def consumed_record(message: Any) -> ConsumedRecord:
    """A ``confluent_kafka.Message`` as the log-neutral record that dead-letter code reads."""
    key, value = message.key(), message.value()
    return ConsumedRecord(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        key=key,
        value=value,
        timestamp_ms=message.timestamp()[1],
        headers=tuple((n, v or b"") for n, v in message.headers() or ()),
    )


class KafkaDeadLetters:
    """:class:`~weirflow.connectors.dead_letter_replay.DeadLetterTopics` of a Kafka cluster.

    Args:
        bootstrap_servers: ``"host:port[,host:port]"``.
        timeout: upper bound of one blocking call (metadata, reading a topic
            to its end, a transaction step).
        client_config: extra ``librdkafka`` settings for its clients.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        timeout: timedelta = timedelta(seconds=30),
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout_s = timeout.total_seconds()
        self.client_config = dict(client_config or {})

    def _config(self, **extra: Any) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers, **extra, **self.client_config}

    def partitions(self, topic: str) -> int | None:
        """The partition count of ``topic``, or ``None`` when it does not exist.

        Raises:
            KafkaError: the broker did not answer within the timeout.
        """
        admin = ck_admin.AdminClient(self._config())
        try:
            # all topics: a request naming the topic makes some brokers (Tansu 0.6.0) create it
            found = admin.list_topics(timeout=self.timeout_s).topics.get(topic)
        except ck.KafkaException as e:
            raise wrap_kafka_exception(e, f"read the metadata of {topic}") from e
        if found is None or found.error is not None or not found.partitions:
            return None
        return len(found.partitions)

    def _require(self, topic: str) -> int:
        n = self.partitions(topic)
        if n is None:
            raise ConfigError(f"Kafka topic {topic!r} does not exist at {self.bootstrap_servers}")
        return n

    def read_topic(self, topic: str, partitions: int) -> list[ConsumedRecord]:
        """Every committed record of ``topic``, partition by partition, in offset order.

        Raises:
            KafkaError: a fetch failed, or the end was not reached within the timeout.
        """
        consumer = ck.Consumer(
            self._config(
                **{
                    "group.id": "weirflow-dlq",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "isolation.level": "read_committed",
                }
            )
        )
        out: list[ConsumedRecord] = []
        try:
            consumer.assign(
                [ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(partitions)]
            )
            at_end: set[int] = set()
            deadline = time.monotonic() + self.timeout_s
            while len(at_end) < partitions:
                if time.monotonic() > deadline:
                    raise KafkaError(f"reading {topic} to its end took over {self.timeout_s} s")
                message = consumer.poll(0.5)
                if message is None:
                    continue
                error = message.error()
                if error is None:
                    out.append(consumed_record(message))
                elif error.code() == ck.KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                else:
                    raise KafkaError(f"reading {topic}: {error.str()}", retriable=error.retriable())
        finally:
            consumer.close()
        return sorted(out, key=lambda r: (r.partition, r.offset))

    def letters(self, topic: str) -> Iterator[StoredDeadLetter]:
        """Every committed letter of ``topic``, partition by partition, in offset order.

        Raises:
            ConfigError: ``topic`` does not exist.
            KafkaError: the topic could not be read to its end.
        """
        records = self.read_topic(topic, self._require(topic))
        return (StoredDeadLetter.from_record(r) for r in records)

    def replayed_ids(self, topic: str) -> set[str]:
        """Ids (``<topic>/<partition>/<offset>``) of the letters of ``topic`` already replayed.

        Raises:
            KafkaError: the ledger could not be read to its end.
        """
        ledger = ledger_topic(topic)
        partitions = self.partitions(ledger)
        if partitions is None:
            return set()
        return {r.key.decode() for r in self.read_topic(ledger, partitions) if r.key is not None}

    def replay(
        self, topic: str, into: str, where: Mapping[str, str] | None = None, dry_run: bool = False
    ) -> ReplayReport:
        """Append the dead letters of ``topic`` not replayed yet to ``into``, exactly once.

        Args:
            topic: the topic a :class:`~weirflow.connectors.DeadLetterKafkaSink` writes.
            into: the job's input topic.
            where: only letters whose fields equal these (``error_type``, ``operator``).
            dry_run: report what would be replayed; write nothing.

        Returns:
            The :class:`~weirflow.connectors.dead_letter_replay.ReplayReport`.

        Raises:
            ConfigError: either topic does not exist.
            KafkaFencedError: another replay of the same topic started meanwhile
                (nothing of this one was written).
            KafkaError: the broker refused a step (the transaction was aborted).
        """
        partitions = self._require(into)
        producer = None if dry_run else self._producer(topic)
        report = select_letters(self.letters(topic), self.replayed_ids(topic), where, dry_run)
        if producer is not None and report.replayed:
            self._create_ledger(topic)
            self._write(producer, topic, into, partitions, report.replayed)
        return report

    def _producer(self, topic: str) -> Any:
        """Step 1: the replay's transactional producer, fencing older replays of ``topic``."""
        producer = ck.Producer(
            self._config(
                **{
                    "transactional.id": replay_producer_id(topic),
                    "enable.idempotence": True,
                    "acks": "all",
                    "partitioner": "murmur2_random",
                }
            )
        )
        try:
            producer.init_transactions(self.timeout_s)
        except ck.KafkaException as e:
            raise wrap_kafka_exception(e, f"register the replay producer of {topic}") from e
        return producer

    def _create_ledger(self, topic: str) -> None:
        ledger = ledger_topic(topic)
        if self.partitions(ledger) is not None:
            return
        admin = ck_admin.AdminClient(self._config())
        future = admin.create_topics([ck_admin.NewTopic(ledger, 1, -1, config=LEDGER_CONFIG)])
        try:
            future[ledger].result(self.timeout_s)
        except ck.KafkaException as e:
            if e.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                raise wrap_kafka_exception(e, f"create the ledger topic {ledger}") from e
        deadline = time.monotonic() + self.timeout_s
        # a new topic reaches every broker's metadata a moment after its creation returns
        while self.partitions(ledger) is None:
            if time.monotonic() > deadline:
                raise KafkaError(f"the ledger topic {ledger} did not appear", retriable=True)
            time.sleep(0.05)

    def _write(
        self,
        producer: Any,
        topic: str,
        into: str,
        partitions: int,
        letters: list[StoredDeadLetter],
    ) -> None:
        """Step 4: the replayed records and their ledger records in one transaction."""
        errors: list[str] = []

        def delivered(err: Any, message: Any) -> None:
            if err is not None:
                errors.append(f"{message.topic()}/{message.partition()}: {err.str()}")

        ledger = ledger_topic(topic)
        try:
            producer.begin_transaction()
            for x in letters:
                kwargs: dict[str, Any] = {}
                partition = target_partition(x, into, partitions)
                if partition is not None:
                    kwargs["partition"] = partition
                producer.produce(
                    into,
                    value=x.value,
                    key=x.key,
                    timestamp=x.timestamp_ms,
                    headers=list(replay_headers(x)),
                    on_delivery=delivered,
                    **kwargs,
                )
                producer.produce(
                    ledger,
                    value=ledger_value(x, into),
                    key=x.letter_id.encode(),
                    on_delivery=delivered,
                )
            producer.flush(self.timeout_s)
            if errors:
                raise KafkaError(f"replay into {into} not delivered: {'; '.join(errors[:5])}")
            fault_point("replay_commit")
            producer.commit_transaction(self.timeout_s)
        except (ck.KafkaException, KafkaError, BufferError) as e:
            self._abort(producer)
            if isinstance(e, ck.KafkaException):
                raise wrap_kafka_exception(e, f"replay {topic} into {into}") from e
            raise

    def _abort(self, producer: Any) -> None:
        """End a failed replay's transaction; a fenced or fatal producer has none to end."""
        with contextlib.suppress(ck.KafkaException):
            producer.abort_transaction(self.timeout_s)
