"""Smoke test of benchmarks/metrics_overhead.py: both variants run and agree; "on" samples."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import metrics_overhead


def test_metrics_on_and_off_give_the_same_windows_and_on_samples() -> None:
    _, _, windows_off, samples_off = metrics_overhead.run(30_000, metrics=False)
    _, _, windows_on, samples_on = metrics_overhead.run(30_000, metrics=True)
    assert windows_on == windows_off > 0
    assert samples_off == 0
    assert samples_on >= 1
