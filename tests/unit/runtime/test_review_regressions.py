"""Regressions: restarts never restore another run's checkpoint; one-shot iterators refuse a
replay; at-least-once tasks give up an alignment a newer barrier overtook."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from weirflow import CheckpointConfig, ConfigError, Dataflow, RestartStrategy
from weirflow.connectors import CollectSink, IterableSource
from weirflow.graph import OperatorSpec
from weirflow.runtime import Batch, Channel, CheckpointBarrier, Task
from weirflow.runtime.operators import OperatorContext, OperatorLogic
from weirflow.state import KeyGroupRange

N = 500


def _flow(rows: object, fail_once_at: int | None) -> Dataflow:
    failed: list[bool] = []

    def maybe_fail(x: int) -> int:
        if x == fail_once_at and not failed:
            failed.append(True)
            raise ConnectionError("injected failure")  # transient: restarted
        return x

    flow = Dataflow("regression")
    flow.source(IterableSource(rows), name="src").map(maybe_fail, name="m").sink(CollectSink())
    return flow


def test_restart_does_not_restore_a_checkpoint_of_an_earlier_run(tmp_path: Path) -> None:
    config = CheckpointConfig(storage=str(tmp_path), interval=timedelta(minutes=10))
    first = _flow(list(range(N)), None).run(checkpoint=config)
    assert first.checkpoints_completed == 1  # the final checkpoint, positions at the end
    second = _flow(list(range(N)), fail_once_at=100).run(
        checkpoint=config, restore="none", restart=RestartStrategy.fixed_delay(2, timedelta(0))
    )
    assert second.restarts == 1
    assert second.operators["src"].records_in == N, "the restart resumed another run's positions"


def test_running_again_without_restore_over_the_jobs_checkpoints_is_refused(
    tmp_path: Path,
) -> None:
    """Scenario: Dataflow.run twice over one checkpoint folder with restore=None: the second
    is refused before it runs; restore="latest" resumes, restore="none" starts afresh."""
    config = CheckpointConfig(storage=str(tmp_path), interval=timedelta(minutes=10))
    _flow(list(range(N)), None).run(checkpoint=config)
    with pytest.raises(ConfigError, match=r"restore='latest'.*restore='none'"):
        _flow(list(range(N)), None).run(checkpoint=config)
    resumed = _flow(list(range(N)), None).run(checkpoint=config, restore="latest")
    assert resumed.operators["src"].records_in == 0
    fresh = _flow(list(range(N)), None).run(checkpoint=config, restore="none")
    assert fresh.operators["src"].records_in == N


def test_one_shot_iterator_refuses_a_replay_after_a_restart(tmp_path: Path) -> None:
    config = CheckpointConfig(storage=str(tmp_path), interval=timedelta(minutes=10))
    with pytest.raises(ConfigError, match="one-shot iterator"):
        _flow(iter(range(N)), fail_once_at=100).run(
            checkpoint=config, restart=RestartStrategy.fixed_delay(2, timedelta(0))
        )


class _Recorder(OperatorLogic):
    def __init__(self) -> None:
        super().__init__(
            OperatorSpec(id=0, name="r", kind="map"),
            OperatorContext("job", 0, 1, 128, KeyGroupRange(0, 128), clock=lambda: 0),
        )

    def process_batch(self, values, timestamps, keys):  # type: ignore[no-untyped-def]
        return None

    def snapshot_state(self, checkpoint_id: int) -> int:
        return checkpoint_id


def test_at_least_once_task_follows_a_newer_barrier() -> None:
    snapshots: list[int] = []
    channels = [Channel(8), Channel(8)]
    task = Task("r[0/1]", 0, [_Recorder()], channels, [], lambda t, c, s: snapshots.append(c))
    channels[0].put(CheckpointBarrier(1, 0, aligned=False))
    channels[0].put(Batch([1], None))
    channels[0].put(CheckpointBarrier(2, 0, aligned=False))
    channels[1].put(CheckpointBarrier(2, 0, aligned=False))
    for _ in range(10):
        task.step()
    assert snapshots == [2]
