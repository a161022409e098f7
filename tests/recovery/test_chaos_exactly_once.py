"""Crash-and-recover tests: SIGKILL jobs under ``weirflow run``; compare with the batch answer."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from chaos_helpers import (
    JOB,
    CheckpointsSinceLastCall,
    ThrottleRelease,
    committed_results,
    make_input,
    supervised_args,
)

from weirflow.testing import ChaosConfig, ChaosReport, run_under_chaos

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
    extra: tuple[str, ...] = (),
    n: int = N,
    session_gap_ms: int | None = None,
    delays_s: tuple[float, float] = (0.4, 1.5),
    after_checkpoints: bool = False,
) -> tuple[Counter, Counter, ChaosReport]:
    """Run the job under chaos; ``after_checkpoints``: each kill waits for a new checkpoint."""
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, n, seed, session_gap_ms=session_gap_ms)
    release = ThrottleRelease(tmp_path)
    env = dict(
        os.environ,
        **release.env,
        WF_LOG_DIR=str(log_dir),
        WF_THROTTLE_US="40",
        WF_SINK_GUARANTEE="exactly_once" if guarantee == "exactly_once" else "at_least_once",
    )
    if session_gap_ms is not None:
        env["WF_SESSION_GAP_MS"] = str(session_gap_ms)
    if faults:
        env["WEIRFLOW_FAULTS"] = faults
        env["WEIRFLOW_FAULT_SEED"] = str(seed)
    report = run_under_chaos(
        JOB,
        supervised_args(tmp_path / "chk", parallelism, guarantee, *extra),
        ChaosConfig(kills, seed, target, min_delay_s=delays_s[0], max_delay_s=delays_s[1]),  # type: ignore[arg-type]
        log_path=tmp_path / "chaos.log",
        env=env,
        progressed=CheckpointsSinceLastCall(tmp_path / "chaos.log") if after_checkpoints else None,
        # fault points kill at the protocol's phases all run long: keep the pause to the end
        after_last_kill=None if faults else release,
    )
    assert report.kills >= kills // 2, f"job ended before the kills landed: {report.describe()}"
    return expected, committed_results(log_dir), report


def test_exactly_once_under_worker_kills(tmp_path: Path, chaos_seed: int) -> None:
    """Scenario: the worker is SIGKILLed 12 times at random; output equals the batch answer."""
    expected, got, info = _run(
        tmp_path, chaos_seed, target="worker", kills=12, guarantee="exactly_once", parallelism=2
    )
    assert got == expected, f"missing {expected - got}, extra {got - expected}; {info.describe()}"


def test_exactly_once_under_supervisor_kills(tmp_path: Path, chaos_seed: int) -> None:
    """Scenario: the supervisor and its worker are SIGKILLed 8 times, restarted from latest."""
    expected, got, info = _run(
        tmp_path, chaos_seed, target="supervisor", kills=8, guarantee="exactly_once", parallelism=1
    )
    assert got == expected, f"missing {expected - got}, extra {got - expected}; {info.describe()}"


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
    assert got == expected, f"missing {expected - got}, extra {got - expected}; {info.describe()}"


def test_at_least_once_loses_nothing(tmp_path: Path, chaos_seed: int) -> None:
    """Scenario: at-least-once, 8 worker kills: every expected result present, none wrong."""
    expected, got, info = _run(
        tmp_path, chaos_seed, target="worker", kills=8, guarantee="at_least_once", parallelism=2
    )
    assert set(got) == set(expected), (
        f"missing {set(expected) - set(got)}; wrong {set(got) - set(expected)}; {info.describe()}"
    )


ROCKSDB_KILLS = 30


def test_exactly_once_sessions_on_rocksdb_under_30_worker_kills(
    tmp_path: Path, chaos_seed: int
) -> None:
    """Scenario: session windows in RocksDB with incremental checkpoints (the CLI's default),
    the worker SIGKILLed 30 times, each kill 50-300 ms after a checkpoint completed since
    the previous kill (so every attempt restores one): output exact, shared files reused."""
    expected, got, report = _run(
        tmp_path,
        chaos_seed,
        target="worker",
        kills=ROCKSDB_KILLS,
        guarantee="exactly_once",
        parallelism=2,
        extra=("--state-backend=rocksdb", f"--state-dir={tmp_path / 'state'}"),
        n=60_000,
        session_gap_ms=100,
        delays_s=(0.05, 0.3),
        after_checkpoints=True,
    )
    info = report.describe()
    assert report.kills >= ROCKSDB_KILLS, f"job ended before {ROCKSDB_KILLS} kills; {info}"
    assert got == expected, f"missing {expected - got}, extra {got - expected}; {info}"
    restores = (tmp_path / "chaos.log").read_text().count("starting from checkpoint")
    assert restores >= ROCKSDB_KILLS, f"only {restores} restores from a checkpoint; {info}"
    assert any((tmp_path / "chk" / "windowed_sum" / "shared").rglob("*.sst")), info
