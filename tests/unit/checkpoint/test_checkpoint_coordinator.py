"""CheckpointCoordinator: triggering rules, completion, failure paths, lifecycle; manual clock."""

from __future__ import annotations

import gc
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from weirflow.checkpoint import (
    CheckpointConfig,
    CheckpointConflictError,
    CheckpointCoordinator,
    CheckpointStatus,
    CheckpointStorage,
    CheckpointTransitionError,
    CoordinatorState,
    Manifest,
    PendingCheckpoint,
    TaskSnapshot,
    state_file_name,
)
from weirflow.errors import CheckpointError, ConfigError

TASKS = ("src[0/2]", "src[1/2]", "sink[0/1]")


class ManualClock:
    """A clock the test moves by hand; returns ms."""

    def __init__(self, now_ms: int = 1_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def storage(tmp_path: Path) -> CheckpointStorage:
    return CheckpointStorage(str(tmp_path), "job")


def coordinator(
    storage: CheckpointStorage, clock: ManualClock, **config: object
) -> CheckpointCoordinator:
    settings = {"interval": timedelta(seconds=1), "storage": storage.root_url, **config}
    return CheckpointCoordinator(
        CheckpointConfig(**settings),
        storage,
        TASKS,
        clock,
        parallelism=2,
        max_parallelism=128,
    )


def ack(coord: CheckpointCoordinator, checkpoint_id: int, task_id: str):
    """Write one state file for ``task_id`` and acknowledge it."""
    handle = coord.storage.write_state(checkpoint_id, state_file_name(task_id, "op"), b"state")
    snapshot = TaskSnapshot(task_id, {"state": handle}, {"position": checkpoint_id})
    return coord.acknowledge(checkpoint_id, snapshot)


def ack_all(coord: CheckpointCoordinator, checkpoint_id: int):
    results = [ack(coord, checkpoint_id, t) for t in TASKS]
    assert results[:-1] == [None, None]
    return results[-1]


def test_interval_counts_from_start_and_from_the_last_trigger(storage, clock) -> None:
    coord = coordinator(storage, clock, max_concurrent=5)
    assert coord.maybe_trigger() is None
    clock.advance(999)
    assert coord.maybe_trigger() is None
    clock.advance(1)
    assert coord.maybe_trigger() == 1
    assert coord.maybe_trigger() is None
    clock.advance(1000)
    assert coord.maybe_trigger() == 2
    assert coord.pending() == [1, 2]


def test_max_concurrent_limits_pending(storage, clock) -> None:
    coord = coordinator(storage, clock, max_concurrent=2)
    ids = []
    for _ in range(4):
        clock.advance(1000)
        ids.append(coord.maybe_trigger())
    assert ids == [1, 2, None, None]
    coord.decline(1, "src[0/2]", "disk full")
    clock.advance(1000)
    assert coord.maybe_trigger() == 3


def test_min_pause_counts_from_the_last_completion(storage, clock) -> None:
    coord = coordinator(storage, clock, min_pause=timedelta(seconds=5))
    clock.advance(1000)
    assert coord.maybe_trigger() == 1
    clock.advance(2000)
    assert ack_all(coord, 1) is not None
    clock.advance(4999)
    assert coord.maybe_trigger() is None
    clock.advance(1)
    assert coord.maybe_trigger() == 2


def test_completes_only_after_every_task_acked(storage, clock) -> None:
    coord = coordinator(storage, clock)
    clock.advance(1000)
    checkpoint_id = coord.maybe_trigger()
    assert checkpoint_id == 1
    assert ack(coord, 1, "src[0/2]") is None
    assert ack(coord, 1, "sink[0/1]") is None
    assert storage.completed_checkpoints() == []
    assert coord.status(1) is CheckpointStatus.PENDING
    clock.advance(250)
    done = ack(coord, 1, "src[1/2]")
    assert done is not None and done.checkpoint_id == 1
    assert done.manifest.duration_ms == 250
    assert done.manifest.tasks.keys() == set(TASKS)
    assert done.manifest.parallelism == 2 and done.manifest.max_parallelism == 128
    assert storage.completed_checkpoints() == [1]
    assert storage.load_manifest(1).tasks["src[0/2]"].metadata == {"position": 1}
    assert coord.status(1) is CheckpointStatus.COMPLETED
    assert coord.latest_completed_id == 1
    stats = coord.stats
    assert (stats.triggered, stats.completed, stats.failed) == (1, 1, 0)
    assert stats.recent_durations_ms == (250,)


def test_timeout_fails_and_deletes_files(storage, clock) -> None:
    coord = coordinator(storage, clock, timeout=timedelta(seconds=3), max_concurrent=2)
    clock.advance(1000)
    coord.maybe_trigger()
    ack(coord, 1, "src[0/2]")
    clock.advance(1000)
    coord.maybe_trigger()
    clock.advance(1999)
    assert coord.check_timeouts() == []
    clock.advance(1)
    assert coord.check_timeouts() == [1]
    assert coord.status(1) is CheckpointStatus.FAILED
    assert coord.pending() == [2]
    assert not storage.fs.exists(f"{storage.root}/chk-1")
    assert coord.stats.failed == 1


def test_decline_fails_and_late_acks_are_ignored(storage, clock) -> None:
    """Scenario: a task declines; acks that arrive afterwards change nothing and leave no files."""
    coord = coordinator(storage, clock)
    clock.advance(1000)
    coord.maybe_trigger()
    ack(coord, 1, "src[0/2]")
    coord.decline(1, "src[1/2]", "snapshot failed")
    assert coord.status(1) is CheckpointStatus.FAILED
    assert ack(coord, 1, "src[1/2]") is None
    assert ack(coord, 1, "sink[0/1]") is None
    assert not storage.fs.exists(f"{storage.root}/chk-1")
    assert storage.completed_checkpoints() == []
    coord.decline(1, "sink[0/1]", "again")
    assert coord.stats.failed == 1


def test_newer_completion_subsumes_older_pending(storage, clock) -> None:
    coord = coordinator(storage, clock, max_concurrent=3)
    for _ in range(2):
        clock.advance(1000)
        coord.maybe_trigger()
    ack(coord, 1, "src[0/2]")
    assert ack_all(coord, 2) is not None
    assert coord.status(1) is CheckpointStatus.SUBSUMED
    assert coord.pending() == []
    assert ack(coord, 1, "src[1/2]") is None
    assert storage.completed_checkpoints() == [2]
    assert not storage.fs.exists(f"{storage.root}/chk-1")
    assert coord.stats.subsumed == 1


def test_retention_runs_after_each_completion(storage, clock) -> None:
    coord = coordinator(storage, clock, retained=2)
    for n in range(1, 5):
        clock.advance(1000)
        assert coord.maybe_trigger() == n
        ack_all(coord, n)
    assert storage.completed_checkpoints() == [3, 4]


def test_ids_continue_after_a_restore(storage, clock) -> None:
    config = CheckpointConfig(storage=storage.root_url)
    coord = CheckpointCoordinator(
        config, storage, TASKS, clock, parallelism=2, max_parallelism=128, first_checkpoint_id=8
    )
    assert coord.trigger_now() == 8
    assert coord.trigger_now() == 9


def test_savepoint_is_written_and_not_subsumed(storage, clock, tmp_path: Path) -> None:
    coord = coordinator(storage, clock, max_concurrent=2)
    savepoint_id = coord.trigger_now(savepoint=True, target=str(tmp_path / "sp"))
    clock.advance(1000)
    periodic_id = coord.maybe_trigger()
    assert periodic_id == savepoint_id + 1
    ack_all(coord, periodic_id)
    assert coord.status(savepoint_id) is CheckpointStatus.PENDING
    done = ack_all(coord, savepoint_id)
    assert done.savepoint_url == f"file://{tmp_path}/sp"
    assert storage.load_savepoint(done.savepoint_url).is_savepoint
    assert coord.latest_completed_id == periodic_id


def test_savepoint_defaults_to_the_job_folder(storage, clock) -> None:
    coord = coordinator(storage, clock)
    done = ack_all(coord, coord.trigger_now(savepoint=True))
    assert done.savepoint_url == f"{storage.root_url}/savepoints/savepoint-1"
    with pytest.raises(ConfigError, match="savepoint=True"):
        coord.trigger_now(target="/tmp/x")


def test_unknown_and_duplicate_acks_raise(storage, clock) -> None:
    coord = coordinator(storage, clock)
    coord.trigger_now()
    with pytest.raises(CheckpointError, match="not one of the job's tasks"):
        coord.acknowledge(1, TaskSnapshot("ghost[0/1]"))
    ack(coord, 1, "src[0/2]")
    with pytest.raises(CheckpointError, match="twice"):
        ack(coord, 1, "src[0/2]")


def test_invalid_transitions_raise() -> None:
    pending = PendingCheckpoint(1, 0, ["a"])
    pending.transition(CheckpointStatus.COMPLETED)
    for target in CheckpointStatus:
        with pytest.raises(CheckpointTransitionError, match="cannot go from COMPLETED"):
            pending.transition(target)
    with pytest.raises(CheckpointTransitionError, match="not PENDING"):
        pending.acknowledge(TaskSnapshot("a"))


def test_lifecycle_suspend_resume_shutdown(storage, clock) -> None:
    coord = coordinator(storage, clock)
    with pytest.raises(CheckpointTransitionError, match="RUNNING to RUNNING"):
        coord.resume()
    coord.suspend()
    clock.advance(5000)
    assert coord.maybe_trigger() is None
    assert coord.trigger_now() == 1
    coord.resume()
    assert coord.shutdown("job finished") == [1]
    assert coord.state is CoordinatorState.SHUT_DOWN
    assert coord.status(1) is CheckpointStatus.FAILED
    clock.advance(5000)
    assert coord.maybe_trigger() is None
    with pytest.raises(CheckpointTransitionError, match="shut down"):
        coord.trigger_now()
    with pytest.raises(CheckpointTransitionError):
        coord.suspend()


def test_abort_pending_on_failover(storage, clock) -> None:
    coord = coordinator(storage, clock, max_concurrent=2)
    coord.trigger_now()
    coord.trigger_now()
    assert coord.abort_pending("task src[0/2] failed") == [1, 2]
    assert coord.pending() == []
    clock.advance(1000)
    assert coord.maybe_trigger() == 3


def test_conflicting_manifest_fails_without_deleting_the_winner(storage, clock) -> None:
    """Scenario: a zombie coordinator already completed checkpoint 1 of the same job."""
    storage.commit_manifest(Manifest("job", 1, 0, 1, "exactly_once", 2, 128, {}))
    coord = coordinator(storage, clock)
    coord.trigger_now()
    ack(coord, 1, "src[0/2]")
    ack(coord, 1, "src[1/2]")
    with pytest.raises(CheckpointConflictError):
        ack(coord, 1, "sink[0/1]")
    assert coord.status(1) is CheckpointStatus.FAILED
    assert storage.completed_checkpoints() == [1]


def test_unstorable_metadata_fails_the_checkpoint(storage, clock) -> None:
    coord = coordinator(storage, clock)
    coord.trigger_now()
    ack(coord, 1, "src[0/2]")
    ack(coord, 1, "src[1/2]")
    with pytest.raises(CheckpointError, match="metadata cannot be stored"):
        coord.acknowledge(1, TaskSnapshot("sink[0/1]", {}, {"lock": threading.Lock()}))
    assert coord.status(1) is CheckpointStatus.FAILED
    assert storage.completed_checkpoints() == []


def test_acks_from_many_threads_complete_exactly_once(storage, clock) -> None:
    """Scenario: every task acknowledges from its own thread at the same moment."""
    task_ids = [f"t[{i}/16]" for i in range(16)]
    coord = CheckpointCoordinator(
        CheckpointConfig(storage=storage.root_url),
        storage,
        task_ids,
        clock,
        parallelism=16,
        max_parallelism=128,
    )
    checkpoint_id = coord.trigger_now()
    barrier = threading.Barrier(len(task_ids))
    results = []

    def run(task_id: str) -> None:
        barrier.wait(timeout=10)
        results.append(coord.acknowledge(checkpoint_id, TaskSnapshot(task_id)))

    threads = [threading.Thread(target=run, args=(t,)) for t in task_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    completed = [r for r in results if r is not None]
    assert len(results) == 16 and len(completed) == 1
    assert storage.completed_checkpoints() == [checkpoint_id]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"task_ids": []},
        {"parallelism": 0},
        {"parallelism": 4, "max_parallelism": 2},
        {"first_checkpoint_id": 0},
    ],
)
def test_constructor_validation(storage, clock, kwargs) -> None:
    args = {"task_ids": TASKS, "parallelism": 2, "max_parallelism": 128, **kwargs}
    with pytest.raises(ConfigError):
        CheckpointCoordinator(
            CheckpointConfig(storage=storage.root_url),
            storage,
            args.pop("task_ids"),
            clock,
            **args,
        )


