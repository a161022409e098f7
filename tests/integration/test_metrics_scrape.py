"""Scraping /metrics of a real `weirflow run` while it runs, across a SIGKILL of its worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recovery"))

from chaos_helpers import JOB, ThrottleRelease, committed_results, make_input
from scraping import Samples, free_port, scrape, total

from weirflow.testing import children

pytestmark = pytest.mark.slow

N = 40_000
T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout_s: float = 60) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def balanced(samples: Samples, operator: str) -> bool:
    def c(kind: str) -> float:
        return total(samples, f"weirflow_records_{kind}_total", operator=operator)

    return c("in") == c("out") + c("filtered") + c("late") + c("dead_lettered")


def test_counts_add_up_checkpoints_move_and_restarts_are_counted(tmp_path: Path) -> None:
    """Scenario: scrape a running job, SIGKILL its worker, scrape the restarted worker."""
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, N, seed=11)
    port = free_port()
    release = ThrottleRelease(tmp_path)
    env = dict(os.environ, **release.env, WF_LOG_DIR=str(log_dir), WF_THROTTLE_US="150")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "weirflow.cli",
            "run",
            JOB,
            "--parallelism=2",
            f"--checkpoint-dir={tmp_path / 'chk'}",
            "--checkpoint-interval=200ms",
            "--restart-delay=100ms",
            f"--metrics-port={port}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "run.log", "wb"),  # noqa: SIM115
    )
    try:
        first = wait_for(
            "a scrape with records and a completed checkpoint",
            lambda: (
                s
                if (s := scrape(port))
                and total(s, "weirflow_records_in_total", operator="parse") > 0
                and total(s, "weirflow_checkpoints_completed_total") >= 1
                else None
            ),
        )
        # one-to-one operators balance in every scrape (one sample reads all counters at once)
        for op in ("events", "parse"):
            assert balanced(first, op), op
        # the first attempt starts at offset 0: read + not yet read = everything
        lag = total(first, "weirflow_source_split_lag_records")
        assert lag + total(first, "weirflow_records_in_total", operator="events") == N
        assert total(first, "weirflow_checkpoints_triggered_total") >= total(
            first, "weirflow_checkpoints_completed_total"
        )
        assert total(first, "weirflow_checkpoint_duration_seconds_count") >= 1
        assert total(first, "weirflow_restarts_total") == 0

        later = wait_for(
            "more completed checkpoints",
            lambda: (
                s
                if (s := scrape(port))
                and total(s, "weirflow_checkpoints_completed_total")
                > total(first, "weirflow_checkpoints_completed_total")
                else None
            ),
        )
        for op in ("events", "parse"):
            assert balanced(later, op), op
        assert total(later, "weirflow_records_in_total", operator="events") > total(
            first, "weirflow_records_in_total", operator="events"
        )
        assert total(later, "weirflow_source_split_lag_records") < lag
        assert total(later, "weirflow_checkpoint_last_completed_id") > total(
            first, "weirflow_checkpoint_last_completed_id"
        )
        assert total(later, "weirflow_end_to_end_latency_seconds_count") >= 1

        (worker,) = children(proc.pid)
        os.kill(worker, signal.SIGKILL)
        after = wait_for(
            "the restarted worker's metrics",
            lambda: (
                s
                if (s := scrape(port))
                and total(s, "weirflow_restarts_total") == 1
                and total(s, "weirflow_records_in_total", operator="parse") > 0
                else None
            ),
        )
        assert total(after, "weirflow_recovery_time_seconds_total") > 0
        for op in ("events", "parse"):
            assert balanced(after, op), op
        # every scrape is taken: the rest of the input may run at full speed
        release()
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert committed_results(log_dir) == expected
