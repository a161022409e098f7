"""`weirflow dlq replay` killed between writing its transaction and committing it, on the
event log and on Kafka (a real Tansu broker): run again, it puts every letter into the
input exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1]))
from kafka_broker import create_topic, kafka_broker
from weirflow.cli import app
from weirflow.connectors.dead_letters import ERROR_TYPE, REPLAY_OF
from weirflow.eventlog import EventLog, Record

__all__ = ["kafka_broker"]
LETTERS = 20


@dataclass
class Letters:
    """Dead letters waiting in a log.

    Attributes:
        options: the ``weirflow dlq`` options that reach the log.
        dead: the dead-letter topic.
        events: the input topic to replay into.
        read_events: the input's records, as the job's source reads them.
    """

    options: list[str]
    dead: str
    events: str
    read_events: Callable[[], list[Any]]


def _event_log(tmp_path: Path) -> Letters:
    """``LETTERS`` letters in the topic ``dead`` of an event log."""
    log_dir = tmp_path / "log"
    with EventLog(log_dir) as lg:
        lg.create_topic("dead", 1)
        lg.create_topic("events", 2)
        lg.append(
            "dead",
            [
                Record(f"v{i}".encode(), key=f"k{i}".encode(), headers=((ERROR_TYPE, b"E"),))
                for i in range(LETTERS)
            ],
        )

    def read_events() -> list[Any]:
        with EventLog(log_dir) as lg:
            return [r for p in range(2) for r in lg.read("events", p, 0, max_records=1000)]

    return Letters(["--log-dir", str(log_dir)], "dead", "events", read_events)


def _kafka(request: pytest.FixtureRequest) -> Letters:
    """``LETTERS`` letters in a dead-letter topic of the test session's Tansu broker."""
    pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed")
    import confluent_kafka as ck

    from weirflow.connectors.kafka import KafkaDeadLetters

    broker = request.getfixturevalue("kafka_broker")
    stamp = time.monotonic_ns()
    dead, events = f"killed-dead-{stamp}", f"killed-events-{stamp}"
    create_topic(broker.bootstrap, dead, 1)
    create_topic(broker.bootstrap, events, 2)
    producer = ck.Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(LETTERS):
        producer.produce(dead, f"v{i}".encode(), key=f"k{i}".encode(), headers=[(ERROR_TYPE, b"E")])
    assert producer.flush(10) == 0

    def read_events() -> list[Any]:
        # a read_committed reader, as the job's KafkaSource
        return KafkaDeadLetters(broker.bootstrap).read_topic(events, 2)

    return Letters(["--kafka", broker.bootstrap], dead, events, read_events)


@pytest.mark.parametrize("log", ["eventlog", "kafka"])
def test_a_replay_killed_before_its_commit_is_run_again_and_each_letter_is_in_once(
    log: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Scenario: `weirflow dlq replay` is SIGKILLed with its transaction written but not
    committed; run again, every letter reaches the input exactly once as the job's source
    reads it, and a third run replays nothing.

    The killed replay's transaction is never committed, and the next replay's producer
    fences it; so the second run replays every letter. Tansu 0.6.0 shows the records and
    ledger entries of aborted transactions alike to read_committed readers, so there the
    second run replays none of them, and the input still holds each letter once."""
    letters = _event_log(tmp_path) if log == "eventlog" else _kafka(request)
    replay = ["dlq", *letters.options, "replay", letters.dead, "--into", letters.events]
    killed = subprocess.run(
        [sys.executable, "-m", "weirflow.cli", *replay],
        env=dict(os.environ, WEIRFLOW_FAULTS="replay_commit=1"),
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    again = CliRunner().invoke(app, replay)
    assert again.exit_code == 0, again.output
    if log == "eventlog":
        assert f"replayed {LETTERS}" in again.output
    assert "replayed 0" in CliRunner().invoke(app, replay).output
    replayed = Counter(dict(r.headers)[REPLAY_OF].decode() for r in letters.read_events())
    assert replayed == Counter({f"{letters.dead}/0/{i}": 1 for i in range(LETTERS)})
