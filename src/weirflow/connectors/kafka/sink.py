"""Kafka sink: idempotent at-least-once, or exactly-once through transactions.

``exactly_once`` is a two-phase-commit sink. ``confluent-kafka`` cannot
resume another producer instance's open transaction (Flink does so through
the Java client's internals), so recovery does not depend on one:

1. records written between barriers ``n-1`` and ``n`` are staged in memory;
   on barrier ``n`` (pre-commit) they become checkpoint ``n``'s committable
   and go into the sink's checkpointed state — the Kafka records themselves,
   so that a restore can write them again;
2. one transactional producer per sink subtask, ``transactional.id``
   ``"<prefix>.<subtask>"`` (prefix ``"<job>.<operator>"``), writes the
   staged records of every checkpoint up to ``n`` in one transaction when
   ``n`` completes, and commits it at once (a transaction is open only
   inside ``commit``);
3. each transaction also commits, through ``send_offsets_to_transaction``,
   an offset of the sink-owned group ``"weirflow-sink.<transactional.id>.<run>"``
   (``run``: a token created on a fresh start and kept in the checkpointed
   state, so a new run of the same job never reads an old run's progress):
   the offset is the checkpoint id, so the last committed checkpoint is
   recorded atomically with its records. The id is also in the offset
   metadata, for people reading the group; it is not relied on, because some
   brokers (Tansu 0.6.0) drop offset metadata;
4. before a restore, :meth:`KafkaSink.commits_after` reads those groups:
   a commit newer than the restored checkpoint means its output would be
   written twice, and the restore is refused unless the run allows it;
5. on restore each restored subtask's transactional id is initialised
   (fencing any zombie and ending its open transaction); at the first barrier
   its last committed checkpoint is read from the sink-owned group, and only
   the restored committables newer than it are written again, in one
   transaction that records them as committed (:meth:`KafkaSinkWriter.recover`).

The price is that a checkpoint holds the output records of its interval.

Every transaction runs behind the sink's :class:`~weirflow.connectors.Resilience`
(retries with backoff, a circuit breaker), retrying only what is safe
(:meth:`KafkaSinkWriter._transaction`): a commit that failed with a
retriable error is committed again (the broker ends an already committed
transaction once); any other failure inside the transaction aborts it and
writes the whole transaction again in a new one, never producing into an
aborted transaction; a fenced producer or a fatal error is not retried.
While the breaker is open the commit waits, so the sink takes no new input
and backpressure holds the sources.

``at_least_once`` uses an idempotent producer (``enable.idempotence``,
``acks=all``) and flushes on every barrier; a delivery error fails the task.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from weirflow.connectors.base import LaterCommits, SinkRestore
from weirflow.connectors.kafka.client import ck, wrap_kafka_exception
from weirflow.connectors.kafka.sink_writer import KafkaRecord, KafkaSinkWriter, progress_group
from weirflow.connectors.resilience import Resilience
from weirflow.errors import ConfigError
from weirflow.records import RecordHeaders

Guarantee = Literal["exactly_once", "at_least_once"]


def encode_default(value: Any) -> bytes:
    """Encode a record for Kafka: bytes as is, ``str`` as UTF-8, anything else as JSON."""
    if type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode()
    return json.dumps(value, separators=(",", ":"), default=repr).encode()


@dataclass(frozen=True)
class KafkaSinkOptions:
    """Less common settings of :class:`KafkaSink`.

    Attributes:
        transactional_id_prefix: prefix of the stable ``transactional.id``
            (``"<prefix>.<subtask>"``); default ``"<job>.<operator>"``. Two
            jobs writing transactionally must not share it.
        headers: ``record -> [(name, bytes)]`` Kafka headers, or ``None``.
        timeout: upper bound of one blocking producer call (flush,
            transaction step).
        client_config: extra ``librdkafka`` producer settings.
        resilience: retries and circuit breaker of the transactions (default:
            :class:`Resilience`); its ``startup_ramp`` paces a restored writer.
    """

    transactional_id_prefix: str | None = None
    headers: Callable[[Any], Sequence[tuple[str, bytes]]] | None = None
    timeout: timedelta = timedelta(seconds=30)
    client_config: Mapping[str, Any] = field(default_factory=dict)
    resilience: Resilience = field(default_factory=Resilience)


class KafkaSink:
    """Writes records to one Kafka topic.

    Args:
        bootstrap_servers: ``"host:port[,host:port]"``.
        topic: the topic (must exist).
        key: ``record -> key`` (``bytes``/``str``/``None``); keyed records go
            to partitions by murmur2 of the key (as the Java client does),
            records without a key are spread.
        encode: ``record -> bytes`` value (default: bytes as is, ``str`` as
            UTF-8, anything else as JSON).
        guarantee: ``exactly_once`` (transactions committed on checkpoint
            completion) or ``at_least_once`` (idempotent producer).
        options: the rest (:class:`KafkaSinkOptions`).

    Raises:
        ConfigError: an unknown guarantee.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        key: Callable[[Any], bytes | str | None] | None = None,
        encode: Callable[[Any], bytes] | None = None,
        guarantee: Guarantee = "exactly_once",
        options: KafkaSinkOptions | None = None,
    ) -> None:
        if guarantee not in ("exactly_once", "at_least_once"):
            raise ConfigError(f"guarantee must be exactly_once or at_least_once, got {guarantee!r}")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.key = key
        self.encode = encode or encode_default
        self.guarantee = guarantee
        self.options = options or KafkaSinkOptions()

    def to_records(
        self,
        values: list[Any],
        timestamps: list[int] | None,
        headers: list[RecordHeaders] | None = None,
    ) -> list[KafkaRecord]:
        """Encode ``values`` as ``[key, value, timestamp_ms, headers]`` lists (plain data).

        ``headers`` (tracing on) are each record's own headers; those of
        ``options.headers`` follow them.
        """
        enc, keyf, hdrf = self.encode, self.key, self.options.headers
        ts = timestamps or [None] * len(values)
        out = []
        for i, (v, t) in enumerate(zip(values, ts, strict=True)):
            k = keyf(v) if keyf is not None else None
            if type(k) is str:
                k = k.encode()
            h = [[n, b] for n, b in hdrf(v)] if hdrf is not None else None
            if headers is not None and headers[i]:
                h = [[n, b] for n, b in headers[i]] + (h or [])
            out.append([k, enc(v), t, h])
        return out

    def producer_config(self, transactional_id: str | None) -> dict[str, Any]:
        """The ``librdkafka`` settings of a writer's producer (plain dict)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 5,
        }
        if transactional_id is not None:
            conf["transactional.id"] = transactional_id
            conf["transaction.timeout.ms"] = 60_000
        conf.update(self.options.client_config)
        return conf

    def last_committed(self, tid: str, run: str) -> int:
        """The last checkpoint id committed by ``tid`` in run ``run`` (0 when none).

        Raises:
            KafkaError: the broker did not answer.
        """
        c = ck.Consumer(
            {"bootstrap.servers": self.bootstrap_servers, "group.id": progress_group(tid, run)}
        )
        try:
            tp = c.committed(
                [ck.TopicPartition(self.topic, 0)], timeout=self.options.timeout.total_seconds()
            )[0]
        except ck.KafkaException as e:
            raise wrap_kafka_exception(e, f"read progress of {tid}") from e
        finally:
            c.close()
        return max(0, tp.offset)

    def commits_after(self, at: SinkRestore) -> LaterCommits | None:
        """Read the progress groups of the restored subtasks' transactional ids; the
        number of records committed is not known (``records`` is ``None``).

        Raises:
            KafkaError: the broker did not answer.
        """
        if self.guarantee != "exactly_once":
            return None
        prefix = self.options.transactional_id_prefix or f"{at.job}.{at.operator}"
        done = [
            self.last_committed(f"{prefix}.{old}", state["run"])
            for old, state in sorted((at.restored or {}).items())
            if state
        ]
        newest = max(done, default=0)
        if newest <= at.checkpoint_id:
            return None
        return LaterCommits(newest, None, f"Kafka topic {self.topic!r}")

    def create_writer(
        self, job: str, operator: str, subtask: int, parallelism: int, restored: Any | None
    ) -> KafkaSinkWriter:
        """Create one sink subtask's writer; with ``exactly_once`` it first recovers
        the restored subtasks' committables (see the module docstring).

        Args:
            restored: ``old subtask -> state`` as returned by ``pre_commit`` at
                the restored checkpoint, or ``None`` on a fresh start.

        Raises:
            KafkaError: the broker refused initialisation or the recovery transaction.
        """
        prefix = self.options.transactional_id_prefix or f"{job}.{operator}"
        return KafkaSinkWriter(self, prefix, subtask, restored or {})


__all__ = ["Guarantee", "KafkaSink", "KafkaSinkOptions", "encode_default", "progress_group"]
