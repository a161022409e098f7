"""A job on 2 worker processes under SIGKILLs of either worker and of the coordinator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from chaos_helpers import JOB, committed_results, make_input

from weirflow.testing import ChaosConfig, run_under_chaos

pytestmark = pytest.mark.slow

N = 200_000


def test_exactly_once_on_two_workers_under_30_kills(tmp_path: Path, chaos_seed: int) -> None:
    """Scenario: parallelism 4 on 2 workers; 30+ SIGKILLs of a worker or the coordinator at
    random moments, and kills at the checkpoint protocol's phases; output equals the batch."""
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, N, chaos_seed)
    env = dict(
        os.environ,
        WF_LOG_DIR=str(log_dir),
        WF_THROTTLE_US="60",
        WEIRFLOW_FAULTS="state_write=0.002,after_manifest=0.002,sink_commit=0.001,pre_commit=0.001",
        WEIRFLOW_FAULT_SEED=str(chaos_seed),
    )
    report = run_under_chaos(
        JOB,
        [
            "--parallelism=4",
            "--workers=2",
            f"--checkpoint-dir={tmp_path / 'chk'}",
            "--checkpoint-interval=100ms",
            "--restart-strategy=fixed-delay",
            "--max-restarts=1000",
            "--restart-delay=20ms",
            "--heartbeat-timeout=5s",
        ],
        ChaosConfig(
            kills=30,
            seed=chaos_seed,
            target="any",
            min_delay_s=0.3,
            max_delay_s=1.2,
            timeout_s=400,
        ),
        log_path=tmp_path / "chaos.log",
        env=env,
    )
    assert report.kills >= 30, f"job ended before 30 kills landed: {report.describe()}"
    assert report.worker_kills >= 10 and report.supervisor_kills >= 3, report.describe()
    got = committed_results(log_dir)
    missing, extra = expected - got, got - expected
    assert not missing and not extra, (
        f"{sum(missing.values())} missing, {sum(extra.values())} extra; {report.describe()}"
    )
