"""Checkpoint storage that cannot take checkpoints fails a run: at its start when the
storage is not writable, after ``tolerable_failures`` when checkpoints keep failing."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from weirflow import CheckpointConfig, ConfigError, Dataflow
from weirflow.checkpoint import (
    CheckpointCoordinator,
    CheckpointFailuresExceededError,
    CheckpointStorage,
    CheckpointStorageError,
    CompletedCheckpoint,
)
from weirflow.connectors import CollectSink, IterableSource
from weirflow.runtime import RunListener

JOB = "tolerance"


def _block(storage_root: Path, *checkpoint_ids: int) -> None:
    """Make checkpoints fail for real: a file where chk-<n>'s folder must go."""
    job = storage_root / JOB
    job.mkdir(parents=True, exist_ok=True)
    for n in checkpoint_ids:
        (job / f"chk-{n}").write_bytes(b"")


class _StopAfter(RunListener):
    def __init__(self, checkpoint_id: int, stop: threading.Event) -> None:
        self.checkpoint_id = checkpoint_id
        self.stop = stop
        self.completed: list[int] = []

    def checkpoint_completed(self, completed: CompletedCheckpoint) -> None:
        self.completed.append(completed.checkpoint_id)
        if completed.checkpoint_id >= self.checkpoint_id:
            self.stop.set()


def _endless_flow(seen: list[int]) -> Dataflow:
    flow = Dataflow(JOB)

    def note(x: int) -> int:
        seen.append(x)
        return x

    flow.source(IterableSource(itertools.count()), name="numbers").map(note).sink(CollectSink())
    return flow


def _config(root: Path, tolerable: int) -> CheckpointConfig:
    return CheckpointConfig(
        storage=str(root), interval=timedelta(milliseconds=1), tolerable_failures=tolerable
    )


@pytest.mark.timeout(60)  # without the limit the job runs forever
def test_checkpoints_failing_in_a_row_fail_the_run_with_the_reason(tmp_path: Path) -> None:
    """Scenario: every checkpoint fails (the storage breaks after the start probe); with
    tolerable_failures=2 the third failure in a row ends an endless job."""
    _block(tmp_path, 1, 2, 3, 4)
    seen: list[int] = []
    with pytest.raises(CheckpointFailuresExceededError) as info:
        _endless_flow(seen).run(checkpoint=_config(tmp_path, 2))
    assert info.value.failures == 3
    assert info.value.reason.startswith("checkpoint 3: ") and "chk-3" in info.value.reason
    assert "tolerable_failures" in str(info.value)
    assert seen, "the job ran before its checkpoints failed"


@pytest.mark.timeout(60)
def test_a_completed_checkpoint_resets_the_count(tmp_path: Path) -> None:
    """Scenario: two failures, one success, two failures, one success... with
    tolerable_failures=2 the job never fails; it stops after checkpoint 9."""
    _block(tmp_path, 1, 2, 4, 5, 7, 8)
    stop = threading.Event()
    listener = _StopAfter(9, stop)
    _endless_flow([]).run(checkpoint=_config(tmp_path, 2), stop=stop, listener=listener)
    assert listener.completed[:3] == [3, 6, 9]


def test_coordinator_counts_only_failures_in_a_row(tmp_path: Path) -> None:
    """Scenario: declines and a timeout count; a failover's abort does not."""
    storage = CheckpointStorage(str(tmp_path), JOB)
    now = [0]
    coordinator = CheckpointCoordinator(
        _config(tmp_path, 1), storage, ["t"], lambda: now[0], parallelism=1, max_parallelism=1
    )
    coordinator.decline(coordinator.trigger_now(), "t", "disk full")
    coordinator.abort_pending("failover")
    coordinator.trigger_now()
    coordinator.abort_pending("failover")
    coordinator.check_failure_tolerance()
    coordinator.trigger_now()
    now[0] += int(timedelta(minutes=10) / timedelta(milliseconds=1))
    coordinator.check_timeouts()
    with pytest.raises(CheckpointFailuresExceededError, match="timed out"):
        coordinator.check_failure_tolerance()


def test_tolerable_failures_must_be_a_count() -> None:
    with pytest.raises(ConfigError, match="tolerable_failures"):
        CheckpointConfig(tolerable_failures=-1)


def test_a_storage_that_is_a_file_fails_the_run_before_the_first_record(tmp_path: Path) -> None:
    """Scenario: the storage path runs through a regular file: the start probe fails the run
    (also as root, which permissions would not stop)."""
    (tmp_path / "file").write_bytes(b"")
    seen: list[int] = []
    with pytest.raises(CheckpointStorageError, match="not a folder"):
        _endless_flow(seen).run(checkpoint=_config(tmp_path / "file" / "chk", 3))
    assert seen == []
