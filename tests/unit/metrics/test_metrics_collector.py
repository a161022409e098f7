"""The sampling collector: counts that balance, rates, backpressure, dead letters by error type."""

from __future__ import annotations

import itertools
from typing import Any

from weirflow import Dataflow
from weirflow.connectors import CollectSink, IterableSource
from weirflow.graph import compile_plan
from weirflow.metrics import CheckpointTracker, JobRegistry, RuntimeCollector
from weirflow.runtime import LocalScheduler, RuntimeOptions, build_job, run_unchecked


class ManualClock:
    """Processing time that moves only when a test moves it (ms)."""

    def __init__(self, now_ms: int = 1_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def collector_for(job: str, clock: ManualClock, interval_ms: int = 500) -> RuntimeCollector:
    metrics = JobRegistry(job)
    return RuntimeCollector(metrics, CheckpointTracker(metrics, clock), interval_ms)


def value(c: RuntimeCollector, name: str, **labels: str) -> float:
    got = c.metrics.registry.get_sample_value(name, {"job": c.metrics.job, **labels})
    return 0.0 if got is None else got


class Unparsable(ValueError):
    """The record is not a number."""


def parse(v: Any) -> int:
    if isinstance(v, str):
        raise Unparsable(v)
    if v < 0:
        raise ZeroDivisionError(v)
    return v


def test_counts_balance_and_dead_letters_are_counted_by_error_type() -> None:
    rows: list[Any] = [*range(200), "x", "y", -1, *range(200, 300)]
    flow = Dataflow("balance")
    parsed = flow.source(IterableSource(rows, partitions=2), name="src").map(
        parse, name="parse", on_error="dead_letter"
    )
    kept = parsed.filter(lambda v: v % 3 != 0, name="not3")
    kept.sink(CollectSink(), name="out")
    parsed.dead_letters().sink(CollectSink(), name="dlq")
    clock = ManualClock()
    collector = collector_for("balance", clock)
    result = run_unchecked(
        flow.graph,
        2,
        128,
        RuntimeOptions(source_batch_size=16),
        clock=clock,
        scheduler_hook=lambda s: collector.attach(s.tasks),
    )
    status = collector.sample(clock())
    for op in ("parse", "not3"):
        got = {
            k: sum(
                value(collector, f"weirflow_records_{k}_total", operator=op, subtask=str(i))
                for i in range(2)
            )
            for k in ("in", "out", "filtered", "late", "dead_lettered")
        }
        assert got["in"] == got["out"] + got["filtered"] + got["late"] + got["dead_lettered"]
        counts = result.operators[op]
        assert (got["in"], got["out"], got["filtered"], got["dead_lettered"]) == (
            counts.records_in,
            counts.records_out,
            counts.filtered,
            counts.dead_lettered,
        )
    assert status.dead_letters == 3
    by_error = {
        err: sum(
            value(
                collector,
                "weirflow_dead_letters_by_error_total",
                operator="parse",
                subtask=str(i),
                error_type=err,
            )
            for i in range(2)
        )
        for err in (f"{__name__}.Unparsable", "builtins.ZeroDivisionError")
    }
    assert by_error == {f"{__name__}.Unparsable": 2, "builtins.ZeroDivisionError": 1}


def built(flow: Dataflow, parallelism: int, options: RuntimeOptions, clock: ManualClock) -> Any:
    plan = compile_plan(flow.graph, parallelism, 128)
    job = build_job(flow.graph, plan, options, clock, lambda s: None, lambda *a: None)
    return job


def test_rates_are_records_per_second_over_the_sample_interval() -> None:
    flow = Dataflow("rates")
    flow.source(IterableSource(list(range(10_000))), name="src").map(lambda v: v, name="m").sink(
        CollectSink(), name="out"
    )
    clock = ManualClock()
    job = built(flow, 1, RuntimeOptions(source_batch_size=100), clock)
    collector = collector_for("rates", clock)
    collector.attach(job.tasks)
    assert collector.on_round(clock()) is False
    (task,) = job.tasks
    for _ in range(5):
        task.step()
    clock.now_ms += 250
    collector.on_round(clock())
    assert collector.status().sampled_ms == clock() - 250, "sampled again before the interval"
    clock.now_ms += 250
    collector.on_round(clock())
    status = collector.status()
    assert status.sampled_ms == clock()
    src = next(o for o in status.operators if o.operator == "src")
    assert src.records_in == 500
    assert src.in_rate == 1000.0  # 500 records in 0.5 s
    assert status.records_in_rate == 1000.0
    assert status.records_out_rate == 1000.0  # the sink received all 500 (chained)


def test_backpressure_and_buffer_usage_when_the_receiver_does_not_drain() -> None:
    flow = Dataflow("pressure")
    flow.source(IterableSource(list(range(5_000))), name="src").key_by(lambda v: v % 7).map(
        lambda v: v, name="m"
    ).sink(CollectSink(), name="out")
    clock = ManualClock()
    job = built(
        flow, 2, RuntimeOptions(source_batch_size=50, buffer_size=10, channel_capacity=2), clock
    )
    collector = collector_for("pressure", clock)
    collector.attach(job.tasks)
    collector.sample(clock())
    sources = [t for t in job.tasks if t.is_source]
    for _ in range(20):
        for t in sources:
            t.step()  # the map tasks never step: their inputs fill up
    clock.now_ms += 500
    status = collector.sample(clock())
    by_task = {t.task: t for t in status.tasks}
    src0 = by_task["src[0/2]"]  # one split: only subtask 0 of the source reads
    out_channels = [c for w in sources[0].writers for c in w.channels]
    assert any(c.credit() == 0 for c in out_channels)
    assert src0.output_usage == sum(c.buffered_buffers for c in out_channels) / sum(
        c.capacity for c in out_channels
    )
    assert src0.output_usage >= 0.5
    assert 0.5 < src0.backpressured_ratio <= 1.0
    assert by_task["src[1/2]"].backpressured_ratio == 0.0
    full = [t for t in job.tasks if not t.is_source and any(c.credit() == 0 for c in t.inputs)]
    assert full and all(by_task[t.name].input_usage > 0 for t in full)
    assert value(collector, "weirflow_task_backpressured_ratio", task="src", subtask="0") == (
        src0.backpressured_ratio
    )


def test_scheduler_hook_samples_at_most_once_per_interval() -> None:
    flow = Dataflow("interval")
    flow.source(IterableSource(list(range(3_000))), name="src").sink(CollectSink(), name="out")
    clock = ManualClock()
    job = built(flow, 1, RuntimeOptions(source_batch_size=10), clock)
    collector = collector_for("interval", clock, interval_ms=500)
    collector.attach(job.tasks)
    scheduler = LocalScheduler(job.tasks, job.channels, clock, lambda s: None)
    samples: list[int] = []

    def tick(now_ms: int) -> bool:
        clock.now_ms += 100
        before = collector.status().sampled_ms
        collector.on_round(now_ms)
        if collector.status().sampled_ms != before:
            samples.append(now_ms)
        return False

    scheduler.hooks.before_round.append(tick)
    assert scheduler.run()
    assert len(samples) >= 3
    assert all(b - a >= 500 for a, b in itertools.pairwise(samples))
