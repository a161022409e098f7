"""Traces through the pipeline: a trace id on input records comes out on the sink's records
and on dead letters, with one span per batch and operator (OpenTelemetry's in-memory exporter).

The job reads JSON events with a ``traceparent`` header from the event log,
maps them (poison events raise and become dead letters), filters some out,
and keys them by user into a rolling count (a network channel at parallelism 2),
then writes to another topic. Every input record's trace id is compared with
the one on the record that came out of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from jobs.traced_pipeline import POISON, build

from kafka_broker import Broker, create_topic, kafka_broker, raw_fetch
from standalone_cluster import standalone_cluster
from weirflow import Dataflow, WatermarkStrategy
from weirflow.connectors import DeadLetterEventLogSink, EventLogSink, EventLogSource
from weirflow.eventlog import EventLog, Record
from weirflow.windows import TumblingWindows

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

__all__ = ["kafka_broker"]

N = 240
TRACES = 6
BATCH = 16


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """An in-memory exporter on this process's tracer provider (installed once)."""
    found = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(found))
    return found


def trace_id(i: int) -> str:
    return f"{i % TRACES + 1:032x}"


def parent_span_id(i: int) -> str:
    return f"{i + 1:016x}"


def make_input(log_dir: Path) -> None:
    """``N`` events over 2 partitions, event ``i`` in trace ``i % TRACES``, child of span ``i``."""
    records = []
    for i in range(N):
        value = json.dumps({"id": i, "user": f"u{i % 5}"}).encode()
        tp = f"00-{trace_id(i)}-{parent_span_id(i)}-01".encode()
        headers = (("traceparent", tp), ("x", b"y"))
        records.append(Record(value, timestamp_ms=i, headers=headers, partition=i % 2))
    with EventLog(log_dir) as lg:
        lg.create_topic("events", 2)
        lg.create_topic("out", 2)
        lg.create_topic("dead", 1)
        lg.append("events", records)


def topic(log_dir: Path, name: str) -> list[Any]:
    with EventLog(log_dir) as lg:
        out = []
        for p in range(lg.partition_count(name)):
            out += lg.read(name, p, 0, max_records=10_000)
        return out


def headers_of(record: Any) -> dict[str, bytes]:
    return dict(record.headers)


def trace_of(record: Any) -> str:
    """The trace id in a stored record's ``traceparent`` header."""
    return str(headers_of(record)["traceparent"].decode().split("-")[1])


