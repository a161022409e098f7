"""Dead letters to Kafka: a sink that writes ``DeadLetter`` records with descriptive headers.

When a letter knows where its source read it (a
:class:`~weirflow.records.LogPosition`: a record a
:class:`~weirflow.connectors.KafkaSource` could not decode), the sink reads
that original record from the same cluster, to copy its key, timestamp and
own headers into the letter and to add the attempts a replayed record
carries: so ``weirflow dlq replay`` puts back the original key, timestamp and
headers, and a record that fails again after a replay is stored with its
attempt count raised. Dead letters are rare, so the extra reads cost nothing
measurable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from weirflow.connectors.dead_letters import (
    TRACEBACK,
    dead_letter_headers,
    own_headers,
    replayed_attempts,
)
from weirflow.connectors.kafka.client import ck
from weirflow.connectors.kafka.dead_letter_replay import consumed_record
from weirflow.connectors.kafka.sink import Guarantee, KafkaSink, KafkaSinkOptions, encode_default
from weirflow.connectors.kafka.sink_writer import KafkaRecord
from weirflow.errors import ConfigError
from weirflow.eventlog import ConsumedRecord
from weirflow.records import DeadLetter, LogPosition, RecordHeaders


class DeadLetterKafkaSink(KafkaSink):
    """A :class:`KafkaSink` for ``dead_letters()`` streams.

    The Kafka value is the original record (bytes as is, ``str`` as UTF-8,
    else JSON, ``repr`` for what JSON cannot hold); the headers are the
    record's own (those a job with tracing passed along, its ``traceparent``
    included), then :func:`dead_letter_headers` and ``weirflow.traceback``.
    The key and timestamp are the original record's when the letter's
    position is in this cluster (see the module docstring). Arguments as
    :class:`KafkaSink` (no ``key``/``encode``/``headers``: they are fixed).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        guarantee: Guarantee = "exactly_once",
        options: KafkaSinkOptions | None = None,
    ) -> None:
        opts = options or KafkaSinkOptions()
        opts = KafkaSinkOptions(
            transactional_id_prefix=opts.transactional_id_prefix,
            timeout=opts.timeout,
            client_config=opts.client_config,
            resilience=opts.resilience,
        )
        super().__init__(bootstrap_servers, topic, guarantee=guarantee, options=opts)

    def to_records(
        self,
        values: list[Any],
        timestamps: list[int] | None,
        headers: list[RecordHeaders] | None = None,
    ) -> list[KafkaRecord]:
        """Encode dead letters as ``[key, value, timestamp_ms, headers]`` lists.

        Raises:
            ConfigError: a value is not a :class:`~weirflow.records.DeadLetter`.
        """
        for v in values:
            if not isinstance(v, DeadLetter):
                raise ConfigError(
                    f"DeadLetterKafkaSink got a {type(v).__name__}: it writes the DeadLetter "
                    "records of a dead_letters() stream; use KafkaSink for others"
                )
        originals = self._originals([v.position for v in values])
        ts = timestamps or [None] * len(values)
        return [
            _letter_record(v, originals.get(v.position), t) for v, t in zip(values, ts, strict=True)
        ]

    def _originals(self, positions: Sequence[Any]) -> dict[LogPosition, ConsumedRecord]:
        """The records at the letters' positions that this cluster holds (others left out)."""
        wanted = sorted({p for p in positions if isinstance(p, LogPosition)})
        if not wanted:
            return {}
        consumer = ck.Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": "weirflow-dead-letters",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                **self.options.client_config,
            }
        )
        found: dict[LogPosition, ConsumedRecord] = {}
        try:
            # all topics: a request naming one makes some brokers (Tansu 0.6.0) create it
            listed = consumer.list_topics(timeout=self.options.timeout.total_seconds()).topics
            for pos in wanted:
                if pos.topic not in listed:
                    continue
                record = self._read_one(consumer, pos)
                if record is not None:
                    found[pos] = record
        finally:
            consumer.close()
        return found

    def _read_one(self, consumer: Any, pos: LogPosition) -> ConsumedRecord | None:
        consumer.assign([ck.TopicPartition(pos.topic, pos.partition, pos.offset)])
        deadline = time.monotonic() + self.options.timeout.total_seconds()
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error() is not None:
                # past the end, or a topic this cluster does not have: no original to copy
                return None
            if message.offset() == pos.offset:
                return consumed_record(message)
            return None
        return None


def _letter_record(
    letter: DeadLetter, original: ConsumedRecord | None, timestamp_ms: int | None
) -> KafkaRecord:
    if original is None:
        headers = [*own_headers(letter.headers), *dead_letter_headers(letter)]
        key = None
        ts = letter.timestamp_ms if letter.timestamp_ms is not None else timestamp_ms
    else:
        attempts = letter.attempts + replayed_attempts(original.headers)
        headers = [*own_headers(original.headers), *dead_letter_headers(letter, attempts)]
        key = original.key
        ts = letter.timestamp_ms if letter.timestamp_ms is not None else original.timestamp_ms
    headers.append((TRACEBACK, letter.traceback.encode()))
    return [key, encode_default(letter.value), ts, [[n, b] for n, b in headers]]
