"""Error policies: fail names the operator, subtask and record; retry with backoff; dead letter."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from weirflow import Dataflow, DeadLetter, OperatorError, RetryPolicy
from weirflow.connectors import CollectSink, IterableSource
from weirflow.errors import ConfigError, WeirflowError
from weirflow.runtime import RuntimeOptions, run_unchecked


class FlakyError(WeirflowError):
    """A transient failure (weirflow's convention: ``retriable = True``)."""

    retriable = True


class Flaky:
    """Fails ``failures`` times per poisoned record with ``error``, then succeeds."""

    def __init__(self, poisoned: set[int], failures: int, error: type[Exception]) -> None:
        self.poisoned = poisoned
        self.failures = failures
        self.error = error
        self.calls: Counter[int] = Counter()

    def __call__(self, v: int) -> int:
        self.calls[v] += 1
        if v in self.poisoned and self.calls[v] <= self.failures:
            raise self.error(f"flaky on {v}")
        return v * 10


def run_map(
    fn: Any, on_error: Any, rows: list[int], parallelism: int = 1
) -> tuple[list[Any], list[DeadLetter], list[float], Any]:
    """Run source → map(fn) → sink with a recording fake sleep; return outputs and dead letters."""
    flow = Dataflow("policies")
    mapped = flow.source(IterableSource(rows, partitions=2)).map(
        fn, name="risky", on_error=on_error
    )
    out, dead = CollectSink(), CollectSink()
    mapped.sink(out)
    mapped.dead_letters().sink(dead)
    sleeps: list[float] = []
    result = run_unchecked(
        flow.graph,
        parallelism,
        128,
        RuntimeOptions(source_batch_size=8),
        clock=lambda: 1_000,
        sleep=sleeps.append,
    )
    return out.results, dead.results, sleeps, result


@pytest.mark.parametrize("parallelism", [1, 2])
def test_fail_policy_raises_operator_error_naming_operator_subtask_and_record(
    parallelism: int,
) -> None:
    """Scenario: the map function divides by zero on record 13 under the default policy."""

    def boom(v: int) -> float:
        return 1 / (v - 13)

    with pytest.raises(OperatorError) as info:
        run_map(boom, "fail", list(range(30)), parallelism)
    err = info.value
    assert err.operator == "risky"
    assert err.record == 13
    assert err.parallelism == parallelism
    assert 0 <= err.subtask < parallelism
    assert f"risky[{err.subtask}/{parallelism}]" in str(err)
    assert "13" in str(err)
    assert isinstance(err.__cause__, ZeroDivisionError)


def test_retry_then_succeed_with_exponential_backoff() -> None:
    """Scenario: a retriable error twice on one record, then success."""
    fn = Flaky({5}, failures=2, error=FlakyError)
    policy = RetryPolicy(
        max_attempts=4,
        initial_backoff=timedelta(milliseconds=100),
        max_backoff=timedelta(seconds=1),
        multiplier=2.0,
    )
    out, dead, sleeps, result = run_map(fn, policy, list(range(20)))
    assert sorted(out) == [v * 10 for v in range(20)]
    assert dead == []
    assert sleeps and all(0 < s <= 1.0 for s in sleeps)
    assert sleeps == sorted(sleeps)
    assert result.operators["risky"].dead_lettered == 0


def test_retry_gives_up_after_max_attempts_and_dead_letters() -> None:
    """Scenario: two records fail with OSError on every attempt."""
    fn = Flaky({3, 11}, failures=100, error=OSError)
    policy = RetryPolicy(max_attempts=3, initial_backoff=timedelta(milliseconds=10))
    out, dead, sleeps, result = run_map(fn, policy, list(range(16)))
    assert sorted(out) == [v * 10 for v in range(16) if v not in (3, 11)]
    assert sorted(d.value for d in dead) == [3, 11]
    for d in dead:
        assert d.attempts == 3
        assert fn.calls[d.value] == 3  # max_attempts counts every call, the first included
        assert d.error_type == "builtins.OSError"
        assert d.message == f"flaky on {d.value}"
        assert d.operator == "risky"
    assert len(sleeps) == 2 * 2  # two waits between three attempts, per record
    counts = result.operators["risky"]
    assert (counts.records_in, counts.records_out, counts.dead_lettered) == (16, 14, 2)


def test_a_non_retriable_error_is_dead_lettered_at_once() -> None:
    """Scenario: a ValueError under a RetryPolicy that retries only OSError and retriable errors."""
    fn = Flaky({7}, failures=100, error=ValueError)
    out, dead, sleeps, _ = run_map(fn, RetryPolicy(max_attempts=5), list(range(10)))
    (letter,) = dead
    assert letter.value == 7
    assert letter.attempts == 1
    assert letter.error_type == "builtins.ValueError"
    assert sleeps == []
    assert len(out) == 9


def test_dead_letter_policy_keeps_going() -> None:
    """Scenario: every fourth record divides by zero under on_error='dead_letter'."""
    out, dead, _, result = run_map(
        lambda v: 100 // (v % 4), "dead_letter", list(range(12)), parallelism=2
    )
    assert sorted(d.value for d in dead) == [0, 4, 8]
    assert all(d.attempts == 1 and "ZeroDivisionError" in d.traceback for d in dead)
    assert sorted(out) == sorted(100 // (v % 4) for v in range(12) if v % 4)
    counts = result.operators["risky"]
    assert counts.records_in == counts.records_out + counts.filtered + counts.dead_lettered


def test_filter_flat_map_and_key_selector_failures_follow_the_policy() -> None:
    """Scenario: a filter and a flat_map each raise on one record under on_error='dead_letter'."""
    flow = Dataflow("more_policies")
    src = flow.source(IterableSource(list(range(10))))
    kept = src.filter(lambda v: 10 // (v - 2) > 0, name="f", on_error="dead_letter")
    spread = kept.flat_map(lambda v: range(10 // (v - 5)), name="fm", on_error="dead_letter")
    out, dead_f, dead_fm = CollectSink(), CollectSink(), CollectSink()
    spread.sink(out)
    kept.dead_letters().sink(dead_f)
    spread.dead_letters().sink(dead_fm)
    result = flow.run(1)
    assert [d.value for d in dead_f.results] == [2]
    assert [d.value for d in dead_fm.results] == [5]
    f = result.operators["f"]
    assert (f.records_in, f.records_out, f.filtered, f.dead_lettered) == (10, 7, 2, 1)
    expected = [x for v in (3, 4, 6, 7, 8, 9) for x in range(10 // (v - 5))]
    assert sorted(out.results) == sorted(expected)


def test_on_error_is_validated() -> None:
    flow = Dataflow("bad_policy")
    with pytest.raises(ConfigError, match="on_error"):
        flow.source(IterableSource([1])).map(lambda v: v, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="on_error"):
        flow.source(IterableSource([1]), on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_a_failing_timestamp_extractor_is_called_once_per_record() -> None:
    """Scenario: the source's timestamp extractor raises on one record under dead_letter."""
    calls: Counter[int] = Counter()

    def stamp(v: int) -> int:
        calls[v] += 1
        if v == 6:
            raise KeyError("ts")
        return v

    flow = Dataflow("stamps")
    src = flow.source(IterableSource(list(range(10))), timestamp=stamp, on_error="dead_letter")
    out, dead = CollectSink(), CollectSink()
    src.sink(out)
    src.dead_letters().sink(dead)
    flow.run(1)
    assert sorted(out.results) == [v for v in range(10) if v != 6]
    assert [(d.value, d.attempts, d.timestamp_ms) for d in dead.results] == [(6, 1, None)]
    assert calls == Counter(range(10))