def test_trace_ids_of_input_records_come_out_on_sink_records_and_dead_letters(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    """Scenario: traced events through map (with poison), filter, key_by, rolling reduce,
    run from inside an application's span (which the records' traces do not join)."""
    make_input(tmp_path)
    exporter.clear()
    with trace.get_tracer("app").start_as_current_span("app"):
        build(tmp_path).run(2, tracing=True, runtime=_small_batches())
    spans = [s for s in exporter.get_finished_spans() if s.name != "app"]

    out = topic(tmp_path, "out")
    expected = [i for i in range(N) if i not in POISON and i % 4 != 3]
    assert sorted(json.loads(r.value)[0] for r in out) == expected
    by_id = {s.context.span_id: s for s in spans}
    for r in out:
        i = json.loads(r.value)[0]
        h = headers_of(r)
        assert h["x"] == b"y", "a record keeps its own headers"
        _, tid, sid, _ = h["traceparent"].decode().split("-")
        assert tid == trace_id(i)
        if sid != parent_span_id(i):
            # pointed at the sink's span of this record's trace
            span = by_id[int(sid, 16)]
            assert span.name == "out"
            assert f"{span.context.trace_id:032x}" == tid

    dead = topic(tmp_path, "dead")
    assert len(dead) == len(POISON)
    for r in dead:
        i = json.loads(r.value)["id"]
        assert trace_of(r) == trace_id(i)

    names = {s.name for s in spans}
    assert {"events", "shape", "some", "count", "out"} <= names
    per_operator = {n: sum(1 for s in spans if s.name == n) for n in names}
    assert per_operator["shape"] < N, "one span per batch, not per record"
    for s in spans:
        if s.name == "events":
            # continues the first traced record of its batch: a remote parent from the headers
            assert s.parent is not None and s.parent.is_remote
            assert f"{s.context.trace_id:032x}" in {trace_id(i) for i in range(TRACES)}
        elif s.name in ("shape", "some"):
            parent = by_id[s.parent.span_id]  # type: ignore[union-attr]
            assert parent.name == ("events" if s.name == "shape" else "shape")
        elif s.name == "count":
            # the first operator of a task behind a key_by channel: from the records' headers
            assert s.parent is not None and s.parent.is_remote
        elif s.name == "out":
            assert by_id[s.parent.span_id].name == "count"  # type: ignore[union-attr]
    linked = [s for s in spans if s.name == "events" and s.links]
    assert linked, "a batch mixing traces links the other traces"


def test_a_window_links_its_inputs_and_its_failures_keep_their_trace(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    """Scenario: a tumbling window whose reduce fails on poison events: the dead letters keep
    the events' traces, the results carry no headers, the window's spans link the inputs."""
    make_input(tmp_path)

    def add(a: list[Any], b: list[Any]) -> list[Any]:
        if b[0] in POISON:
            raise ValueError(f"poison {b[0]}")
        return [a[0], a[1], a[2] + b[2]]

    flow = Dataflow("traced_window")
    counts = (
        flow.source(
            EventLogSource(tmp_path, "events", decode=json.loads),
            name="events",
            watermarks=WatermarkStrategy.bounded_out_of_orderness(timedelta(0)),
        )
        .map(lambda e: [e["id"], e["user"], 1], name="shape")
        .key_by(lambda r: r[1])
        .window(TumblingWindows(timedelta(milliseconds=40)))
        .reduce(add, name="window", on_error="dead_letter")
    )
    counts.sink(EventLogSink(tmp_path, "out"), name="out")
    counts.dead_letters().sink(DeadLetterEventLogSink(tmp_path, "dead"), name="dead")
    exporter.clear()
    flow.run(2, tracing=True, runtime=_small_batches())

    out = topic(tmp_path, "out")
    dead = topic(tmp_path, "dead")
    # reduce calls the function from a window's second record on: a poison first one passes
    assert dead and {json.loads(r.value)[0] for r in dead} <= POISON
    assert sum(json.loads(r.value)[3][2] for r in out) + len(dead) == N  # WindowResult.value
    assert all(r.headers == () for r in out), "a window result is a new record"
    for r in dead:
        assert trace_of(r) == trace_id(json.loads(r.value)[0])
    window_spans = [s for s in exporter.get_finished_spans() if s.name == "window"]
    assert window_spans and all(s.parent is not None for s in window_spans)
    assert any(s.links for s in window_spans)


def test_without_tracing_nothing_is_added(tmp_path: Path, exporter: InMemorySpanExporter) -> None:
    """Scenario: the same job without tracing: no spans, no headers on sink records."""
    make_input(tmp_path)
    exporter.clear()
    build(tmp_path).run(2, runtime=_small_batches())
    assert exporter.get_finished_spans() == ()
    out = topic(tmp_path, "out")
    assert out and all(r.headers == () for r in out)
    dead = topic(tmp_path, "dead")
    assert len(dead) == len(POISON)
    assert all("traceparent" not in headers_of(r) for r in dead)


@pytest.mark.parametrize("where", ["workers", "coordinator"])
def test_otel_flag_traces_a_job_on_two_worker_processes(tmp_path: Path, where: str) -> None:
    """Scenario: `weirflow run --otel` on 2 worker processes, started by `--workers 2` or
    joined to a standalone `weirflow coordinator` the job is submitted to: records cross
    processes with their headers."""
    make_input(tmp_path)
    job = Path(__file__).parent / "jobs" / "traced_pipeline.py"
    env = dict(os.environ, WF_LOG_DIR=str(tmp_path), OTEL_TRACES_EXPORTER="none")
    command = [
        sys.executable,
        "-m",
        "weirflow.cli",
        "run",
        str(job),
        "--parallelism=2",
        f"--checkpoint-dir={tmp_path / 'chk'}",
        "--otel",
    ]
    with contextlib.ExitStack() as stack:
        if where == "workers":
            command.append("--workers=2")
        else:
            cluster = stack.enter_context(standalone_cluster(tmp_path, env, workers=2))
            command += cluster.join
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    out = topic(tmp_path, "out")
    assert sorted(json.loads(r.value)[0] for r in out) == [
        i for i in range(N) if i not in POISON and i % 4 != 3
    ]
    for r in out:
        assert trace_of(r) == trace_id(json.loads(r.value)[0])
    dead = topic(tmp_path, "dead")
    assert sorted(json.loads(r.value)["id"] for r in dead) == sorted(POISON)
    for r in dead:
        assert trace_of(r) == trace_id(json.loads(r.value)["id"])


def test_kafka_headers_carry_the_trace_to_the_sink_and_dead_letters(
    kafka_broker: Broker, exporter: InMemorySpanExporter
) -> None:
    """Scenario: traced events in Kafka through a map with poison, into Kafka and a Kafka DLQ."""
    ck = pytest.importorskip("confluent_kafka")
    from weirflow.connectors import DeadLetterKafkaSink, KafkaSink, KafkaSource

    suffix = time.monotonic_ns()
    topics = {name: f"tracing-{name}-{suffix}" for name in ("in", "out", "dead")}
    for name in topics.values():
        create_topic(kafka_broker.bootstrap, name, 1)
    producer = ck.Producer({"bootstrap.servers": kafka_broker.bootstrap, "linger.ms": 5})
    n = 60
    for i in range(n):
        tp = f"00-{trace_id(i)}-{parent_span_id(i)}-01".encode()
        value = json.dumps({"id": i, "user": f"u{i % 5}"}).encode()
        headers = [("traceparent", tp)]
        producer.produce(topics["in"], value, partition=0, timestamp=i, headers=headers)
    assert producer.flush(10) == 0

    def shape(e: dict[str, Any]) -> bytes:
        if e["id"] in POISON:
            raise ValueError(f"poison {e['id']}")
        return str(e["id"]).encode()

    flow = Dataflow("traced_kafka")
    shaped = flow.source(
        KafkaSource(kafka_broker.bootstrap, [topics["in"]], decode=json.loads, bounded=True),
        name="events",
    ).map(shape, name="shape", on_error="dead_letter")
    shaped.sink(
        KafkaSink(kafka_broker.bootstrap, topics["out"], guarantee="at_least_once"), name="out"
    )
    shaped.dead_letters().sink(
        DeadLetterKafkaSink(kafka_broker.bootstrap, topics["dead"], guarantee="at_least_once"),
        name="dead",
    )
    exporter.clear()
    flow.run(1, tracing=True, runtime=_small_batches())

    out = raw_fetch(kafka_broker.bootstrap, topics["out"], 0)
    assert sorted(int(r.value) for r in out) == [i for i in range(n) if i not in POISON]  # type: ignore[union-attr]
    sink_spans = {s.context.span_id for s in exporter.get_finished_spans() if s.name == "out"}
    for r in out:
        i = int(r.value)  # type: ignore[union-attr]
        _, tid, sid, _ = dict(r.headers)["traceparent"].decode().split("-")  # type: ignore[union-attr]
        assert tid == trace_id(i)
        assert sid == parent_span_id(i) or int(sid, 16) in sink_spans
    dead = raw_fetch(kafka_broker.bootstrap, topics["dead"], 0)
    assert len(dead) == len([i for i in POISON if i < n])
    for r in dead:
        i = json.loads(r.value)["id"]  # type: ignore[union-attr]
        assert trace_of(r) == trace_id(i)


def _small_batches() -> Any:
    from weirflow.runtime import RuntimeOptions

    return RuntimeOptions(source_batch_size=BATCH, buffer_size=BATCH)
