"""One job on 1, 2 and 3 worker processes: the committed output is the same, and exact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chaos_helpers import JOB, committed_results, make_input

pytestmark = pytest.mark.slow


def run_job(tmp_path: Path, log_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``weirflow run`` on the windowed-sum job to its end."""
    env = dict(os.environ, WF_LOG_DIR=str(log_dir))
    return subprocess.run(
        [sys.executable, "-m", "weirflow.cli", "run", JOB, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )


@pytest.mark.parametrize(
    ("parallelism", "workers", "backend"),
    [(4, 1, "memory"), (4, 2, "memory"), (3, 3, "memory"), (2, 2, "memory"), (3, 2, "rocksdb")],
    ids=lambda v: str(v),
)
def test_output_equals_the_batch_answer_on_any_number_of_workers(
    tmp_path: Path, parallelism: int, workers: int, backend: str
) -> None:
    """Scenario: the same input through 1, 2 or 3 worker processes (state in memory, or in
    RocksDB in each worker); committed output is exact."""
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, 30_000, seed=5)
    done = run_job(
        tmp_path,
        log_dir,
        f"--parallelism={parallelism}",
        f"--workers={workers}",
        f"--checkpoint-dir={tmp_path / 'chk'}",
        "--checkpoint-interval=100ms",
        f"--state-backend={backend}",
        *([f"--state-dir={tmp_path / 'state'}"] if backend == "rocksdb" else []),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if backend == "rocksdb":
        databases = {p.name for p in (tmp_path / "state" / "windowed_sum").iterdir()}
        assert {f"per_user-{i}" for i in range(parallelism)} <= databases
    got = committed_results(log_dir)
    missing, extra = expected - got, got - expected
    assert not missing and not extra, (
        f"{sum(missing.values())} missing, {sum(extra.values())} extra "
        f"(e.g. {list(missing)[:3]} {list(extra)[:3]})\n{done.stderr[-3000:]}"
    )
