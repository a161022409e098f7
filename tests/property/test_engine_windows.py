"""Event-time windows through the whole engine, against a brute-force batch reference.

The reference replays the input batch by batch the way the source reads it:
records of a batch are judged against the watermark taken after the previous
batch, then the source's watermark (``max_ts - bound - 1``) advances. It keeps
each window's records in a plain list (sessions merge by brute force over
every live session of the key), fires a window when the watermark passes its
end, re-fires it once per batch that brought records within the allowed
lateness, and drops it at ``end - 1 + allowed_lateness`` — Flink's event-time
window semantics. With one source split the engine's watermark at the window
operator is exactly this sequence at every parallelism, so the comparison is
exact: every firing (key, window, value, firing index) and every late record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from weirflow import AggregateFunction, Dataflow, WatermarkStrategy
from weirflow.connectors import CollectSink, IterableSource
from weirflow.runtime import RuntimeOptions
from weirflow.windows import SessionWindows, SlidingWindows, TumblingWindows

MIN_WM = -(2**63)
MAX_WM = 2**63 - 1

Record = tuple[str, int, int]  # (key, event time ms, value)


class SumCount(AggregateFunction[Record, list[int], tuple[int, int]]):
    """``(count, sum of values)``; mutates its accumulator like many real aggregates do."""

    def create_accumulator(self) -> list[int]:
        return [0, 0]

    def add(self, value: Record, accumulator: list[int]) -> list[int]:
        accumulator[0] += 1
        accumulator[1] += value[2]
        return accumulator

    def get_result(self, accumulator: list[int]) -> tuple[int, int]:
        return (accumulator[0], accumulator[1])

    def merge(self, a: list[int], b: list[int]) -> list[int]:
        return [a[0] + b[0], a[1] + b[1]]


def expected_value(function: str, records: list[Record]) -> Any:
    """What each window function must produce from a window's records."""
    if function == "reduce":
        return (records[0][0], min(r[1] for r in records), sum(r[2] for r in records))
    if function == "aggregate":
        return (len(records), sum(r[2] for r in records))
    if function == "count":
        return len(records)
    return tuple(sorted(r[2] for r in records))


@dataclass(frozen=True)
class Case:
    """One generated job: input order, window shape, function, lateness, batching."""

    records: list[Record]
    kind: str  # tumbling | sliding | session
    size_ms: int
    slide_ms: int
    function: str
    bound_ms: int
    lateness_ms: int
    batch_size: int

    def assigner(self) -> Any:
        if self.kind == "tumbling":
            return TumblingWindows(size=timedelta(milliseconds=self.size_ms))
        if self.kind == "sliding":
            return SlidingWindows(
                size=timedelta(milliseconds=self.size_ms),
                slide=timedelta(milliseconds=self.slide_ms),
            )
        return SessionWindows(gap=timedelta(milliseconds=self.size_ms))

    def windows_of(self, ts: int) -> list[tuple[int, int]]:
        return [(w.start_ms, w.end_ms) for w in self.assigner().assign(ts)]


@dataclass
class _Window:
    records: list[Record]
    fired: int = 0


@dataclass
class Reference:
    """The brute-force run: every firing and every late record."""

    firings: list[tuple[str, int, int, Any, int]] = field(default_factory=list)
    late: list[Record] = field(default_factory=list)


def reference(case: Case) -> Reference:
    """Replay ``case`` batch by batch with lists and brute-force merging."""
    ref = Reference()
    live: dict[tuple[str, int, int], _Window] = {}
    lateness = case.lateness_ms
    wm = MIN_WM
    max_ts: int | None = None

    def fire(w: tuple[str, int, int]) -> None:
        state = live[w]
        value = expected_value(case.function, state.records)
        ref.firings.append((w[0], w[1], w[2], value, state.fired))
        state.fired += 1

    def advance(new_wm: int) -> None:
        for w in sorted(live, key=lambda w: (w[2], w[1], w[0])):
            if wm < w[2] - 1 <= new_wm:
                fire(w)
        for w in [w for w in live if w[2] - 1 + lateness <= new_wm]:
            del live[w]

    records = case.records
    for b in range(0, len(records), case.batch_size):
        batch = records[b : b + case.batch_size]
        refire: list[tuple[str, int, int]] = []
        for rec in batch:
            key, ts = rec[0], rec[1]
            if case.kind == "session":
                start, end = ts, ts + case.size_ms
                overlapping = [w for w in live if w[0] == key and w[1] <= end and w[2] >= start]
                start = min([start] + [w[1] for w in overlapping])
                end = max([end] + [w[2] for w in overlapping])
                if end - 1 + lateness <= wm:
                    ref.late.append(rec)
                    continue
                merged = _Window([], max([0] + [live[w].fired for w in overlapping]))
                for w in overlapping:
                    merged.records.extend(live.pop(w).records)
                merged.records.append(rec)
                live[(key, start, end)] = merged
                if end - 1 <= wm:
                    refire.append((key, start, end))
                continue
            placed = False
            for start, end in case.windows_of(ts):
                if end - 1 + lateness <= wm:
                    continue
                placed = True
                live.setdefault((key, start, end), _Window([])).records.append(rec)
                if end - 1 <= wm:
                    refire.append((key, start, end))
            if not placed:
                ref.late.append(rec)
        for w in dict.fromkeys(refire):
            if w in live:
                fire(w)
        batch_max = max(r[1] for r in batch)
        max_ts = batch_max if max_ts is None else max(max_ts, batch_max)
        new_wm = max_ts - case.bound_ms - 1
        if new_wm > wm:
            advance(new_wm)
            wm = new_wm
    advance(MAX_WM)
    return ref


