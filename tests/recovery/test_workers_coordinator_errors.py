"""A coordinator that outlives a job's unexpected error (``weirflow coordinator`` runs job after
job): the workers of the failed job are released for the next one."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from chaos_helpers import JOB, make_input

from weirflow.checkpoint import CheckpointConfig
from weirflow.checkpoint.errors import CheckpointConflictError
from weirflow.cli.jobs import load_dataflow
from weirflow.runtime.coordinator import JobCoordinator, JobSpec
from weirflow.runtime.launcher import LocalLauncher
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
