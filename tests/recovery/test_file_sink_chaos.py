"""Crash-and-recover tests of FileSink: SIGKILL a job under ``weirflow run``; the committed part
files together must hold exactly the batch answer."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from chaos_helpers import ThrottleRelease, make_input, supervised_args

from weirflow.testing import ChaosConfig, ChaosReport, run_under_chaos

pytestmark = pytest.mark.slow

JOB = str(Path(__file__).parent / "jobs" / "file_windowed_sum.py")
N = 60_000


def committed_parts(out_dir: Path) -> Counter[tuple[str, int, int, int, int]]:
    """Read every committed part file (names not starting with ``.``) as a multiset of results."""
    out: Counter[tuple[str, int, int, int, int]] = Counter()
    for name in os.listdir(out_dir):
        if name.startswith("."):
            continue
        with open(out_dir / name) as f:
            for line in f:
                key, start, end, (count, total), _firing = json.loads(line)
                out[(key, start, end, count, total)] += 1
    return out


def _run(
    tmp_path: Path, seed: int, *, kills: int, parallelism: int, faults: str = ""
) -> tuple[Counter, ChaosReport]:
    log_dir = tmp_path / "log"
    expected = make_input(log_dir, N, seed)
    release = ThrottleRelease(tmp_path)
    env = dict(
        os.environ,
        **release.env,
        WF_LOG_DIR=str(log_dir),
        WF_OUT_DIR=str(tmp_path / "out"),
        WF_ROLLING="400",
        WF_THROTTLE_US="60",
    )
    if faults:
        env["WEIRFLOW_FAULTS"] = faults
        env["WEIRFLOW_FAULT_SEED"] = str(seed)
    report = run_under_chaos(
        JOB,
        supervised_args(tmp_path / "chk", parallelism),
        ChaosConfig(kills=kills, seed=seed, target="worker", min_delay_s=0.8, max_delay_s=2.0),
        log_path=tmp_path / "chaos.log",
        env=env,
        # fault points kill at the protocol's phases all run long: keep the pause to the end
        after_last_kill=None if faults else release,
    )
    return expected, report


def test_file_sink_exactly_once_under_worker_kills(tmp_path: Path, chaos_seed: int) -> None:
    """Scenario: the worker is SIGKILLed 6 to 8 times at random; the parts hold the batch answer."""
    expected, report = _run(tmp_path, chaos_seed, kills=8, parallelism=2)
    info = report.describe()
    assert report.kills >= 6, f"job ended before the kills landed: {info}"
    got = committed_parts(tmp_path / "out")
    assert got == expected, f"missing {expected - got}, extra {got - expected}; {info}"
    leftovers = [n for n in os.listdir(tmp_path / "out") if n.startswith(".")]
    assert leftovers == [], f"hidden files left after the job finished: {leftovers}; {info}"


def test_file_sink_exactly_once_with_kills_at_protocol_phases(
    tmp_path: Path, chaos_seed: int
) -> None:
    """Scenario: SIGKILL after the manifest, before sink commits, on pre-commit, and at random."""
    expected, report = _run(
        tmp_path,
        chaos_seed,
        kills=3,
        parallelism=2,
        faults="after_manifest=0.08,sink_commit=0.05,pre_commit=0.02",
    )
    info = report.describe()
    got = committed_parts(tmp_path / "out")
    assert got == expected, f"missing {expected - got}, extra {got - expected}; {info}"
    leftovers = [n for n in os.listdir(tmp_path / "out") if n.startswith(".")]
    assert leftovers == [], f"hidden files left after the job finished: {leftovers}; {info}"
