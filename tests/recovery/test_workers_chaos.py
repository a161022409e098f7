"""A job on 2 worker processes under SIGKILLs of either worker and of the coordinator."""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos_helpers import JOB, assert_exact_output, chaos_env, make_input, two_worker_args

from weirflow.testing import ChaosConfig, run_under_chaos

pytestmark = pytest.mark.slow

N = 200_000


def test_exactly_once_on_two_workers_under_30_kills(tmp_path: Path, chaos_seed: int) -> None:
    """Scenario: parallelism 4 on 2 workers; 30+ SIGKILLs of a worker or the coordinator at
    random moments, and kills at the checkpoint protocol's phases; output equals the batch."""
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, N, chaos_seed)
    env = chaos_env(
        log_dir,
        chaos_seed,
        "state_write=0.002,after_manifest=0.002,sink_commit=0.001,pre_commit=0.001",
        WF_THROTTLE_US="60",
    )
    report = run_under_chaos(
        JOB,
        two_worker_args(tmp_path / "chk", 4),
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
    assert_exact_output(log_dir, expected, report.describe())
