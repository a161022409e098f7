"""The checkpointing benchmark runs end to end on a tiny input (so it cannot rot)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "checkpointing.py"


def test_checkpointing_benchmark_smoke() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--events",
            "20000",
            "--repeat",
            "1",
            "--state-mb",
            "1",
            "--backpressure-s",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, COLUMNS="200"),
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ratio (target ≥ 0.9)" in out.stdout
    assert "recovery, 1 MB state" in out.stdout
    assert "backpressure: unaligned, a stage at 10% of the source rate" in out.stdout
