"""A ``timestamp=`` function that returns no valid event time makes a bad record, which
follows the source's ``on_error`` like any failing record (regression: a ``None`` or ``str``
crashed the job with a bare TypeError, a float failed only at the sink)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from weirflow import Dataflow, OperatorError, RetryPolicy, TimestampError, WatermarkStrategy
from weirflow.connectors import CollectSink, EventLogSink, IterableSource
from weirflow.eventlog import EventLog
from weirflow.windows import TumblingWindows

BAD_TS: dict[int, Any] = {3: None, 7: "7000", 11: 11.5, 15: True, 19: float("nan")}
ROWS = [{"id": i, "ts": BAD_TS.get(i, i * 1000)} for i in range(24)]
WATERMARKS = WatermarkStrategy.bounded_out_of_orderness(timedelta(milliseconds=10))


def stamp(row: dict[str, Any]) -> Any:
    return row["ts"]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_bad_timestamps_are_dead_lettered_naming_the_function(parallelism: int) -> None:
    """Scenario: five records whose timestamp is None, a str, a fraction, a bool and NaN,
    under on_error='dead_letter' with watermarks."""
    flow = Dataflow("bad_stamps")
    src = flow.source(
        IterableSource(ROWS, partitions=3),
        timestamp=stamp,
        watermarks=WATERMARKS,
        name="events",
        on_error="dead_letter",
    )
    out, dead = CollectSink(), CollectSink()
    src.sink(out)
    src.dead_letters().sink(dead)
    result = flow.run(parallelism)

    assert sorted(r["id"] for r in out.results) == [i for i in range(24) if i not in BAD_TS]
    assert sorted(d.value["id"] for d in dead.results) == sorted(BAD_TS)
    for d in dead.results:
        assert d.operator == "events"
        assert d.error_type == "weirflow.errors.TimestampError"
        assert "timestamp function 'stamp' (test_source_timestamps.py:" in d.message
        assert repr(d.value["ts"]) in d.message
        assert d.attempts == 1
    events = result.operators["events"]
    assert events.records_in == len(ROWS)
    assert events.dead_lettered == len(BAD_TS)
    assert events.records_in == events.records_out + events.filtered + events.dead_lettered


def test_fail_policy_names_the_record_and_the_function() -> None:
    """Scenario: one record's timestamp is None under the default policy."""
    flow = Dataflow("none_stamp")
    rows = [{"id": 0, "ts": 5}, {"id": 1, "ts": None}, {"id": 2, "ts": 9}]
    flow.source(IterableSource(rows), timestamp=stamp, watermarks=WATERMARKS, name="events").sink(
        CollectSink()
    )
    with pytest.raises(OperatorError) as info:
        flow.run(1)
    err = info.value
    assert err.operator == "events"
    assert err.record == {"id": 1, "ts": None}
    assert "'id': 1" in str(err)
    assert "timestamp function 'stamp'" in str(err)
    assert "None (NoneType)" in str(err)
    assert isinstance(err.__cause__, TimestampError)


def test_a_retry_policy_dead_letters_a_bad_timestamp_without_calling_again() -> None:
    """Scenario: a str timestamp under a RetryPolicy; the same record would give it again."""
    calls: Counter[int] = Counter()

    def counted(row: dict[str, Any]) -> Any:
        calls[row["id"]] += 1
        return row["ts"]

    flow = Dataflow("retry_stamp")
    rows = [{"id": i, "ts": "late" if i == 4 else i} for i in range(8)]
    src = flow.source(IterableSource(rows), timestamp=counted, on_error=RetryPolicy(max_attempts=5))
    dead = CollectSink()
    src.sink(CollectSink())
    src.dead_letters().sink(dead)
    flow.run(1)
    assert [(d.value["id"], d.attempts) for d in dead.results] == [(4, 1)]
    assert calls == Counter(range(8))


def test_integral_float_timestamps_reach_an_event_log_sink_as_int_ms(tmp_path: Path) -> None:
    """Scenario: the timestamp function returns floats holding whole milliseconds (regression:
    the event-log sink refused them at the end of the job)."""
    with EventLog(tmp_path) as lg:
        lg.create_topic("out", 1)
    flow = Dataflow("float_stamps")
    rows = [{"id": i, "ts": 1.7e12 + i} for i in range(5)]
    flow.source(IterableSource(rows), timestamp=stamp).map(lambda r: r["id"]).sink(
        EventLogSink(tmp_path, "out")
    )
    flow.run(1)
    with EventLog(tmp_path) as lg:
        got = [(r.value, r.timestamp_ms) for r in lg.read("out", 0, 0)]
    assert got == [(b"%d" % i, 1_700_000_000_000 + i) for i in range(5)]
    assert all(type(ts) is int for _, ts in got)


def test_negative_timestamps_fall_into_windows_before_1970() -> None:
    """Scenario: event times just before and after the epoch in 10 s tumbling windows."""
    flow = Dataflow("before_epoch")
    rows = [("k", -20_000), ("k", -10_001), ("k", -1), ("k", 0), ("k", 9_999)]
    windows = (
        flow.source(IterableSource(rows), timestamp=lambda r: r[1], watermarks=WATERMARKS)
        .key_by(lambda r: r[0])
        .window(TumblingWindows(size=timedelta(seconds=10)))
        .count()
    )
    out, late = CollectSink(), CollectSink()
    windows.sink(out)
    windows.late_records().sink(late)
    flow.run(1)
    assert late.results == []
    assert sorted((r.start_ms, r.end_ms, r.value) for r in out.results) == [
        (-20_000, -10_000, 2),
        (-10_000, 0, 1),
        (0, 10_000, 2),
    ]
