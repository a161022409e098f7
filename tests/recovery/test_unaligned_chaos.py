"""Unaligned checkpoints under SIGKILLs: a job with a multi-input keyed stage at parallelism 2
on 2 worker processes (network channels), killed at random, or killed and restored at another
parallelism; output equals the batch answer."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chaos_helpers import (
    CheckpointsSinceLastCall,
    assert_exact_output,
    chaos_env,
    make_input,
    two_worker_args,
)

from weirflow.testing import ChaosConfig, run_under_chaos

pytestmark = pytest.mark.slow

JOB = str(Path(__file__).parent / "jobs" / "unaligned_sum.py")
N = 100_000
KILLS = 30
_IN_FLIGHT = re.compile(r"checkpoint (\d+) completed \([^)]*\) with (\d+) in-flight buffers")
_RESTORED = re.compile(r"starting from checkpoint (\d+)")


def test_exactly_once_with_unaligned_checkpoints_under_kills(
    tmp_path: Path, chaos_seed: int
) -> None:
    """Scenario: a slow keyed stage holds the job under backpressure, so unaligned checkpoints
    hold in-flight records; 30 SIGKILLs of a worker or the coordinator, each after a checkpoint
    with in-flight records completed, plus kills while state is written and around commits;
    restarts replay the in-flight records once."""
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, N, chaos_seed)
    env = chaos_env(
        log_dir,
        chaos_seed,
        "state_write=0.005,after_manifest=0.005,sink_commit=0.003",
        WF_SLOW_US="30",
    )
    report = run_under_chaos(
        JOB,
        two_worker_args(tmp_path / "chk", 2, "--unaligned"),
        ChaosConfig(
            kills=KILLS,
            seed=chaos_seed,
            target="any",
            # a coordinator kill restarts every process: a few of those, mostly worker kills
            supervisor_share=0.1,
            min_delay_s=0.05,
            max_delay_s=0.3,
            timeout_s=200,
        ),
        log_path=tmp_path / "chaos.log",
        env=env,
        progressed=CheckpointsSinceLastCall(tmp_path / "chaos.log", _IN_FLIGHT.pattern),
    )
    assert report.kills >= KILLS, f"job ended before {KILLS} kills landed: {report.describe()}"
    in_flight = {int(c): int(n) for c, n in _IN_FLIGHT.findall(report.log)}
    restored = {int(c) for c in _RESTORED.findall(report.log)}
    assert any(in_flight.get(c) for c in restored), (
        f"no restart restored in-flight records: restored {sorted(restored)}, in-flight "
        f"{in_flight}; {report.describe()}"
    )
    assert_exact_output(log_dir, expected, report.describe())


def _wait_for_in_flight_checkpoint(log_path: Path, proc: subprocess.Popen[bytes]) -> int:
    """Wait until the run log shows a completed checkpoint holding in-flight records."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
        held = [int(c) for c, n in _IN_FLIGHT.findall(log_path.read_text(errors="replace"))
                if int(n)]  # fmt: skip
        if held:
            return held[-1]
        time.sleep(0.02)
    raise AssertionError("no checkpoint with in-flight records within 120 s")


def test_an_unaligned_checkpoint_restores_at_parallelism_3_on_workers(
    tmp_path: Path, chaos_seed: int
) -> None:
    """Scenario: the job on 2 worker processes is SIGKILLed (every process) right after an
    unaligned checkpoint with in-flight records completed; the next run restores it at
    parallelism 3 on 3 workers, each worker replaying the in-flight records whose key groups
    its subtasks own: output equals the batch answer."""
    log_dir, chk = tmp_path / "log", tmp_path / "chk"
    expected = make_input(log_dir, 30_000, chaos_seed)
    # 300 µs a record: the slow stage holds the first run for 4.5 s or more, so it is still
    # running, backpressured, at its first checkpoint (2 s) on an idle machine too
    env = chaos_env(log_dir, chaos_seed, "", WF_SLOW_US="300")
    run = [sys.executable, "-m", "weirflow.cli", "run", JOB]
    # checkpoints 2 s apart: the kill lands before the next one completes
    slow = "--checkpoint-interval=2s"
    first = two_worker_args(chk, 2, "--unaligned", slow)
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen(
            [*run, *first], env=env, stdout=log, stderr=log, start_new_session=True
        )
        try:
            held = _wait_for_in_flight_checkpoint(tmp_path / "first.log", proc)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    second = [a.replace("--workers=2", "--workers=3") for a in two_worker_args(chk, 3, slow)]
    rescaled = subprocess.run(
        [*run, *second, "--unaligned", "--restore=latest"],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert rescaled.returncode == 0, rescaled.stderr[-3000:]
    assert f"starting from checkpoint {held}" in rescaled.stderr, rescaled.stderr[-3000:]
    assert_exact_output(log_dir, expected, "restored at parallelism 3")
