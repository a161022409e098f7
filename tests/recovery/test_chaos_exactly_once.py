"""Crash-and-recover tests: SIGKILL jobs under ``weirflow run``; compare with the batch answer."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from chaos_helpers import JOB, committed_results, make_input

from weirflow.testing import ChaosConfig, run_under_chaos

pytestmark = pytest.mark.slow

N = 120_000


def _run(
    tmp_path: Path,
    seed: int,
    *,
    target: str,
    kills: int,
    guarantee: str,
    parallelism: int,
    faults: str = "",
) -> tuple[Counter, Counter, str]:
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, N, seed)
    env = dict(
        os.environ,
        WF_LOG_DIR=str(log_dir),
        WF_THROTTLE_US="40",
        WF_SINK_GUARANTEE="exactly_once" if guarantee == "exactly_once" else "at_least_once",
    )
    if faults:
        env["WEIRFLOW_FAULTS"] = faults
        env["WEIRFLOW_FAULT_SEED"] = str(seed)
    report = run_under_chaos(
        JOB,
        [
            f"--parallelism={parallelism}",
            f"--checkpoint-dir={tmp_path / 'chk'}",
            "--checkpoint-interval=100ms",
            f"--guarantee={guarantee}",
            "--restart-strategy=fixed-delay",
            "--max-restarts=200",
            "--restart-delay=50ms",
        ],
        ChaosConfig(kills=kills, seed=seed, target=target),  # type: ignore[arg-type]
        log_path=tmp_path / "chaos.log",
        env=env,
    )
    assert report.kills >= kills // 2, f"job ended before the kills landed: {report.describe()}"
    return expected, committed_results(log_dir), report.describe()


def test_exactly_once_under_worker_kills(tmp_path: Path, chaos_seed: int) -> None:
    """Scenario: the worker is SIGKILLed 12 times at random; output equals the batch answer."""
    expected, got, info = _run(
        tmp_path, chaos_seed, target="worker", kills=12, guarantee="exactly_once", parallelism=2
    )
    assert got == expected, f"missing {expected - got}, extra {got - expected}; {info}"


def test_exactly_once_under_supervisor_kills(tmp_path: Path, chaos_seed: int) -> None:
    """Scenario: the supervisor and its worker are SIGKILLed 8 times, restarted from latest."""
    expected, got, info = _run(
        tmp_path, chaos_seed, target="supervisor", kills=8, guarantee="exactly_once", parallelism=1
    )
    assert got == expected, f"missing {expected - got}, extra {got - expected}; {info}"


def test_exactly_once_with_kills_at_protocol_phases(tmp_path: Path, chaos_seed: int) -> None:
    """Scenario: SIGKILL during state writes, after the manifest, around sink commits, at random."""
    expected, got, info = _run(
        tmp_path,
        chaos_seed,
        target="worker",
        kills=5,
        guarantee="exactly_once",
        parallelism=2,
        faults="state_write=0.02,after_manifest=0.08,sink_commit=0.05,pre_commit=0.02",
    )
    assert got == expected, f"missing {expected - got}, extra {got - expected}; {info}"


def test_at_least_once_loses_nothing(tmp_path: Path, chaos_seed: int) -> None:
    """Scenario: at-least-once, 8 worker kills: every expected result present, none wrong."""
    expected, got, info = _run(
        tmp_path, chaos_seed, target="worker", kills=8, guarantee="at_least_once", parallelism=2
    )
    assert set(got) == set(expected), (
        f"missing {set(expected) - set(got)}; wrong {set(got) - set(expected)}; {info}"
    )