def build(case: Case, flow: Dataflow) -> tuple[CollectSink, CollectSink]:
    """The job under test: one-split source → key_by → window(function) → sinks."""
    windowed = (
        flow.source(
            IterableSource(case.records, partitions=1),
            timestamp=lambda r: r[1],
            watermarks=WatermarkStrategy.bounded_out_of_orderness(
                timedelta(milliseconds=case.bound_ms)
            ),
        )
        .key_by(lambda r: r[0])
        .window(case.assigner(), allowed_lateness=timedelta(milliseconds=case.lateness_ms))
    )
    functions: dict[str, Callable[[], Any]] = {
        "reduce": lambda: windowed.reduce(lambda a, b: (a[0], min(a[1], b[1]), a[2] + b[2])),
        "aggregate": lambda: windowed.aggregate(SumCount()),
        "count": lambda: windowed.count(),
        "process": lambda: windowed.process(
            lambda key, window, rs: tuple(sorted(r[2] for r in rs))
        ),
    }
    results = functions[case.function]()
    out, late = CollectSink(), CollectSink()
    results.sink(out)
    results.late_records().sink(late)
    return out, late


@st.composite
def cases(draw: st.DrawFn, kinds: tuple[str, ...] = ("tumbling", "sliding", "session")) -> Case:
    keys = st.sampled_from(["a", "b", "c"])
    n = draw(st.integers(1, 40))
    # Out of order by construction: a rough upward trend with random jumps back.
    records = [
        (draw(keys), draw(st.integers(0, 12)) * i // 2 + draw(st.integers(0, 60)), i + 1)
        for i in range(n)
    ]
    kind = draw(st.sampled_from(kinds))
    size = draw(st.integers(1, 40))
    return Case(
        records=records,
        kind=kind,
        size_ms=size,
        slide_ms=draw(st.integers(1, size)),
        function=draw(st.sampled_from(["reduce", "aggregate", "count", "process"])),
        bound_ms=draw(st.integers(0, 30)),
        lateness_ms=draw(st.sampled_from([0, 0, 5, 25])),
        batch_size=draw(st.sampled_from([1, 1, 2, 5])),
    )


def _firings(results: list[Any]) -> Counter[tuple[Any, ...]]:
    return Counter((r.key, r.start_ms, r.end_ms, r.value, r.firing) for r in results)


@settings(max_examples=150, deadline=None)
@given(cases(), st.sampled_from([1, 2, 4]))
def test_windows_match_reference(case: Case, parallelism: int) -> None:
    flow = Dataflow("windows_vs_reference")
    out, late = build(case, flow)
    flow.run(parallelism, runtime=RuntimeOptions(source_batch_size=case.batch_size))
    ref = reference(case)
    assert _firings(out.results) == Counter(ref.firings)
    assert Counter(lr.value for lr in late.results) == Counter(ref.late)


@settings(max_examples=60, deadline=None)
@given(cases(kinds=("tumbling", "sliding")), st.sampled_from([1, 2]))
def test_firings_are_dense_and_every_record_counted_once(case: Case, parallelism: int) -> None:
    flow = Dataflow("windows_dense")
    out, late = build(case, flow)
    result = flow.run(parallelism, runtime=RuntimeOptions(source_batch_size=case.batch_size))
    by_window: dict[tuple[Any, int, int], list[int]] = {}
    for r in out.results:
        by_window.setdefault((r.key, r.start_ms, r.end_ms), []).append(r.firing)
    for window, firings in by_window.items():
        assert sorted(firings) == list(range(len(firings))), window
    late_values = [lr.value for lr in late.results]
    assert len(late_values) == len(set(late_values))
    window_op = result.operators[next(n for n in result.operators if n.startswith("window"))]
    assert window_op.records_in == len(case.records)
    assert window_op.late == len(late_values)
