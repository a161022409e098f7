"""Operators through small real jobs: rolling reduce, keyed process functions with state and
timers, count windows, union, flat_map, broadcast, and the counts in ``JobResult``. Every
keyed operator runs on both state backends (memory and RocksDB)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import pytest

from weirflow import (
    AggregateFunction,
    Dataflow,
    KeyedProcessFunction,
    OperatorError,
    RetryPolicy,
)
from weirflow import WatermarkStrategy as WS
from weirflow.connectors import CollectSink, IterableSource
from weirflow.runtime import RuntimeOptions, run_unchecked
from weirflow.state import (
    ListStateDescriptor,
    MapStateDescriptor,
    StateBackend,
    ValueStateDescriptor,
)
from weirflow.windows import CountWindows, SessionWindows, SlidingWindows, TumblingWindows

ROWS = [(f"k{i % 3}", i * 10, i) for i in range(30)]  # (key, ts ms, value)


def timed_source(flow: Dataflow, rows: list[Any], partitions: int = 1) -> Any:
    return flow.source(
        IterableSource(rows, partitions=partitions),
        timestamp=lambda r: r[1],
        watermarks=WS.monotonous_timestamps(),
    )


@pytest.mark.parametrize("parallelism", [1, 2])
def test_rolling_reduce_emits_the_running_value_per_key(
    parallelism: int, state_backend: StateBackend
) -> None:
    flow = Dataflow("rolling")
    out = CollectSink()
    timed_source(flow, ROWS).key_by(lambda r: r[0]).reduce(
        lambda a, b: (a[0], b[1], a[2] + b[2])
    ).sink(out)
    flow.run(parallelism, state_backend=state_backend)
    per_key: dict[str, list[int]] = {}
    for key, _, total in out.results:
        per_key.setdefault(key, []).append(total)
    for key, totals in per_key.items():
        values = [r[2] for r in ROWS if r[0] == key]
        assert totals == [sum(values[: i + 1]) for i in range(len(values))]
    assert len(out.results) == len(ROWS)


class Sessionizer(KeyedProcessFunction[tuple[str, int, int], tuple[Any, ...]]):
    """Keeps a count (ValueState), the values (ListState) and value by timestamp (MapState);
    an event-time timer 25 ms after each record reports them, then clears the list."""

    def open(self, ctx: Any) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))
        self.values = ctx.get_state(ListStateDescriptor("values"))
        self.by_ts = ctx.get_state(MapStateDescriptor("by_ts"))

    def process_element(self, value: tuple[str, int, int], ctx: Any) -> Iterable[Any]:
        self.count.update(self.count.value() + 1)
        self.values.add(value[2])
        self.by_ts.put(value[1], value[2])
        ctx.register_event_time_timer(value[1] + 25)
        assert ctx.current_key == value[0]
        assert ctx.timestamp == value[1]
        return ()

    def on_timer(self, timestamp_ms: int, ctx: Any) -> Iterable[Any]:
        yield (
            ctx.current_key,
            timestamp_ms,
            self.count.value(),
            tuple(self.values.get()),
            len(self.by_ts.items()),
        )
        self.values.clear()


@pytest.mark.parametrize("parallelism", [1, 3])
def test_keyed_process_function_with_value_list_map_state_and_event_timers(
    parallelism: int, state_backend: StateBackend
) -> None:
    flow = Dataflow("process")
    out = CollectSink()
    timed_source(flow, ROWS).key_by(lambda r: r[0]).process(Sessionizer()).sink(out)
    flow.run(parallelism, runtime=RuntimeOptions(source_batch_size=1, state_backend=state_backend))
    # one record per batch: after a record with timestamp ts the watermark is ts - 1
    state: dict[str, dict[str, Any]] = {}
    timers: list[tuple[int, str]] = []
    expected: list[tuple[Any, ...]] = []

    def fire_until(wm: float) -> None:
        for t, key in sorted(x for x in timers if x[0] <= wm):
            s = state[key]
            expected.append((key, t, s["count"], tuple(s["values"]), len(s["by_ts"])))
            s["values"] = []
            timers.remove((t, key))

    for key, ts, v in ROWS:
        s = state.setdefault(key, {"count": 0, "values": [], "by_ts": {}})
        s["count"] += 1
        s["values"].append(v)
        s["by_ts"][ts] = v
        timers.append((ts + 25, key))
        fire_until(ts - 1)
    fire_until(float("inf"))
    assert sorted(out.results) == sorted(expected)
    assert ("k0", 25, 2, (0, 3), 2) in out.results


class ProcessingTimeAlarm(KeyedProcessFunction[tuple[str, int, int], tuple[str, int]]):
    """Registers a processing-time timer 1 s after the first record of a key."""

    def open(self, ctx: Any) -> None:
        self.armed = ctx.get_state(ValueStateDescriptor("armed", default=False))

    def process_element(self, value: tuple[str, int, int], ctx: Any) -> Iterable[Any]:
        if not self.armed.value():
            self.armed.update(True)
            ctx.register_processing_time_timer(ctx.current_processing_time() + 1000)
        return ()

    def on_timer(self, timestamp_ms: int, ctx: Any) -> Iterable[Any]:
        return [(ctx.current_key, timestamp_ms)]


def test_processing_time_timers_follow_the_injected_clock(state_backend: StateBackend) -> None:
    now = {"ms": 5_000}

    def clock() -> int:
        now["ms"] += 100  # every reading advances processing time by 100 ms
        return now["ms"]

    flow = Dataflow("proc_time")
    out = CollectSink()
    rows = [("a", 0, 1), ("b", 1, 2)] + [("a", 2, 3)] * 200
    flow.source(IterableSource(rows)).key_by(lambda r: r[0]).process(ProcessingTimeAlarm()).sink(
        out
    )
    options = RuntimeOptions(source_batch_size=1, state_backend=state_backend)
    run_unchecked(flow.graph, 1, 128, options, clock=clock)
    fired = dict(out.results)
    assert set(fired) == {"a", "b"}
    assert all(t > 5_000 + 1000 for t in fired.values())


def test_count_windows_tumbling_and_sliding(state_backend: StateBackend) -> None:
    flow = Dataflow("counts")
    tumbling, sliding = CollectSink(), CollectSink()
    keyed = timed_source(flow, ROWS).key_by(lambda r: r[0])
    keyed.window(CountWindows(4)).process(lambda k, w, rs: [r[2] for r in rs]).sink(tumbling)
    keyed.window(CountWindows(3, slide=2)).count().sink(sliding)
    flow.run(2, state_backend=state_backend)
    for key in ("k0", "k1", "k2"):
        values = [r[2] for r in ROWS if r[0] == key]  # 10 per key
        mine = sorted(r.value for r in tumbling.results if r.key == key)
        assert mine == [values[0:4], values[4:8]]  # the partial last window never fires
        counts = [r.value for r in sliding.results if r.key == key]
        assert counts == [2, 3, 3, 3, 3]
    first = min(tumbling.results, key=lambda r: r.value)
    rows0 = [r for r in ROWS if r[0] == first.key][:4]
    assert (first.start_ms, first.end_ms) == (rows0[0][1], rows0[-1][1] + 1)


def test_union_flat_map_and_filter() -> None:
    flow = Dataflow("union")
    a = flow.source(IterableSource(list(range(10)), partitions=2))
    b = flow.source(IterableSource(list(range(100, 105))))
    out = CollectSink()
    a.union(b).flat_map(lambda v: [v] * (v % 3)).filter(lambda v: v != 4).sink(out)
    result = flow.run(2)
    expected = [v for v in [*range(10), *range(100, 105)] for _ in range(v % 3) if v != 4]
    assert sorted(out.results) == sorted(expected)
    assert result.operators["union_2"].records_in == 15
    fm = result.operators["flat_map_3"]
    assert (fm.records_in, fm.records_out) == (15, len(expected) + 1)
    assert result.operators["filter_4"].filtered == 1


def test_broadcast_sends_every_record_to_every_subtask() -> None:
    flow = Dataflow("broadcast")
    out = CollectSink()
    flow.source(IterableSource(["x", "y"])).broadcast().map(lambda v: v.upper()).sink(out)
    result = flow.run(3)
    assert Counter(out.results) == Counter({"X": 3, "Y": 3})
    assert result.operators["map_1"].records_in == 6


def test_job_result_counts(state_backend: StateBackend) -> None:
    flow = Dataflow("counted")
    rows = [("k", ts, 1) for ts in [10, 20, 30, 5, 40, 1000, 15, 2000]]
    windowed = (
        flow.source(
            IterableSource(rows),
            timestamp=lambda r: r[1],
            watermarks=WS.bounded_out_of_orderness(timedelta(0)),
            name="src",
        )
        .filter(lambda r: r[1] != 30, name="drop30")
        .key_by(lambda r: r[0])
        .window(TumblingWindows(size=timedelta(milliseconds=100)))
        .count(name="win")
    )
    out, late = CollectSink(), CollectSink()
    windowed.sink(out, name="out")
    windowed.late_records().sink(late, name="late_out")
    options = RuntimeOptions(source_batch_size=1, state_backend=state_backend)
    result = flow.run(1, runtime=options)
    assert result.job == "counted"
    assert result.parallelism == 1
    ops = result.operators
    assert ops["src"].records_in == 8
    assert (ops["drop30"].records_in, ops["drop30"].records_out, ops["drop30"].filtered) == (
        8,
        7,
        1,
    )
    # ts 15 arrives after the watermark passed 999: late for [0, 100)
    assert ops["win"].late == 1 == len(late.results)
    assert late.results[0].value == ("k", 15, 1)
    assert ops["win"].records_in == 7
    assert ops["win"].records_out == len(out.results) == 3
    assert sorted(r.value for r in out.results) == [1, 1, 4]
    assert ops["out"].records_in == 3
    assert ops["late_out"].records_in == 1


class FlakyCount(AggregateFunction[Any, int, int]):
    """Counts; ``add`` fails once (retriable) on the first record it ever sees."""

    def __init__(self) -> None:
        self.failed = False

    def create_accumulator(self) -> int:
        return 0

    def add(self, value: Any, accumulator: int) -> int:
        if not self.failed:
            self.failed = True
            raise OSError("transient")
        return accumulator + 1

    def get_result(self, accumulator: int) -> int:
        return accumulator

    def merge(self, a: int, b: int) -> int:
        return a + b


@pytest.mark.parametrize(
    ("assigner", "windows_per_key"),
    [
        (TumblingWindows(size=timedelta(seconds=1)), 1),
        (SlidingWindows(size=timedelta(seconds=1), slide=timedelta(milliseconds=500)), 2),
        (SessionWindows(gap=timedelta(milliseconds=100)), 1),
    ],
)
def test_a_window_whose_first_record_needed_a_retry_still_fires(
    assigner: Any, windows_per_key: int, state_backend: StateBackend
) -> None:
    """Scenario: the aggregate's add raises a transient error on the very first record."""
    flow = Dataflow("retry_window")
    out, dead = CollectSink(), CollectSink()
    windowed = (
        timed_source(flow, ROWS)
        .key_by(lambda r: r[0])
        .window(assigner)
        .aggregate(FlakyCount(), name="win", on_error=RetryPolicy(max_attempts=2))
    )
    windowed.sink(out)
    windowed.dead_letters().sink(dead)
    sleeps: list[float] = []
    run_unchecked(
        flow.graph, 1, 128, RuntimeOptions(state_backend=state_backend), sleep=sleeps.append
    )
    assert dead.results == []
    assert len(sleeps) == 1
    expected = [(k, 10) for k in ("k0", "k1", "k2") for _ in range(windows_per_key)]
    assert sorted((r.key, r.value) for r in out.results) == expected


def test_a_failing_window_function_fails_the_job_by_default(state_backend: StateBackend) -> None:
    """Scenario: the session reduce function raises IndexError under the default policy."""
    flow = Dataflow("failing_window")
    timed_source(flow, ROWS).key_by(lambda r: r[0]).window(
        SessionWindows(gap=timedelta(milliseconds=100))
    ).reduce(lambda a, b: a[5], name="win").sink(CollectSink())
    with pytest.raises(OperatorError) as info:
        flow.run(1, state_backend=state_backend)
    assert info.value.operator == "win"
    assert isinstance(info.value.__cause__, IndexError)