def test_failed_savepoint_copy_still_completes_the_checkpoint(storage, clock, tmp_path) -> None:
    """Scenario: the savepoint folder is already taken; the checkpoint completes, the copy fails."""
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "_manifest").write_bytes(b"{}")
    coord = coordinator(storage, clock)
    done = ack_all(coord, coord.trigger_now(savepoint=True, target=str(tmp_path / "taken")))
    assert done is not None and done.savepoint_url is None
    assert "already holds a savepoint" in done.savepoint_error
    assert storage.completed_checkpoints() == [1]


def _live_task_snapshots() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is TaskSnapshot)


def test_after_many_checkpoints_only_the_retained_ones_are_remembered(storage, clock) -> None:
    """Scenario: 60 checkpoints complete (one fails) with retained=3; the coordinator keeps
    no task snapshot of a finished checkpoint, only its status."""
    coord = coordinator(storage, clock, retained=3)
    before = _live_task_snapshots()
    for n in range(1, 61):
        clock.advance(1000)
        assert coord.maybe_trigger() == n
        if n == 59:
            coord.decline(n, "sink[0/1]", "disk full")
            continue
        assert ack_all(coord, n) is not None
    assert _live_task_snapshots() == before
    assert storage.completed_checkpoints() == [57, 58, 60]
    assert [coord.status(n) for n in (56, 57, 59, 60)] == [
        CheckpointStatus.COMPLETED,
        CheckpointStatus.COMPLETED,
        CheckpointStatus.FAILED,
        CheckpointStatus.COMPLETED,
    ]
