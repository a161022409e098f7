"""Kafka source: partitions are splits, offsets live in weirflow's checkpoints.

Invariants:

- The position of a split is the offset of the next record the reader will
  hand out (records fetched but not handed out yet do not count), so a
  restore from a checkpoint re-reads exactly what the job had not processed.
- The checkpoint is the source of truth. Offsets are copied to the consumer
  group only after a checkpoint completes, so that standard tools show lag;
  the group is read only on a start with no checkpoint (``start="committed"``)
  and for ``at_most_once``.
- The reader never joins the group (it uses ``assign``): weirflow assigns
  splits, and a join would cost a rebalance (``session.timeout.ms / 2`` on
  some brokers) for nothing.

Event time and watermarks: each partition is a split, so the source
operator keeps one watermark generator per partition (``flow.source(...,
watermarks=WatermarkStrategy...)``; a strategy with an idleness timeout stops
an empty partition from holding the watermark back). Partitions found by
discovery while running are read at once, but join the watermark only after
the next restart (the operator sizes its per-split state when it opens).

Lag: :meth:`KafkaSourceReader.lag` gives, per split, the end offset from the
last fetch response minus the position (plain data, for metrics).

Bounded mode stops at the end offsets *seen at start*, taken from the first
fetch response of each partition (the high watermark, or the last stable
offset under ``read_committed``, that the fetch carries), not from a
ListOffsets request: some Kafka-protocol brokers (Tansu 0.6.0) answer
ListOffsets with a wrong high watermark. Records appended between the
reader's start and that first fetch response are therefore included.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from weirflow.connectors.kafka.client import (
    DEFAULT_TIMEOUT_S,
    ck,
    monotonic_ms,
    parse_split,
    split_id,
    wrap_kafka_exception,
)
from weirflow.connectors.kafka.source_reader import KafkaSourceReader
from weirflow.errors import ConfigError

StartFrom = Literal["committed", "earliest", "latest"]
Isolation = Literal["read_committed", "read_uncommitted"]


@dataclass(frozen=True)
class KafkaSourceOptions:
    """Less common settings of :class:`KafkaSource`.

    Attributes:
        start: where a split starts when the checkpoint has no position for
            it: ``"committed"`` (the group's offset, else earliest),
            ``"earliest"``, ``"latest"``, or an ``int`` timestamp in ms (the
            first record at or after it; brokers that do not implement
            timestamp lookup, such as Tansu 0.6.0, answer offset 0).
        isolation: ``read_committed`` (default: records of aborted or open
            transactions are not read) or ``read_uncommitted``.
        discovery_interval: how often to look for new partitions of the
            subscribed topics (or new topics matching the pattern); ``None``
            turns discovery off.
        client_config: extra ``librdkafka`` consumer settings.
        clock: injected monotonic clock in ms, for the discovery interval.
    """

    start: StartFrom | int = "committed"
    isolation: Isolation = "read_committed"
    discovery_interval: timedelta | None = timedelta(seconds=10)
    client_config: Mapping[str, Any] = field(default_factory=dict)
    clock: Callable[[], int] = monotonic_ms


class KafkaSource:
    """Reads Kafka topics; each partition is a split (``"<topic>/<partition>"``).

    Args:
        bootstrap_servers: ``"host:port[,host:port]"``.
        topics: topic names; give either these or ``pattern``.
        pattern: a regular expression over topic names (matched at start and
            at each discovery).
        group_id: consumer group to which checkpointed offsets are committed
            after each completed checkpoint (lag monitoring), and from which
            ``start="committed"`` and ``at_most_once`` read; ``None`` for none.
        decode: ``bytes -> record`` applied to each value (default: raw bytes).
            A record it raises on follows the ``on_error`` of ``flow.source``:
            a dead letter holding the raw bytes and its
            :class:`~weirflow.records.LogPosition`, or a job failure naming
            topic, partition and offset.
        bounded: stop at the end offsets seen at start (backfills, tests).
        options: the rest (:class:`KafkaSourceOptions`).

    Event time: the record's Kafka timestamp (ms) unless ``flow.source`` is
    given a ``timestamp=`` extractor (event time from a field).

    Raises:
        ConfigError: neither or both of ``topics`` and ``pattern``.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Sequence[str] | None = None,
        *,
        pattern: str | None = None,
        group_id: str | None = None,
        decode: Callable[[bytes], Any] | None = None,
        bounded: bool = False,
        options: KafkaSourceOptions | None = None,
    ) -> None:
        if (topics is None) == (pattern is None):
            raise ConfigError("KafkaSource needs exactly one of topics=[...] or pattern='...'")
        self.bootstrap_servers = bootstrap_servers
        self.topics = list(topics) if topics is not None else None
        self.pattern = re.compile(pattern) if pattern is not None else None
        self.group_id = group_id
        self.decode = decode
        self.bounded = bounded
        self.options = options or KafkaSourceOptions()
        self._listed: list[str] | None = None

    def consumer_config(self, group_id: str | None = None) -> dict[str, Any]:
        """The ``librdkafka`` settings of the reader's consumer (plain dict)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": group_id or self.group_id or "weirflow-unused",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "isolation.level": self.options.isolation,
            "auto.offset.reset": "earliest",
        }
        conf.update(self.options.client_config)
        return conf

    def current_partitions(self, admin: Any) -> list[str]:
        """Ask the broker for the subscribed partitions, as sorted split ids.

        Args:
            admin: a ``confluent_kafka`` client with ``list_topics``.

        Raises:
            KafkaError: the metadata request failed.
        """
        try:
            md = admin.list_topics(timeout=DEFAULT_TIMEOUT_S)
        except ck.KafkaException as e:
            raise wrap_kafka_exception(e, "list topics") from e
        out: list[tuple[str, int]] = []
        for name, t in md.topics.items():
            wanted = (
                name in self.topics
                if self.topics is not None
                else bool(self.pattern and self.pattern.fullmatch(name))
                and not name.startswith("__")
            )
            if wanted and t.error is None:
                out.extend((name, p) for p in t.partitions)
        return [split_id(t, p) for t, p in sorted(out)]

    def list_splits(self) -> list[str]:
        """The subscribed partitions as splits, sorted by topic then partition.

        The list is taken once per process and reused, so every source subtask
        of a job splits the same list (partitions that appear later are found
        by the readers' discovery).

        Raises:
            ConfigError: a listed topic does not exist, or the pattern matches none.
            KafkaError: the broker did not answer.
        """
        if self._listed is None:
            client = ck.Consumer(self.consumer_config())
            try:
                splits = self.current_partitions(client)
            finally:
                client.close()
            have = {parse_split(s)[0] for s in splits}
            if self.topics is not None and set(self.topics) - have:
                raise ConfigError(f"Kafka topic(s) not found: {sorted(set(self.topics) - have)}")
            if not splits:
                raise ConfigError(f"no Kafka topic matches {self.pattern.pattern!r}")  # type: ignore[union-attr]
            self._listed = splits
        return list(self._listed)

    def committed_positions(self, splits: Sequence[str]) -> dict[str, int]:
        """The group's committed offsets for ``splits`` (at-most-once restarts resume there).

        Splits without a committed offset are left out (the reader then uses
        ``options.start``).

        Raises:
            ConfigError: the source has no ``group_id``.
            KafkaError: the broker did not answer.
        """
        if not self.group_id:
            raise ConfigError("at_most_once needs KafkaSource(..., group_id=...) to keep positions")
        client = ck.Consumer(self.consumer_config())
        try:
            tps = [ck.TopicPartition(*parse_split(s)) for s in splits]
            found = client.committed(tps, timeout=DEFAULT_TIMEOUT_S) if tps else []
        except ck.KafkaException as e:
            raise wrap_kafka_exception(e, f"read committed offsets of {self.group_id}") from e
        finally:
            client.close()
        return {split_id(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}

    def create_reader(
        self, splits: Sequence[str], positions: Mapping[str, Any]
    ) -> KafkaSourceReader:
        """Open a reader over ``splits`` at ``positions`` (split → next offset).

        Raises:
            KafkaError: the consumer could not be created or assigned.
        """
        return KafkaSourceReader(self, list(splits), positions)
