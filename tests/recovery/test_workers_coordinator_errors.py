"""A coordinator that outlives a job's unexpected error (``weirflow coordinator`` runs job after
job): the workers of the failed job are released for the next one."""

from __future__ import annotations

import os
import resource
from datetime import timedelta
from pathlib import Path

import pytest
from chaos_helpers import JOB, committed_results, make_input

from weirflow.api import load_dataflow
from weirflow.checkpoint import CheckpointConfig
from weirflow.checkpoint.errors import CheckpointConflictError
from weirflow.runtime.checkpointed import RunListener
from weirflow.runtime.coordinator import JobCoordinator, JobSpec
from weirflow.runtime.launcher import LocalLauncher
from weirflow.runtime.restart import RestartStrategy
from weirflow.runtime.wire import new_secret

pytestmark = pytest.mark.slow


def test_workers_are_cancelled_when_a_job_ends_with_a_checkpoint_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scenario: another writer holds checkpoint 1's manifest name, so the coordinator's
    manifest commit conflicts and the job ends with that error; the same coordinator then
    runs the next job on the same workers (they were cancelled, not left deployed)."""
    log_dir = tmp_path / "log"
    make_input(log_dir, 2_000, seed=3)
    monkeypatch.setenv("WF_LOG_DIR", str(log_dir))
    chk = tmp_path / "chk"
    taken = chk / "windowed_sum" / "chk-1"
    taken.mkdir(parents=True)
    # a name that exists (so the exclusive commit loses) but is no completed manifest
    os.symlink(tmp_path / "elsewhere", taken / "_manifest")
    graph = load_dataflow(JOB).graph
    secret = new_secret()
    coordinator = JobCoordinator(secret, launcher=LocalLauncher(2, 1, secret, []), worker_wait_s=20)
    coordinator.start()
    try:
        with pytest.raises(CheckpointConflictError):
            coordinator.run(
                JobSpec(
                    JOB,
                    graph,
                    2,
                    checkpoint=CheckpointConfig(
                        storage=str(chk), interval=timedelta(milliseconds=100)
                    ),
                )
            )
        result = coordinator.run(JobSpec(JOB, graph, 2, guarantee="at_least_once"))
        assert result.restarts == 0
        assert result.operators["events"].records_in > 0
    finally:
        coordinator.close()


class _LiftLimitOnFailure(RunListener):
    """Gives the coordinator its file size back once an attempt failed."""

    def __init__(self, limit: tuple[int, int]) -> None:
        self.limit = limit
        self.failures: list[str] = []

    def attempt_failed(self, attempt: int, error: BaseException, wait_ms: int | None) -> None:
        self.failures.append(str(error))
        resource.setrlimit(resource.RLIMIT_FSIZE, self.limit)


def test_a_manifest_that_cannot_be_written_fails_the_checkpoint_not_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scenario: the coordinator's process may write no file over 2 KB (a full or broken
    checkpoint storage, as far as the manifest goes), so every manifest write fails. Each
    such checkpoint fails like one a task declined, the last one fails three times, and the
    attempt fails retriably: the restart strategy restarts it (the workers, started before,
    still write their state), and the job ends with the batch answer."""
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, 2_000, seed=4)
    monkeypatch.setenv("WF_LOG_DIR", str(log_dir))
    graph = load_dataflow(JOB).graph
    secret = new_secret()
    coordinator = JobCoordinator(secret, launcher=LocalLauncher(2, 1, secret, []), worker_wait_s=20)
    coordinator.start()
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    listener = _LiftLimitOnFailure(limit)
    spec = JobSpec(
        JOB,
        graph,
        2,
        checkpoint=CheckpointConfig(storage=str(tmp_path / "chk")),
        restart=RestartStrategy.fixed_delay(3, timedelta(0)),
    )
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, limit[1]))
    try:
        result = coordinator.run(spec, listener=listener)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        coordinator.close()
    assert len(listener.failures) == 1 and "failed 3 times" in listener.failures[0]
    assert result.restarts == 1
    assert committed_results(log_dir) == expected
