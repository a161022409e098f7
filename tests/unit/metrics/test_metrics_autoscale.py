"""Lag-driven rescaling decisions: sustained lag up, empty backlog down, cool-down, bounds."""

from __future__ import annotations

from datetime import timedelta

import pytest

from weirflow.metrics.autoscale import AutoscaleConfig, AutoscalePolicy, Direction
from weirflow.metrics.model import JobStatus

CONFIG = AutoscaleConfig(
    min_parallelism=1,
    max_parallelism=4,
    target_lag=timedelta(seconds=10),
    cooldown=timedelta(seconds=60),
    sustain=timedelta(seconds=5),
)


def sample(at_ms: int, lag: int, rate: float) -> JobStatus:
    return JobStatus(job="j", sampled_ms=at_ms, split_lag={"src/t/0": lag}, records_in_rate=rate)


def feed(policy: AutoscalePolicy, start_ms: int, seconds: int, lag: int, rate: float) -> list:
    out = []
    for s in range(seconds + 1):
        d = policy.observe(sample(start_ms + s * 1000, lag, rate), start_ms + s * 1000)
        if d is not None:
            out.append((s, d.direction, d.parallelism, d.target))
    return out


def test_sustained_lag_doubles_after_the_cooldown_and_never_past_max() -> None:
    policy = AutoscalePolicy(CONFIG, parallelism=3, last_rescale_ms=0)
    # 20 s of catch-up time (2000 records at 100/s), but the cool-down runs until 60 s
    assert feed(policy, 0, 59, lag=2000, rate=100.0) == []
    (first, *_) = feed(policy, 60_000, 3, lag=2000, rate=100.0)
    assert first == (0, Direction.UP, 3, 4)


def test_lag_must_hold_for_the_whole_sustain_period() -> None:
    policy = AutoscalePolicy(CONFIG, parallelism=1, last_rescale_ms=0)
    assert feed(policy, 100_000, 3, lag=2000, rate=100.0) == []  # 3 s < 5 s sustained
    assert feed(policy, 104_000, 0, lag=500, rate=100.0) == []  # 5 s: below target again
    decisions = feed(policy, 105_000, 6, lag=5000, rate=0.0)  # nothing read: stuck
    assert decisions[0][1:] == (Direction.UP, 1, 2)
    assert decisions[0][0] == 5


def test_an_empty_backlog_halves_down_to_min_and_a_busy_job_stays() -> None:
    policy = AutoscalePolicy(CONFIG, parallelism=4, last_rescale_ms=0)
    assert feed(policy, 100_000, 10, lag=3, rate=1000.0) == []  # keeps up, a little waits
    down = feed(policy, 111_000, 6, lag=0, rate=0.0)
    assert down[0][1:] == (Direction.DOWN, 4, 2)
    at_min = AutoscalePolicy(CONFIG, parallelism=1, last_rescale_ms=0)
    assert feed(at_min, 100_000, 10, lag=0, rate=0.0) == []


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="min <= max"):
        AutoscaleConfig(min_parallelism=3, max_parallelism=2)
    with pytest.raises(ValueError, match="target_lag"):
        AutoscaleConfig(target_lag=timedelta(0))
