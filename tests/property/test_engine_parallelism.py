"""The same job at parallelism 1, 2 and 4 gives the same multiset of results.

Inputs have several splits, so the interleaving of records (and of
watermarks) differs with the parallelism. Where no record can be late the
results must be identical and equal to a plain batch computation; with
random out-of-order input only the balance can be exact: every record is in
exactly one final window value or in ``late_records()`` exactly once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from weirflow import Dataflow, KeyedProcessFunction, WatermarkStrategy
from weirflow.connectors import CollectSink, IterableSource
from weirflow.runtime import RuntimeOptions
from weirflow.state import MapStateDescriptor
from weirflow.windows import SessionWindows, SlidingWindows, TumblingWindows

Record = tuple[str, int, int]  # (key, event time ms, value)

KEYS = ["k0", "k1", "k2", "k3", "k4", "k5"]


class CountPerTimestamp(KeyedProcessFunction[Record, tuple[str, int, int]]):
    """Counts a key's records per timestamp in MapState; a timer at that time emits the count."""

    def open(self, ctx: Any) -> None:
        self.per_ts = ctx.get_state(MapStateDescriptor("per_ts"))

    def process_element(self, value: Record, ctx: Any) -> Iterable[tuple[str, int, int]]:
        ts = value[1]
        self.per_ts.put(ts, (self.per_ts.get(ts) or 0) + 1)
        ctx.register_event_time_timer(ts)
        return ()

    def on_timer(self, timestamp_ms: int, ctx: Any) -> Iterable[tuple[str, int, int]]:
        n = self.per_ts.get(timestamp_ms)
        self.per_ts.remove(timestamp_ms)
        yield (ctx.current_key, timestamp_ms, n)


@st.composite
def split_monotone_inputs(draw: st.DrawFn) -> tuple[list[Record], list[Record]]:
    """Two inputs whose splits (``j % partitions``) each have strictly increasing timestamps.

    Strictly: with equal timestamps in a split, the watermark can reach a session's end
    before a record that only touches it arrives, and whether the two merge then depends
    on the interleaving (as in Flink).
    """

    def one(partitions: int) -> list[Record]:
        n = draw(st.integers(0, 60))
        clocks = [0] * partitions
        out = []
        for j in range(n):
            s = j % partitions
            clocks[s] += draw(st.integers(1, 9))
            out.append((draw(st.sampled_from(KEYS)), clocks[s], draw(st.integers(1, 50))))
        return out

    return one(4), one(3)


def run_rich_job(a: list[Record], b: list[Record], parallelism: int) -> dict[str, Counter]:
    """Two sources, union, filter, flat_map, three windows and a keyed process function."""
    flow = Dataflow("same_at_any_parallelism")
    strategy = WatermarkStrategy.monotonous_timestamps()
    src_a = flow.source(
        IterableSource(a, partitions=4), timestamp=lambda r: r[1], watermarks=strategy
    )
    src_b = flow.source(
        IterableSource(b, partitions=3), timestamp=lambda r: r[1], watermarks=strategy
    )
    merged = (
        src_a.union(src_b)
        .filter(lambda r: r[2] % 7 != 0)
        .flat_map(lambda r: [r] if r[2] % 2 else [r, (r[0] + "x", r[1], r[2])])
    )
    sinks = {
        name: CollectSink() for name in ("tumbling", "sliding", "session", "process", "cascade")
    }
    keyed = merged.key_by(lambda r: r[0])
    keyed.window(TumblingWindows(size=timedelta(milliseconds=20))).reduce(
        lambda x, y: (x[0], min(x[1], y[1]), x[2] + y[2])
    ).sink(sinks["tumbling"])
    keyed.window(
        SlidingWindows(size=timedelta(milliseconds=30), slide=timedelta(milliseconds=10))
    ).count().sink(sinks["sliding"])
    keyed.window(SessionWindows(gap=timedelta(milliseconds=5))).process(
        lambda key, w, rs: tuple(sorted(r[2] for r in rs))
    ).sink(sinks["session"])
    merged.rebalance().key_by(lambda r: r[0]).process(CountPerTimestamp()).sink(sinks["process"])
    # windows of window results: per-key 20 ms counts, then one 100 ms total over all keys
    keyed.window(TumblingWindows(size=timedelta(milliseconds=20))).count().key_by(
        lambda w: "all"
    ).window(TumblingWindows(size=timedelta(milliseconds=100))).reduce(
        lambda x, y: x._replace(value=x.value + y.value)
    ).map(lambda w: (w.start_ms, w.value.value)).sink(sinks["cascade"])
    flow.run(parallelism, runtime=RuntimeOptions(source_batch_size=3, buffer_size=4))
    return {
        name: Counter(
            (r.key, r.start_ms, r.end_ms, r.value, r.firing)
            if name not in ("process", "cascade")
            else r
            for r in sink.results
        )
        for name, sink in sinks.items()
    }


