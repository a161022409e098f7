"""Built-in alert conditions: one event per state change, windows, signals from a sample."""

from __future__ import annotations

from datetime import timedelta

from weirflow.metrics import AlertCondition, AlertState, Signal
from weirflow.metrics.model import CheckpointRecord, JobStatus, OperatorSample, TaskSample
from weirflow.metrics.watch import AlertEvaluator


def status(
    at_ms: int,
    lag_records: int = 0,
    dead: int = 0,
    restarts: int = 0,
    source_wm_lag: int | None = None,
    checkpoint_ms: int | None = None,
) -> JobStatus:
    ops = (
        OperatorSample("src", 0, "src[0/1]", "source", 0, 0, 0, 0, 0, 0.0, 0.0),
        OperatorSample("sink", 0, "sink[0/1]", "sink", 0, 0, 0, 0, 0, 0.0, 0.0),
    )
    tasks = (
        TaskSample("src[0/1]", "src", 0, 0.0, 0.0, 0.0, None, source_wm_lag),
        # a window's watermark lags by design: not the sources' lag
        TaskSample("sink[0/1]", "sink", 0, 0.0, 0.0, 0.0, None, 10**9),
    )
    return JobStatus(
        job="j",
        sampled_ms=at_ms,
        operators=ops,
        tasks=tasks,
        split_lag={"src/t/0": lag_records},
        dead_letters=dead,
        restarts=restarts,
        last_checkpoint_ms=checkpoint_ms,
    )


def states(events: list) -> list[tuple[str, str]]:
    return [(e.condition.text, e.state.value) for e in events]


def test_one_event_per_change_never_per_evaluation() -> None:
    c = AlertCondition(Signal.LAG_RECORDS, 100, "lag_records>100")
    ev = AlertEvaluator([c], timedelta(minutes=5))
    seen = []
    for i, lag in enumerate([0, 50, 101, 500, 900, 101, 100, 0, 0, 200]):
        seen += states(ev.evaluate(status(1000 * i, lag_records=lag), 1000 * i))
    assert seen == [
        ("lag_records>100", "firing"),
        ("lag_records>100", "resolved"),
        ("lag_records>100", "firing"),
    ]
    assert ev.states[c] is AlertState.FIRING


def test_dead_letters_count_within_the_window_across_attempts() -> None:
    c = AlertCondition(Signal.DEAD_LETTERS, 0, "dead_letters>0")
    ev = AlertEvaluator([c], timedelta(seconds=10))
    assert states(ev.evaluate(status(0, dead=0), 0)) == []
    (fired,) = ev.evaluate(status(1000, dead=3), 1000)
    assert (fired.state, fired.value) == (AlertState.FIRING, 3)
    assert ev.evaluate(status(5000, dead=3), 5000) == []
    (resolved,) = ev.evaluate(status(11_000, dead=3), 11_000)
    assert resolved.state is AlertState.OK
    # a restart resets the attempt's count: its letters are new ones
    (again,) = ev.evaluate(status(12_000, dead=1), 12_000)
    assert (again.state, again.value) == (AlertState.FIRING, 1)


def test_source_lag_ignores_other_tasks_and_durations_compare_in_ms() -> None:
    lag = AlertCondition(Signal.LAG, 60_000, "lag>1m")
    age = AlertCondition(Signal.CHECKPOINT_AGE, 30_000, "checkpoint_age>30s")
    ev = AlertEvaluator([lag, age], timedelta(minutes=5))
    assert ev.evaluate(status(0, source_wm_lag=59_000, checkpoint_ms=0), 0) == []
    assert states(ev.evaluate(status(40_000, source_wm_lag=61_000, checkpoint_ms=0), 40_000)) == [
        ("lag>1m", "firing"),
        ("checkpoint_age>30s", "firing"),
    ]


def test_restarts_within_the_window() -> None:
    c = AlertCondition(Signal.RESTARTS, 0, "restarts>0")
    ev = AlertEvaluator([c], timedelta(seconds=10))
    assert ev.evaluate(status(0, restarts=2), 0) == []  # restarts before the watch began
    assert states(ev.evaluate(status(1000, restarts=3), 1000)) == [("restarts>0", "firing")]
    assert ev.evaluate(status(9000, restarts=3), 9000) == []
    assert states(ev.evaluate(status(12_000, restarts=3), 12_000)) == [("restarts>0", "resolved")]


def test_a_watermark_that_stands_still_while_records_are_read() -> None:
    c = AlertCondition(Signal.WATERMARK_STALLED, 10_000, "watermark_stalled>10s")
    ev = AlertEvaluator([c], timedelta(minutes=5))

    def at(ms: int, wm: int, rate: float) -> list:
        s = JobStatus(job="j", sampled_ms=ms, watermark_ms=wm, records_in_rate=rate)
        return states(ev.evaluate(s, ms))

    assert at(0, 100, 50.0) == []
    assert at(9_000, 100, 50.0) == []
    assert at(11_000, 100, 50.0) == [("watermark_stalled>10s", "firing")]
    assert at(12_000, 100, 0.0) == [("watermark_stalled>10s", "resolved")]  # nothing read
    assert at(30_000, 100, 0.0) == []
    assert at(31_000, 100, 9.0) == []  # reading again: the wait starts over
    assert at(40_000, 200, 9.0) == []


def test_failed_checkpoints_within_the_window() -> None:
    c = AlertCondition(Signal.CHECKPOINT_FAILURES, 0, "checkpoint_failures>0")
    ev = AlertEvaluator([c], timedelta(seconds=10))
    failed = CheckpointRecord(7, "failed", 5_000, None, None, 0, 0)
    ok = CheckpointRecord(8, "completed", 6_000, 20, 5, 10, 10)
    s = JobStatus(job="j", sampled_ms=6_000, checkpoints=(failed, ok))
    assert states(ev.evaluate(s, 6_000)) == [("checkpoint_failures>0", "firing")]
    assert states(ev.evaluate(s, 15_001)) == [("checkpoint_failures>0", "resolved")]
