"""KafkaSink behind the shared guard: the broker stops answering (SIGSTOP) and comes back.

Outcomes are read from the raw record batches (see ``test_kafka_sink.py``), so that
records of an aborted transaction are told from committed ones.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from breakers import heal_once_open
from kafka_broker import Broker, committed_by_markers, create_topic, kafka_broker, raw_fetch
from weirflow.connectors import CircuitBreaker, Resilience
from weirflow.retry import RetryPolicy

pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed")

__all__ = ["kafka_broker"]


def test_a_frozen_broker_opens_the_breaker_and_the_commit_completes_once(
    kafka_broker: Broker, request: pytest.FixtureRequest
) -> None:
    """Scenario: checkpoint 1 commits; the broker is frozen before checkpoint 2's commit.
    The commit waits behind the breaker (no error reaches the task); once the broker
    answers again the transaction is committed, and every record is in the topic once."""
    from weirflow.connectors import KafkaSink, KafkaSinkOptions

    topic = f"resilience-{time.monotonic_ns()}"
    create_topic(kafka_broker.bootstrap, topic, 1)
    resilience = Resilience(
        retry=RetryPolicy(
            max_attempts=200,
            initial_backoff=timedelta(milliseconds=20),
            max_backoff=timedelta(milliseconds=200),
        ),
        breaker=CircuitBreaker(failure_threshold=2, reset_timeout=timedelta(milliseconds=300)),
    )
    options = KafkaSinkOptions(timeout=timedelta(seconds=1), resilience=resilience)
    writer = KafkaSink(kafka_broker.bootstrap, topic, options=options).create_writer(
        "job", "out", 0, 1, None
    )
    writer.write([b"a", b"b"], None)
    writer.pre_commit(1)
    writer.commit(1)
    writer.write([b"c", b"d", b"e"], None)
    writer.pre_commit(2)
    os.kill(kafka_broker.pid, signal.SIGSTOP)
    thaw, seen = heal_once_open(
        writer.connector_stats, lambda: os.kill(kafka_broker.pid, signal.SIGCONT)
    )
    writer.commit(2)
    thaw.join()
    writer.close()
    assert "open" in seen
    stats = writer.connector_stats()
    assert stats is not None
    assert sum(stats.retries.values()) >= 2
    assert stats.rows_written == 5
    assert stats.breaker == "closed"
    values = [r.value for r in committed_by_markers(raw_fetch(kafka_broker.bootstrap, topic, 0))]
    assert values == [b"a", b"b", b"c", b"d", b"e"]