def batch_reference(a: list[Record], b: list[Record]) -> dict[str, Counter]:
    """The same results computed over the whole input at once."""
    rows = []
    for r in a + b:
        if r[2] % 7 == 0:
            continue
        rows.append(r)
        if r[2] % 2 == 0:
            rows.append((r[0] + "x", r[1], r[2]))
    tumbling: dict[tuple[str, int], tuple[str, int, int]] = {}
    sliding: dict[tuple[str, int], int] = {}
    per_ts: Counter[tuple[str, int]] = Counter()
    for key, ts, v in rows:
        start = ts - ts % 20
        old = tumbling.get((key, start))
        tumbling[(key, start)] = (key, ts, v) if old is None else (key, min(old[1], ts), old[2] + v)
        for s in range(ts - ts % 10 - 20, ts + 1, 10):
            if s <= ts < s + 30:
                sliding[(key, s)] = sliding.get((key, s), 0) + 1
        per_ts[(key, ts)] += 1
    sessions: list[tuple[Any, ...]] = []
    for key in sorted({r[0] for r in rows}):
        group = sorted((ts, v) for k, ts, v in rows if k == key)
        current: list[tuple[int, int]] = []
        for ts, v in group:
            if current and ts > current[-1][0] + 5:
                sessions.append(_session(key, current))
                current = []
            current.append((ts, v))
        sessions.append(_session(key, current))
    return {
        "tumbling": Counter((k, s, s + 20, value, 0) for (k, s), value in tumbling.items()),
        "sliding": Counter((k, s, s + 30, n, 0) for (k, s), n in sliding.items()),
        "session": Counter(sessions),
        "process": Counter((k, ts, n) for (k, ts), n in per_ts.items()),
        "cascade": Counter(Counter(ts - ts % 100 for _, ts, _ in rows).items()),
    }


def _session(key: str, members: list[tuple[int, int]]) -> tuple[Any, ...]:
    return (key, members[0][0], members[-1][0] + 5, tuple(sorted(v for _, v in members)), 0)


@settings(max_examples=25, deadline=None)
@given(split_monotone_inputs())
def test_same_results_at_parallelism_1_2_4(inputs: tuple[list[Record], list[Record]]) -> None:
    a, b = inputs
    expected = batch_reference(a, b)
    for p in (1, 2, 4):
        assert run_rich_job(a, b, p) == expected, f"parallelism {p}"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(KEYS), st.integers(0, 300)), min_size=1, max_size=80),
    st.sampled_from([1, 2, 4]),
    st.integers(1, 4),
    st.integers(0, 20),
    st.sampled_from([0, 15]),
)
def test_every_record_in_one_final_window_or_late_once(
    rows: list[tuple[str, int]], parallelism: int, partitions: int, bound: int, lateness: int
) -> None:
    records = [(key, ts, i) for i, (key, ts) in enumerate(rows)]
    flow = Dataflow("balance")
    windowed = (
        flow.source(
            IterableSource(records, partitions=partitions),
            timestamp=lambda r: r[1],
            watermarks=WatermarkStrategy.bounded_out_of_orderness(timedelta(milliseconds=bound)),
        )
        .key_by(lambda r: r[0])
        .window(
            TumblingWindows(size=timedelta(milliseconds=25)),
            allowed_lateness=timedelta(milliseconds=lateness),
        )
        .process(lambda key, w, rs: sorted(r[2] for r in rs))
    )
    out, late = CollectSink(), CollectSink()
    windowed.sink(out)
    windowed.late_records().sink(late)
    result = flow.run(parallelism, runtime=RuntimeOptions(source_batch_size=2))
    final: dict[tuple[Any, int], Any] = {}
    for r in out.results:
        if (r.key, r.start_ms) not in final or r.firing > final[(r.key, r.start_ms)].firing:
            final[(r.key, r.start_ms)] = r
    in_windows = [i for r in final.values() for i in r.value]
    late_ids = [lr.value[2] for lr in late.results]
    assert sorted(in_windows + late_ids) == list(range(len(records)))
    for r in final.values():
        assert all(
            records[i][0] == r.key and r.start_ms <= records[i][1] < r.end_ms for i in r.value
        )
    counts = result.operators["window_1"]
    assert counts.records_in == len(records)
    assert counts.late == len(late_ids)
