"""Checkpoint metrics: counters from a real coordinator, sizes, quantiles, latency markers."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from weirflow.checkpoint import CheckpointConfig, CheckpointCoordinator, CheckpointStorage
from weirflow.metrics import CheckpointTracker, JobRegistry
from weirflow.metrics.checkpoints import _quantile


class ManualClock:
    def __init__(self, now_ms: int = 5_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def sample(m: JobRegistry, name: str) -> float:
    got = m.registry.get_sample_value(name, {"job": m.job})
    return 0.0 if got is None else got


def test_failed_checkpoints_are_counted_and_kept_in_the_history(tmp_path: Path) -> None:
    """Scenario: of two triggered checkpoints one is declined by a task and fails."""
    clock = ManualClock()
    config = CheckpointConfig(storage=str(tmp_path), interval=timedelta(seconds=1))
    coordinator = CheckpointCoordinator(
        config,
        CheckpointStorage(str(tmp_path), "cp"),
        ["a[0/1]"],
        clock,
        parallelism=1,
        max_parallelism=128,
    )
    m = JobRegistry("cp")
    tracker = CheckpointTracker(m, clock)
    tracker.attach(coordinator)
    first = coordinator.trigger_now()
    tracker.task_snapshot(first, barrier=True, is_sink=False)
    tracker.poll(clock())
    assert tracker.history() == ()
    coordinator.decline(first, "a[0/1]", "disk full")
    second = coordinator.trigger_now()
    tracker.poll(clock())
    assert [(r.checkpoint_id, r.status) for r in tracker.history()] == [(first, "failed")]
    assert sample(m, "weirflow_checkpoints_triggered_total") == 2
    assert sample(m, "weirflow_checkpoints_failed_total") == 1
    tracker.poll(clock())
    assert len(tracker.history()) == 1, "a failure is recorded once"
    assert second in coordinator.pending()
    coordinator.shutdown()


def test_completed_checkpoint_sizes_durations_and_age() -> None:
    clock = ManualClock()
    m = JobRegistry("sizes")
    tracker = CheckpointTracker(m, clock)
    tracker.completed(1, 1_000, 1_050, [("chk-1/a", 100), ("shared/s1", 1_000)])
    assert sample(m, "weirflow_checkpoint_full_size_bytes") == 1_100
    assert sample(m, "weirflow_checkpoint_incremental_size_bytes") == 1_100
    tracker.completed(2, 2_000, 2_150, [("chk-2/a", 120), ("shared/s1", 1_000), ("shared/s2", 7)])
    assert sample(m, "weirflow_checkpoint_full_size_bytes") == 1_127
    assert sample(m, "weirflow_checkpoint_incremental_size_bytes") == 127  # s1 was reused
    assert sample(m, "weirflow_checkpoints_completed_total") == 2
    assert sample(m, "weirflow_checkpoint_duration_seconds_count") == 2
    assert sample(m, "weirflow_checkpoint_duration_seconds_sum") == pytest.approx(0.2)
    assert sample(m, "weirflow_checkpoint_duration_p50_seconds") == pytest.approx(0.1)
    assert sample(m, "weirflow_checkpoint_last_completed_id") == 2
    tracker.poll(2_150 + 3_000)
    assert sample(m, "weirflow_checkpoint_last_completed_age_seconds") == pytest.approx(3.0)
    history = tracker.history()
    assert [(r.checkpoint_id, r.duration_ms, r.incremental_bytes) for r in history] == [
        (1, 50, 1_100),
        (2, 150, 127),
    ]


def test_latency_markers_ride_the_barrier_to_the_sinks() -> None:
    clock = ManualClock()
    m = JobRegistry("lat")
    tracker = CheckpointTracker(m, clock)
    tracker.task_snapshot(7, barrier=True, is_sink=False)  # the source: barrier injected
    clock.now_ms += 15
    tracker.task_snapshot(7, barrier=True, is_sink=False)
    clock.now_ms += 25
    tracker.task_snapshot(7, barrier=True, is_sink=True)  # the marker reached a sink
    clock.now_ms += 100
    tracker.task_snapshot(7, barrier=False, is_sink=True)  # an ended sink: no marker
    assert sample(m, "weirflow_end_to_end_latency_seconds_count") == 1
    assert sample(m, "weirflow_end_to_end_latency_seconds_sum") == pytest.approx(0.040)
    tracker.completed(7, clock.now_ms - 140, clock.now_ms, [])
    (rec,) = tracker.history()
    assert rec.alignment_ms == 40  # injection to the last aligned snapshot
    assert sample(m, "weirflow_checkpoint_alignment_seconds_count") == 1


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 0.5, 0.0), ([7], 0.99, 7.0), ([1, 2, 3, 4, 5], 0.5, 3.0), ([10, 20], 0.5, 15.0)],
)
def test_quantile(values: list[int], q: float, expected: float) -> None:
    assert _quantile(values, q) == pytest.approx(expected)


def test_p99_lies_between_the_median_and_the_maximum() -> None:
    data = list(range(1, 201))
    assert _quantile(data, 0.5) < _quantile(data, 0.99) <= 200
