"""Event-time windows through the whole engine, against a brute-force batch reference.

The reference replays the input batch by batch the way the source reads it:
records of a batch are judged against the watermark taken after the previous
batch, then the source's watermark (``max_ts - bound - 1``) advances. It keeps
each window's records in a plain list (sessions merge by brute force over
every live session of the key), fires a window when the watermark passes its
end, re-fires it once per batch that brought records within the allowed
lateness, and drops it at ``end - 1 + allowed_lateness`` — Flink's event-time
window semantics; a sliding-window record is set aside once per window it is too
late for. With one source split the engine's watermark at the window
operator is exactly this sequence at every parallelism, so the comparison is
exact: every firing (key, window, value, firing index) and every late record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from weirflow import AggregateFunction, Dataflow, WatermarkStrategy
from weirflow.connectors import CollectSink, IterableSource, SourceBatch
from weirflow.runtime import RuntimeOptions, run_unchecked
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
    late: list[tuple[Record, int | None, int | None]] = field(default_factory=list)


def reference(case: Case, end_of_input: bool = True) -> Reference:
    """Replay ``case`` batch by batch with lists and brute-force merging.

    Args:
        case: the generated job.
        end_of_input: whether the input ends (the final watermark fires every
            window) or stays open (an unbounded source).
    """
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
                    ref.late.append((rec, None, None))
                    continue
                merged = _Window([], max([0] + [live[w].fired for w in overlapping]))
                for w in overlapping:
                    merged.records.extend(live.pop(w).records)
                merged.records.append(rec)
                live[(key, start, end)] = merged
                if end - 1 <= wm:
                    refire.append((key, start, end))
                continue
            for start, end in case.windows_of(ts):
                if end - 1 + lateness <= wm:
                    ref.late.append((rec, start, end))
                    continue
                live.setdefault((key, start, end), _Window([])).records.append(rec)
                if end - 1 <= wm:
                    refire.append((key, start, end))
        for w in dict.fromkeys(refire):
            if w in live:
                fire(w)
        batch_max = max(r[1] for r in batch)
        max_ts = batch_max if max_ts is None else max(max_ts, batch_max)
        new_wm = max_ts - case.bound_ms - 1
        if new_wm > wm:
            advance(new_wm)
            wm = new_wm
    if end_of_input:
        advance(MAX_WM)
    return ref


def build(
    case: Case,
    flow: Dataflow,
    source: Any = None,
    idleness: timedelta | None = None,
) -> tuple[CollectSink, CollectSink]:
    """The job under test: source (one split with data) → key_by → window(function) → sinks."""
    strategy = WatermarkStrategy.bounded_out_of_orderness(timedelta(milliseconds=case.bound_ms))
    if idleness is not None:
        strategy = strategy.with_idleness(idleness)
    windowed = (
        flow.source(
            source or IterableSource(case.records, partitions=1),
            timestamp=lambda r: r[1],
            watermarks=strategy,
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


def _late(results: list[Any]) -> Counter[tuple[Any, ...]]:
    return Counter((lr.value, lr.window_start_ms, lr.window_end_ms) for lr in results)


@settings(max_examples=150, deadline=None)
@given(cases(), st.sampled_from([1, 2, 4]))
def test_windows_match_reference(case: Case, parallelism: int) -> None:
    flow = Dataflow("windows_vs_reference")
    out, late = build(case, flow)
    flow.run(parallelism, runtime=RuntimeOptions(source_batch_size=case.batch_size))
    ref = reference(case)
    assert _firings(out.results) == Counter(ref.firings)
    assert _late(late.results) == Counter(ref.late)


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
    late_values = [(lr.value, lr.window_start_ms) for lr in late.results]
    assert len(late_values) == len(set(late_values))
    window_op = result.operators[next(n for n in result.operators if n.startswith("window"))]
    assert window_op.records_in == len(case.records)
    assert window_op.late == len(late_values)


class ManualClock:
    """Processing time the test moves by hand, in ms."""

    def __init__(self) -> None:
        self.now_ms = 0

    def __call__(self) -> int:
        return self.now_ms


class _DelayedReader:
    """Split ``"0"`` yields its records from ``ready_at_ms`` on; split ``"1"`` never has data."""

    def __init__(self, records: list[Record], splits: list[str], clock: ManualClock) -> None:
        self._records = records if "0" in splits else []
        self._pos = 0
        self._clock = clock

    def poll(self, max_records: int) -> SourceBatch | None:
        if self._clock() < _READY_AT_MS or self._pos >= len(self._records):
            return None
        values = self._records[self._pos : self._pos + max_records]
        self._pos += len(values)
        return SourceBatch("0", values, None)

    def finished(self) -> bool:
        return False

    def positions(self) -> dict[str, Any]:
        return {"0": self._pos}

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        return None

    def close(self) -> None:
        return None


_READY_AT_MS = 100


class IdleSplitSource:
    """Unbounded two-split source: data arrives on split 0 late (processing time), never on 1."""

    bounded = False

    def __init__(self, records: list[Record], clock: ManualClock) -> None:
        self._records = records
        self._clock = clock

    def list_splits(self) -> list[str]:
        return ["0", "1"]

    def create_reader(self, splits: Sequence[str], positions: Mapping[str, Any]) -> _DelayedReader:
        return _DelayedReader(self._records, list(splits), self._clock)


def run_with_idle_split(case: Case, idleness: timedelta | None) -> tuple[list[Any], list[Any]]:
    """Run at parallelism 2 (split 1's subtask never gets data) for a fixed number of rounds."""
    clock = ManualClock()
    flow = Dataflow("idle_split")
    out, late = build(case, flow, IdleSplitSource(case.records, clock), idleness)
    rounds = _READY_AT_MS // 10 + len(case.records) + 30

    def tick(now_ms: int) -> bool:
        clock.now_ms += 10
        return clock.now_ms > rounds * 10

    run_unchecked(
        flow.graph,
        2,
        128,
        RuntimeOptions(source_batch_size=case.batch_size),
        clock=clock,
        sleep=lambda s: None,
        scheduler_hook=lambda scheduler: scheduler.hooks.before_round.append(tick),
    )
    return out.results, late.results


@settings(max_examples=40, deadline=None)
@given(cases())
def test_idle_split_does_not_hold_back_the_watermark(case: Case) -> None:
    """Scenario: one split never has data; with idleness the other split's watermark rules."""
    results, late = run_with_idle_split(case, idleness=timedelta(milliseconds=20))
    ref = reference(case, end_of_input=False)
    assert _firings(results) == Counter(ref.firings)
    assert _late(late) == Counter(ref.late)


def test_without_idleness_an_empty_split_holds_every_window() -> None:
    """Scenario: one split never has data and no idleness is set; no window may fire."""
    case = Case(
        records=[("a", ts, ts) for ts in range(0, 400, 7)],
        kind="tumbling",
        size_ms=50,
        slide_ms=50,
        function="count",
        bound_ms=0,
        lateness_ms=0,
        batch_size=3,
    )
    assert reference(case, end_of_input=False).firings  # the data alone would fire windows
    results, late = run_with_idle_split(case, idleness=None)
    assert results == []
    assert late == []
